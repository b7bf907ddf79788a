"""Where and how a run computes, and what it records about that: the device, mixed precision, memory format,
seeds, and the provenance (commit, device, machine load) that goes into every results file."""

import os
import platform
import random
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"device {name!r} asked for but no CUDA GPU is available: using the CPU")
        return torch.device("cpu")
    return device


def on_terminal():
    """Whether progress bars can redraw in place: standard error is a terminal (not a log file, not papermill's
    --log-output, not a notebook's output cell, where one line an epoch says more)."""
    return sys.stderr.isatty()


def synchronize(device):
    """Wait for the device's queued work (a GPU's), so that a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpuinfo(field):
    """The value of the first /proc/cpuinfo line naming field ("model name", "flags"), or "" off Linux."""
    try:
        with open("/proc/cpuinfo") as handle:
            line = next((line for line in handle if line.startswith(field)), "")
    except OSError:
        return ""
    return line.partition(":")[2].strip()


def cpu_model():
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string elsewhere."""
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_has_native_bf16():
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX on x86, read off /proc/cpuinfo)."""
    flags = cpuinfo("flags").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_is_native(device):
    """Whether device computes bfloat16 in hardware: a GPU from Ampere on, a CPU with AVX512-BF16 or AMX."""
    return torch.cuda.is_bf16_supported(including_emulation=False) if device.type == "cuda" else cpu_has_native_bf16()


def emulated_bf16_line(device, setting):
    """The line said where setting asks for bfloat16 on a device that only emulates it, or None where native."""
    if bf16_is_native(device):
        return None
    return (f"{setting} on a {'GPU' if device.type == 'cuda' else 'CPU'} without native bfloat16: emulated, each "
            "step many times slower than float32 (12.6x on a 2-core AVX2 CPU: results/training-options-cpu-avx2.md)")


class SpeedOptions:
    """The data pipeline, autocast dtype (None: off) and memory format that params ask for on device."""

    DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}

    def __init__(self, params, device):
        on_gpu = device.type == "cuda"
        self.device = device
        self.pipeline = params["data_pipeline"]
        if self.pipeline == "auto":
            self.pipeline = "device" if on_gpu else "reference"
        amp = params["amp"]
        # bfloat16 where the device computes it, not where it is emulated: a GPU before Ampere (Kaggle's T4) and a
        # CPU without AVX512-BF16 or AMX run it in software, many times slower than float32
        native = bf16_is_native(device)
        # "auto" keeps float32 on a CPU even where it has bfloat16: the CPU protocol compares recipes in float32
        # (the fast recipe asks for bf16 itself), and float32 validation scores as float32 inference does; the
        # hint below says what to set for the 1.8x (results/training-options-cpu.md)
        self.hint = None
        if amp == "auto":
            amp = "bf16" if on_gpu and native else "off"
            if not on_gpu and native:
                self.hint = ('this CPU computes bfloat16 natively: amp="bf16" with channels_last=True trains a step '
                             "about 1.8x faster (float32 stays the default on CPUs)")
        elif amp == "native":  # the fast recipes': their speed, not bfloat16 itself, is what they ask for
            amp = "bf16" if native else "off"
            if not native:
                self.hint = emulated_bf16_line(device, "bfloat16") + ': amp="native" trains in float32 here'
        elif amp == "bf16" and not native:
            self.hint = (emulated_bf16_line(device, 'amp="bf16"') + '; amp="native" trains in bfloat16 only where '
                         'it is native, "off" in float32')
        self.amp_dtype = self.DTYPES[amp]
        self.channels_last = on_gpu if params["channels_last"] == "auto" else bool(params["channels_last"])
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self):
        return dict(data_pipeline=self.pipeline, amp=str(self.amp_dtype), channels_last=self.channels_last)


def cpu_settings(params, processes=1):
    """params with workers and threads made numbers for this machine.

    On 2 cores, a 2-thread training beside another busy process runs 3.3x slower per step than alone, and a
    1-thread one 2.5x (results/threads-cpu.md): each parallel region waits for a thread the other process
    holds. So "auto" threads take only the cores that others leave idle at the start; with several processes
    of one training (data-parallel), each takes its share of them.
    """
    cores = max(1, (os.cpu_count() or 1) // processes)
    workers = params["workers"]
    if workers == "auto":
        workers = min(4, cores - 1)
    threads = params["threads"]
    if threads == "auto":
        threads = max(1, min(cores, round(idle_cores(cores))))
    return dict(params, workers=workers, threads=threads)


def _cpu_times():
    """(idle, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as handle:
            values = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return values[3] + values[4], sum(values)  # idle + iowait


def idle_cores(cores, seconds=0.5):
    """How many cores other processes leave idle now: /proc/stat sampled over `seconds` (the load average lags
    a minute behind a process that has just stopped), else the 1-minute load average."""
    before = _cpu_times()
    if before is not None:
        time.sleep(seconds)
        after = _cpu_times()
        if after[1] > before[1]:
            return cores * (after[0] - before[0]) / (after[1] - before[1])
    return cores - (load_average() or 0.0)


def seed_everything(seed, deterministic=False):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True


def seed_worker(worker_id):
    """Seed numpy in each loader worker from torch's per-worker, per-epoch seed.

    The reference seeded workers with 42 + worker_id, so every epoch replayed
    the same augmentations and slice draws.
    """
    np.random.seed(torch.initial_seed() % 2**32)


def git_commit():
    """SOURCE_COMMIT where set (a copy of the tree on a lent machine carries a stale or no git repository, so the
    caller names the commit it sent), else the checkout's short commit (with -dirty for uncommitted changes), else
    "unknown"."""
    if os.environ.get("SOURCE_COMMIT"):
        return os.environ["SOURCE_COMMIT"]
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True).stdout
        return commit + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_description(device):
    """The GPU's name, or the CPU's model and core count: timings from two machines differ by the model (one
    with native bfloat16 trains the fast recipes several times as fast), so the provenance names it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {os.cpu_count()} cores)"


def load_average():
    """The machine's 1-minute load average (None where the system has none): a timing taken beside other busy
    processes shows it."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
