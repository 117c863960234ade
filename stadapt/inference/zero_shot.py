"""`stadapt zero-shot`: videos classified by label texts with a frozen image-text backbone, no training.

The classifier is stadapt.model.zero_shot's (text embeddings computed once per label set); the videos go
through the one multi-view loop (stadapt.inference.loop) as predict's do, decoded by DataLoader workers in
batches, each view's probabilities (softmax over the labels, or SigLIP's sigmoid per label) averaged over the
views, as `loop.fusion_for` fuses every model's. Over files the output is predict's (`predict_videos`'
dicts, CSV / JSONL); over a prepared list it is eval's report (eval.json, its predictions CSV and confusion
matrix) with the zero-shot setting recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stadapt.data.input_spec import InputSpec
from stadapt.errors import StadaptError
from stadapt.model.zero_shot import ZeroShotModel, build_zero_shot

#: the clip a zero-shot model sees by default: 8 frames spread over the whole video, one centre view
DEFAULT_FRAMES = 8
DEFAULT_SAMPLING = "segment"


def read_labels(value: str) -> list[str]:
    """`--labels`: a file with one label a line (blank lines and `#` comments skipped) when `value` names
    a file, or looks like one (a path separator or a .txt/.csv/.lst name), else labels separated by commas."""
    from stadapt.data.textfile import read_lines

    path = Path(value).expanduser()
    if path.is_file():  # the reader of every file users hand us: a BOM and CRLF line ends are what editors write
        lines = read_lines(path, "label file", "pass a UTF-8 text file with one label a line")
        labels = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not labels:
            raise StadaptError(f"label file {path} holds no labels", "write one label a line")
        return labels
    if "/" in value or "\\" in value or path.suffix.lower() in (".txt", ".csv", ".lst"):
        raise StadaptError(f"label file {path} does not exist",
                           "check the path, or give the labels themselves: --labels 'label one,label two'")
    return [label.strip() for label in value.split(",")]


def zero_shot_spec(model: ZeroShotModel, *, frames: int = DEFAULT_FRAMES, sampling: str = DEFAULT_SAMPLING,
                   stride: int = 4, views: tuple[int, int] = (1, 1)) -> InputSpec:
    """The input of a zero-shot model: the backbone variant's size and normalisation, these frames and views."""
    v = model.variant
    try:
        return InputSpec(frames=frames, sampling=sampling, stride=stride, views=views, image_size=v.image_size,
                         mean=v.mean, std=v.std, interpolation=v.interpolation)
    except ValueError as exc:
        raise StadaptError(f"zero-shot input: {exc}", "check --frames, --sampling and --views") from exc


def zero_shot_videos(videos: list[Path], model: ZeroShotModel, spec: InputSpec, *, top_k: int = 5,
                     batch_size: int = 4, workers: int | None = None, max_clips: int | None = None,
                     progress: bool = False) -> list[dict[str, Any]]:
    """predict's result per video, in input order: `{"video", "top": [{"class", "index", "probability"}],
    "precision"}` with the labels as classes, or `{"video", "error"}` for a video that does not decode."""
    from stadapt.inference.loop import default_workers, infer_dataset, videos_dataset
    from stadapt.inference.predict import video_results

    device = next(model.model.parameters()).device
    pred = infer_dataset(model.model, videos_dataset(videos, spec), batch_size=batch_size,
                         num_workers=default_workers(len(videos)) if workers is None else workers, device=device,
                         progress=progress, desc="zero-shot", max_clips=max_clips)
    return video_results(videos, pred, model.labels, top_k, "fp32")


def zero_shot_eval(root: Path, list_file: Path, model: ZeroShotModel, spec: InputSpec, out: Path, *,
                   batch_size: int = 4, workers: int | None = None, max_clips: int | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """Score the model on a prepared list (its labels name classes.txt's classes, in order) and write eval's
    report at `out`: eval.json's scores and input, with the zero-shot backbone, weights and prompts."""
    from stadapt.data.prepared import open_prepared
    from stadapt.data.views import test_dataset
    from stadapt.inference.evaluate import write_reports
    from stadapt.inference.loop import infer_dataset
    from stadapt.inference.views import summarize

    prepared = open_prepared(root)
    if len(model.labels) != len(prepared.classes):
        raise StadaptError(f"{len(model.labels)} labels for the {len(prepared.classes)} classes of "
                           f"{prepared.root}/classes.txt", "give one label per class, in classes.txt's order")
    entries = prepared.entries(list_file)
    device = next(model.model.parameters()).device
    pred = infer_dataset(model.model, test_dataset(entries, spec), batch_size=batch_size,
                         num_workers=2 if workers is None else workers, device=device, progress=progress,
                         desc="zero-shot", max_clips=max_clips)
    report = _report(model, spec, prepared, list_file, entries, pred, summarize(pred, prepared.classes))
    write_reports(out, report, pred, entries, prepared.classes, title=f"zero-shot {model.backbone}")
    return report


def _report(model: ZeroShotModel, spec: InputSpec, prepared: Any, list_file: Path, entries: list[Any], pred: Any,
            summary: dict[str, Any]) -> dict[str, Any]:
    """eval.json of a zero-shot model: no checkpoint, the zero-shot setting instead, then eval's fields."""
    from stadapt import __version__
    from stadapt.inference.evaluate import run_record
    from stadapt.inference.loop import fusion_for

    tower = model.model.tower
    return {
        "stadapt_version": __version__,
        "checkpoint": None,
        "checkpoint_sha256": None,
        "zero_shot": {"backbone": model.backbone, "weights": model.weights, "labels": model.labels,
                      "templates": model.templates, "logit_scale": tower.logit_scale, "logit_bias": tower.logit_bias,
                      "probabilities": "sigmoid per label" if tower.sigmoid else "softmax over the labels"},
        **run_record(spec, prepared, list_file, entries, pred, fusion=fusion_for(model.model)[1], precision="fp32",
                     processes=1),
        **summary,
    }


def load_zero_shot(backbone: str, weights: str | None, labels: Sequence[str], templates: Sequence[str] = (),
                   *, device: str = "auto", text_cache: Path | None = None) -> ZeroShotModel:
    """`build_zero_shot` on `device` ("auto": CUDA where there is one), templates defaulting to
    `a video of {}.`; `text_cache`: where the label set's text embeddings are kept (OUT.text.safetensors)."""
    from stadapt.runtime.device import resolve_device

    return build_zero_shot(backbone, weights, labels, templates,
                           device=torch.device(resolve_device(device)), text_cache=text_cache)
