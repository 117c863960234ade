"""The public Python API: load a saved model for inference."""

from __future__ import annotations

from pathlib import Path

import torch

from stadapt.checkpoint import load_trainable, read_checkpoint
from stadapt.errors import CheckpointError, WeightsError
from stadapt.model import BuiltModel, ModelConfig, VideoClassifier, build_model, check_weights_fingerprint


def load_model(
    path: str | Path,
    *,
    backbone_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> VideoClassifier:
    """A VideoClassifier in eval mode from a stadapt checkpoint directory.

    The backbone weights come from where the checkpoint recorded them, or from `backbone_weights`;
    either way their fingerprint must match the one recorded. A run trained without pretrained weights
    (`backbone.weights: null`) records the seed its random backbone was built with: that backbone is
    rebuilt and checked against the same fingerprint. The model's class names are in `model.classes`.
    """
    meta, tensors = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the model description in stadapt.json is invalid ({exc})") from exc
    recorded = meta.get("backbone_weights") or {}
    if backbone_weights is None and recorded.get("random_init"):
        built = _rebuild_random_backbone(config, recorded, path)
    else:
        source = backbone_weights if backbone_weights is not None else recorded.get("source")
        if source is None:
            raise WeightsError(
                f"{path} records neither a backbone weights file nor the seed of its randomly initialised backbone "
                "(a checkpoint of a random-init run written before stadapt recorded the seed)",
                "pass the backbone's weights file with backbone_weights=... (CLI: --backbone-weights), "
                "or retrain the run with this stadapt version",
            )
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


def _rebuild_random_backbone(config: ModelConfig, recorded: dict, path: str | Path) -> BuiltModel:
    """The model of a run trained on a backbone without pretrained weights: the plugin's random init under
    the recorded seed, verified against the recorded fingerprint. The caller's RNG state is left alone."""
    seed = recorded.get("seed")
    if not isinstance(seed, int):
        raise CheckpointError(f"{path} records a randomly initialised backbone but no integer seed ({seed!r})",
                              "the checkpoint is damaged: retrain the run")
    with torch.random.fork_rng(devices=[]):
        built = build_model(config, seed=seed)
    found = built.weights["fingerprint"] if built.weights else None
    expected = recorded.get("fingerprint")
    if expected is not None and found != expected:
        raise WeightsError(
            f"the random backbone rebuilt with seed {seed} differs from the one {path} was trained on "
            f"(fingerprint {str(found)[:19]}... != {str(expected)[:19]}...): this torch or plugin version "
            "initialises it differently",
            "load it with the torch and plugin versions it was trained with",
        )
    return built
