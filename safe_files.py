"""Files that must never be lost or half-written, and folders two processes must not write into at once.

Every such file (weights, checkpoints, results, cache entries) is written whole to a temporary file and renamed
over the old one (write_atomic), so a kill or a full disk leaves the previous version. A folder a training or an
inference writes into is locked (FolderLock), so two runs cannot overwrite each other's files. Every failure is
one line naming the file and what to do (OutputError).
"""

import errno
import io
import json
import os
import time
from pathlib import Path

import torch


# Kaggle mounts its inputs read-only: a run's folders must go under the writable working folder
READ_ONLY_ADVICE = "choose a folder on a writable one (on Kaggle, under /kaggle/working, not /kaggle/input)"


class OutputError(OSError):
    """A file that cannot be written: the message says which, why, and what to do."""


def make_folder(folder, what="output"):
    """mkdir -p, with a one-line error naming the folder when it cannot be made or written into."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{folder}: cannot be the {what} folder, a file of that name is in the way; "
                          "choose another folder") from None
    except PermissionError:
        raise OutputError(f"{folder}: no permission to create the {what} folder; choose a writable one") from None
    except OSError as error:
        if error.errno == errno.EROFS:
            raise OutputError(f"{folder}: on a read-only file system, the {what} folder cannot be made; "
                              f"{READ_ONLY_ADVICE}") from None
        raise
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: the {what} folder is read-only; choose a writable one")
    return folder


def write_atomic(path, payload):
    """Write bytes to path through a temporary file and a rename: path holds the old or the new content, never
    a part. A full disk removes the partial temporary file and says how much space was needed."""
    path = Path(path)
    make_folder(path.parent)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
            raise OutputError(f"{path}: no space left on the device for {len(payload) / 2**20:.1f} MiB; {kept}; "
                              f"free space on {path.parent} (df -h), then run again (resume=True continues a "
                              "training)") from None
        if isinstance(error, PermissionError):
            raise OutputError(f"{path}: no permission to write; choose a writable folder") from None
        if error.errno == errno.EROFS:
            raise OutputError(f"{path}: on a read-only file system; {READ_ONLY_ADVICE}") from None
        raise


def save_atomic(obj, path):
    """torch.save, atomically (write_atomic)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def write_json_atomic(data, path):
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


class FolderLock:
    """A lock file holding the owner's pid, so a second training cannot write into a folder in use.

    A lock whose process is gone (a killed run) is stale: it is taken over, and the takeover is said.
    """

    NAME = ".training.lock"

    def __init__(self, folder, what="output", advice="give this run other weights_dir and logs_dir, or wait for "
                                                     "that one to finish"):
        self.path, self.what, self.advice = Path(folder) / self.NAME, what, advice

    def __enter__(self):
        make_folder(self.path.parent, self.what)
        while True:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self.owner()
                if owner is None and _age(self.path) < 5:  # made this instant by another process, pid not yet in
                    time.sleep(0.05)
                    continue
                if self.held_by_another():
                    raise OutputError(f"{self.path.parent}: in use by another run (pid {owner}); {self.advice}") \
                        from None
                print(f"{self.path}: a stale lock of a stopped run (pid {owner}), taken over")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(str(os.getpid()))
            return self

    def held_by_another(self):
        """Whether another live process holds this lock."""
        owner = self.owner()
        return owner is not None and owner != os.getpid() and _alive(owner)

    def owner(self):
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc):
        if self.owner() == os.getpid():
            self.path.unlink(missing_ok=True)


def _age(path):
    """Seconds since path was last written (infinite when it is gone)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True
