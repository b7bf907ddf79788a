"""Pack a kaggle_3m folder losslessly into chunk files small enough to travel, and unpack them.

A remote GPU machine that receives at most ~64 MiB per call can get the full
dataset (1007 MiB of TIFFs) in 5 chunks of 60 MiB: each patient's images are
stored channel-planar, row-differenced and xz-compressed, its masks as bits
(4.1x smaller overall: results/data-packing.md). Unpacking writes the same file names with the
same pixels, so everything downstream reads it as the original.

    python -m tools.gpu.pack_data pack kaggle_3m packed/ --chunk-mib 60
    python -m tools.gpu.pack_data unpack packed/ kaggle_3m
"""

import argparse
import io
import lzma
import sys
import tarfile
from pathlib import Path

import numpy as np
import tifffile
from tqdm import tqdm

from layouts import kaggle_3m

CHUNK_PATTERN = "kaggle_3m.part-{:03d}.tar"


def encode_patient(slices):
    """xz-compressed .npz bytes of one patient's slices (as kaggle_3m.list_patients gives them)."""
    images = np.stack([tifffile.imread(image) for _, image, _ in slices])  # Z, H, W, 3 uint8
    masks = np.stack([tifffile.imread(mask) for _, _, mask in slices])
    if images.dtype != np.uint8 or masks.dtype != np.uint8:
        raise ValueError(f"{slices[0][1].parent}: only uint8 slices can be packed, found {images.dtype}/{masks.dtype}")
    planar = np.ascontiguousarray(np.moveaxis(images, -1, 0))  # 3, Z, H, W
    rows = planar.copy()
    rows[..., 1:, :] = np.diff(planar, axis=-2)  # uint8 wrap-around: undone exactly by cumsum mod 256
    buffer = io.BytesIO()
    np.savez(buffer, numbers=np.array([number for number, _, _ in slices]), rows=rows,
             mask_values=np.unique(masks), mask_bits=np.packbits(masks > 0), mask_shape=np.array(masks.shape))
    return lzma.compress(buffer.getvalue(), preset=6)


def decode_patient(blob):
    """(slice numbers, images Z x H x W x 3, masks Z x H x W) from encode_patient's bytes."""
    arrays = np.load(io.BytesIO(lzma.decompress(blob)))
    planar = np.cumsum(arrays["rows"], axis=-2, dtype=np.uint8)
    images = np.ascontiguousarray(np.moveaxis(planar, 0, -1))
    shape = tuple(arrays["mask_shape"])
    bits = np.unpackbits(arrays["mask_bits"], count=int(np.prod(shape))).reshape(shape).astype(bool)
    high = arrays["mask_values"].max() if arrays["mask_values"].size else 255
    masks = np.where(bits, np.uint8(max(int(high), 1)), np.uint8(0))
    return [int(n) for n in arrays["numbers"]], images, masks


def pack(data_dir, out_dir, chunk_mib=60):
    """Write chunk tar files of whole patients, each under chunk_mib; returns their paths."""
    patients = kaggle_3m.list_patients(data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = chunk_mib * 2**20
    chunks, archive, size = [], None, 0
    for patient, slices in tqdm(sorted(patients.items()), desc="packing", unit="patient"):
        blob = encode_patient(slices)
        if archive is None or size + len(blob) + 1024 > limit:
            if archive is not None:
                archive.close()
            chunks.append(out_dir / CHUNK_PATTERN.format(len(chunks)))
            archive, size = tarfile.open(chunks[-1], "w"), 0
        info = tarfile.TarInfo(f"{patient}.npz.xz")
        info.size = len(blob)
        archive.addfile(info, io.BytesIO(blob))
        size += len(blob) + 1024
    if archive is not None:
        archive.close()
    return chunks


def unpack(packed_dir, data_dir):
    """Write every patient of the chunks in packed_dir as kaggle_3m TIFFs under data_dir; returns the count."""
    chunks = sorted(Path(packed_dir).glob(CHUNK_PATTERN.replace("{:03d}", "*")))
    if not chunks:
        raise FileNotFoundError(f"{packed_dir}: no {CHUNK_PATTERN.format(0)}-style chunk files")
    count = 0
    for chunk in tqdm(chunks, desc="unpacking", unit="chunk"):
        with tarfile.open(chunk) as archive:
            for member in archive.getmembers():
                patient = member.name.removesuffix(".npz.xz")
                numbers, images, masks = decode_patient(archive.extractfile(member).read())
                folder = Path(data_dir) / patient
                folder.mkdir(parents=True, exist_ok=True)
                for number, image, mask in zip(numbers, images, masks):
                    tifffile.imwrite(folder / f"{patient}_{number}.tif", image)
                    tifffile.imwrite(folder / f"{patient}_{number}_mask.tif", mask)
                count += 1
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("data_dir")
    packing.add_argument("out_dir")
    packing.add_argument("--chunk-mib", type=float, default=60)
    unpacking = commands.add_parser("unpack")
    unpacking.add_argument("packed_dir")
    unpacking.add_argument("data_dir")
    args = parser.parse_args(argv)
    if args.command == "pack":
        chunks = pack(args.data_dir, args.out_dir, args.chunk_mib)
        total = sum(chunk.stat().st_size for chunk in chunks)
        print(f"{len(chunks)} chunks, {total / 2**20:.1f} MiB in {args.out_dir}")
    else:
        print(f"{unpack(args.packed_dir, args.data_dir)} patients written to {args.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
