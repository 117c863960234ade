"""The text embeddings kept beside a zero-shot output, and finetune-transfer's zero-shot column.

`stadapt zero-shot --out X.csv` keeps the label set's text embeddings in X.text.safetensors: a second run with
the same weights, labels and templates reads them (the text tower is not run again), other labels recompute
and replace them, and a file at that name that stadapt did not write is refused before any work.
`finetune-transfer --zero-shot` scores each split's test list with the source backbone's own text tower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import count_encode_text, run_cli, write_tiny_open_clip

NAME = "stadapt-zs-cache"
CONFIG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                          "patch_size": 16},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny open_clip CLIP with random weights (one file, both towers) and a 2-frame video."""
    from stadapt.data.encode import write_video

    base = tmp_path_factory.mktemp("zs_cache")
    weights = write_tiny_open_clip(base, NAME, CONFIG)
    clip = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    return {"weights": weights, "video": write_video(base / "clip.mp4", clip)}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many prompts each encode_text call embedded (the text tower's work)."""
    return count_encode_text(monkeypatch)


def zero_shot(tiny: dict[str, Path], out: Path, labels: str, *extra: str) -> str:
    done = run_cli("zero-shot", str(tiny["video"]), "--backbone", f"clip:{NAME}", "--weights", str(tiny["weights"]),
                   "--labels", labels, "--frames", "2", "--workers", "0", "--out", str(out), "-q", *extra)
    assert done.returncode == 0, done.stderr
    return out.read_text()


def test_second_run_reads_the_text_embeddings(tiny: dict[str, Path], tmp_path: Path, calls: list[int]) -> None:
    out, cache = tmp_path / "zs.csv", tmp_path / "zs.text.safetensors"
    first = zero_shot(tiny, out, "juggling,knitting,surfing")
    assert calls == [3] and cache.is_file()
    second = zero_shot(tiny, out, "juggling,knitting,surfing", "--overwrite")
    assert calls == [3]  # read, not recomputed
    assert second.splitlines()[1].split(",")[5] == first.splitlines()[1].split(",")[5]  # the same probabilities
    zero_shot(tiny, out, "juggling,knitting,surfing", "--overwrite", "--template", "a clip of {}.")
    assert calls == [3, 3]  # other templates: another key, recomputed
    zero_shot(tiny, out, "juggling,knitting", "--overwrite")
    assert calls == [3, 3, 2]  # other labels: recomputed, the file replaced
    zero_shot(tiny, out, "juggling,knitting", "--overwrite")
    assert calls == [3, 3, 2]


def test_a_users_file_at_the_cache_name_is_refused(tiny: dict[str, Path], tmp_path: Path, calls: list[int]) -> None:
    cache = tmp_path / "zs.text.safetensors"
    cache.write_text("mine")
    done = run_cli("zero-shot", str(tiny["video"]), "--backbone", f"clip:{NAME}", "--weights", str(tiny["weights"]),
                   "--labels", "a,b", "--out", str(tmp_path / "zs.csv"), "-q")
    assert done.returncode == 2 and "stadapt did not write it" in done.stderr and "Traceback" not in done.stderr
    assert cache.read_text() == "mine" and not (tmp_path / "zs.csv").exists() and calls == []


def test_transfer_scores_a_split_zero_shot(tiny: dict[str, Path], tmp_path: Path, calls: list[int]) -> None:
    """finetune-transfer --zero-shot's per-split score: eval's report of the split's test list, read back on
    a re-run; and the summary's zero-shot column."""
    from stadapt.data.synthetic import SyntheticSpec, write_synthetic
    from stadapt.recipe import recipe_from_dict
    from stadapt.tools.transfer import format_summary, zero_shot_split

    root = tmp_path / "split1"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=1, val_per_class=1, frames=4,
                                        size=32, clutter=2))
    recipe = recipe_from_dict({"backbone": {"name": f"clip:{NAME}", "weights": str(tiny["weights"])},
                               "data": {"root": str(root), "frames": 2, "views": "1x1", "num_workers": 0},
                               "train": {"device": "cpu"}}, source="test", check_files=False)
    out = tmp_path / "zero_shot_split1.json"
    top1 = zero_shot_split(recipe, out, progress=False)
    report = json.loads(out.read_text())
    assert report["top1"] == top1 and report["videos"] == 2 and report["checkpoint"] is None
    assert report["zero_shot"]["labels"] == (root / "classes.txt").read_text().splitlines()
    assert zero_shot_split(recipe, out, progress=False) == top1 and calls == [2]  # read back, not run again
    zero_shot_split(recipe, out, progress=False, labels=["going right", "going left"])  # other labels: run
    assert json.loads(out.read_text())["zero_shot"]["labels"] == ["going right", "going left"] and calls == [2, 2]
    summary = {"splits": [{"split": 1, "top1": 1.0, "videos": 2, "run": "r", "zero_shot_top1": top1}],
               "mean_top1": 1.0, "zero_shot_mean_top1": top1}
    assert "0-shot" in format_summary(summary)
    assert "0-shot" not in format_summary({"splits": summary["splits"], "mean_top1": 1.0})  # without --zero-shot


def test_transfer_scores_the_source_run_zero_shot(tiny: dict[str, Path], tmp_path: Path) -> None:
    """finetune-transfer --zero-shot's "after" column: a source run with a frozen text head answers the
    target's class names (eval --labels) with no training on the target; a linear-head source has none."""
    from stadapt.checkpoints.format import model_meta, write_checkpoint
    from stadapt.data.input_spec import input_spec_from_data
    from stadapt.data.synthetic import SyntheticSpec, write_synthetic
    from stadapt.model.classifier import ModelConfig, build_model
    from stadapt.model.text_head import HeadConfig
    from stadapt.recipe import recipe_from_dict
    from stadapt.tools.transfer import adapted_zero_shot_split, format_summary

    root = tmp_path / "split1"
    write_synthetic(root, SyntheticSpec(motions=("horizontal", "vertical"), train_per_class=1, val_per_class=1,
                                        frames=4, size=32, clutter=2))
    recipe = recipe_from_dict({"backbone": {"name": f"clip:{NAME}", "weights": str(tiny["weights"])},
                               "data": {"root": str(root), "frames": 2, "views": "1x1", "num_workers": 0},
                               "train": {"device": "cpu"}}, source="test", check_files=False)
    sources = {}
    for head in ("text", "linear"):  # a K400-like source over two classes the target does not have
        config = ModelConfig(f"clip:{NAME}", 2, 2, None, dropout=0.0, tuning="partial_finetune",
                             head=HeadConfig(type=head))
        built = build_model(config, weights=str(tiny["weights"]), classes=["juggling", "knitting"])
        spec = input_spec_from_data({"frames": 2, "sampling": "stride", "stride": 2, "views": "1x1"}, built.variant)
        meta = model_meta(built, ["juggling", "knitting"], input_spec=spec)
        sources[head] = (write_checkpoint(tmp_path / head, built.model.trainable_state_dict(), meta), meta)
    out = tmp_path / "adapted_zero_shot_split1.json"
    top1 = adapted_zero_shot_split(*sources["text"], recipe, out, progress=False)
    report = json.loads(out.read_text())
    assert report["labels"] == (root / "classes.txt").read_text().splitlines() and report["videos"] == 4
    assert report["top1"] == top1 and report["checkpoint"] == str(sources["text"][0].resolve())
    out.write_text(out.read_text().replace(f'"top1": {json.dumps(top1)}', '"top1": 0.123'))
    assert adapted_zero_shot_split(*sources["text"], recipe, out, progress=False) == 0.123  # read back, not rerun
    assert adapted_zero_shot_split(*sources["linear"], recipe, tmp_path / "none.json", progress=False) is None
    worded = ["going right", "going left", "going down", "going up"]  # --labels: the classes as text
    adapted_zero_shot_split(*sources["text"], recipe, out, progress=False, labels=worded)  # other labels: run
    assert json.loads(out.read_text())["labels"] == worded
    summary = {"splits": [{"split": 1, "top1": 1.0, "videos": 4, "run": "r", "zero_shot_top1": 0.25,
                           "adapted_zero_shot_top1": top1}],
               "mean_top1": 1.0, "zero_shot_mean_top1": 0.25, "adapted_zero_shot_mean_top1": top1}
    assert format_summary(summary).splitlines()[0].split()[:4] == ["split", "0-shot", "adapted", "top-1"]
