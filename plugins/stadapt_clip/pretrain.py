"""Pretrain the quickstart's tiny CLIP-architecture model as an *image* model, on single frames.

ST-Adapter adapts an image model to video. The quickstart needs an image model that already sees
objects but was never shown time, and it cannot download one, so this module makes one: the tiny
ViT regresses the object's position, size and orientation on single synthetic frames. A frozen
randomly initialised ViT does not learn the motion task at all (measured: chance on the pairs), so
this step is what makes the quickstart a faithful miniature of the real use.

`python -m stadapt_clip.pretrain` remakes the shipped weights file, stadapt_clip/weights/tiny_synthetic.safetensors
(it lives with the CLIP plugin, whose `clip:tiny` variant and `synthetic` tag it makes): this image tower,
then the text tower that learns to meet it with the image tower locked (stadapt_clip.pretrain_text).
`--text-only` remakes just the text side against the file's image tower, which stays byte for byte.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stadapt.data.synthetic import make_scene, random_state, render
from stadapt.training.schedule import lr_factor
from stadapt_clip.backbone import ClipBackbone

BACKBONE = "clip:tiny"
# frames are rendered like the synthetic videos, then resized to the model's 32 px
RENDER_SIZE = 48
DEFAULT_OUT = Path(__file__).resolve().parent / "weights" / "tiny_synthetic.safetensors"


def _batch(rng: np.random.Generator, count: int, image_size: int, mean: torch.Tensor, std: torch.Tensor):
    """(images, targets): the object's x, y and size, scaled to about [-1, 1]."""
    frames, targets = [], []
    for _ in range(count):
        scene = make_scene(rng, RENDER_SIZE, clutter=10)
        state = random_state(rng, RENDER_SIZE)
        frames.append(render(scene, state))
        targets.append([state.x / RENDER_SIZE * 2 - 1, state.y / RENDER_SIZE * 2 - 1, state.size / RENDER_SIZE * 4 - 1])
    images = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    images = nn.functional.interpolate(images, size=(image_size, image_size), mode="bicubic", antialias=True)
    images = (images.clamp(0, 1) - mean[:, None, None]) / std[:, None, None]
    return images, torch.tensor(targets)


def pretrain(steps: int = 800, batch: int = 32, lr: float = 2e-3, seed: int = 0, log: bool = True) -> dict:
    """Train the tiny backbone on frame regression; returns its state dict (`visual.*` keys)."""
    from stadapt.backbones.registry import parse_backbone

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    plugin, variant = parse_backbone(BACKBONE)
    backbone = plugin.build(variant.name)
    assert isinstance(backbone, ClipBackbone)  # the clip plugin's own: reach its open_clip model
    with torch.no_grad():  # large position embeddings: with CLIP's small default the model never localises
        backbone.visual.positional_embedding.normal_(0, 0.5)
    head = nn.Linear(backbone.feature_width, 3)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    mean, std = torch.tensor(variant.mean), torch.tensor(variant.std)
    warmup = max(1, steps // 20)
    start = time.perf_counter()
    for step in range(steps):
        scale = lr_factor(step, warmup, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        images, targets = _batch(rng, batch, variant.image_size, mean, std)
        loss = nn.functional.mse_loss(head(backbone.native_forward(images)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if log and (step % 100 == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f}s", flush=True)
    backbone.eval()
    with torch.no_grad():
        images, targets = _batch(np.random.default_rng(seed + 1), 512, variant.image_size, mean, std)
        error = ((head(backbone.native_forward(images)) - targets) ** 2).mean(0)
    if log:
        print("held-out mean squared error (x, y, size):", [round(v, 4) for v in error.tolist()])
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--text-steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-only", action="store_true",
                        help="keep --out's image tower and train only the text side against it")
    args = parser.parse_args()
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from stadapt_clip.pretrain_text import pretrain_text

    if args.text_only:
        image = {k: v for k, v in load_file(str(args.out)).items() if k.startswith("visual.") and k != "visual.proj"}
        with safe_open(str(args.out), "pt") as f:
            image_steps = (f.metadata() or {}).get("steps", "?")
    else:
        image, image_steps = pretrain(steps=args.steps, seed=args.seed), str(args.steps)
    state = pretrain_text(image, steps=args.text_steps, seed=args.seed)
    # the vocabulary's table is most of the file; half precision halves what the repository carries
    state["token_embedding.weight"] = state["token_embedding.weight"].half()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(args.out),
              metadata={"backbone": BACKBONE, "made_by": "python -m stadapt_clip.pretrain", "steps": image_steps,
                        "text_steps": str(args.text_steps), "seed": str(args.seed)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
