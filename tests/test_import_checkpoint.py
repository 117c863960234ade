"""Reference checkpoints: import through the CLI, reload with stadapt.load_model, identical logits."""

import json
import shutil

import pytest
import torch
from helpers import run_cli, tiny_visual, write_openai_archive
from reference_impl import reference_logits

import stadapt
from stadapt.errors import CheckpointError, WeightsError
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, build_model

FRAMES = 4


def _reference_checkpoint(root, positions=("pre_mlp",), blocks=None, classes=6, seed=0):
    """Train-like state of a reference run, saved the way the reference's save_model does."""
    archive = root / "ViT-tiny.pt"
    if not archive.exists():
        write_openai_archive(tiny_visual(seed=1), archive)
    config = ModelConfig("clip:tiny", classes, FRAMES, AdapterConfig(16, (3, 1, 1), positions, blocks))
    model = build_model(config, archive).model
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_state_dict().values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    model.train()
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, FRAMES, 32, 32)), torch.tensor([0, 1])).backward()
    optimizer.step()
    model.eval()
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    official = {}
    for name, tensor in model.trainable_state_dict().items():
        if name.startswith("adapters."):
            _, block, position, rest = name.split(".", 3)
            official[f"transformer.resblocks.{block}.adapter_{position}.{rest}"] = tensor.clone()
        else:
            official[name.removeprefix("head.")] = tensor.clone()
    path = root / f"checkpoint-{seed}.pth"
    torch.save({"model": official, "optimizer": optimizer.state_dict(), "lr_sched": sched.state_dict(),
                "loss_scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0}, "next_epoch": 12},
               path)
    return model, archive, path, official


def _import(ckpt, archive, out, *extra):
    return run_cli("import-checkpoint", "--format", "official", "--checkpoint", str(ckpt), "--backbone-weights",
                   str(archive), "--backbone", "clip:tiny", "--num-frames", str(FRAMES), "--out", str(out), *extra)


@pytest.mark.parametrize(
    "positions, blocks",
    [(("pre_mlp",), None), (("pre_attn", "pre_mlp"), None), (("pre_mlp",), (2, 3))],
    ids=["1-per-block", "2-per-block", "last-2-blocks"],
)
def test_round_trip_gives_identical_logits(tmp_path, positions, blocks):
    model, archive, ckpt, official = _reference_checkpoint(tmp_path, positions, blocks)
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"action {i}\n" for i in range(6)))
    out = tmp_path / "imported"
    result = _import(ckpt, archive, out, "--classes", str(classes))
    assert result.returncode == 0, result.stderr
    assert "stadapt.load_model" in result.stdout

    meta = json.loads((out / "stadapt.json").read_text())
    adapter = meta["model"]["adapter"]
    assert adapter["positions"] == list(positions) and adapter["bottleneck"] == 16 and adapter["kernel"] == [3, 1, 1]
    assert adapter["blocks"] == list(blocks or range(4))
    assert meta["model"]["backbone_options"] == {"quick_gelu": True}
    assert meta["classes"] == [f"action {i}" for i in range(6)]
    assert meta["imported_from"]["format"] == "official"

    loaded = stadapt.load_model(out)
    assert not loaded.training and loaded.classes[5] == "action 5"
    video = torch.randn(3, 3, FRAMES, 32, 32)
    with torch.no_grad():
        expected, got = model(video), loaded(video)
        independent = reference_logits(video, read_visual(archive), official, heads=4, patch=8)
    assert torch.equal(got, expected)
    torch.testing.assert_close(got, independent, rtol=1e-4, atol=1e-5)


def read_visual(archive):
    from stadapt.backbones.weights import read_state_dict

    return {k[len("visual."):]: v.float() for k, v in read_state_dict(archive).items() if k.startswith("visual.")}


def test_bad_inputs_are_one_line_errors(tmp_path):
    _, archive, ckpt, official = _reference_checkpoint(tmp_path)
    cases = {}
    cases["wrong backbone"] = (["--backbone", "clip:ViT-B-16"], ckpt, "width 128, but clip:ViT-B-16 has width 768")
    cases["unknown variant"] = (["--backbone", "clip:ViT-B-61"], ckpt, "no variant 'ViT-B-61'")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    cases["truncated"] = ([], truncated, "truncated, corrupt")
    misfit = dict(official)
    misfit["transformer.resblocks.1.adapter_pre_mlp.fc2.weight"] = torch.zeros(128, 8)
    misfit_path = tmp_path / "misfit.pth"
    torch.save({"model": misfit}, misfit_path)
    cases["shapes"] = ([], misfit_path, "adapters.1.pre_mlp.fc2.weight has shape (128, 8), the model expects (128, 16)")
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {**official, "transformer.resblocks.0.attn.in_proj_weight": torch.zeros(3)}}, foreign)
    cases["full fine-tune"] = ([], foreign, "keys a reference ST-Adapter checkpoint does not have")
    from open_clip.transformer import VisionTransformer

    narrow = tmp_path / "narrow-vit.pt"  # same family, another size: width 64
    torch.save(VisionTransformer(32, 8, 64, 4, 4, 4.0, output_dim=64).state_dict(), narrow)
    cases["weights of another size"] = (["--backbone-weights", str(narrow)], ckpt,
                                        "visual.class_embedding expects (128,) but the file has (64,)")
    cut_weights = tmp_path / "cut.pt"
    cut_weights.write_bytes(archive.read_bytes()[:-3000])
    cases["truncated weights"] = (["--backbone-weights", str(cut_weights)], ckpt, "cut.pt: it is truncated")
    for name, (extra, path, message) in cases.items():
        result = _import(path, archive, tmp_path / f"out-{name}", *extra)
        assert result.returncode == 2, (name, result.stderr)
        assert message in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, name
        assert not (tmp_path / f"out-{name}").exists(), name


def test_existing_output_is_never_overwritten_unless_asked(tmp_path):
    _, archive, ckpt, _ = _reference_checkpoint(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    result = _import(ckpt, archive, out)  # a user's folder: refused without offering --overwrite, which refuses too
    assert result.returncode == 2 and "notes.txt" in result.stderr and "--overwrite" not in result.stderr
    assert (out / "notes.txt").read_text() == "precious"
    refused = _import(ckpt, archive, out, "--overwrite")  # --overwrite replaces a checkpoint, never a user's file
    assert refused.returncode == 2 and "notes.txt" in refused.stderr and "Traceback" not in refused.stderr
    assert (out / "notes.txt").read_text() == "precious" and not (out / "stadapt.json").exists()


def test_load_model_checks_the_backbone_weights(tmp_path):
    model, archive, ckpt, _ = _reference_checkpoint(tmp_path)
    out = tmp_path / "imported"
    assert _import(ckpt, archive, out).returncode == 0
    moved = tmp_path / "elsewhere.pt"
    shutil.move(archive, moved)
    with pytest.raises(WeightsError, match="are not there"):
        stadapt.load_model(out)
    video = torch.randn(1, 3, FRAMES, 32, 32)
    with torch.no_grad():
        assert torch.equal(stadapt.load_model(out, backbone_weights=moved)(video), model(video))
    other = tmp_path / "other.pt"
    torch.save(tiny_visual(seed=99).state_dict(), other)
    with pytest.raises(WeightsError, match="differ from those the checkpoint was trained with"):
        stadapt.load_model(out, backbone_weights=other)
    with pytest.raises(CheckpointError, match="not a stadapt checkpoint directory"):
        stadapt.load_model(ckpt)


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    import os

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    _, archive, _, official = _reference_checkpoint(tmp_path)
    evil = tmp_path / "evil.pth"
    torch.save({"model": official, "args": Exploit()}, evil)
    result = _import(evil, archive, tmp_path / "out")
    assert result.returncode == 2 and "refusing to load checkpoint" in result.stderr
    assert not (tmp_path / "pwned").exists()


# clip:ViT-B-16, the importer's default backbone, as the reference trains it (OpenAI CLIP: QuickGELU)
VIT_B16 = dict(image_size=224, patch_size=16, width=768, layers=12, heads=12, output_dim=512)


def _vit_b16_state_dict_file(root):
    """`visual.pt`: a plain state dict (not OpenAI's TorchScript archive) of a random QuickGELU ViT-B/16 tower,
    in fp16 under OpenAI's `visual.` keys, as a user's own conversion of OpenAI's weights would be."""
    from open_clip.transformer import LayerNorm, QuickGELU, VisionTransformer

    torch.manual_seed(3)
    visual = VisionTransformer(mlp_ratio=4.0, act_layer=QuickGELU, norm_layer=LayerNorm, **VIT_B16)
    path = root / "visual.pt"
    torch.save({f"visual.{k}": v.half() for k, v in visual.state_dict().items()}, path)
    return path


def _vit_b16_reference_checkpoint(root, classes=3, bottleneck=8):
    """checkpoint-11.pth of a reference run on ViT-B/16: one adapter (before the MLP) in the last block."""
    g = torch.Generator().manual_seed(4)
    prefix = "transformer.resblocks.11.adapter_pre_mlp"
    shapes = {f"{prefix}.fc1.weight": (bottleneck, 768), f"{prefix}.fc1.bias": (bottleneck,),
              f"{prefix}.conv.weight": (bottleneck, 1, 3, 1, 1), f"{prefix}.conv.bias": (bottleneck,),
              f"{prefix}.fc2.weight": (768, bottleneck), f"{prefix}.fc2.bias": (768,),
              "fc.weight": (classes, 768), "fc.bias": (classes,)}
    path = root / "checkpoint-11.pth"
    torch.save({"model": {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}, "next_epoch": 12}, path)
    return path


def test_the_default_backbone_with_a_plain_state_dict_is_imported_with_quickgelu(tmp_path):
    """The reference is OpenAI's CLIP code: its checkpoints say QuickGELU, so the defaults import them; an
    explicit quick_gelu option still decides."""
    weights, ckpt = _vit_b16_state_dict_file(tmp_path), _vit_b16_reference_checkpoint(tmp_path)
    out = tmp_path / "k400_vitb16"
    result = run_cli("import-checkpoint", "--format", "official", "--checkpoint", str(ckpt), "--backbone-weights",
                     str(weights), "--out", str(out), "--num-frames", "2")  # 2 frames: the activation is the point
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "QuickGELU" in line]
    assert notes == ["QuickGELU: the official format is OpenAI CLIP's"], result.stderr
    meta = json.loads((out / "stadapt.json").read_text())
    assert meta["model"]["backbone"] == "clip:ViT-B-16"
    assert meta["model"]["backbone_options"] == {"quick_gelu": True}

    loaded = stadapt.load_model(out)
    expected = build_model(ModelConfig("clip:ViT-B-16", 3, 2, AdapterConfig(8, (3, 1, 1), ("pre_mlp",), (11,)),
                                       backbone_options={"quick_gelu": True}), weights).model
    from stadapt.tools.interop.official import read_official, to_stadapt_keys

    expected.load_state_dict(to_stadapt_keys(read_official(ckpt)), strict=False)
    video = torch.randn(1, 3, 2, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(video), expected.eval()(video))

    gelu = run_cli("import-checkpoint", "--checkpoint", str(ckpt), "--backbone-weights", str(weights),
                   "--option", "quick_gelu=false", "--out", str(tmp_path / "gelu"))
    assert gelu.returncode == 0, gelu.stderr
    assert "QuickGELU" not in gelu.stderr
    assert json.loads((tmp_path / "gelu" / "stadapt.json").read_text())["model"]["backbone_options"] == {
        "quick_gelu": False}
