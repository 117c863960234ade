"""Tuning modes (ST-Adapter and the paper's baselines), per-part optimizer groups, memory options
(16-bit backbone storage, activation checkpointing) and the training-memory benchmark."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import write_trainer_state

from stadapt.errors import PluginError, StadaptError
from stadapt.model.classifier import ModelConfig, VideoClassifier, build_model
from stadapt.recipe import Recipe
from stadapt.runtime.build import build_from_recipe
from stadapt.training.optim import build_optimizer, param_groups, set_lr

FRAMES = 4
LAST_BLOCK = "backbone.visual.transformer.resblocks.3."  # clip:tiny has 4 blocks


def _recipe(tuning: str = "st_adapter", **sections) -> Recipe:
    raw = {
        "backbone": {"name": "clip:tiny"},
        "adapter": {"bottleneck": 16, "positions": ["pre_attn", "pre_mlp"]},
        "tuning": tuning,
        "model": {"dropout": 0.0},
        "data": {"root": "/not/read", "frames": FRAMES},
        "train": {"device": "cpu"},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return Recipe.model_validate(raw)


def _model(tuning: str = "st_adapter", seed: int = 0, **sections) -> VideoClassifier:
    torch.manual_seed(seed)
    model = build_from_recipe(_recipe(tuning, **sections), 5).model
    with torch.no_grad():  # adapters away from the identity, so that their gradients are not trivial
        generator = torch.Generator().manual_seed(seed + 1)
        for p in model.adapters.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return model


def _video(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, FRAMES, 32, 32, generator=generator), torch.arange(batch) % 5


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# --- tuning modes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tuning", ["st_adapter", "linear", "full_finetune", "partial_finetune"])
def test_each_tuning_mode_trains_exactly_its_parameters(tuning):
    model = _model(tuning)
    names = {n for n, _ in model.named_parameters()}
    head = {"head.fc.weight", "head.fc.bias"}
    expected = {
        "st_adapter": {n for n in names if n.startswith("adapters.")} | head,
        "linear": head,
        "full_finetune": names,
        "partial_finetune": {n for n in names if n.startswith(LAST_BLOCK)} | head,
    }[tuning]
    assert _trainable(model) == expected
    assert set(model.trainable_state_dict()) == expected  # what a checkpoint stores
    sizes = dict(model.named_parameters())
    assert model.parameter_counts() == {"total": sum(p.numel() for p in model.parameters()),
                                        "trainable": sum(sizes[n].numel() for n in expected)}
    assert (len(model.adapters) > 0) == (tuning == "st_adapter")
    if tuning == "partial_finetune":  # the last block is whole: attention, MLP and both norms; ln_post is not
        assert {n.removeprefix(LAST_BLOCK).split(".")[0] for n in expected - head} == {"ln_1", "attn", "ln_2", "mlp"}
        assert not any("ln_post" in n for n in expected)


def test_parameter_counts_of_the_baselines_on_clip_vit_b16():
    head = 768 * 400 + 400
    counts = {t: build_model(ModelConfig("clip:ViT-B-16", 400, 8, None, tuning=t)).model.parameter_counts()
              for t in ("linear", "full_finetune", "partial_finetune")}
    backbone = counts["full_finetune"]["total"] - head
    assert counts["linear"] == {"total": backbone + head, "trainable": head}
    assert counts["full_finetune"]["trainable"] == backbone + head
    assert counts["partial_finetune"]["trainable"] == 12 * 768**2 + 13 * 768 + head  # one ViT-B block + head


@pytest.mark.parametrize("tuning", ["st_adapter", "linear", "full_finetune", "partial_finetune"])
def test_only_full_fine_tuning_runs_the_backbone_in_train_mode(tuning):
    model = _model(tuning).train()
    assert model.training and model.head.training
    assert model.backbone.training == (tuning == "full_finetune")
    assert model.backbone_frozen == (tuning != "full_finetune")
    model.eval()
    assert not any(m.training for m in model.modules())


def test_fine_tuning_checkpoints_reload_through_the_recorded_config():
    from stadapt.checkpoints.format import load_trainable

    model = _model("partial_finetune")
    config = ModelConfig.from_dict(build_from_recipe(_recipe("partial_finetune"), 5).config.to_dict())
    assert config.tuning == "partial_finetune"
    rebuilt = build_model(config).model
    load_trainable(rebuilt, model.trainable_state_dict(), "test")  # strict: same trainable set
    # configs written before `tuning` was recorded: adapters + head, or the head alone
    legacy = {"backbone": "clip:tiny", "num_classes": 5, "adapter": None}
    assert ModelConfig.from_dict(legacy).tuning == "linear"
    assert ModelConfig.from_dict({**legacy, "adapter": {"bottleneck": 8}}).tuning == "st_adapter"


def test_adapters_with_a_fine_tuning_mode_are_refused():
    from stadapt.model.adapters import AdapterConfig

    with pytest.raises(ValueError, match="trains no adapters"):
        ModelConfig("clip:tiny", 5, FRAMES, AdapterConfig(16), tuning="full_finetune")
    with pytest.raises(ValueError, match="tuning must be one of"):
        ModelConfig("clip:tiny", 5, FRAMES, None, tuning="no_such_method")


def test_partial_fine_tuning_needs_block_modules_from_the_plugin(monkeypatch):
    from stadapt.backbones.base import FrameBackbone
    from stadapt_clip.backbone import ClipBackbone

    monkeypatch.setattr(ClipBackbone, "block_modules", FrameBackbone.block_modules)
    with pytest.raises(PluginError, match="block_modules") as info:
        _model("partial_finetune")
    assert "tuning=st_adapter" in str(info.value)


def test_conformance_checks_block_modules(monkeypatch):
    from stadapt.backbones import load_plugin
    from stadapt.model.conformance import check_plugin
    from stadapt_clip.backbone import ClipBackbone

    name = "block_modules name each block's parameters (partial fine-tuning)"
    monkeypatch.setattr(ClipBackbone, "block_modules", lambda self, index: [self._blocks[index].mlp])
    failed = {r.name: r.detail for r in check_plugin(load_plugin("clip")) if not r.ok}
    assert list(failed) == [name] and "does not name" in failed[name]


# --- optimizer groups -----------------------------------------------------------------------------------


def _group_names(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> list[tuple[str, list[str]]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [(g["name"], [names[id(p)] for p in g["params"]]) for g in optimizer.param_groups]


def test_groups_per_part_carry_scaled_lr_and_weight_decay():
    scale = {"backbone": 0.01, "adapters": 0.1, "head": 1.0}
    optim = {"lr": 1e-3, "weight_decay": 0.05, "scale": scale}
    model = _model("full_finetune", optim=optim)
    optimizer = build_optimizer(model, _recipe(optim=optim).optim, torch.device("cpu"))
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert list(groups) == ["backbone.decay", "backbone.no_decay", "head.decay", "head.no_decay"]  # no empty one
    for name, group in groups.items():
        part, kind = name.split(".")
        assert group["lr_scale"] == scale[part]
        assert group["lr"] == pytest.approx(1e-3 * scale[part])
        assert group["weight_decay"] == pytest.approx(0.05 * scale[part] if kind == "decay" else 0.0)
        assert all((p.ndim <= 1) == (kind == "no_decay") for p in group["params"])
    named = dict(_group_names(optimizer, model))
    assert "backbone.visual.transformer.resblocks.0.ln_1.bias" in named["backbone.no_decay"]
    assert "backbone.visual.class_embedding" in named["backbone.no_decay"]
    assert "backbone.visual.conv1.weight" in named["backbone.decay"]
    assert sum(len(v) for v in named.values()) == len(_trainable(model))

    set_lr(optimizer, 2e-4)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2e-6, 2e-6, 2e-4, 2e-4])

    adapted = _model("st_adapter")
    optimizer = build_optimizer(adapted, _recipe(optim=optim).optim, "cpu")
    assert [g["name"] for g in optimizer.param_groups] == ["adapters.decay", "adapters.no_decay", "head.decay",
                                                           "head.no_decay"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-4, 1e-3, 1e-3])


def test_group_order_is_deterministic_and_resume_restores_it(tmp_path: Path):
    from stadapt.training.state import RunCounters, restore_state, state_files

    optim = _recipe(optim={"scale": {"backbone": 0.01}}).optim
    first, second = _model("partial_finetune"), _model("partial_finetune")
    a, b = build_optimizer(first, optim, "cpu"), build_optimizer(second, optim, "cpu")
    assert _group_names(a, first) == _group_names(b, second)
    assert [n for n, _ in _group_names(a, first)] == [
        "backbone.decay", "backbone.no_decay", "head.decay", "head.no_decay"]
    compiled = torch.compile(first)  # wrappers (torch.compile, DDP) see the same parts
    names = [n for n, _ in _group_names(a, first)]
    assert [g["name"] for g in param_groups(compiled, 0.01, {"backbone": 0.01})] == names

    video, labels = _video()
    F.cross_entropy(first(video), labels).backward()
    a.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    write_trainer_state(tmp_path, state_files(a, scaler, RunCounters(step=1)))
    restore_state(tmp_path, b, scaler)
    assert [(g["name"], g["lr_scale"], g["weight_decay"]) for g in b.param_groups] == \
        [(g["name"], g["lr_scale"], g["weight_decay"]) for g in a.param_groups]
    for p, q in zip(first.parameters(), second.parameters(), strict=True):
        if p in a.state:
            assert torch.equal(a.state[p]["exp_avg"], b.state[q]["exp_avg"])


# --- backbone storage -----------------------------------------------------------------------------------


def test_half_storage_keeps_adapters_fp32_and_trains_under_cpu_bf16_autocast():
    model = _model("st_adapter", train={"backbone_storage": "half", "precision": "bf16"}).train()
    reference = _model("st_adapter").train()  # the same weights, stored in float32
    assert {p.dtype for p in model.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for n, p in model.named_parameters() if not n.startswith("backbone.")} == {torch.float32}
    video, labels = _video()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = model.backbone.embed(video.transpose(1, 2).flatten(0, 1))
        reference_tokens = reference.backbone.embed(video.transpose(1, 2).flatten(0, 1))
        logits = model(video)
        expected = reference(video)
    # the embedding (conv1, class token, positional embedding) runs in the autocast dtype either way
    assert tokens.dtype == reference_tokens.dtype == torch.bfloat16
    torch.testing.assert_close(tokens, reference_tokens, rtol=0, atol=0)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits.float(), expected.float(), rtol=0.05, atol=0.05)
    F.cross_entropy(logits.float(), labels).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if ".conv." in n)  # gradients reach the adapters
    assert all(p.grad is None for p in model.backbone.parameters())
    with pytest.raises(RuntimeError, match="torch.autocast"):
        model(video)  # a 16-bit backbone outside autocast: a clear error, not a dtype mismatch deep inside


def test_backbone_storage_auto_and_fp32_keep_float32_on_the_cpu():
    for storage in ("auto", "fp32"):
        model = _model("st_adapter", train={"backbone_storage": storage, "precision": "bf16"})
        assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize("tuning", ["full_finetune", "partial_finetune"])
def test_half_storage_of_a_trained_backbone_is_an_error_naming_the_fix(tuning):
    with pytest.raises(StadaptError, match="backbone_storage=half") as info:
        _model(tuning, train={"backbone_storage": "half", "precision": "bf16"})
    assert "train.backbone_storage=auto" in str(info.value)
    _model(tuning, train={"backbone_storage": "auto", "precision": "bf16"})  # auto never halves a trained one


def test_half_storage_without_autocast_is_an_error():
    with pytest.raises(StadaptError, match="needs autocast"):
        _model("linear", train={"backbone_storage": "half", "precision": "fp32"})


# --- activation checkpointing ---------------------------------------------------------------------------


def _loss_and_grads(model: VideoClassifier) -> tuple[torch.Tensor, dict[str, torch.Tensor], int, int]:
    """Loss, gradients, and how often MLP branches and adapters ran in the forward and backward passes."""
    calls, adapter_calls = [], []
    original = model.backbone.mlp_branch
    model.backbone.mlp_branch = lambda index, x: calls.append(index) or original(index, x)
    adapters = [m for m in model.adapters.modules() if type(m).__name__ == "STAdapter"]
    for adapter in adapters:  # (forward hooks do not fire when checkpoint recomputes a module)
        adapter.forward = lambda x, forward=adapter.forward: adapter_calls.append(1) or forward(x)
    video, labels = _video()
    loss = F.cross_entropy(model(video), labels)
    loss.backward()
    del model.backbone.mlp_branch
    for adapter in adapters:
        del adapter.forward
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, len(calls), len(adapter_calls)


# what each level runs again in the backward pass: (MLP branches, adapters) of the 4 blocks' 4 + 4
RECOMPUTED = {True: (4, 8), "mlp": (4, 8), "adapters": (0, 8)}


@pytest.mark.parametrize("what", [True, "mlp", "adapters"])
@pytest.mark.parametrize("tuning", ["st_adapter", "full_finetune"])
def test_checkpointing_gives_the_same_loss_and_gradients(tuning, what):
    plain = _model(tuning, train={"checkpointing": False}).train()
    recomputed = _model(tuning, train={"checkpointing": what}).train()
    assert recomputed.checkpointing == what and plain.checkpointing is False
    loss, grads, calls, adapter_calls = _loss_and_grads(plain)
    loss_c, grads_c, calls_c, adapter_calls_c = _loss_and_grads(recomputed)
    again_mlp, again_adapters = RECOMPUTED[what]
    if tuning == "full_finetune":  # no adapters: "adapters" recomputes nothing
        again_adapters = 0
    assert calls == 4 and calls_c == 4 + again_mlp
    assert adapter_calls == (8 if tuning == "st_adapter" else 0) and adapter_calls_c == adapter_calls + again_adapters
    assert torch.allclose(loss, loss_c, rtol=0, atol=1e-7)
    assert grads.keys() == grads_c.keys()
    for name in grads:
        assert torch.allclose(grads[name], grads_c[name], rtol=1e-6, atol=1e-8), name
    recomputed.eval()
    with torch.no_grad():
        assert _loss_and_grads_forward_calls(recomputed) == 4  # off in evaluation


def _kept_for_backward(model: VideoClassifier) -> list[torch.Tensor]:
    """The tensors autograd keeps from one training forward pass outside recomputed regions."""
    kept: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        model(_video()[0])
    return kept


def test_checkpointing_adapters_keeps_nothing_of_bottleneck_width():
    plain, recomputed = (_model(train={"checkpointing": what}).train() for what in (False, "adapters"))
    bottleneck = 16  # _recipe's adapters; clip:tiny is 64 wide
    assert any(t.shape[-1] == bottleneck or t.shape[1:2] == (bottleneck,) for t in _kept_for_backward(plain))
    kept = _kept_for_backward(recomputed)
    assert kept and not any(t.shape[-1] == bottleneck or t.shape[1:2] == (bottleneck,) for t in kept)


def _loss_and_grads_forward_calls(model: VideoClassifier) -> int:
    calls = []
    original = model.backbone.mlp_branch
    model.backbone.mlp_branch = lambda index, x: calls.append(index) or original(index, x)
    model(_video()[0])
    del model.backbone.mlp_branch
    return len(calls)


@pytest.mark.slow  # torch.compile: seconds per case
@pytest.mark.parametrize("what", [True, "mlp", "adapters"])
def test_checkpointed_model_compiles_as_one_graph(what):
    model = _model("st_adapter", train={"checkpointing": what}).train()
    reference = copy.deepcopy(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    video, labels = _video()
    F.cross_entropy(compiled(video), labels).backward()
    F.cross_entropy(reference(video), labels).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


# --- training-memory benchmark --------------------------------------------------------------------------


@pytest.mark.slow  # bench-train measures each mode in its own process
def test_bench_train_command_measures_both_modes(tmp_path: Path):
    import typer
    from typer.testing import CliRunner

    from stadapt.cli.bench_train import bench_train

    app = typer.Typer()
    app.command()(bench_train)
    app.command("other")(lambda: None)  # two commands: bench_train is addressed by name, as under `stadapt`
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench-train", "--backbone", "clip:tiny", "--micro-batch", "1", "--steps", "1",
                                      "--device", "cpu", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "st_adapter / full_finetune" in result.output
    report = json.loads(out.read_text())
    assert list(report["modes"]) == ["st_adapter", "full_finetune"] and report["frames"] == 8
    for row in report["modes"].values():
        assert row["peak_bytes"] > 0 and row["peak_increase_bytes"] > 0 and row["step_seconds"] > 0
    assert report["modes"]["full_finetune"]["trainable_parameters"] == \
        report["modes"]["full_finetune"]["total_parameters"]
    assert report["ratio"]["peak_increase"] > 0


def test_bench_train_rejects_unknown_modes():
    from stadapt.tools.bench.train_memory import bench_train_memory

    with pytest.raises(StadaptError, match="unknown tuning mode"):
        bench_train_memory("clip:tiny", modes=["st_adapter", "no_such_method"], device="cpu")


def test_quick_gelu_keeps_one_tensor_for_backward_and_matches_open_clip():
    from open_clip.transformer import QuickGELU as OpenClipQuickGELU

    from stadapt_clip.backbone import QuickGELU

    x = torch.randn(4, 7, 64, dtype=torch.float64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        ours = QuickGELU()(x)
    assert len(saved) == 1  # open_clip's expression keeps two: x and the sigmoid
    reference = OpenClipQuickGELU()(x)
    assert torch.equal(ours, reference)
    grad = torch.randn_like(ours)
    (mine,) = torch.autograd.grad(ours, x, grad)
    (theirs,) = torch.autograd.grad(reference, x, grad)
    assert torch.allclose(mine, theirs, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        assert torch.equal(QuickGELU()(x), reference)


def _native_attention(backbone_name: str, block: torch.nn.Module):
    """The library's own attention branch of a block, the reference for ours."""
    if backbone_name == "clip:tiny":
        return lambda t: block.ls_1(block.attention(block.ln_1(t)))

    def swag(t: torch.Tensor) -> torch.Tensor:  # classy-vision's attention is sequence-first
        y = block.ln_1(t).transpose(0, 1)
        return block.dropout(block.self_attention(y, y, y, need_weights=False)[0].transpose(0, 1))

    return swag


@pytest.mark.parametrize("backbone_name", ["clip:tiny", "swag:tiny"])
def test_attention_branch_equals_the_library_without_a_broadcast_weight(backbone_name):
    from stadapt.backbones.attention import is_plain_self_attention

    # frozen: the case where nn.MultiheadAttention broadcasts its weight
    backbone = _model("st_adapter", backbone={"name": backbone_name}).train().backbone
    assert all(backbone._plain_attention)
    block = backbone._blocks[1]
    x = torch.randn(3, 17, backbone.feature_width, requires_grad=True)

    def run(branch):
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            y = branch(x)
        (grad,) = torch.autograd.grad(y, x, torch.randn(y.shape, generator=torch.Generator().manual_seed(0)))
        return y, grad, [t for t in kept if 0 in t.stride()]

    ours, our_grad, our_broadcast = run(lambda t: backbone.attn_branch(1, t))
    theirs, their_grad, their_broadcast = run(_native_attention(backbone_name, block))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-5, atol=1e-6)
    # the (L, N, C) layout makes the in-projection a bmm over the weight broadcast to every token,
    # which the CPU copies in bf16 (0.7 GB per ViT-B block); ours keeps no broadcast
    assert their_broadcast and not our_broadcast
    attn = block.attn if backbone_name == "clip:tiny" else block.self_attention
    attn.add_zero_attn = True  # attention this path does not compute: the library's own forward runs
    assert not is_plain_self_attention(attn)
