"""`stadapt import-checkpoint --format aim`: AIM's own checkpoint file (tests/reference_aim.py's port, saved as AIM's
mmcv training saves it) imported through the CLI loads with `stadapt.load_model(DIR)` alone and gives the port's
logits on the same clips (num_tadapter 1 and 2); the adapter scale comes from meta["config"] or --option, never a
guess; anything but an AIM checkpoint is refused in one line; the folder carries its backbone and can move.

The port's tiny tower is not a listed CLIP variant: it is registered as an open_clip model configuration
(`stadapt-aim-tiny`, QuickGELU as OpenAI's) and named with --backbone clip:stadapt-aim-tiny."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from reference_aim import TINY, VIT_B16, VIT_L14, build_aim, save_aim_checkpoint, tiny_aim

from stadapt.api import load_model
from stadapt.tools.interop.aim import detect_backbone, infer_aim_layout

B, T, SIZE, CLASSES = 2, 4, 32, 5
NAME = "stadapt-aim-tiny"
BACKBONE = f"clip:{NAME}"
K400_CONFIG = ("model = dict(\n    type='Recognizer3D',\n    backbone=dict(type='ViT_CLIP', input_resolution=224, "
               "patch_size=16, num_frames=8, width=768, layers=12, heads=12, drop_path_rate=0.1, "
               "adapter_scale={scale}, num_tadapter=1),\n    cls_head=dict(type='I3DHead', num_classes=400))\n")


@pytest.fixture(autouse=True, scope="module")
def _tiny_open_clip_model(tmp_path_factory: pytest.TempPathFactory):
    """The port's tower (32 px, patch 16, width 64, 3 blocks, 4 heads, QuickGELU) as an open_clip model config;
    one intra-op thread (tiny tensors on a busy machine). Both restored after."""
    import open_clip
    from open_clip import factory

    folder = tmp_path_factory.mktemp("open_clip_config")
    vision = {"image_size": TINY["input_resolution"], "patch_size": TINY["patch_size"], "width": TINY["width"],
              "layers": TINY["layers"], "head_width": TINY["width"] // TINY["heads"], "mlp_ratio": 4.0}
    text = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
    (folder / f"{NAME}.json").write_text(json.dumps({"embed_dim": 32, "quick_gelu": True, "vision_cfg": vision,
                                                     "text_cfg": text}))
    open_clip.add_model_config(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    factory._MODEL_CONFIGS.pop(NAME, None)


def _video(seed: int = 1) -> torch.Tensor:
    return torch.randn(B, 3, T, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _import(path: Path, out: Path, *extra: str):
    return run_cli("import-checkpoint", "--format", "aim", str(path), "--out", str(out), "--backbone", BACKBONE,
                   *extra)


def _one_line_refusal(done, *words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(w in lines[0] for w in words), done.stderr


@pytest.mark.parametrize("num_tadapter, scale", [(1, 0.5), (2, 1.0)])
def test_imported_model_gives_the_ports_logits(num_tadapter: int, scale: float, tmp_path: Path):
    port = tiny_aim(num_tadapter=num_tadapter, adapter_scale=scale)
    path = save_aim_checkpoint(port, tmp_path / "epoch_30.pth", config=K400_CONFIG.format(scale=scale))
    out = tmp_path / "imported"
    done = _import(path, out)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((out / "stadapt.json").read_text())
    assert record["model"]["tuning"] == "aim" and record["model"]["num_frames"] == T
    assert record["model"]["adapter"]["num_tadapter"] == num_tadapter
    assert record["model"]["adapter"]["adapter_scale"] == scale  # from meta["config"]
    assert record["backbone_weights"]["source"] == "backbone.safetensors"
    model = load_model(out)
    video = _video()
    with torch.no_grad():
        want, got = port(video), model(video)
    diff = (got - want).abs().max().item()
    print(f"num_tadapter={num_tadapter}: max |diff| {diff:.2e} (logits up to {want.abs().max():.2f})")
    assert want.abs().max() > 0.1 and diff <= 1e-4

    moved = tmp_path / "elsewhere" / "moved"  # the folder alone: it carries its backbone
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    with torch.no_grad():
        again = load_model(moved)(video)
    torch.testing.assert_close(again, got, rtol=0, atol=0)


def test_adapter_scale_from_the_option_or_refused(tmp_path: Path):
    port = tiny_aim(num_tadapter=1, adapter_scale=1.0)
    path = save_aim_checkpoint(port, tmp_path / "epoch_30.pth")  # its config text does not say adapter_scale
    _one_line_refusal(_import(path, tmp_path / "a"), "adapter_scale", "--option adapter_scale=", "0.5", "1.0")
    assert not (tmp_path / "a").exists()
    done = _import(path, tmp_path / "b", "--option", "adapter_scale=1.0")
    assert done.returncode == 0, done.stdout + done.stderr
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "b")(_video()), port(_video()), rtol=0, atol=1e-4)


def test_not_an_aim_checkpoint_is_refused(tmp_path: Path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(3, 4)}}, path)
    _one_line_refusal(_import(path, tmp_path / "out"), "is not an AIM checkpoint")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape, name", [(VIT_B16, "clip:ViT-B-16"), (VIT_L14, "clip:ViT-L-14")])
def test_the_backbone_is_read_from_the_shapes(shape: dict, name: str):
    """On meta-device tensors (no weights): AIM's released towers are recognised; frames, classes and the
    number of temporal adapters come from the tensors too."""
    with torch.device("meta"):
        port = build_aim(num_classes=174, num_frames=16, num_tadapter=2, **shape)
    layout = infer_aim_layout(port.state_dict(), "epoch_30.pth")
    assert detect_backbone(layout, "epoch_30.pth") == name
    assert (layout.num_frames, layout.num_classes, layout.num_tadapter, layout.mlp_ratio) == (16, 174, 2, 0.25)


def test_push_publishes_the_folder_without_a_local_path(tmp_path: Path):
    """`stadapt push --to-dir` of an imported folder: its backbone goes with it (the copy loads alone, same
    logits) and no published file names a local path (the import's source is `<local>/NAME`)."""
    port = tiny_aim(num_tadapter=1)
    path = save_aim_checkpoint(port, tmp_path / "epoch_30.pth", config=K400_CONFIG.format(scale=0.5))
    assert _import(path, tmp_path / "imported").returncode == 0
    published = tmp_path / "published"
    done = run_cli("push", str(tmp_path / "imported"), "--repo", "someone/aim-tiny", "--to-dir", str(published))
    assert done.returncode == 0, done.stdout + done.stderr
    for file in published.iterdir():
        assert str(tmp_path).encode() not in file.read_bytes(), file.name
    assert (published / "backbone.safetensors").is_file()
    assert "`backbone.safetensors` in this repository" in (published / "README.md").read_text()
    with torch.no_grad():
        torch.testing.assert_close(load_model(published)(_video()), port(_video()), rtol=0, atol=1e-4)


def test_predict_and_eval_read_the_folder(tmp_path: Path):
    """`stadapt predict` and `stadapt eval` through the console script on the imported folder alone."""
    from stadapt.data.synthetic import SyntheticSpec, write_synthetic

    root = tmp_path / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=1, val_per_class=1, frames=10,
                                        size=32, clutter=2))
    classes = root / "classes.txt"
    port = tiny_aim(num_tadapter=2, num_classes=len(classes.read_text().splitlines()))
    path = save_aim_checkpoint(port, tmp_path / "epoch_30.pth", config=K400_CONFIG.format(scale=0.5))
    out = tmp_path / "imported"
    done = _import(path, out, "--classes", str(classes), "--views", "1x1", "--stride", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    video = next(root.rglob("*.mp4"))
    predicted = run_cli("predict", str(video), "--checkpoint", str(out), "--json", "--device", "cpu")
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    evaluated = run_cli("eval", str(out), "--root", str(root), "--list", "val.txt", "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
