"""Every installed tuning method through every command of the console script, in the order a user runs
them: recipe show, train, resume, eval (multi-view), predict, extract-features, visualize, export --onnx
--verify, push --to-dir (and predict on what it wrote), merge for a method that merges, finetune-transfer.
The methods come from the `stadapt.tuners` registry, so a method installed later is covered without
editing this file. The commands run through `helpers.run_cli` (the console script's own main() with its
argv, streams and exit code, in this process: no ~4 s of imports per command), everything tiny (clip:tiny,
2 frames of 32 px, 2 steps, no workers, one thread, the TorchScript exporter) so that a method costs about
2 s; `pytest -s` prints each command's CPU seconds."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file
from test_transfer import tiny_ucf

import stadapt
from stadapt.checkpoints.load import build_untrained, open_checkpoint
from stadapt.data.synthetic import SyntheticSpec, write_synthetic
from stadapt.tools.visualize.attention import attention_maps, image_model, load_video_clip
from stadapt.tuners import installed_tuners, load_tuner

RECIPE = """\
backbone: {{name: clip:tiny, weights: synthetic}}
tuning: {method}
data: {{root: {root}, frames: 2, stride: 2, views: 1x1, num_workers: 0}}
optim: {{lr: 1.0e-3, batch_size: 2, micro_batch: 2, steps: 2, warmup_steps: 0}}
train: {{device: cpu, log_every: 1, val_every: 100, save_every: 100}}
"""


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: these models are tiny, and on CI's 2 cores shared by 2 test workers more threads
    only spin (measured: 4x the CPU time of the file)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a Kinetics-style synthetic data set of 2 classes, 1 training and 1 validation clip each; a tiny
    UCF-101 in its published layout)."""
    base = tmp_path_factory.mktemp("every_method")
    root = base / "k400ish"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=1, val_per_class=1, frames=4,
                                        size=32, clutter=2))
    return root, tiny_ucf(base / "UCF101")


@pytest.fixture(scope="module")
def image_model_map() -> Callable[[torch.Tensor], torch.Tensor]:
    """The last block's attention of the plain image model (clip:tiny, its shipped weights) on a clip."""
    plain = stadapt.create_model("clip:tiny", 2, tuning="linear", num_frames=2, weights="synthetic").eval()
    return lambda clip: attention_maps(plain, clip)[0]


def _ok(timings: dict[str, float], step: str, *args: str, cwd: Path | None = None) -> str:
    start = time.process_time()
    done = run_cli(*args, cwd=cwd)
    timings[step] = time.process_time() - start  # CPU seconds of this process: steadier than wall time under load
    assert done.returncode == 0, f"{step}: exit {done.returncode}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("method", installed_tuners())
def test_every_command(method: str, data: tuple[Path, Path], image_model_map: Callable[[torch.Tensor], torch.Tensor],
                       tmp_path: Path) -> None:
    root, ucf = data
    timings: dict[str, float] = {}  # CPU seconds per command, printed at the end (`pytest -s` shows them)
    cpu, wall = time.process_time(), time.perf_counter()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(method=method, root=json.dumps(str(root))))
    run = tmp_path / "run"
    last = run / "checkpoints" / "last"

    shown = _ok(timings, "recipe show", "recipe", "show", str(recipe), "--classes", "2")
    parts = re.search(r"backbone [\d,]+(?: \(([\d,]+) train\))?  adapters ([\d,]+)  head ([\d,]+)", shown)
    trainable = re.search(r"trainable ([\d,]+)", shown)
    assert parts and trainable, shown
    counts = [int((n or "0").replace(",", "")) for n in (*parts.groups(), trainable.group(1))]
    assert sum(counts[:3]) == counts[3], shown  # the parts say where every trained parameter is

    stopped = _ok(timings, "train", "train", str(recipe), f"output.dir={run}", "--stop-after", "1", "-q")
    assert "stopped at step 1 of 2" in stopped
    assert json.loads((last / "stadapt.json").read_text())["step"] == 1
    _ok(timings, "resume", "train", str(recipe), f"output.dir={run}", "--resume", "-q")
    meta = json.loads((last / "stadapt.json").read_text())
    assert meta["step"] == 2 and meta["model"]["tuning"] == method
    steps = [e["step"] for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if e["split"] == "train"]
    assert steps == [1, 2]  # the second train continued from step 1, it did not start again

    _ok(timings, "eval", "eval", str(run), "--views", "1x2", "-q")
    report = json.loads((run / "eval.json").read_text())
    assert report["videos"] == 2 and report["views"] == "1x2" and report["step"] == 2

    video = root / (root / "val.txt").read_text().split()[0]
    predicted = _ok(timings, "predict", "predict", str(video), "--checkpoint", str(run), "--json", "-q")
    line = json.loads(predicted.splitlines()[-1])
    assert len(line["top"]) == 2

    features = tmp_path / "features.npy"
    _ok(timings, "extract-features", "extract-features", str(video), "--checkpoint", str(run), "--out",
        str(features), "-q")
    assert np.load(features).shape[0] == 1

    png = tmp_path / "attention.png"
    loaded = stadapt.load_model(run)
    hooks = loaded.block_hooks(adapted=True)
    if any(getattr(hooks, point, None) is not None for point in ("attn_in", "attn_body")):
        # the map is recomputed from the block's own projections: a method changing the attention is refused
        start = time.process_time()
        refused = run_cli("visualize", str(video), "--checkpoint", str(run), "--out", str(png), "-q")
        timings["visualize"] = time.process_time() - start
        assert refused.returncode == 2 and "changes the attention" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and not png.exists()
    else:
        _ok(timings, "visualize", "visualize", str(video), "--checkpoint", str(run), "--out", str(png), "-q")
        assert png.stat().st_size > 0
        # "before" is the image model whatever the method trained (full fine-tuning too), as visualize draws it
        clip = load_video_clip(video, loaded.input_spec)[0]
        plain = image_model(loaded, lambda: build_untrained(open_checkpoint(last)))
        before, _ = attention_maps(loaded, clip, plain)
        assert torch.allclose(before, image_model_map(clip), atol=1e-6)

    onnx = tmp_path / "model.onnx"
    exported = _ok(timings, "export", "export", "--onnx", "--checkpoint", str(run), "--out", str(onnx), "--verify",
                   "--exporter", "torchscript", "-q")
    assert onnx.stat().st_size > 0 and "verified with onnxruntime" in exported

    pushed = tmp_path / "pushed"
    _ok(timings, "push", "push", str(run), "--repo", f"someone/tiny-{method}", "--to-dir", str(pushed))
    card = (pushed / "README.md").read_text()
    assert method in card
    assert json.loads((pushed / "stadapt.json").read_text())["model"]["tuning"] == method
    again = _ok(timings, "predict pushed", "predict", str(video), "--checkpoint", str(pushed), "--json", "-q")
    top = json.loads(again.splitlines()[-1])["top"]  # what would be uploaded loads alone, with the run's numbers
    assert [t["index"] for t in top] == [t["index"] for t in line["top"]]
    assert [t["probability"] for t in top] == pytest.approx([t["probability"] for t in line["top"]], abs=1e-6)

    if load_tuner(method).merges:  # the merged model predicts alone; it has no image model to visualize against
        merged = tmp_path / "merged"
        _ok(timings, "merge", "merge", str(run), "--out", str(merged))
        assert json.loads((merged / "stadapt.json").read_text())["merged_from"]["tuning"] == method
        folded = _ok(timings, "predict merged", "predict", str(video), "--checkpoint", str(merged), "--json", "-q")
        assert [t["index"] for t in json.loads(folded.splitlines()[-1])["top"]] == [t["index"] for t in line["top"]]
        refused = run_cli("visualize", str(video), "--checkpoint", str(merged), "--out", str(png), "--overwrite", "-q")
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        merged_onnx = tmp_path / "merged.onnx"  # the merged model deploys as any model does
        exported = _ok(timings, "export merged", "export", "--onnx", "--checkpoint", str(merged), "--out",
                       str(merged_onnx), "--verify", "--video", str(video), "--exporter", "torchscript", "-q")
        assert merged_onnx.stat().st_size > 0 and "verified with onnxruntime" in exported

    out = tmp_path / "transfer"
    _ok(timings, "finetune-transfer", "finetune-transfer", "--from", str(run), "--dataset", "ucf101", "--root",
        str(ucf), "--splits", "1", "--out", str(out), "optim.steps=1", "optim.batch_size=2",
        "optim.warmup_steps=0", "optim.lr=1e-12", "data.views=1x1", "-q")
    summary = json.loads((out / "transfer.json").read_text())
    assert [s["split"] for s in summary["splits"]] == [1]
    transferred = out / "split1" / "checkpoints" / "last"
    assert json.loads((transferred / "stadapt.json").read_text())["model"]["tuning"] == method
    moved = load_file(transferred / "trainable.safetensors")
    assert moved["head.fc.weight"].shape[0] == 2  # a new head for UCF's classes
    source = load_file(last / "trainable.safetensors")
    carried = [k for k in source if not k.startswith("head.")]  # the method's modules, trained backbone tensors
    assert sorted(carried) == sorted(k for k in moved if not k.startswith("head."))
    assert all(torch.allclose(moved[k], source[k], atol=1e-6) for k in carried)  # started from the source's
    print(f"\n{method} (CPU s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
          + f"; test {time.process_time() - cpu:.1f} CPU s, {time.perf_counter() - wall:.1f} wall s")
