"""`tuning: zeroi2v` against tests/reference_zeroi2v.py, the line-by-line port of ZeroI2V's ViT_Zero_CLIP: the same
weights in stadapt's CLIP plugin (an open_clip tower of the port's tiny shape, QuickGELU) and in the tuner's modules
give the port's logits, with every path live (random adapters and temporal embedding), with and without the long
shift; the merge equals the port's weight_reparam and its adapter-free eval model, and merge_model keeps only the
backbone, the temporal embedding and the head; the method passes the tuner conformance suite (merge included)."""

from __future__ import annotations

import re

import pytest
import torch
from reference_zeroi2v import Recognizer3D, build_tiny_zeroi2v, build_tiny_zeroi2v_eval, merge_linear_adapters

from stadapt.backbones import load_plugin
from stadapt.errors import PluginError, StadaptError
from stadapt.model.classifier import ModelConfig, VideoClassifier
from stadapt.model.merge import merge_model
from stadapt.model.tuner_conformance import assert_tuner_conformant
from stadapt_clip.backbone import ClipBackbone, build_open_clip_tower
from stadapt_tuners.zeroi2v import ZeroI2VSettings

B, T, SIZE, WIDTH, LAYERS, CLASSES = 2, 4, 32, 96, 2, 5
LONG = {"none": {}, "right": {"long_shift_div": 12, "long_shift_right": True}, "left": {"long_shift_div": 12}}
ADAPTERS = {"T_Adapter_in": "t_adapter_in", "S_Adapter": "s_adapter", "MLP_Adapter": "mlp_adapter",
            "MLP_Adapter_out": "mlp_adapter_out"}
_ADAPTER_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(\w+)\.D_(fc[12])\.(weight|bias)")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest on a busy machine. Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def to_stadapt(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A ZeroI2V state dict as (the CLIP tower's `visual.*` tensors, the rest in stadapt's keys): a renaming."""
    tower: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("cls_head.fc_cls."):
            rest["head.fc." + key.removeprefix("cls_head.fc_cls.")] = value
            continue
        name = key.removeprefix("backbone.")
        found = _ADAPTER_KEY.fullmatch(name)
        if found:
            index, adapter, layer, kind = found.groups()
            rest[f"adapters.blocks.{index}.{ADAPTERS[adapter]}.{layer}.{kind}"] = value
        elif name == "temporal_embedding":
            rest["adapters.temporal_embedding"] = value
        else:
            tower[f"visual.{name}"] = value
    return tower, rest


def clip_tower() -> ClipBackbone:
    """open_clip's tower of the port's tiny shape (width 96, 12 heads, 2 layers, patch 16, 32 px, QuickGELU)."""
    visual = build_open_clip_tower(32, dict(image_size=SIZE, patch_size=16, width=WIDTH, layers=LAYERS,
                                            head_width=WIDTH // 12, mlp_ratio=4.0), quick_gelu=True)
    return ClipBackbone(visual)


def stadapt_zeroi2v(port: Recognizer3D, settings: ZeroI2VSettings) -> VideoClassifier:
    """stadapt's ZeroI2V on the CLIP plugin with the port's weights (strict: every tensor has its place)."""
    model = VideoClassifier(clip_tower(), CLASSES, T, settings, dropout=0.5, tuning="zeroi2v")
    tower, rest = to_stadapt(port.state_dict())
    model.backbone.load_state_dict(tower, strict=True)
    missing, unexpected = model.load_state_dict(rest, strict=False)
    assert not unexpected and all(k.startswith("backbone.") for k in missing), unexpected
    return model.eval()


def _port(num_tadapter: int, long: str, seed: int = 0) -> Recognizer3D:
    return build_tiny_zeroi2v(seed=seed, num_tadapter=num_tadapter,
                              stdha_cfg={"shift_div": 12, "divide_head": False, **LONG[long]})


def _video(seed: int = 1) -> torch.Tensor:
    return torch.randn(B, 3, T, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_tadapter, long", [(1, "none"), (2, "none"), (1, "right"), (2, "right"), (2, "left")])
def test_logits_equal_the_port(num_tadapter: int, long: str):
    port = _port(num_tadapter, long)
    ours = stadapt_zeroi2v(port, ZeroI2VSettings(num_tadapter=num_tadapter, **LONG[long]))
    video = _video()
    with torch.no_grad():
        want, got = port(video), ours(video)
        if long != "none":  # the long shift is live: without it the port gives other logits
            assert (_port(num_tadapter, "none")(video) - want).abs().max() > 1e-3
    diff = (got - want).abs().max().item()
    print(f"num_tadapter={num_tadapter} long shift={long}: max |diff| {diff:.2e} (logits up to {want.abs().max():.2f})")
    assert want.abs().max() > 0.1 and diff <= 1e-4


@pytest.mark.parametrize("num_tadapter", [1, 2])
def test_merge_is_the_ports_reparam(num_tadapter: int):
    """merge_model folds the adapters as tools/weight_reparam.py does: the merged backbone holds the port's
    merged weights, gives the logits of the port's adapter-free eval model (ViT_Zero_CLIP_eval) and of the model
    before the merge, and the merged model holds exactly the backbone's tensors, the temporal embedding and the head."""
    port = _port(num_tadapter, "none", seed=3)
    settings = ZeroI2VSettings(num_tadapter=num_tadapter)
    ours = stadapt_zeroi2v(port, settings)
    native = set(clip_tower().state_dict())
    video = _video()
    plain = build_tiny_zeroi2v_eval(num_tadapter=num_tadapter)
    plain.load_state_dict(merge_linear_adapters(port.state_dict(), scale=0.5), strict=True)
    with torch.no_grad():
        before, want = ours(video), plain(video)
        merged, config = merge_model(ours, ModelConfig("clip:tiny", CLASSES, T, settings, tuning="zeroi2v"))
        got = merged(video)
    assert config.adapter == settings.model_copy(update={"merged": True})
    diff, kept = (got - want).abs().max().item(), (got - before).abs().max().item()
    print(f"num_tadapter={num_tadapter}: merged vs the port's eval model {diff:.2e}, vs before the merge {kept:.2e}")
    assert want.abs().max() > 0.1 and diff <= 1e-4 and kept <= 1e-4
    tower, _ = to_stadapt(plain.state_dict())
    for key, value in tower.items():
        torch.testing.assert_close(merged.backbone.state_dict()[key], value, rtol=0, atol=1e-5)
    assert set(merged.state_dict()) == {f"backbone.{k}" for k in native} | {
        "adapters.temporal_embedding", "head.fc.weight", "head.fc.bias"}
    assert sorted(merged.trainable_state_dict()) == ["adapters.temporal_embedding", "backbone.visual.ln_post.bias",
                                                     "backbone.visual.ln_post.weight", "head.fc.bias",
                                                     "head.fc.weight"]


def test_merge_keeps_the_long_shift():
    """The port's eval model drops the long shift (it does not pass long_shift_div); the merged settings keep it."""
    port = _port(2, "right", seed=4)
    settings = ZeroI2VSettings(num_tadapter=2, **LONG["right"])
    ours = stadapt_zeroi2v(port, settings)
    with torch.no_grad():
        merged, config = merge_model(ours, ModelConfig("clip:tiny", CLASSES, T, settings, tuning="zeroi2v"))
        diff = (merged(_video()) - port(_video())).abs().max().item()
    assert config.adapter.long_shift_right and config.adapter.merged and diff <= 1e-4


def test_trainable_set_is_zeroi2vs():
    """What trains is what upstream's init_weights leaves trainable (Adapter, temporal_embedding, ln_post,
    cls_head), tensor for tensor."""
    port = _port(2, "none")
    ours = stadapt_zeroi2v(port, ZeroI2VSettings())
    theirs = {k: v for k, v in port.state_dict().items()
              if any(s in k for s in ("Adapter", "temporal_embedding", "ln_post", "cls_head"))}
    tower, rest = to_stadapt(theirs)
    assert sorted(ours.trainable_state_dict()) == sorted([*rest, *(f"backbone.{k}" for k in tower)])


def test_adapter_dropout_acts_in_training_only():
    ours = stadapt_zeroi2v(_port(2, "none"), ZeroI2VSettings(adapter_dropout=0.5))
    video = _video()
    with torch.no_grad():
        evaluated = [ours.eval()(video) for _ in range(2)]
        trained = [ours.train()(video) for _ in range(2)]
    assert torch.equal(*evaluated) and not torch.equal(*trained)


def test_conformance_and_merge_check_runs():
    results = {r.name: r.detail for r in assert_tuner_conformant("zeroi2v")}
    assert results["merge keeps the logits"].startswith("max |diff|"), results


def test_a_backbone_without_attention_projections_is_refused_in_one_line():
    swin = load_plugin("timm").build("swin_tiny_test")
    with pytest.raises(PluginError) as info:
        VideoClassifier(swin, CLASSES, 2, ZeroI2VSettings(), tuning="zeroi2v", backbone_name="timm:swin_tiny_test")
    text = str(info.value)
    assert "needs the backbone hook attention_projections, which timm:swin_tiny_test" in text and "\n" not in text


def test_a_layer_scale_before_s_adapter_refuses_the_merge_and_changes_nothing():
    from open_clip.transformer import LayerScale

    port = _port(2, "none")
    ours = stadapt_zeroi2v(port, ZeroI2VSettings())
    ours.backbone.visual.transformer.resblocks[1].ls_1 = LayerScale(WIDTH, 0.5)
    before = {k: v.clone() for k, v in ours.backbone.state_dict().items()}
    with pytest.raises(StadaptError) as info:
        merge_model(ours, ModelConfig("clip:tiny", CLASSES, T, ZeroI2VSettings(), tuning="zeroi2v"))
    assert "block 1" in str(info.value) and "layer scale" in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in ours.backbone.state_dict().items())


def test_vit_b_16_counts_are_zeroi2vs():
    """On clip:ViT-B-16 (meta device) with 8 frames and 400 classes, the trainable parameters are those upstream
    trains in the port at the released K400 shape (14.5M: the paper's 14M), and the total is the port's."""
    from reference_zeroi2v import I3DHead, ViT_Zero_CLIP

    from stadapt.tools.bench.params import model_parameter_counts

    config = ModelConfig("clip:ViT-B-16", 400, 8, ZeroI2VSettings(), dropout=0.0, tuning="zeroi2v")
    _, _, counts = model_parameter_counts(config)
    with torch.device("meta"):
        port = Recognizer3D(ViT_Zero_CLIP(224, 8, 16, 768, 12, 12, num_tadapter=2), I3DHead(400, 768))
    trained = sum(p.numel() for n, p in port.named_parameters()
                  if any(s in n for s in ("Adapter", "temporal_embedding", "ln_post", "cls_head")))
    assert counts["trainable"] == trained == 14_517_136
    assert counts["total"] == sum(p.numel() for p in port.parameters())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's notes on its legacy exporter
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the folds follow the weights' shapes: constants
def test_stdha_exports_to_onnx_with_a_dynamic_batch():
    """STDHA traced by the TorchScript ONNX exporter (what `stadapt export` falls back to) gives its values in
    onnxruntime for another batch size (an in-place shift had exported wrongly)."""
    import io

    ort = pytest.importorskip("onnxruntime")
    from torch import nn

    from stadapt.backbones.attention import AttentionProjections
    from stadapt_tuners.zeroi2v_modules import ZeroI2VModules

    class Stdha(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.zero = ZeroI2VModules([24], T, ZeroI2VSettings(**LONG["right"]))
            self.qkv, self.out = nn.Linear(24, 72), nn.Linear(24, 24)

        def forward(self, y: torch.Tensor) -> torch.Tensor:
            return self.zero.stdha(AttentionProjections(self.qkv.weight, self.qkv.bias, self.out, 2), y)

    module, buffer = Stdha().eval(), io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, (torch.randn(2 * T, 5, 24),), buffer, opset_version=17, dynamo=False,
                          input_names=["y"], dynamic_axes={"y": {0: "frames"}})
        y = torch.randn(3 * T, 5, 24)
        want = module(y)
    got = ort.InferenceSession(buffer.getvalue()).run(None, {"y": y.numpy()})[0]
    assert (torch.from_numpy(got) - want).abs().max() <= 1e-5


def test_a_recipe_with_long_shift_right_but_no_long_shift_is_refused():
    from stadapt_tuners import zeroi2v

    assert zeroi2v.recipe_problems({"long_shift_right": True})[0][0] == "long_shift_right"
    assert zeroi2v.recipe_problems({"long_shift_right": True, "long_shift_div": 12}) == []
