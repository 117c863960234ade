"""The public Python API: load a saved model for inference."""

from __future__ import annotations

from pathlib import Path

import torch

from stadapt.checkpoint import load_trainable, read_checkpoint
from stadapt.errors import CheckpointError, WeightsError
from stadapt.model import ModelConfig, VideoClassifier, build_model, check_weights_fingerprint


def load_model(
    path: str | Path,
    *,
    backbone_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> VideoClassifier:
    """A VideoClassifier in eval mode from a stadapt checkpoint directory.

    The backbone weights come from where the checkpoint recorded them, or from `backbone_weights`;
    either way their fingerprint must match the one recorded. The model's class names are in
    `model.classes`.
    """
    meta, tensors = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the model description in stadapt.json is invalid ({exc})") from exc
    recorded = meta.get("backbone_weights") or {}
    source = backbone_weights if backbone_weights is not None else recorded.get("source")
    if source is None:
        raise WeightsError(f"{path} records no backbone weights file", "pass backbone_weights=... (CLI: --backbone-weights)")
    if backbone_weights is None and not Path(str(source)).exists() and ("/" in str(source) or "\\" in str(source)):
        raise WeightsError(
            f"the backbone weights {source} that {path} was made with are not there",
            "pass their new location with backbone_weights=... (CLI: --backbone-weights)",
        )
    built = build_model(config, weights=source)
    check_weights_fingerprint(built.model, recorded.get("fingerprint"), str(source))
    load_trainable(built.model, tensors, str(path))
    model = built.model.to(device).eval()
    model.classes = list(meta.get("classes") or [])
    return model
