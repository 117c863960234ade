"""The `clip` backbone plugin: the curated variants, any open_clip ViT model by name, building, weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stadapt.backbones.plugin import BackbonePlugin, VariantInfo
from stadapt.errors import UnknownBackboneError, WeightsError
from stadapt_clip.models import CLIP_MEAN, CLIP_STD, HUB_TAG, WEIGHT_FILES, OpenClipModel, hub_repo

if TYPE_CHECKING:
    import torch

    from stadapt.backbones.base import FrameBackbone
    from stadapt.backbones.text import TextTower


@dataclass(frozen=True)
class _Arch:
    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    output_dim: int
    description: str
    aliases: tuple[str, ...] = ()
    open_clip_name: str | None = None  # the name open_clip's pretrained registry knows


_ARCHS: dict[str, _Arch] = {
    "ViT-B-16": _Arch(224, 16, 768, 12, 12, 512, "CLIP ViT-B/16, 224 px (the paper's main backbone)",
                      ("ViT-B/16",), "ViT-B-16"),
    "ViT-L-14": _Arch(224, 14, 1024, 24, 16, 768, "CLIP ViT-L/14, 224 px", ("ViT-L/14",), "ViT-L-14"),
    "ViT-L-14-336": _Arch(336, 14, 1024, 24, 16, 768, "CLIP ViT-L/14 at 336 px",
                          ("ViT-L/14@336px", "ViT-L-14@336px"), "ViT-L-14-336"),
    "tiny": _Arch(32, 8, 128, 4, 4, 64, "a tiny CLIP-architecture ViT (32 px, patch 8, width 128, 4 blocks) "
                  "for tests and the CPU quickstart",
                  open_clip_name="stadapt-clip-tiny"),
}


# clip:tiny pretrained as an image model on single synthetic frames, then a text tower locked-image tuned to it
# (python -m stadapt_clip.pretrain); open_clip knows its configuration as weights/stadapt-clip-tiny.json
TINY_SYNTHETIC = "synthetic"
# the curated OpenAI-architecture variants, whose names do not say which activation a weights file used
_ASK_ACTIVATION = frozenset({"ViT-B-16", "ViT-L-14", "ViT-L-14-336"})
FAMILY = "CLIP (OpenAI / OpenCLIP ViT)"


class ClipPlugin(BackbonePlugin):
    """OpenAI CLIP / OpenCLIP vision towers: the curated variants, and any open_clip model whose vision
    tower is a ViT (open_clip's own, or a timm ViT / EVA tower), by open_clip name or `hf-hub:ORG/NAME`.

    Option `quick_gelu`: the activation. Never guessed: OpenAI TorchScript archives imply QuickGELU, a
    pretrained tag takes its configuration's, an open_clip name says it (`-quickgelu` names are QuickGELU,
    others GELU); a plain state-dict file for a curated variant needs the user to say it. Random weights
    of a curated variant use QuickGELU (OpenAI's, the reference's).
    """

    name = "clip"
    test_variant = "tiny"
    open_ended = True

    def variants(self) -> Mapping[str, VariantInfo]:
        return {
            name: VariantInfo(
                name=name,
                description=arch.description,
                image_size=arch.image_size,
                mean=CLIP_MEAN,
                std=CLIP_STD,
                interpolation="bicubic",
                aliases=arch.aliases,
                family=FAMILY,
                width=arch.width,
                blocks=arch.layers,
                patch_size=arch.patch_size,
                prefix_tokens=1,
                text_tower=True,  # every curated variant is an image-text model (clip:tiny's synthetic weights too)
            )
            for name, arch in _ARCHS.items()
        }

    def resolve_variant(self, name: str) -> VariantInfo | None:
        from stadapt_clip.models import open_clip_model

        model = open_clip_model(name)
        return None if model is None else _variant_info(model)

    def search(self, pattern: str) -> list[str]:
        import fnmatch

        from stadapt_clip.models import adaptable_names

        names = set(super().search(pattern))
        names.update(n for n in adaptable_names() if fnmatch.fnmatch(n.lower(), pattern.lower()))
        return sorted(names)

    def pretrained_tags(self, variant: str) -> tuple[str, ...]:
        if variant == "tiny":
            return (TINY_SYNTHETIC,)
        if hub_repo(variant) is not None:
            return (HUB_TAG,)
        return _pretrained_tags(_open_clip_name(variant))

    def build(self, variant: str, **options: Any) -> FrameBackbone:
        from stadapt_clip.backbone import ClipBackbone, build_open_clip_tower, build_visual

        unknown = set(options) - {"quick_gelu", "image_size"}
        if unknown:
            raise UnknownBackboneError(
                f"clip backbones take no option(s) {', '.join(sorted(unknown))}",
                "the options are quick_gelu, image_size",
            )
        if "quick_gelu" in options and options["quick_gelu"] is None:
            raise _ask_activation(variant)
        image_size = _checked_image_size(variant, options)
        arch = _ARCHS.get(variant)
        if arch is not None:
            visual = build_visual(
                image_size=image_size or arch.image_size,
                patch_size=arch.patch_size,
                width=arch.width,
                layers=arch.layers,
                heads=arch.heads,
                output_dim=arch.output_dim,
                quick_gelu=bool(options.get("quick_gelu", True)),
            )
            return ClipBackbone(visual)
        model = _model(variant)
        vision_cfg = {**model.vision_cfg, **({"image_size": image_size} if image_size else {})}
        visual = build_open_clip_tower(model.embed_dim, vision_cfg,
                                       quick_gelu=bool(options.get("quick_gelu", model.quick_gelu)))
        if model.timm_name:  # a timm ViT / Eva trunk: the timm plugin's decomposition, keys `model.` + timm's
            from stadapt_timm.backbone import frame_backbone

            return frame_backbone(timm_trunk(visual))
        return ClipBackbone(visual)

    def text_tower(self, variant: str, weights: str | Path | None = None, **options: Any) -> TextTower:
        """open_clip's text tower of any model whose configuration has one (CLIP, SigLIP, EVA-CLIP, PE-Core...),
        from the image tower's weights source: a pretrained tag, or a full open_clip state dict file."""
        from stadapt_clip.text import build_text_tower

        return build_text_tower(self, variant, weights, dict(options), curated=variant in _ARCHS)

    def configure(self, info: VariantInfo, options: Mapping[str, Any]) -> VariantInfo:
        """Option `image_size` (open_clip ViT towers): the input size, the position embedding of a weights
        file resampled to its patch grid (`ClipBackbone.fit_state_dict`)."""
        size = _checked_image_size(info.name, options)
        if not size or size == info.image_size:
            return info
        return replace(info, image_size=size, description=f"{info.description}; built for {size} px (image_size)")

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
        """Full CLIP state dicts (OpenAI, OpenCLIP) keep the vision tower under `visual.`; the rest is it.
        A timm tower is the timm plugin's backbone (`model.` + timm's keys): its trunk comes from
        `visual.trunk.` (open_clip's files), `trunk.`, or a timm-format file of the trunk alone."""
        if variant not in _ARCHS and _model(variant).timm_name:
            return _timm_trunk_keys(state_dict)
        if any(k.startswith("visual.") for k in state_dict):
            return {"visual." + k[len("visual."):]: v for k, v in state_dict.items() if k.startswith("visual.")}
        return {"visual." + k: v for k, v in state_dict.items()}

    def ignored_keys(self, variant: str) -> frozenset[str]:
        # CLIP's image-text projection: the video head reads the width-sized feature instead.
        if variant in _ARCHS or not _model(variant).timm_name:
            return frozenset({"visual.proj"})
        return _timm_projection_keys(variant)

    def options_for_weights(self, variant: str, source: str | Path) -> dict[str, Any]:
        """The activation a weights source implies; {"quick_gelu": None} where the user must say it."""
        from stadapt.backbones.weights import is_torchscript_archive

        text = str(source)
        if Path(text).is_file():
            if is_torchscript_archive(text):
                return {"quick_gelu": True}  # OpenAI's archives: QuickGELU, the reference's setting
            return {"quick_gelu": None} if variant in _ASK_ACTIVATION else {}  # else the name decides
        if variant == "tiny":
            return {"quick_gelu": True}  # the shipped `synthetic` weights were trained with QuickGELU
        if hub_repo(variant) is not None:
            return {}  # the repository's own configuration decides
        from stadapt_clip.models import tag_quick_gelu

        quick = tag_quick_gelu(_open_clip_name(variant), text)
        return {} if quick is None else {"quick_gelu": quick}

    def resolve_pretrained(self, variant: str, tag: str) -> Path:
        from stadapt.backbones.hub import hf_cached_file

        if variant == "tiny" and tag == TINY_SYNTHETIC:  # shipped with the plugin: no download
            return Path(__file__).with_name("weights") / "tiny_synthetic.safetensors"
        repo = hub_repo(variant)
        if repo is not None:
            if tag != HUB_TAG:
                raise self.unknown_tag_error(variant, tag)
            return hf_cached_file(repo, WEIGHT_FILES)
        from open_clip.pretrained import get_pretrained_cfg

        cfg = get_pretrained_cfg(_open_clip_name(variant), tag) if variant != "tiny" else {}
        if not cfg:
            raise self.unknown_tag_error(variant, tag)
        if cfg.get("hf_hub"):
            repo, filename = cfg["hf_hub"].rstrip("/"), ""
            if not cfg["hf_hub"].endswith("/"):
                repo, filename = cfg["hf_hub"].rsplit("/", 1)
            return hf_cached_file(repo, (filename,) if filename else WEIGHT_FILES)
        return _download_url(variant, tag, cfg.get("url", ""))


def _ask_activation(variant: str) -> WeightsError:
    return WeightsError(
        f"a plain state-dict file does not say which activation clip:{variant} was trained with "
        "(OpenAI and MetaCLIP/DFN weights: QuickGELU; most OpenCLIP weights: GELU)",
        "say it: backbone.options quick_gelu: true (QuickGELU) or quick_gelu: false (GELU), or name the model "
        f"clip:{variant}-quickgelu (QuickGELU) instead",
    )


def _checked_image_size(variant: str, options: Mapping[str, Any]) -> int | None:
    """The `image_size` option, None when unset; refused for a timm tower (open_clip builds it at the timm
    model's own size) and where it is not a positive multiple of the patch size."""
    size = options.get("image_size")
    if size is None:
        return None
    arch = _ARCHS.get(variant)
    if arch is None and _model(variant).timm_name:
        raise UnknownBackboneError(f"clip:{variant} has a timm tower {_model(variant).timm_name}, whose input size "
                                   "is the timm model's: the option image_size applies to open_clip ViT towers",
                                   "remove backbone.options image_size, or use the timm plugin's img_size")
    patch = arch.patch_size if arch is not None else _tower_shape(_model(variant))[2]
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % patch:
        raise UnknownBackboneError(f"clip:{variant}: image_size {size!r} is not a multiple of its patch size {patch}",
                                   f"set backbone.options image_size to a multiple of {patch} (e.g. {patch * 14})")
    return size


def _open_clip_name(variant: str) -> str:
    arch = _ARCHS.get(variant)
    return variant if arch is None else (arch.open_clip_name or variant)


def _model(variant: str) -> OpenClipModel:
    from stadapt_clip.models import open_clip_model

    model = open_clip_model(variant)
    if model is None:
        raise UnknownBackboneError(f"open_clip has no model '{variant}'",
                                   "`stadapt backbones --search clip` lists them")
    return model


def _variant_info(model: OpenClipModel) -> VariantInfo:
    """The VariantInfo of an open_clip model: its size and preprocessing from open_clip's configuration."""
    width, blocks, patch, prefix = _tower_shape(model)
    tower = f"timm {model.timm_name}" if model.timm_name else "open_clip ViT"
    activation = "" if model.timm_name else (", QuickGELU" if model.quick_gelu else ", GELU")
    return VariantInfo(
        name=model.name,
        description=f"open_clip {model.name} ({tower}{activation}, {model.image_size} px; mean/std from "
                    f"{model.preprocess_source})",
        image_size=model.image_size,
        mean=model.mean,
        std=model.std,
        interpolation=model.interpolation,
        family="open_clip + timm tower" if model.timm_name else FAMILY,
        width=width,
        blocks=blocks,
        patch_size=patch,
        prefix_tokens=prefix,
        text_tower=model.text_tower,
    )


def _tower_shape(model: OpenClipModel) -> tuple[int, int, int, int]:
    """(width, blocks, patch size, prefix tokens): from the config, or a timm tower built on `meta`."""
    cfg = model.vision_cfg
    if not model.timm_name:
        return int(cfg.get("width", 768)), int(cfg.get("layers", 12)), int(cfg.get("patch_size", 16)), 1
    trunk = _meta_tower(model.name).trunk
    return (int(trunk.embed_dim), len(trunk.blocks), int(trunk.patch_embed.patch_size[0]),
            int(trunk.num_prefix_tokens))


def timm_trunk(visual: Any) -> Any:
    """The timm trunk of open_clip's TimmModel tower without what projects into the text space."""
    return timm_trunk_without_head(visual.trunk)


def timm_trunk_without_head(trunk: Any) -> Any:
    """`trunk` with its classifier replaced by nothing (the video model has its own head)."""
    from torch import nn

    if not isinstance(getattr(trunk, "head", nn.Identity()), nn.Identity):
        trunk.head = nn.Identity()
    return trunk


def _meta_tower(variant: str) -> Any:
    """The open_clip timm tower of `variant` with shapes only (PyTorch's meta device): instant at any size."""
    import torch

    from stadapt_clip.backbone import build_open_clip_tower

    model = _model(variant)
    with torch.device("meta"):
        return build_open_clip_tower(model.embed_dim, dict(model.vision_cfg), quick_gelu=model.quick_gelu)


def _timm_projection_keys(variant: str) -> frozenset[str]:
    """Keys of a timm tower's file that project into the text space: the trunk's own classifier (open_clip's
    `visual.head` projection never reaches the backbone's keys)."""
    trunk = _meta_tower(variant).trunk
    before = set(trunk.state_dict())
    return frozenset("model." + k for k in before - set(timm_trunk_without_head(trunk).state_dict()))


def _timm_trunk_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A file's timm trunk under the timm plugin's keys (`model.` + timm's), whatever it was saved under."""
    for prefix in ("visual.trunk.", "trunk.", "model."):
        if any(k.startswith(prefix) for k in state_dict):
            return {"model." + k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return {"model." + k: v for k, v in state_dict.items()}


def _download_url(variant: str, tag: str, url: str) -> Path:
    """open_clip's URL download (weights not on the hub); without a network, an error naming the URL."""
    if not url:
        raise WeightsError(f"open_clip has no download for clip:{variant} '{tag}'", "pass a local weights file")
    from open_clip.pretrained import download_pretrained_from_url

    try:
        return Path(download_pretrained_from_url(url))
    except Exception as exc:  # no network, HTTP errors
        raise WeightsError(
            f"could not download clip:{variant} weights '{tag}' ({type(exc).__name__})",
            f"fetch {url} on a machine with a network and pass the file's local path as the weights",
        ) from exc


def _pretrained_tags(open_clip_name: str) -> tuple[str, ...]:
    try:
        from open_clip.pretrained import list_pretrained_tags_by_model
    except ImportError:
        return ()
    return tuple(list_pretrained_tags_by_model(open_clip_name))
