"""A checkpoint read back as a model: the VideoClassifier of its config with its trainable tensors and
its backbone weights (checked against the recorded fingerprint, or a random backbone rebuilt from the
recorded seed), in eval mode, carrying what feeds it and names its outputs (`LoadedModel`).

The one loader below the commands: eval, predict, extract-features, visualize, export and
`stadapt.load_model` all read a checkpoint through it, so a model is rebuilt the same way everywhere.
It takes a precision already chosen ("fp32", "bf16" or "fp16"): "auto", which depends on the run's recipe
and the device, is chosen above this layer (stadapt.runtime.precision.inference_precision), after
`open_checkpoint` has read the recipe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stadapt.checkpoints.format import Contract, load_trainable, read_checkpoint, stored_class_embeddings
from stadapt.data.input_spec import InputSpec
from stadapt.errors import CheckpointError, WeightsError
from stadapt.model.classifier import BuiltModel, ModelConfig, VideoClassifier, build_model, check_weights_fingerprint
from stadapt.model.precision import backbone_storage_dtype, precision_named
from stadapt.vocabulary import weights_is_path


@dataclass(frozen=True)
class LoadedFrom:
    """Where a LoadedModel was read from and how it runs: `path`, the checkpoint directory (for an
    `hf-hub:` id, its snapshot in the Hugging Face cache), and `precision`, "fp32", or "bf16"/"fp16": the
    autocast its forward runs under."""

    path: Path
    precision: str = "fp32"


class LoadedModel(VideoClassifier):
    """A VideoClassifier read from a checkpoint: the `nn.Module` itself (`.eval()`, `.to()`,
    `.parameters()`, `state_dict()` as on any module), carrying its configuration as typed attributes.

    `input_spec` (InputSpec: frames, sampling, stride, test views, size, normalisation; `transform()` turns
    a video file into the input views it describes), `classes` (one name per output), `config` (the
    ModelConfig it was built from), `meta` (the checkpoint's stadapt.json in the current format:
    provenance, recipe, step) and `loaded_from` (LoadedFrom: path and precision). Calling it runs the
    model under autocast of that precision: `model(clips)` are the logits every command computes.
    """

    input_spec: InputSpec
    classes: list[str]
    config: ModelConfig
    meta: dict[str, Any]
    loaded_from: LoadedFrom

    @classmethod
    def adopt(cls, model: VideoClassifier, contract: Contract, loaded_from: LoadedFrom) -> LoadedModel:
        """`model` itself, turned into a LoadedModel that carries `contract` (no copy: the class of the
        instance is swapped for this subclass, as torch.nn.utils.parametrize does)."""
        model.__class__ = cls
        assert isinstance(model, cls)
        model.input_spec, model.classes, model.config = contract.input, list(contract.classes), contract.model
        model.meta, model.loaded_from = contract.meta, loaded_from
        return model

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (where its input goes)."""
        return next(self.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of `loaded_from.precision` on the model's device (none for fp32): what
        `forward` runs under, for callers of its other methods (`frame_features`, `forward_features`)."""
        return precision_named(self.loaded_from.precision).autocast(self.device)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Logits of normalised clips (B, 3, T, S, S), in the precision it was loaded in (the output dtype
        may be 16-bit)."""
        if self.loaded_from.precision == "fp32":  # no context at all: what export traces
            return super().forward(video)
        with self.autocast():
            return super().forward(video)

    def transform(self, views: tuple[int, int] | None = None) -> Callable[[str | Path], torch.Tensor]:
        """The model's input transform: a callable from a video file's path to its (V, 3, T, S, S) input
        views on the model's device, made as evaluation makes them (`views`: other test views than
        `input_spec`'s). See stadapt.data.views.video_transform."""
        from stadapt.data.views import video_transform

        return video_transform(self.input_spec, views=views, device=self.device)


@dataclass(frozen=True)
class OpenedCheckpoint:
    """A checkpoint directory read and checked, not yet built: its typed contract (whose recipe decides
    the "auto" precision) and its trainable tensors."""

    path: Path
    contract: Contract
    tensors: dict[str, torch.Tensor] = field(repr=False)


def open_checkpoint(path: str | Path) -> OpenedCheckpoint:
    """Read a checkpoint directory (or an `hf-hub:ORG/NAME[@REV]` id, from the hub cache) once: metadata
    brought to the current format, checksums and the classes against the head checked."""
    from stadapt.checkpoints.hub import checkpoint_dir

    path = checkpoint_dir(path)
    meta, tensors = read_checkpoint(path)
    return OpenedCheckpoint(path=Path(path), contract=Contract.from_meta(meta, path), tensors=tensors)


def build_loaded(opened: OpenedCheckpoint, *, backbone_weights: str | Path | None = None,
                 device: str | torch.device = "cpu", precision: str = "fp32") -> LoadedModel:
    """The LoadedModel of an opened checkpoint on `device`, in eval mode.

    The backbone weights come from where the checkpoint recorded them, or from `backbone_weights`;
    either way their fingerprint must match the one recorded. A run trained without pretrained weights
    (`backbone.weights: null`) records the seed its random backbone was built with: that backbone is
    rebuilt and checked against the same fingerprint. `precision` "bf16" or "fp16" runs the model under
    autocast and, on CUDA and with the backbone frozen, keeps the backbone in that dtype, as training does.
    """
    chosen = precision_named(precision)
    torch_device = torch.device(device)
    built = _rebuild(opened.contract, backbone_weights, opened.path)
    load_trainable(built.model, opened.tensors, str(opened.path))
    model = built.model.to(torch_device).eval()
    dtype = backbone_storage_dtype("auto", model, chosen, torch_device)  # as training keeps it
    if dtype is not None:
        model.store_backbone_as(dtype)
    return LoadedModel.adopt(model, opened.contract, LoadedFrom(path=opened.path, precision=precision))


def build_untrained(opened: OpenedCheckpoint, *, backbone_weights: str | Path | None = None,
                    device: str | torch.device = "cpu") -> VideoClassifier:
    """The model of an opened checkpoint's config on its recorded backbone weights (the fingerprint checked)
    with none of its trained tensors, in eval mode: the image model a method adapted, for comparing with
    it when the method trained backbone parameters (visualize's "before")."""
    return _rebuild(opened.contract, backbone_weights, opened.path).model.to(torch.device(device)).eval()


def load_checkpoint(path: str | Path, *, backbone_weights: str | Path | None = None,
                    device: str | torch.device = "cpu", precision: str = "fp32") -> LoadedModel:
    """`build_loaded(open_checkpoint(path), ...)`: a checkpoint directory (or `hf-hub:` id) as a
    LoadedModel, with `precision` one of fp32, bf16, fp16."""
    return build_loaded(open_checkpoint(path), backbone_weights=backbone_weights, device=device, precision=precision)


def _rebuild(contract: Contract, backbone_weights: str | Path | None, path: str | Path) -> BuiltModel:
    """The model of the checkpoint's config with its backbone weights (checked against the fingerprint)."""
    config, recorded = contract.model, contract.backbone_weights
    if backbone_weights is None and recorded.get("random_init"):
        return _rebuild_random_backbone(config, recorded, path)
    source = backbone_weights if backbone_weights is not None else _recorded_source(recorded.get("source"), path)
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
    kept = stored_class_embeddings(Path(path), contract.meta) if config.head.text else None  # a frozen text head's
    built = build_model(config, weights=source, classes=contract.classes, class_embeddings=kept)
    check_weights_fingerprint(built, recorded.get("fingerprint"), str(source))
    check_text_tower(built, contract.text_tower, str(source))
    return built


def check_text_tower(built: BuiltModel, recorded: dict[str, Any], source: str) -> None:
    """A text head's tower must be the one the run trained with, as the backbone's weights must."""
    expected = recorded.get("fingerprint")
    found = (built.text_tower or {}).get("fingerprint")
    if expected is not None and found != expected:
        raise WeightsError(
            f"the text tower from {source} differs from the one the checkpoint's text head was trained with "
            f"(fingerprint {str(found)[:19]}... != {str(expected)[:19]}...)",
            "pass the original weights file (both towers)",
        )


def _recorded_source(source: Any, path: str | Path) -> Any:
    """A recorded weights source as a file to read: a relative path names a file inside the checkpoint
    directory (an imported AIM checkpoint carries its tower, so the directory loads alone and can move);
    an absolute path and a hub tag stand as written."""
    if source is None or not weights_is_path(source) or Path(str(source)).is_absolute():
        return source
    return str(Path(path) / str(source))


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
