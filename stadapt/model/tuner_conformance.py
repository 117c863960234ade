"""The tuner conformance suite: the checks every tuning method passes, built-in or a third party's.

Like the backbones' suite (stadapt.model.conformance), it builds the video model on a small backbone and
checks what the `Tuner` contract promises: its default settings validate, pass its recipe checks (given as a
recipe gives them, plain data) and survive a checkpoint's record; it attaches, or refuses in one line naming
the hook and the backbone when a backbone lacks a hook it needs; exactly its declared parameters train (and
learn); its trainable tensors, saved and loaded into a model rebuilt from the recorded config, give the same
logits; `merge`, when it has one, keeps them (<= 1e-4).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

from stadapt.backbones.base import FrameBackbone
from stadapt.backbones.registry import parse_backbone
from stadapt.errors import PluginError
from stadapt.model.classifier import ModelConfig, VideoClassifier, build_model
from stadapt.model.conformance import CheckResult
from stadapt.model.merge import MERGE_TOLERANCE, merge_model
from stadapt.tuners import BACKBONE_HOOKS, Tuner, load_tuner

BACKBONE = "clip:tiny"
# the FrameBackbone methods behind a hook whose name is not a method's
HOOK_METHODS = {"branch_split": ("attn_norm", "attn_body", "mlp_norm", "mlp_body"),
                "embed_split": ("embed_tokens", "embed_norm")}


@dataclass
class _Subject:
    tuner: Tuner
    backbone: str
    frames: int
    num_classes: int = 5
    image_size: int = 32

    def config(self) -> ModelConfig:
        return ModelConfig(self.backbone, self.num_classes, self.frames, self.tuner.read_settings(None),
                           dropout=0.0, tuning=self.tuner.name)

    def model(self, seed: int = 0) -> VideoClassifier:
        built = build_model(self.config(), seed=seed)
        self.image_size = built.variant.image_size
        return built.model

    def clip(self, model: VideoClassifier) -> torch.Tensor:
        """Two random clips of the model's input size."""
        generator = torch.Generator().manual_seed(7)
        return torch.randn(2, 3, self.frames, self.image_size, self.image_size, generator=generator)


def _check_settings(s: _Subject) -> str:
    """The default settings validate, pass `recipe_problems` as a recipe's section (plain data) and survive a
    checkpoint's record (settings_dict, then read_settings)."""
    t = s.tuner
    if t.settings is None:
        assert t.read_settings(None) is None, "a method without settings read some from nothing"
        return "no settings"
    t.settings()  # the paper's defaults validate
    settings = t.read_settings(None)
    record = json.loads(json.dumps(t.settings_dict(settings)))
    assert t.read_settings(record) == settings, "the settings do not survive their checkpoint record"
    # a recipe hands recipe_problems its section as plain data: the defaults must pass it
    assert t.recipe_problems(record) == [], f"recipe_problems refuses the default settings: {t.recipe_problems(record)}"
    assert ModelConfig.from_dict(json.loads(json.dumps(s.config().to_dict()))) == s.config(), \
        "the model config does not survive its checkpoint record"
    return f"section {t.section}"


def _check_needs(s: _Subject) -> str:
    """Each backbone hook the method needs: a backbone without it is refused in one line naming both."""
    unknown = [hook for hook in s.tuner.needs if hook not in BACKBONE_HOOKS]
    assert not unknown, f"needs unknown backbone hooks {unknown}"
    for hook in s.tuner.needs:
        model = s.model()
        lacking = type("Lacking", (type(model.backbone),),
                       {name: getattr(FrameBackbone, name) for name in HOOK_METHODS.get(hook, (hook,))})
        model.backbone.__class__ = lacking
        try:
            VideoClassifier(model.backbone, s.num_classes, s.frames, s.tuner.read_settings(None),
                            tuning=s.tuner.name, backbone_name=s.backbone)
        except PluginError as exc:
            assert hook in str(exc) and s.backbone in str(exc) and "\n" not in str(exc), f"refused unclearly: {exc}"
        else:
            raise AssertionError(f"a backbone without {hook} was not refused")
    return ", ".join(s.tuner.needs) or "needs nothing optional"


def _check_what_trains(s: _Subject) -> str:
    """Exactly the declared tensors train, each learns from a step, and nothing else changes."""
    model = s.model().train()
    parts = model.parts()
    declared = s.tuner.checkpoint_keys(parts)
    trainable = sorted(model.trainable_state_dict())
    assert trainable == declared, f"trainable {trainable[:3]}... != declared {declared[:3]}..."
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(2):  # the second step reaches tensors that start at zero behind a zero-initialised layer
        optimizer.zero_grad()
        model(s.clip(model)).square().sum().backward()
        optimizer.step()
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    frozen_changed = [k for k in changed if k not in declared]
    assert not frozen_changed, f"tensors outside the method changed: {frozen_changed[:3]}"
    learned = [k for k in declared if k in changed]
    assert learned, "no declared tensor learned"
    return f"{sum(model.trainable_state_dict()[k].numel() for k in declared):,} parameters in {len(declared)} tensors"


def _check_round_trip(s: _Subject) -> str:
    """The trainable tensors, loaded into a model rebuilt from the recorded config, give the same logits."""
    model = s.model(seed=0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    saved = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    config = ModelConfig.from_dict(json.loads(json.dumps(s.config().to_dict())))
    rebuilt = build_model(config, seed=0).model
    result = rebuilt.load_state_dict(saved, strict=False)
    assert not result.unexpected_keys, f"keys the rebuilt model lacks: {result.unexpected_keys[:3]}"
    missing = set(rebuilt.trainable_state_dict()) - set(saved)
    assert not missing, f"trainable tensors not saved: {sorted(missing)[:3]}"
    model.eval(), rebuilt.eval()
    clip = s.clip(model)
    with torch.no_grad():
        diff = (model(clip) - rebuilt(clip)).abs().max().item()
    assert diff == 0.0, f"logits differ after the round trip (max |diff| {diff:.2e})"
    return "same logits"


def _check_merge(s: _Subject) -> str:
    """`merge`, when the method has one, keeps the logits (<= 1e-4), and the merged model holds only the
    backbone's parameters, what does not fold and the head."""
    if not s.tuner.merges:
        return "does not merge"
    model = s.model().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
        clip = s.clip(model)
        before = model(clip)
        plugin, variant = parse_backbone(s.backbone)
        native = set(plugin.build(variant.name).state_dict())  # the bare backbone's keys
        merged, _ = merge_model(model, s.config())
        diff = (merged(clip) - before).abs().max().item()
    assert diff <= MERGE_TOLERANCE, f"merging changes the logits by {diff:.2e}"
    extra = sorted(set(merged.backbone.state_dict()) - native)
    assert not extra, f"the merged backbone has tensors the bare one lacks: {extra[:3]}"
    return f"max |diff| {diff:.1e}"


CHECKS: list[tuple[str, Callable[[_Subject], str]]] = [
    ("default settings validate, pass the recipe's checks and survive a checkpoint's record", _check_settings),
    ("a backbone lacking a needed hook is refused in one line", _check_needs),
    ("exactly the declared parameters train, and learn", _check_what_trains),
    ("the trainable tensors round-trip with the same logits", _check_round_trip),
    ("merge keeps the logits", _check_merge),
]


def check_tuner(tuner: Tuner | str, *, backbone: str = BACKBONE, frames: int = 2) -> list[CheckResult]:
    """Run every check on `tuner` (an instance or an installed method's name) over `backbone`; never
    raises for a failed check."""
    tuner = load_tuner(tuner) if isinstance(tuner, str) else tuner
    subject = _Subject(tuner, backbone, frames)
    results = []
    for name, check in CHECKS:
        try:
            results.append(CheckResult(name, True, check(subject)))
        except Exception as exc:  # a failed check, or a third party's code failing inside it
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
    return results


def assert_tuner_conformant(tuner: Tuner | str, **kwargs: object) -> list[CheckResult]:
    """Run the suite and raise AssertionError naming every failed check (for a method's own tests)."""
    results = check_tuner(tuner, **kwargs)  # type: ignore[arg-type]
    failed = [r for r in results if not r.ok]
    if failed:
        raise AssertionError("; ".join(f"{r.name}: {r.detail}" for r in failed))
    return results
