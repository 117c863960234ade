"""Merging a tuning method into the backbone: the model that remains once a method's linear modules are folded
into the backbone's weights (ZeroI2V's linear adapters, PEFT's LoRA and DoRA).

The method folds its modules into the backbone in place (`Tuner.merge`) and names the merged settings; the
merged model is the same backbone with what the merged settings attach (what does not fold, e.g. ZeroI2V's
temporal embedding) and the same head, those tensors carried over by key. What a checkpoint of it holds is then
exactly the backbone's parameters, those unfolded modules and the head.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from stadapt.errors import StadaptError
from stadapt.model.classifier import ModelConfig, VideoClassifier

MERGE_TOLERANCE = 1e-4  # max |logit difference| a merge may introduce in fp32


def merge_model(model: VideoClassifier, config: ModelConfig) -> tuple[VideoClassifier, ModelConfig]:
    """The merged model and its config. `model` is consumed: its backbone is changed in place and becomes the
    merged model's. Runs in fp32 on the model's device; the result is in eval mode."""
    tuner = config.tuner
    if not tuner.merges:
        raise StadaptError(f"tuning={config.tuning} does not merge into the backbone",
                           "`stadapt methods` lists the methods that merge")
    model = model.float().eval()
    carried = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    with torch.no_grad():
        settings = tuner.merge(model.backbone, model.adapters, config.adapter)
    merged_config = replace(config, adapter=settings)
    merged = VideoClassifier(model.backbone, config.num_classes, config.num_frames, settings, config.dropout,
                             tuning=config.tuning, backbone_name=config.backbone)
    own = merged.state_dict()
    unknown = sorted(k for k in own if not k.startswith("backbone.") and k not in carried)
    if unknown:
        raise StadaptError(f"the merged tuning={config.tuning} model has tensors the model before lacks: "
                           f"{', '.join(unknown[:3])}", "the method's merge settings attach new modules")
    merged.load_state_dict({k: v for k, v in carried.items() if k in own}, strict=False)
    return merged.to(next(model.parameters()).device).eval(), merged_config

