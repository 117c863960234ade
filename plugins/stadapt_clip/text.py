"""The clip plugin's text tower: open_clip's own model (CLIP, SigLIP, any open_clip model with a text tower)
built by `open_clip.create_model` from its configuration, with the weights of the image tower's source.

The image tower stays the plugin's FrameBackbone, without its projection; the TextTower carries that
projection (`visual.proj`, or a timm tower's head), the text encoder (`encode_text`), open_clip's tokenizer
and the logit scale and bias. The model's vision trunk is dropped once the projection is taken from it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from stadapt.backbones.base import ForeignModule
from stadapt.backbones.text import NoTextTowerError, TextTower
from stadapt.errors import WeightsError, first_line, preview
from stadapt.vocabulary import weights_is_path

if TYPE_CHECKING:
    from stadapt_clip.plugin import ClipPlugin

# what OpenAI's TorchScript archives hold besides the weights (open_clip drops them too)
_OPENAI_META = ("input_resolution", "context_length", "vocab_size")
TINY_CONFIG = Path(__file__).resolve().parent / "weights" / "stadapt-clip-tiny.json"


class _MatMul(nn.Module):
    """x @ proj: open_clip VisionTransformer's image-text projection, holding the model's own parameter."""

    def __init__(self, proj: nn.Parameter) -> None:
        super().__init__()
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.proj


class _EncodeText(nn.Module):
    """open_clip's `encode_text` of a whole model (its vision trunk removed), unnormalised."""

    def __init__(self, model: ForeignModule) -> None:
        super().__init__()
        self.model: ForeignModule = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens, normalize=False)


def build_text_tower(plugin: ClipPlugin, variant: str, weights: str | Path | None, options: dict[str, Any],
                     *, curated: bool) -> TextTower:
    """The TextTower of clip:`variant`, from `weights` (a tag or a full open_clip state dict file; None:
    random), with the image tower's build `options` (activation, image size)."""
    import open_clip

    name = _open_clip_identifier(variant)
    config = _model_config(variant, name)
    if config is None or not config.get("text_cfg"):
        raise NoTextTowerError(f"clip:{variant} has no text tower in its open_clip configuration",
                               "pick an open_clip model with a text tower (CLIP, SigLIP), e.g. clip:ViT-B-16")
    tokenizer = _tokenizer(name, variant)  # first: a vocabulary that is a download fails before any build
    quick = options.get("quick_gelu", True if curated else None)
    kwargs: dict[str, Any] = {} if quick is None else {"quick_gelu": bool(quick)}
    if options.get("image_size"):
        kwargs["force_image_size"] = int(options["image_size"])
    with quiet_open_clip():  # "No pretrained weights loaded ... initialized randomly": ours load next
        model = open_clip.create_model(name, pretrained=None, load_weights=False, **kwargs)
    source = None
    if weights is not None:
        path = Path(weights) if weights_is_path(weights) else Path(plugin.resolve_pretrained(variant, str(weights)))
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist", "check the path")
        _load_whole(model, path, variant)
        source = str(weights)
    projection = _image_projection(model.visual)
    model.visual = nn.Identity()  # encode_text never reads it; the image tower is the FrameBackbone
    bias = getattr(model, "logit_bias", None)
    return TextTower(tokenizer=tokenizer, text_encoder=_EncodeText(model).eval(),
                     image_projection=projection.eval(), logit_scale=float(model.logit_scale.detach().exp()),
                     logit_bias=None if bias is None else float(bias.detach()), sigmoid=bias is not None,
                     source=source)


@contextmanager
def quiet_open_clip() -> Iterator[None]:
    """open_clip's warnings through the root logger silenced while it builds (they would reach stderr)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _open_clip_identifier(variant: str) -> str:
    """What open_clip's create_model / get_tokenizer take: the model name, or for an `hf-hub:` variant its
    cached configuration's folder (`local-dir:`), read through the plugin's offline-aware hub cache."""
    from stadapt_clip.models import CONFIG_FILE, hub_repo
    from stadapt_clip.plugin import _open_clip_name

    if variant == "tiny":
        return register_tiny()
    repo = hub_repo(variant)
    if repo is None:
        return _open_clip_name(variant)
    from stadapt.backbones.hub import hf_cached_file

    return f"local-dir:{hf_cached_file(repo, CONFIG_FILE, what='configuration').parent}"


def register_tiny() -> str:
    """Add clip:tiny's image-text configuration (weights/stadapt-clip-tiny.json) to open_clip's registry, once;
    the name open_clip knows it by."""
    import open_clip

    if TINY_CONFIG.stem not in open_clip.list_models():
        open_clip.add_model_config(TINY_CONFIG)
    return TINY_CONFIG.stem


def _tokenizer(name: str, variant: str) -> Any:
    """open_clip's tokenizer of the model; a vocabulary it cannot fetch (no network, no cache) in one line."""
    import open_clip

    try:
        return open_clip.get_tokenizer(name)
    except Exception as exc:  # hub, fsspec and sentencepiece raise various errors
        raise WeightsError(f"open_clip could not load clip:{variant}'s tokenizer ({first_line(exc)})",
                           "its vocabulary is a download: run once where there is a network, or copy the Hugging "
                           "Face cache (HF_HUB_CACHE) here") from exc


def _model_config(variant: str, name: str) -> dict[str, Any] | None:
    """open_clip's model configuration of `name` (an `hf-hub:` variant's from the cached file)."""
    import json

    import open_clip

    if name.startswith("local-dir:"):
        text = (Path(name[len("local-dir:"):]) / "open_clip_config.json").read_text(encoding="utf-8")
        return dict(json.loads(text).get("model_cfg") or {})
    return open_clip.get_model_config(name)


def _image_projection(visual: nn.Module) -> nn.Module:
    """What maps the image tower's pooled feature into the joint space: `visual.proj` (open_clip's ViT),
    or a timm tower's classifier head and open_clip's head after it."""
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:
        return nn.Sequential(getattr(trunk, "head", nn.Identity()), getattr(visual, "head", nn.Identity()))
    proj = getattr(visual, "proj", None)
    return nn.Identity() if proj is None else _MatMul(proj)


def _load_whole(model: nn.Module, path: Path, variant: str) -> None:
    """Both towers of a full open_clip (or OpenAI) state dict into `model`: open_clip's own loader (its
    conversions of third-party layouts and resampling of position embeddings; safetensors or
    `torch.load(weights_only=True)`), OpenAI's TorchScript archives read without running their code."""
    from open_clip import load_checkpoint

    from stadapt.backbones.weights import is_torchscript_archive, read_state_dict

    what = f"weights file {path}"
    try:
        if is_torchscript_archive(path):
            state = {k: v for k, v in read_state_dict(path).items() if k not in _OPENAI_META}
            result = model.load_state_dict(state, strict=False)
        else:
            result = load_checkpoint(model, str(path), strict=False)
    except WeightsError:
        raise
    except Exception as exc:  # shapes of another model, damaged files: torch and open_clip raise various errors
        raise WeightsError(f"{what} does not fit clip:{variant}'s image and text towers ({first_line(exc)})",
                           "pass the full open_clip state dict of this model, or a pretrained tag") from exc
    missing = list(getattr(result, "missing_keys", []))
    if missing:
        text_only = [k for k in missing if not k.startswith("visual.")]
        raise WeightsError(
            f"{what} lacks {len(missing)} tensors of clip:{variant}'s open_clip model, e.g. "
            f"{preview(text_only or missing, 3)}" + (": it holds no text tower" if text_only else ""),
            "zero-shot needs a full open_clip state dict (visual.* and the text tower's keys), or a pretrained tag")
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise WeightsError(f"{what} has {len(unexpected)} tensors clip:{variant} does not, e.g. "
                           f"{preview(unexpected, 3)}", "pick the variant the file belongs to")
