"""`make device-check`: says so and exits 0 without a GPU; every part is time-boxed within one budget."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: device-check would measure it")
def test_make_device_check_without_a_gpu_says_so_and_exits_0():
    result = subprocess.run(["make", "-s", "device-check"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "no CUDA GPU on this machine" in result.stdout and "Traceback" not in result.stderr


def test_every_part_is_time_boxed_by_the_overall_budget(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--budget", "1", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.strip() in result.stdout
    for part in ("temporal conv", "bench", "bench-train", "bench-data", "bench --compile"):
        assert f"{part} " in summary
    assert summary.count("skipped: the check's time budget is spent") == 5, summary
