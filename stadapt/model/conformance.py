"""The conformance suite every backbone plugin runs, built-in or third-party alike.

    from stadapt.model.conformance import assert_conformant
    assert_conformant(my_plugin)            # in the plugin's own tests

or `stadapt backbones --check NAME`. It builds the plugin's small test variant and checks what the
core relies on: the declared token layouts, that the branch decomposition reproduces the model's own
forward pass, that adapters start as the identity yet learn and mix time without touching prefix
tokens, that only adapters and head train, that `block_modules` (optional) names each block's
parameters, that weights round-trip with loud errors on bad files, and that the optional hooks tuning
methods need (branch split, attention projections, PEFT targets, attention over any sequence) hold where
the plugin provides them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from stadapt.backbones.base import FrameBackbone
from stadapt.backbones.layout import TokenLayout
from stadapt.backbones.plugin import BackbonePlugin, VariantInfo
from stadapt.backbones.registry import resolve_variant
from stadapt.errors import StadaptError
from stadapt.model.blocks import BlockHooks, run_block, run_blocks
from stadapt.model.hook_conformance import EMBED_CHECKS, HOOK_CHECKS, block_inputs

if TYPE_CHECKING:
    from stadapt.model.adapters import AdapterConfig
    from stadapt.model.classifier import VideoClassifier


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


class _Failed(Exception):
    pass


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise _Failed(message)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    scale = max(1.0, float(b.abs().max()))
    return a.shape == b.shape and float((a - b).abs().max()) <= tol * scale


def _images(info: VariantInfo, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, info.image_size, info.image_size, generator=generator)


def _build(plugin: BackbonePlugin, variant: str, seed: int) -> FrameBackbone:
    torch.manual_seed(seed)
    return plugin.build(variant).eval()


def _run_blocks(backbone: FrameBackbone, x: torch.Tensor, frames: int) -> torch.Tensor:
    """The model's block loop, checking each block's input against its declared layout and that every
    branch is residual (keeps the shape)."""
    layouts = backbone.block_layouts()

    def check_input(index: int, tokens: torch.Tensor) -> torch.Tensor:
        expected = layouts[index].shape(frames)
        _expect(tuple(tokens.shape) == expected,
                f"block {index} input has shape {tuple(tokens.shape)}, its declared layout says {expected}")
        return tokens

    def check_branch(index: int, name: str, tokens: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        _expect(out.shape == tokens.shape, f"a branch of block {index} changed the shape {tuple(tokens.shape)} "
                                           f"-> {tuple(out.shape)}; branches must be residual")
        return out

    return run_blocks(backbone, x, BlockHooks(pre_attn=check_input, observe=check_branch))


T = TypeVar("T")


def _attempt(name: str, fn: Callable[[], tuple[str, T]]) -> tuple[CheckResult, T | None]:
    """Run one check: its result, and the value it hands to later checks (None if it failed). A plugin's
    own bug is reported like a failed check, so that the remaining checks still run."""
    try:
        detail, value = fn()
        return CheckResult(name, True, detail), value
    except (_Failed, StadaptError, NotImplementedError, AssertionError) as exc:
        return CheckResult(name, False, str(exc) or type(exc).__name__), None
    except Exception as exc:  # a plugin bug: report, keep checking
        return CheckResult(name, False, f"{type(exc).__name__}: {exc}"), None


def check_plugin(plugin: BackbonePlugin, variant: str | None = None, *, frames: int = 3) -> list[CheckResult]:
    """Run every check on `variant` (default: the plugin's test variant; any name the plugin accepts, at
    full size with random weights); never raises for a failed check. The checks after "metadata" need its
    variant and those after "build" its backbone, so a failure there ends the run."""
    results: list[CheckResult] = []
    result, info = _attempt("metadata", lambda: _check_metadata(plugin, variant))
    results.append(result)
    if info is None:
        return results
    result, backbone = _attempt("build", lambda: _check_build(plugin, info))
    results.append(result)
    if backbone is None:
        return results
    subject = _Subject(plugin, info, backbone, frames, _images(info, frames, seed=1))
    for name, check in _SUBJECT_CHECKS:
        results.append(_attempt(name, partial(_on_subject, check, subject))[0])
    return results


def _on_subject(check: Callable[[_Subject], str | None], subject: _Subject) -> tuple[str, None]:
    return check(subject) or "", None


def _check_metadata(plugin: BackbonePlugin, variant: str | None) -> tuple[str, VariantInfo]:
    """The plugin's name and variants are well formed, and the variant to check resolves."""
    _expect(isinstance(plugin.name, str) and bool(plugin.name), "the plugin has no name")
    variants = plugin.variants()
    _expect(isinstance(variants, Mapping) and len(variants) > 0, "variants() is empty")
    for key, info in variants.items():
        _expect(isinstance(info, VariantInfo), f"variant {key} is not a VariantInfo")
        _expect(info.name == key, f"variant {key} calls itself {info.name}")
        _expect(info.image_size > 0, f"variant {key} has image size {info.image_size}")
        _expect(len(info.mean) == 3 and len(info.std) == 3 and min(info.std) > 0,
                f"variant {key} needs 3 means and 3 positive stds")
    chosen = variant or plugin.test_variant or next(iter(variants))
    _expect(variant is not None or chosen in variants, f"the test variant {chosen} is not among the variants")
    info = resolve_variant(plugin, chosen)
    _expect(info.image_size > 0 and len(info.mean) == 3 and len(info.std) == 3 and min(info.std) > 0,
            f"{chosen} needs a positive image size, 3 means and 3 positive stds")
    return f"{len(variants)} variants; checking {info.name}", info


def _check_build(plugin: BackbonePlugin, info: VariantInfo) -> tuple[str, FrameBackbone]:
    """build() gives a FrameBackbone that declares its blocks' layouts and its feature width."""
    backbone = _build(plugin, info.name, seed=0)
    _expect(isinstance(backbone, FrameBackbone), f"build() returned {type(backbone).__name__}, not a FrameBackbone")
    layouts = backbone.block_layouts()
    _expect(len(layouts) > 0 and all(isinstance(t, TokenLayout) for t in layouts),
            "block_layouts() must list one TokenLayout per block")
    _expect(isinstance(backbone.feature_width, int) and backbone.feature_width > 0, "feature_width is not set")
    return f"{len(layouts)} blocks, feature width {backbone.feature_width}", backbone


@dataclass
class _Subject:
    """What the checks after "build" look at: the built backbone and a few random frames of one clip."""

    plugin: BackbonePlugin
    info: VariantInfo
    backbone: FrameBackbone
    frames: int
    images: torch.Tensor  # (frames, 3, H, W)

    @property
    def clip(self) -> torch.Tensor:
        """The frames as one video clip, (1, 3, T, H, W)."""
        return self.images.transpose(0, 1).unsqueeze(0)

    def video_model(self, adapter: AdapterConfig | None) -> VideoClassifier:
        from stadapt.model.classifier import VideoClassifier

        torch.manual_seed(2)
        return VideoClassifier(self.backbone, num_classes=5, num_frames=self.frames, adapter=adapter,
                               dropout=0.0).eval()


def _both_positions() -> AdapterConfig:
    from stadapt.model.adapters import AdapterConfig

    return AdapterConfig(bottleneck=8, positions=("pre_attn", "pre_mlp"))


def _check_decomposition(s: _Subject) -> None:
    backbone, frames = s.backbone, s.frames
    with torch.no_grad():
        tokens = _run_blocks(backbone, backbone.embed(s.images), frames)
        ours = backbone.video_norm(backbone.frame_features(tokens))
        native = backbone.native_forward(s.images)
    _expect(ours.shape == (frames, backbone.feature_width),
            f"frame features have shape {tuple(ours.shape)}, expected {(frames, backbone.feature_width)}")
    _expect(_close(ours, native), f"embed -> branches -> features differs from native_forward by "
                                  f"{float((ours - native).abs().max()):.3g}")


def _check_block_modules(s: _Subject) -> str:
    fresh = _build(s.plugin, s.info.name, seed=0)
    count = len(fresh.block_layouts())
    try:
        named = [{id(p) for m in fresh.block_modules(i) for p in m.parameters()} for i in range(count)]
    except NotImplementedError:
        return "not provided (optional): tuning=partial_finetune is unavailable for this backbone"
    params = list(fresh.parameters())
    x = fresh.embed(s.images).detach()
    for index in range(count):
        _expect(bool(named[index]), f"block_modules({index}) holds no parameters")
        _expect(all(not named[index] & named[j] for j in range(index)),
                f"block_modules({index}) shares parameters with another block")
        out = run_block(fresh, index, x, BlockHooks(pre_attn=lambda _, tokens: tokens.detach()))
        grads = torch.autograd.grad(out.sum(), params, allow_unused=True)
        used = {id(p) for p, g in zip(params, grads, strict=True) if g is not None}
        _expect(used <= named[index], f"block {index}'s branches use parameters that block_modules({index}) "
                                      "does not name")
        x = out.detach()
    return f"{count} blocks"


def _check_identity_at_init(s: _Subject) -> None:
    with torch.no_grad():
        plain = s.video_model(None).forward_features(s.clip)
        adapted = s.video_model(_both_positions()).forward_features(s.clip)
    _expect(_close(adapted, plain, 1e-6), "a freshly built adapter changed the features")


def _check_what_trains(s: _Subject) -> None:
    model = s.video_model(_both_positions()).train()
    bad = [n for n, p in model.named_parameters() if p.requires_grad != (not n.startswith("backbone."))]
    _expect(not bad, f"wrong requires_grad on {bad[:3]}")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = torch.nn.functional.cross_entropy(model(s.clip), torch.tensor([1]))
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    _expect(not any(n.startswith("backbone.") for n in changed), "a backbone tensor changed in training")
    _expect(any(".conv." in n for n in changed), "no adapter conv moved after one optimizer step")


def _check_time_mixing(s: _Subject) -> None:
    from stadapt.model.adapters import STAdapter

    model = s.video_model(_both_positions())
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.adapters.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
        adapter = next(iter(model.adapters.children())).pre_attn
        assert isinstance(adapter, STAdapter)
        x = torch.randn(adapter.layout.shape(s.frames), generator=generator)
        y = adapter(x)
        if not adapter.layout.channels_last_grid and adapter.layout.prefix_tokens:
            n = adapter.layout.prefix_tokens
            _expect(torch.equal(y[:, :n], x[:, :n]), "an adapter modified the prefix (CLS) tokens")
        changed = x.clone()
        changed[1] += 1.0
        _expect(not torch.equal(adapter(changed)[0], y[0]),
                "changing frame 1 did not affect frame 0: the adapter does not mix time")
        pair = torch.cat([s.clip, s.clip.flip(2)], dim=0)
        other = pair.clone()
        other[1] += 1.0
        a, b = model.forward_features(pair), model.forward_features(other)
    _expect(_close(a[0], b[0], 1e-6) and not torch.equal(a[1], b[1]),
            "clips of one batch leak into each other: frames of a clip must stay contiguous (b-major)")


def _check_weights_round_trip(s: _Subject) -> None:
    from stadapt.backbones.weights import fingerprint
    from stadapt.errors import WeightsError
    from stadapt.model.classifier import load_backbone_weights

    plugin, name = s.plugin, s.info.name
    source, target = _build(plugin, name, seed=10), _build(plugin, name, seed=11)
    _expect(fingerprint(source) != fingerprint(target), "two builds with different seeds are identical")
    native = source.native_state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save(native, path)
        load_backbone_weights(target, plugin, name, path)
        _expect(fingerprint(source) == fingerprint(target), "weights saved and reloaded differ")
        partial = dict(native)
        partial.pop(next(k for k in native if k not in plugin.ignored_keys(name)))
        torch.save(partial, path)
        try:
            load_backbone_weights(_build(plugin, name, seed=12), plugin, name, path)
        except WeightsError:
            pass
        else:
            raise _Failed("a weights file missing a tensor loaded without an error")


def _check_hook(check: Callable[[FrameBackbone, list[torch.Tensor]], str], s: _Subject) -> str:
    """One optional hook's check (stadapt.model.hook_conformance) on the tokens entering each block."""
    return check(s.backbone, block_inputs(s.backbone, s.images, s.frames))


def _check_embed_hook(check: Callable[[FrameBackbone, torch.Tensor], str], s: _Subject) -> str:
    """One optional hook's check (stadapt.model.hook_conformance) on the clip's frames."""
    return check(s.backbone, s.images)


def _check_text_tower(s: _Subject) -> str:
    """`text_tower` builds (random weights) exactly where the variant says it has one, its text and image
    embeddings in one space; elsewhere it refuses with NoTextTowerError."""
    from stadapt.backbones.text import NoTextTowerError, TextTower

    if not s.info.text_tower:
        try:
            s.plugin.text_tower(s.info.name, None)
        except NoTextTowerError:
            return "none, as the variant says"
        raise AssertionError("text_tower() built one, but the variant says it has none (VariantInfo.text_tower)")
    tower = s.plugin.text_tower(s.info.name, None)
    _expect(isinstance(tower, TextTower), "text_tower() did not return a stadapt.backbones.text.TextTower")
    with torch.no_grad():
        image = tower.project_image(s.backbone.native_forward(s.images))
    text = tower.embed_labels(["a", "b"], ["a photo of {}."])
    _expect(image.shape[-1] == text.shape[-1],
            f"image embeddings of {image.shape[-1]} and text embeddings of {text.shape[-1]} dims")
    return f"{text.shape[-1]}-dim joint space"


_SUBJECT_CHECKS: list[tuple[str, Callable[[_Subject], str | None]]] = [
    ("decomposition matches the model's own forward", _check_decomposition),
    ("block_modules name each block's parameters (partial fine-tuning)", _check_block_modules),
    ("adapters are the identity at init", _check_identity_at_init),
    ("only adapters and head train; adapters learn", _check_what_trains),
    ("adapters mix time within a clip, never across clips, and leave prefix tokens alone", _check_time_mixing),
    ("weights round trip; missing keys are errors", _check_weights_round_trip),
    ("a text tower exactly where the variant says", _check_text_tower),
    *[(name, partial(_check_hook, check)) for name, check in HOOK_CHECKS],
    *[(name, partial(_check_embed_hook, check)) for name, check in EMBED_CHECKS],
]



def assert_conformant(plugin: BackbonePlugin, variant: str | None = None) -> list[CheckResult]:
    """Run the suite and raise AssertionError naming every failed check (for a plugin's own tests)."""
    results = check_plugin(plugin, variant)
    failed = [r for r in results if not r.ok]
    if failed:
        raise AssertionError("; ".join(f"{r.name}: {r.detail}" for r in failed))
    return results
