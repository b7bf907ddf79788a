"""Data-parallel training over several processes, as torchrun launches them (one per GPU, or several on a CPU).

    torchrun --nproc_per_node=4 train.py -p data_path kaggle_3m -p epochs 100     # 4 GPUs of one machine
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 --nproc_per_node=4 train.py ...

Every rank builds the same model (the same seed; DistributedDataParallel also broadcasts rank 0's weights) and
averages its gradients with the others at every step; each draws its own share of every step's batch from the
reference's mask-weighted sampling with a generator of its own, so batch_size stays the global batch (each
rank takes batch_size / world_size slices) and an epoch is the same distribution as in one process. Rank 0
alone validates, logs, and writes weights, checkpoints and results; the others train. NCCL on GPUs, gloo on CPUs.
A plain process (no torchrun) is a group of one, and trains exactly as before.
"""

import contextlib
import io
import os
import sys

import torch
import torch.distributed as dist

# the per-rank sampling seeds: rank r draws from seed + r * RANK_SEED_STRIDE (rank 0 keeps the plain seed)
RANK_SEED_STRIDE = 1_000_003


class Group:
    """This process's place among torchrun's: rank, size, local rank; a plain process is rank 0 of 1."""

    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        self.rank = int(environ.get("RANK", 0))
        self.size = int(environ.get("WORLD_SIZE", 1))
        self.local_rank = int(environ.get("LOCAL_RANK", 0))
        self.local_size = int(environ.get("LOCAL_WORLD_SIZE", self.size))  # this machine's processes

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def parallel(self):
        return self.size > 1

    def __enter__(self):
        if self.parallel and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return self

    def __exit__(self, kind, error, traceback):
        if self.parallel and dist.is_initialized():
            if error is not None and not isinstance(error, KeyboardInterrupt):
                # one clear line naming the rank; torchrun then ends the others
                print(f"rank {self.rank} of {self.size} failed: {type(error).__name__}: {error}", file=sys.stderr,
                      flush=True)
                return
            if error is None:
                # every rank meets first: one that tears gloo down while another still finishes (rank 0 writes
                # after the last collective) can abort the other at exit (pytorch's own tests barrier here too);
                # an interrupted rank does not wait, the others may never come
                dist.barrier()
            dist.destroy_process_group()

    def device(self, device):
        """The rank's own GPU (its local rank) where device is a GPU; the CPU stays the CPU."""
        if self.parallel and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def share(self, batch_size):
        """This rank's slices of a global batch; refuses a batch the ranks cannot share evenly."""
        if batch_size % self.size:
            from parameters import ParameterError

            raise ParameterError(f"batch_size={batch_size}: use a multiple of the {self.size} processes (it is the "
                                 "global batch, shared evenly between them)")
        return batch_size // self.size

    def seed(self, seed):
        return seed + self.rank * RANK_SEED_STRIDE

    def broadcast(self, value):
        """Rank 0's value on every rank (any picklable object)."""
        if not self.parallel:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, value):
        """The mean of a float over the ranks."""
        if not self.parallel:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.size

    def barrier(self):
        if self.parallel:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block first (it writes the preprocessing cache), then the others (who read it)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    @contextlib.contextmanager
    def quiet(self):
        """Only rank 0 prints: the others' standard output goes nowhere (their errors still show)."""
        if self.is_main:
            yield
            return
        with contextlib.redirect_stdout(io.StringIO()):
            yield

    def wrap(self, model, sync_batchnorm=False):
        """model for the training step: DistributedDataParallel over the group (with sync_batchnorm, its batch
        norm layers made SyncBatchNorm, in place: what is saved is the same state_dict), or model itself."""
        if not self.parallel:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        if sync_batchnorm:
            if device.type != "cuda":
                from parameters import ParameterError

                raise ParameterError("sync_batchnorm=True: SyncBatchNorm runs on GPUs only; leave it off on CPUs")
            for name, child in list(model.named_children()):
                setattr(model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
