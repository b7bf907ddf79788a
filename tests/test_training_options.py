"""benchmarks/training_options.py writes its table to a results file, with the machine's bfloat16 named."""

import os

import pytest
import torch

import runtime
from benchmarks import training_options


def test_the_table_has_a_row_an_option_and_the_ratio_to_float32():
    seconds = {64: {"float32": 0.5, "bf16": 4.0}, 128: {"float32": 2.0, "bf16": 1.0}}
    assert training_options.table_lines(seconds) == [
        "| option | 64x64 ms/step | vs float32 | 128x128 ms/step | vs float32 |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| float32 | 500.0 | 1.00x | 2000.0 | 1.00x |",
        "| bf16 | 4000.0 | 0.12x | 1000.0 | 2.00x |"]


@pytest.mark.parametrize("native", [False, True])
def test_the_results_file_names_the_cpu_and_whether_bf16_is_native(native, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    out = tmp_path / "options.md"
    assert training_options.main(["--sizes", "16", "--batch-size", "2", "--steps", "1", "--rounds", "1",
                                  "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# A training step under each compute option")
    assert f"{runtime.cpu_model()}, {os.cpu_count()} cores), native bfloat16: " \
        f"{'yes' if native else 'no (no AVX512-BF16 or AMX'}" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "ms/step" not in line
            and not line.startswith("| ---")]
    assert [row.split(" | ")[0] for row in rows] == ["| " + name for name in training_options.OPTIONS]
    assert rows[0].endswith("| 1.00x |")  # float32 against itself


def test_a_runs_device_names_the_cpu_model_and_its_cores(monkeypatch):
    """Two CPUs of 2 cores differ several times in a fast recipe's training time (native bfloat16 or not): the
    provenance written into every run (train.py) and benchmark names the model."""
    monkeypatch.setattr(runtime, "cpuinfo", lambda field: {"model name": "AMD EPYC 7B13"}.get(field, ""))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert runtime.device_description(torch.device("cpu")) == "cpu (AMD EPYC 7B13, 2 cores)"
