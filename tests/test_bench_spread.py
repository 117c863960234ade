"""`stadapt bench` says when its ratios are within the noise of its own runs: the spread of each model's
repeated measurements is reported (table and JSON) and a warning line is printed wherever it is larger
than the difference the ratio claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from stadapt.tools.bench.inference import measurement_spread, noise_warnings

ARGS = ("bench", "--backbone", "clip:tiny", "--frames", "4", "--bottleneck", "16", "--batch", "2", "--device", "cpu",
        "-q")


def _results(plain: list[float], adapted: list[float]) -> dict:
    """Two models' latency runs (ms) and the throughputs the same runs would give."""
    return {"without_adapters": {"latency_ms_all": plain, "throughput_all": [1000 / t for t in plain]},
            "with_adapters": {"latency_ms_all": adapted, "throughput_all": [1000 / t for t in adapted]}}


def test_a_ratio_inside_the_spread_of_the_runs_is_flagged() -> None:
    noisy = _results([10.0, 14.0, 11.0], [10.5, 10.6, 10.4])  # 5% apart, runs 40% apart
    spread = measurement_spread(noisy, {"latency": 10.5 / 11.0, "throughput": 11.0 / 10.5})
    assert spread["latency"]["max"] == pytest.approx(4 / 11)
    assert spread["latency"]["noisy"] and spread["throughput"]["noisy"]
    warnings = noise_warnings(spread)
    assert len(warnings) == 2 and all(w.startswith("warning:") and "noise" in w for w in warnings)
    assert "latency" in warnings[0] and "4.5%" in warnings[0] and "36.4%" in warnings[0]

    clear = _results([10.0, 10.2, 10.1], [20.0, 20.4, 20.2])  # 2x apart, runs 2% apart
    spread = measurement_spread(clear, {"latency": 2.0, "throughput": 0.5})
    assert not spread["latency"]["noisy"] and not spread["throughput"]["noisy"] and noise_warnings(spread) == []

    once = measurement_spread(_results([10.0], [20.0]), {"latency": 2.0, "throughput": 0.5})
    assert once["latency"]["max"] is None and "unknown" in noise_warnings(once)[0]


def test_the_cli_reports_the_spread_and_warns_when_it_swamps_the_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_cli(*ARGS, "--runs", "3", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    for what, key in (("latency", "latency_ms_all"), ("throughput", "throughput_all")):
        entry = report["spread"][what]
        runs = report["models"]["with_adapters"][key]
        assert entry["with_adapters"] == pytest.approx((max(runs) - min(runs)) / sorted(runs)[1])
        assert entry["effect"] == pytest.approx(abs(report["ratio"][what] - 1))
        assert entry["noisy"] == (entry["max"] > entry["effect"])
        warned = any(line.startswith(f"warning: the {what} ratio") for line in result.stdout.splitlines())
        assert warned == entry["noisy"], result.stdout
    assert report["warnings"] == [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert "spread of the runs" in result.stdout

    once = run_cli(*ARGS, "--runs", "1")  # one run shows no spread: the reader is told so
    assert once.returncode == 0, once.stderr
    assert sum(line.startswith("warning: one run per model") for line in once.stdout.splitlines()) == 2
