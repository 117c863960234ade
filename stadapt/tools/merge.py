"""`stadapt merge`: a checkpoint whose method folds into the backbone (ZeroI2V's linear adapters, LoRA, DoRA)
written as the merged model, which costs nothing at inference beyond the bare backbone.

The merged checkpoint holds the merged backbone beside it (`backbone.safetensors`, in the plugin's native
layout, recorded by its name relative to the folder, as an imported AIM checkpoint does), the tensors that do
not fold (e.g. ZeroI2V's temporal embedding) and the head; its model config is the method's with the merged
settings (what `Tuner.merge` returns), so every command loads it as it loads any checkpoint. Before the folder
is kept, it is loaded back and its logits compared with the original's on a probe clip.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stadapt.backbones.weights import fingerprint
from stadapt.checkpoints.files import BACKBONE_FILE, TENSORS_FILE, refuse_unless_replaceable
from stadapt.checkpoints.format import model_meta, write_checkpoint
from stadapt.checkpoints.load import LoadedModel, build_loaded, load_checkpoint, open_checkpoint
from stadapt.errors import CheckpointError, StadaptError
from stadapt.fileio import make_temp_dir
from stadapt.model.classifier import BuiltModel
from stadapt.model.merge import MERGE_TOLERANCE, merge_model


@dataclass(frozen=True)
class MergeResult:
    """What `merge_checkpoint` wrote and checked."""

    out: Path
    tuning: str
    parameters_before: int
    parameters_after: int
    max_abs_diff: float  # the reloaded merged model vs the original, on the probe clip


def merge_checkpoint(checkpoint: str | Path, *, out: str | Path, overwrite: bool = False,
                     backbone_weights: str | Path | None = None) -> MergeResult:
    """Merge the method of `checkpoint` (a checkpoint directory) into its backbone and write the merged
    checkpoint to `out`, refused when the method does not merge or the logits move by more than 1e-4."""
    out, source = Path(out), Path(checkpoint)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists", "choose another --out or pass --overwrite to replace it")
    refuse_unless_replaceable(out)
    opened = open_checkpoint(source)
    config = opened.contract.model
    if not config.tuner.merges:
        raise StadaptError(f"{source} was trained with tuning={config.tuning}, which does not merge into the "
                           "backbone", "`stadapt methods` lists the methods that merge")
    model = build_loaded(opened, backbone_weights=backbone_weights)  # fp32, CPU, eval
    clip = probe_clip(model)
    before_count = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        before = model(clip)
    merged, merged_config = merge_model(model, config)
    tower = _tower_bytes(merged.backbone)
    built = BuiltModel(merged, merged_config, model_variant(opened.contract.meta), _plugin(config.backbone),
                       {"source": BACKBONE_FILE, "fingerprint": fingerprint(merged.backbone)}, None)
    meta = model_meta(built, opened.contract.classes, input_spec=opened.contract.input,
                      merged_from=_provenance(source, opened.contract.meta))
    tensors = merged.trainable_state_dict()
    diff = _check_staged(out, tensors, meta, tower, clip, before)
    written = write_checkpoint(out, tensors, meta, overwrite=overwrite, extra_files={BACKBONE_FILE: tower})
    return MergeResult(written, config.tuning, before_count, sum(p.numel() for p in merged.parameters()), diff)

def probe_clip(model: LoadedModel) -> torch.Tensor:
    """Two seeded random clips of the model's input size: what the merge is checked on."""
    spec = model.input_spec
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, spec.frames, spec.image_size, spec.image_size, generator=generator)


def model_variant(meta: dict[str, Any]) -> Any:
    from stadapt.checkpoints.format import checkpoint_variant

    return checkpoint_variant(meta)


def _plugin(backbone: str) -> Any:
    from stadapt.backbones.registry import parse_backbone

    return parse_backbone(backbone)[0]


def _tower_bytes(backbone: torch.nn.Module) -> bytes:
    """The merged backbone in its plugin's native file layout, as safetensors bytes."""
    from safetensors.torch import save

    native = backbone.native_state_dict()  # type: ignore[operator]
    return save({k: v.detach().to(torch.float32).contiguous() for k, v in native.items()}, metadata={"format": "pt"})


def _provenance(source: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What the merged checkpoint records of its origin: no local path (a model card may publish it), the
    digest of the original's tensors, its method and step."""
    tensors = source / TENSORS_FILE
    digest = hashlib.sha256(tensors.read_bytes()).hexdigest() if tensors.is_file() else None
    return {"checkpoint": source.resolve().name, "tensors_sha256": digest, "tuning": meta["model"].get("tuning"),
            "settings": meta["model"].get("adapter"), "step": meta.get("step")}


def _check_staged(out: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], tower: bytes,
                  clip: torch.Tensor, before: torch.Tensor) -> float:
    """Write the merged checkpoint to a hidden folder beside `out`, load it as every command will and compare
    its logits with the original's: a merge that moved them is refused before anything reaches `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(out.parent, out.name)
    try:
        staged = write_checkpoint(staging / "merged", tensors, meta, extra_files={BACKBONE_FILE: tower})
        with torch.no_grad():
            diff = (load_checkpoint(staged)(clip) - before).abs().max().item()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not diff <= MERGE_TOLERANCE:
        raise StadaptError(f"the merged model's logits differ from the original's by {diff:.2e} (> "
                           f"{MERGE_TOLERANCE:g}); nothing was written", "report it: the method's merge is wrong")
    return diff
