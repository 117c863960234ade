"""Give the quickstart's tiny image model a text tower, so open vocabulary runs on the CPU with no downloads.

The image tower that `stadapt_clip.pretrain` made stays locked, byte for byte (the quickstart's figures do
not move): a tiny open_clip text tower and the image side's projection learn to meet it, contrastively, on
single synthetic frames and captions of what each frame shows ("a video of a small red disc at the top
left."). This is LiT (Zhai et al., CVPR 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning"),
with a projection on the image side that trains, as CLIP's. A caption is true of every frame whose
attributes it states, so the loss spreads each row's target over all true pairs in the batch rather than
calling the others negatives.

What the captions never say cannot be read from a frame: motion. Zero-shot on the synthetic motion classes
is therefore near chance, as a linear probe is, and a text head has to learn it (`stadapt quickstart --heads`).
"""

from __future__ import annotations

import colorsys
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stadapt.backbones.base import ForeignModule
from stadapt.data.synthetic import SHAPES, ObjectState, Scene, make_scene, random_state, render
from stadapt.training.schedule import lr_factor

COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")  # hue sextants, from 0
COLUMNS = ("left", "centre", "right")
ROWS = ("top", "middle", "bottom")
SIZES = ("small", "", "large")  # the middle third of sizes goes unnamed
PREFIXES = ("a video of ", "a photo of ", "")
RENDER_SIZE = 48


def attributes(scene: Scene, state: ObjectState, size: int = RENDER_SIZE) -> dict[str, str]:
    """What a single frame shows of its object: shape, colour, column, row and size."""
    hue = colorsys.rgb_to_hsv(*(float(c) for c in scene.colour))[0]
    scale = (state.size / size - 0.2) / 0.25  # random_state draws sizes in [0.2, 0.45] of the frame
    return {"shape": scene.shape, "colour": COLOURS[round(hue * 6) % 6], "column": COLUMNS[_third(state.x / size)],
            "row": ROWS[_third(state.y / size)], "size": SIZES[_third(scale)]}


def _third(fraction: float) -> int:
    """Which third (0, 1, 2) of [0, 1] `fraction` falls in (1.0 and above: the last)."""
    return min(2, int(3 * fraction))


def caption(attrs: dict[str, str], rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A caption stating a random subset of `attrs` (never none), and the subset it states."""
    while True:
        stated = {k: v for k, v in attrs.items() if v and rng.uniform() < (0.8 if k == "shape" else 0.6)}
        if stated:
            break
    words = [stated[k] for k in ("size", "colour") if k in stated] + [stated.get("shape", "shape")]
    where = _where(stated.get("row"), stated.get("column"))
    text = f"{PREFIXES[rng.integers(len(PREFIXES))]}a {' '.join(words)}{where}."
    return text, stated


def _where(row: str | None, column: str | None) -> str:
    if row and column:
        return " in the centre" if (row, column) == ("middle", "centre") else f" at the {row} {column}"
    if column:
        return f" on the {column}" if column != "centre" else " in the centre column"
    return f" at the {row}" if row else ""


def frames(count: int, seed: int) -> tuple[np.ndarray, list[dict[str, str]]]:
    """`count` single frames (N, 48, 48, 3) rendered as the synthetic videos are, and their attributes."""
    rng = np.random.default_rng(seed)
    images, attrs = [], []
    for _ in range(count):
        scene = make_scene(rng, RENDER_SIZE, clutter=10)
        state = random_state(rng, RENDER_SIZE)
        images.append(render(scene, state))
        attrs.append(attributes(scene, state))
    return np.stack(images), attrs


@torch.no_grad()
def image_features(backbone: Any, images: np.ndarray, image_size: int, mean: Sequence[float],
                   std: Sequence[float], chunk: int = 512) -> torch.Tensor:
    """The locked image tower's pooled features (N, width) of uint8 frames, computed once."""
    out = []
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(images[start:start + chunk]).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", antialias=True).clamp(0, 1)
        out.append(backbone.native_forward((x - m) / s))
    return torch.cat(out)


def _targets(attrs: list[dict[str, str]], stated: list[dict[str, str]]) -> torch.Tensor:
    """(images, captions) 0/1: whether each caption is true of each image."""
    return torch.tensor([[float(all(a.get(k) == v for k, v in s.items())) for s in stated] for a in attrs])


def contrastive_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy, each row's target spread over every true pair."""
    image_loss = -(truth / truth.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    text_loss = -(truth.t() / truth.t().sum(1, keepdim=True) * logits.t().log_softmax(1)).sum(1).mean()
    return (image_loss + text_loss) / 2


def train_text(model: ForeignModule, tokenizer: Any, features: torch.Tensor, attrs: list[dict[str, str]], *,
               steps: int, batch: int, lr: float, seed: int, log: bool = True) -> None:
    """LiT: the text tower, the image projection and the logit scale learn; the image trunk's `features`
    are fixed."""
    rng = np.random.default_rng(seed)
    params = [p for n, p in model.named_parameters() if not n.startswith("visual.") or n == "visual.proj"]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    start, warmup = time.perf_counter(), max(1, steps // 20)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, warmup, steps)
        pick = rng.choice(len(features), size=batch, replace=False)
        texts, stated = zip(*(caption(attrs[i], rng) for i in pick), strict=True)
        images = F.normalize(features[pick] @ model.visual.proj, dim=-1)
        text = F.normalize(model.encode_text(tokenizer(list(texts))), dim=-1)
        logits = model.logit_scale.exp() * images @ text.t()
        loss = contrastive_loss(logits, _targets([attrs[i] for i in pick], list(stated)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if log and (step % 200 == 0 or step == steps - 1):
            print(f"text step {step:4d}  loss {loss.item():.4f}  scale {model.logit_scale.exp().item():.1f}  "
                  f"{time.perf_counter() - start:.0f}s", flush=True)


@torch.no_grad()
def zero_shot_accuracy(model: ForeignModule, tokenizer: Any, features: torch.Tensor, attrs: list[dict[str, str]],
                       attribute: str, labels: Sequence[str], template: str) -> float:
    """Zero-shot top-1 of held-out frames over one attribute's `labels`, each filled into `template`."""
    text = F.normalize(model.encode_text(tokenizer([template.format(label) for label in labels])), dim=-1)
    images = F.normalize(features @ model.visual.proj, dim=-1)
    predicted = (images @ text.t()).argmax(1)
    truth = torch.tensor([list(labels).index(a[attribute]) if a[attribute] in labels else -1 for a in attrs])
    keep = truth >= 0
    return float((predicted[keep] == truth[keep]).float().mean())


ZERO_SHOT_PROBES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("shape", SHAPES, "a video of a {}."),
    ("colour", COLOURS, "a video of a {} shape."),
    ("column", ("left", "right"), "a video of a shape on the {}."),
    ("row", ("top", "bottom"), "a video of a shape at the {}."),
    ("size", ("small", "large"), "a video of a {} shape."),
)


def pretrain_text(image_state: dict[str, torch.Tensor], *, steps: int = 3000, batch: int = 256, lr: float = 2e-3,
                  frames_count: int = 20000, seed: int = 0, log: bool = True) -> dict[str, torch.Tensor]:
    """The whole open_clip state dict of clip:tiny: `image_state` (the locked `visual.*` tensors, unchanged)
    and the text tower, image projection and logit scale trained against it."""
    import open_clip

    from stadapt.backbones.registry import parse_backbone
    from stadapt_clip.backbone import ClipBackbone
    from stadapt_clip.text import quiet_open_clip, register_tiny

    torch.manual_seed(seed)
    plugin, variant = parse_backbone("clip:tiny")
    backbone = plugin.build(variant.name)
    assert isinstance(backbone, ClipBackbone)
    backbone.load_state_dict(image_state)
    backbone.eval()
    name = register_tiny()
    with quiet_open_clip():  # "No pretrained weights loaded": the image tower's are loaded next
        model = open_clip.create_model(name, load_weights=False)
    model.visual.load_state_dict({k[len("visual."):]: v for k, v in image_state.items()}, strict=False)
    tokenizer = open_clip.get_tokenizer(name)
    began = time.perf_counter()
    train_images, train_attrs = frames(frames_count, seed)
    train_features = image_features(backbone, train_images, variant.image_size, variant.mean, variant.std)
    if log:
        print(f"{frames_count} frames rendered and embedded in {time.perf_counter() - began:.0f}s", flush=True)
    train_text(model, tokenizer, train_features, train_attrs, steps=steps, batch=batch, lr=lr, seed=seed, log=log)
    model.eval()
    held_images, held_attrs = frames(2000, seed + 1)
    held = image_features(backbone, held_images, variant.image_size, variant.mean, variant.std)
    for attribute, labels, template in ZERO_SHOT_PROBES:
        accuracy = zero_shot_accuracy(model, tokenizer, held, held_attrs, attribute, labels, template)
        if log:
            print(f"held-out zero-shot {attribute:<7} {100 * accuracy:5.1f}%  (chance {100 / len(labels):.1f}%, "
                  f"labels {', '.join(labels)})", flush=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {**state, **image_state}
