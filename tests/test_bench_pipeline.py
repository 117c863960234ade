"""`stadapt bench-pipeline` through the console script, on real prepared video files."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_tiny.yaml"


def test_bench_pipeline_reports_worker_loader_and_model_side_by_side(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=8,
                                        size=32, clutter=2))
    out = tmp_path / "report.json"
    result = run_cli("bench-pipeline", "--data", str(root), "--recipe", str(RECIPE), "-o", "data.frames=4",
                     "--clips", "3", "--batch", "2", "--batches", "1", "--model-steps", "1", "--workers", "1",
                     "--device", "cpu", "-q", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    ms = report["worker"]["ms_per_clip"]
    assert set(ms) == {"decode", "worker_uint8", "worker_float_before"}
    assert all(v["p10"] <= v["median"] <= v["p90"] for v in ms.values())
    assert set(report["worker"]["ratio_to_decode"]) == {"worker_uint8", "worker_float_before"}
    assert report["loader_clips_per_s"] > 0 and report["model"]["clips_per_s"] > 0
    assert report["data_bound"] == (report["loader_clips_per_s"] < report["model"]["clips_per_s"])
    verdict = "DATA-BOUND" if report["data_bound"] else "not data-bound"  # whichever this machine measured
    for label in ("decode alone", "worker pipeline (uint8, now)", "clips/s with 1 worker", verdict):
        assert label in result.stdout


def test_bench_pipeline_needs_exactly_one_data_source(tmp_path: Path) -> None:
    result = run_cli("bench-pipeline", "--recipe", str(RECIPE))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--data" in result.stderr


class _Spy:
    """Records, in a file (the paths run in a DataLoader worker process), each video a path opens and the
    torch thread count and process it ran in."""

    def __init__(self, log: Path, real) -> None:
        self.log, self.real = log, real

    def __call__(self, path, *args, **kwargs):
        import os

        import torch

        with open(self.log, "a") as f:
            info = torch.utils.data.get_worker_info()
            f.write(json.dumps({"threads": torch.get_num_threads(), "worker": info is not None,
                                "pid": os.getpid(), "path": str(path)}) + "\n")
        return self.real(path, *args, **kwargs)


def test_worker_paths_run_as_a_dataloader_worker_runs_them(tmp_path: Path, monkeypatch) -> None:
    """Issue 22.5: the bench timed the worker pipeline in the main process with all of torch's threads, and
    its "decode alone" opened videos through another reader than the item's. The paths now run in a real
    DataLoader worker (one torch thread, as in training) and all open their video with the dataset's reader."""
    import os

    import torch

    from stadapt.backbones.registry import parse_backbone
    from stadapt.data import dataset as dataset_module
    from stadapt.data import decode as decode_module
    from stadapt.data.prepared import open_prepared
    from stadapt.recipe import load_recipe
    from stadapt.runtime.build import train_dataset
    from stadapt.tools.bench.pipeline import time_worker_paths

    root = tmp_path / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=8,
                                        size=32, clutter=2))
    recipe = load_recipe(RECIPE, [f"data.root={root}", "data.frames=4"], check_files=False)
    _, variant = parse_backbone(recipe.backbone.name, dict(recipe.backbone.options))
    dataset = train_dataset(recipe, open_prepared(root).entries("train"), variant)
    log = tmp_path / "opens.jsonl"
    spy = _Spy(log, decode_module.open_video)
    monkeypatch.setattr(decode_module, "open_video", spy)  # where the bench's decode path finds it
    monkeypatch.setattr(dataset_module, "open_video", spy)  # the dataset's own reader
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        report = time_worker_paths(dataset, 4, batch=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    opens = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(opens) == 3 * (4 + 2)  # decode, uint8 item, float item; for 2 batches of 2 clips and the warm-up
    assert report["batch"] == 2 and report["batches"] == 2
    assert {o["threads"] for o in opens} == {1}
    assert all(o["worker"] and o["pid"] != os.getpid() for o in opens)
    assert report["torch_threads"] == [1] and report["in_worker"]
    for clock in ("", "_cpu"):
        assert set(report["ratio_to_decode" + clock]) == {"worker_uint8", "worker_float_before"}
