"""The public Python API: load a saved model for inference, with everything needed to feed it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stadapt.checkpoints.format import Contract, InputSpec, load_trainable, read_checkpoint
from stadapt.errors import CheckpointError, StadaptError, WeightsError
from stadapt.model.classifier import BuiltModel, ModelConfig, VideoClassifier, build_model, check_weights_fingerprint
from stadapt.vocabulary import PRECISIONS, weights_is_path


def inference_precision(name: str, recipe: dict[str, Any] | None, device: torch.device) -> str:
    """The precision to run a model in: `name`, or for "auto" the run's precision on this device: float32
    on the CPU, on CUDA the recipe's `train.precision` (its own "auto": bf16 where the GPU has it, else fp16)."""
    if name not in PRECISIONS:
        raise StadaptError(f"unknown precision {name!r}", f"choose one of: {', '.join(PRECISIONS)}")
    if name == "fp16" and device.type != "cuda":
        raise StadaptError(f"--precision fp16 needs a CUDA device, this runs on {device}", "use bf16 or fp32")
    if name != "auto":
        return name
    if device.type != "cuda":
        return "fp32"
    recorded = str(((recipe or {}).get("train") or {}).get("precision", "auto"))
    if recorded in PRECISIONS and recorded != "auto":
        return recorded
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@dataclass
class LoadedModel:
    """A model read from a checkpoint, with what it takes to feed it and name its outputs.

    `model` (a VideoClassifier in eval mode), `input_spec` (frames, sampling, stride, test views, size,
    normalisation: pass it to `stadapt.data.video_views`), `classes` (one name per output), `meta` (the
    checkpoint's stadapt.json in the current format: provenance, recipe, step), `path` and `precision`
    ("fp32", or "bf16"/"fp16": autocast around every call). Calling it runs the model: `loaded(clips)`.
    """

    model: VideoClassifier
    input_spec: InputSpec
    classes: list[str]
    meta: dict[str, Any] = field(repr=False)
    path: Path
    precision: str = "fp32"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of `precision` on the model's device (none for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        """Logits of normalised clips (B, 3, T, S, S), in `precision` (the output dtype may be 16-bit)."""
        with self.autocast():
            return self.model(clips)


def load_model(
    path: str | Path,
    *,
    backbone_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> LoadedModel:
    """A LoadedModel (the VideoClassifier in eval mode, its InputSpec, classes and metadata) from a
    stadapt checkpoint directory, read once.

    The backbone weights come from where the checkpoint recorded them, or from `backbone_weights`;
    either way their fingerprint must match the one recorded. A run trained without pretrained weights
    (`backbone.weights: null`) records the seed its random backbone was built with: that backbone is
    rebuilt and checked against the same fingerprint. `precision` "bf16" or "fp16" runs the model under
    autocast and, on CUDA and with the backbone frozen, keeps the backbone in that dtype, as training does;
    "auto" is the run's precision on `device` (see `inference_precision`).
    """
    from stadapt.checkpoints.hub import checkpoint_dir

    path = checkpoint_dir(path)  # an hf-hub: id names its directory in the hub cache
    torch_device = torch.device(device)
    meta, tensors = read_checkpoint(path)
    contract = Contract.from_meta(meta, path)
    precision = inference_precision(precision, contract.recipe, torch_device)
    built = _rebuild(contract, backbone_weights, path)
    load_trainable(built.model, tensors, str(path))
    model = built.model.to(torch_device).eval()
    if precision != "fp32" and torch_device.type == "cuda" and not model.backbone_trains:
        model.store_backbone_as(torch.bfloat16 if precision == "bf16" else torch.float16)
    return LoadedModel(model=model, input_spec=contract.input, classes=contract.classes, meta=contract.meta,
                       path=Path(path), precision=precision)


def _rebuild(contract: Contract, backbone_weights: str | Path | None, path: str | Path) -> BuiltModel:
    """The model of the checkpoint's config with its backbone weights (checked against the fingerprint)."""
    config, recorded = contract.model, contract.backbone_weights
    if backbone_weights is None and recorded.get("random_init"):
        return _rebuild_random_backbone(config, recorded, path)
    source = backbone_weights if backbone_weights is not None else recorded.get("source")
    if source is None:
        raise WeightsError(
            f"{path} records neither a backbone weights file nor the seed of its randomly initialised backbone "
            "(a checkpoint of a random-init run written before stadapt recorded the seed)",
            "pass the backbone's weights file with backbone_weights=... (CLI: --backbone-weights), "
            "or retrain the run with this stadapt version",
        )
    if backbone_weights is None and weights_is_path(source) and not Path(str(source)).exists():
        raise WeightsError(
            f"the backbone weights {source} that {path} was made with are not there",
            "pass their new location with backbone_weights=... (CLI: --backbone-weights)",
        )
    built = build_model(config, weights=source)
    check_weights_fingerprint(built.model, recorded.get("fingerprint"), str(source))
    return built


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
