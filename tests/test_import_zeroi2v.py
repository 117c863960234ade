"""`stadapt import-checkpoint --format zeroi2v`: ZeroI2V's own checkpoints (tests/reference_zeroi2v.py's port, saved
as mmengine's Runner saves them, with a message_hub whose class is not importable) are read without importing or
running anything of the file's, map onto the CLIP plugin's tower and the zeroi2v tuner's keys, and their settings
come from the tensors, the config text or the user, never a guess.

The port's tiny tower (32 px, patch 16, width 96, 2 blocks, 12 heads) is not a listed CLIP variant: it is
registered as an open_clip model configuration (`stadapt-zeroi2v-tiny`, QuickGELU as OpenAI's) and named with
--backbone clip:stadapt-zeroi2v-tiny, as tests/test_import_aim.py does for AIM's."""

from __future__ import annotations

import contextlib
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from reference_zeroi2v import (
    I3DHead,
    Recognizer3D,
    ViT_Zero_CLIP,
    build_tiny_zeroi2v,
    save_mmaction_checkpoint,
    tiny_backbone_kwargs,
)

from stadapt.errors import CheckpointError
from stadapt.tools.interop.clip_tower import config_values
from stadapt.tools.interop.zeroi2v import (
    infer_zeroi2v_layout,
    read_zeroi2v,
    zeroi2v_settings,
    zeroi2v_to_stadapt,
)

NAME = "stadapt-zeroi2v-tiny"
BACKBONE = f"clip:{NAME}"
WIDTH, HEADS, LAYERS, T, SIZE = 96, 12, 2, 4, 32
MMENGINE = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
# vit_zero_base_clip_sthv2_u16.py's model part as mmengine's pretty_text prints it (`dict(...)`, not a repr)
SSV2_CONFIG = """model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='ViT_Zero_CLIP_ablation',
        pretrained='pretrained_models',
        input_resolution=224,
        patch_size=16,
        num_frames=16,
        width=768,
        layers=12,
        heads=12,
        dropout_rate=0,
        adapter_scale=1,
        num_tadapter=2,
        stdha_cfg=dict(
            shift_div=12,
            divide_head=False,
            long_shift_div=12,
            long_shift_right=True)),
    cls_head=dict(type='I3DHead', in_channels=768, num_classes=174, dropout_ratio=0.5, average_clips='prob'))
"""


@pytest.fixture(autouse=True, scope="module")
def _tiny_open_clip_model(tmp_path_factory: pytest.TempPathFactory):
    """The port's tower as an open_clip model config; one intra-op thread (tiny tensors on a busy machine).
    Both restored after."""
    import open_clip
    from open_clip import factory

    folder = tmp_path_factory.mktemp("open_clip_config")
    vision = {"image_size": SIZE, "patch_size": 16, "width": WIDTH, "layers": LAYERS, "head_width": WIDTH // HEADS,
              "mlp_ratio": 4.0}
    text = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
    (folder / f"{NAME}.json").write_text(json.dumps({"embed_dim": 32, "quick_gelu": True, "vision_cfg": vision,
                                                     "text_cfg": text}))
    open_clip.add_model_config(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    factory._MODEL_CONFIGS.pop(NAME, None)


def _port(num_tadapter: int = 2, **kwargs) -> Recognizer3D:
    return build_tiny_zeroi2v(seed=num_tadapter, num_classes=5, width=WIDTH, heads=HEADS, layers=LAYERS,
                              num_frames=T, num_tadapter=num_tadapter, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# the restricted reader
# ---------------------------------------------------------------------------------------------------------------


def write_marker(path: str) -> None:
    """What the hostile objects below run when a plain unpickler builds them."""
    Path(path).write_text("the file ran code")


class Hostile:
    """Unpickled by a plain torch.load, it calls write_marker (its __reduce__)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (write_marker, (self.marker,))


class HostileState:
    """Unpickled by a plain torch.load, its __setstate__ (pickle's BUILD) calls write_marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        write_marker(state["marker"])


@contextlib.contextmanager
def _mmengine_while_saving() -> Iterator[type]:
    """A HistoryBuffer class in mmengine.logging.history_buffer, there while the file is written only (as on
    the machine that trained it); mmengine itself is not installed here."""
    saved = {name: sys.modules.get(name) for name in MMENGINE}

    class HistoryBuffer:
        def __init__(self, values: list[float]) -> None:
            self._log_history = values
            self.max_length = 1000000

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = MMENGINE[-1], "HistoryBuffer"
    for name in MMENGINE:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[MMENGINE[-1]].HistoryBuffer = HistoryBuffer  # type: ignore[attr-defined]
    try:
        yield HistoryBuffer
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def save_training_checkpoint(port: Recognizer3D, path: Path, **extra: object) -> Path:
    """The port's checkpoint as mmengine writes it: meta (cfg text), state_dict, and a message_hub of
    HistoryBuffers, optimizer and param_schedulers; `extra` entries at the top level."""
    with _mmengine_while_saving() as history_buffer:
        hub = {"meta": {}, "log_scalars": {"train/loss": history_buffer([2.3, 1.9])},
               "runtime_info": {"epoch": 40, "iter": 1000}, "resumed_keys": {"epoch": False}}
        optimizer = {"state": {0: {"step": torch.tensor(1000.0), "exp_avg": torch.zeros(3)}},
                     "param_groups": [{"lr": 1e-4, "params": [0]}]}
        return save_mmaction_checkpoint(port, path, extra={"message_hub": hub, "optimizer": optimizer,
                                                           "param_schedulers": [{"last_epoch": 40}], **extra})


def test_the_reader_imports_and_runs_nothing_of_the_file(tmp_path: Path):
    marker = tmp_path / "marker"
    control = tmp_path / "control.pth"  # the hostile objects are real: a plain load runs them
    torch.save({"a": Hostile(marker)}, control)
    torch.load(control, weights_only=False)
    assert marker.read_text() == "the file ran code"
    marker.unlink()

    port = _port()
    path = save_training_checkpoint(port, tmp_path / "epoch_40.pth", hostile=Hostile(marker),
                                    hostile_state=HostileState(marker))
    with pytest.raises(Exception, match="Unsupported global"):  # why a weights-only load will not do
        torch.load(path, weights_only=True)
    assert not any(name in sys.modules for name in MMENGINE)

    tensors, config = read_zeroi2v(path)
    assert not marker.exists()
    assert not any(name in sys.modules for name in MMENGINE)  # the message_hub's module was never imported
    want = port.state_dict()
    assert list(tensors) == list(want)
    assert all(torch.equal(tensors[k], want[k]) for k in want)
    assert config is not None and "type='ViT_Zero_CLIP'" in config and "adapter_scale=0.5" in config


def _one_line(error: pytest.ExceptionInfo, *words: str) -> None:
    text = str(error.value)
    assert "\n" not in text and all(w in text for w in words), text


def test_bad_files_are_refused_in_one_line(tmp_path: Path):
    not_torch = tmp_path / "notes.pth"
    not_torch.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError) as error:
        read_zeroi2v(not_torch)
    _one_line(error, "could not read checkpoint", "notes.pth")

    whole = save_training_checkpoint(_port(), tmp_path / "epoch_40.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError) as error:
        read_zeroi2v(truncated)
    _one_line(error, "truncated")

    other = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(3, 4)}}, other)
    with pytest.raises(CheckpointError) as error:
        read_zeroi2v(other)
    _one_line(error, "is not a ZeroI2V checkpoint")

    aim = {k.replace("T_Adapter_in", "T_Adapter"): v for k, v in _port(num_tadapter=1).state_dict().items()}
    torch.save({"meta": {}, "state_dict": aim}, tmp_path / "aim.pth")  # AIM's layout: T_Adapter
    with pytest.raises(CheckpointError) as error:
        read_zeroi2v(tmp_path / "aim.pth")
    _one_line(error, "AIM", "--format aim")

    partial = {k: v for k, v in _port().state_dict().items() if "resblocks.1.S_Adapter" not in k}
    with pytest.raises(CheckpointError) as error:
        infer_zeroi2v_layout(partial, "partial.pth")
    _one_line(error, "some blocks only", "S_Adapter: 1 of 2")


# ---------------------------------------------------------------------------------------------------------------
# keys, shapes and settings
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_tadapter", [1, 2])
def test_the_keys_map_onto_the_clip_tower_and_the_tuners_names(num_tadapter: int):
    import open_clip

    port = _port(num_tadapter=num_tadapter)
    tower, trainable = zeroi2v_to_stadapt(port.state_dict())
    visual = open_clip.create_model(NAME).visual.state_dict()
    assert {f"visual.{k}": tuple(v.shape) for k, v in visual.items() if k != "proj"} == \
        {k: tuple(v.shape) for k, v in tower.items()}  # the whole tower but CLIP's proj, which ZeroI2V drops
    adapters = ["t_adapter_in", "s_adapter", "mlp_adapter"] + (["mlp_adapter_out"] if num_tadapter == 2 else [])
    expected = {"adapters.temporal_embedding", "head.fc.weight", "head.fc.bias", "backbone.visual.ln_post.weight",
                "backbone.visual.ln_post.bias"}
    expected |= {f"adapters.blocks.{i}.{a}.{fc}.{kind}" for i in range(LAYERS) for a in adapters
                 for fc in ("fc1", "fc2") for kind in ("weight", "bias")}
    assert set(trainable) == expected
    block = port.backbone.transformer.resblocks[1]
    assert torch.equal(trainable["adapters.blocks.1.t_adapter_in.fc1.weight"], block.T_Adapter_in.D_fc1.weight)
    assert torch.equal(tower["visual.transformer.resblocks.1.attn.in_proj_weight"], block.attn.in_proj_weight)
    assert torch.equal(trainable["adapters.temporal_embedding"], port.backbone.temporal_embedding)


@pytest.mark.parametrize("shape, name", [({"width": 768, "heads": 12, "layers": 12, "patch_size": 16},
                                          "clip:ViT-B-16"),
                                         ({"width": 1024, "heads": 16, "layers": 24, "patch_size": 14},
                                          "clip:ViT-L-14")])
def test_the_layout_is_read_from_the_shapes(shape: dict, name: str):
    """On meta-device tensors (no weights): ZeroI2V's released towers, frames, classes, num_tadapter and the
    adapters' width; the merged form (no adapters) likewise."""
    from stadapt.tools.interop.clip_tower import detect_backbone

    with torch.device("meta"):
        kwargs = tiny_backbone_kwargs(input_resolution=224, num_frames=16, num_tadapter=1, **shape)
        port = Recognizer3D(ViT_Zero_CLIP(**kwargs), I3DHead(num_classes=174, in_channels=shape["width"]))
    layout = infer_zeroi2v_layout(port.state_dict(), "epoch_40.pth")
    assert detect_backbone(layout.tower.key, "epoch_40.pth", "ZeroI2V") == name
    assert (layout.num_frames, layout.num_classes, layout.num_tadapter, layout.mlp_ratio, layout.merged) == \
        (16, 174, 1, 0.25, False)
    merged = infer_zeroi2v_layout({k: v for k, v in port.state_dict().items() if "Adapter" not in k}, "eval.pth")
    assert (merged.merged, merged.num_tadapter, merged.num_frames, merged.tower) == (True, None, 16, layout.tower)


def test_settings_come_from_the_config_text(tmp_path: Path):
    port = _port(num_tadapter=2, adapter_scale=0.5)
    tensors, text = read_zeroi2v(save_mmaction_checkpoint(port, tmp_path / "epoch_40.pth"))
    layout = infer_zeroi2v_layout(tensors, "epoch_40.pth")
    assert zeroi2v_settings(layout, text, {}, "epoch_40.pth") == {
        "shift_div": 12, "long_shift_div": -1, "long_shift_right": False, "adapter_scale": 0.5,
        "adapter_dropout": 0.1, "mlp_ratio": 0.25, "num_tadapter": 2, "temporal_embedding": True, "merged": False}
    ssv2 = zeroi2v_settings(layout, SSV2_CONFIG, {"quick_gelu": True}, "ssv2.pth")
    assert (ssv2["shift_div"], ssv2["long_shift_div"], ssv2["long_shift_right"], ssv2["adapter_scale"],
            ssv2["adapter_dropout"]) == (12, 12, True, 1.0, 0.0)
    assert config_values(SSV2_CONFIG, "shift_div") == ["12"]  # not long_shift_div's


def test_what_no_tensor_holds_is_asked_for_never_guessed():
    layout = infer_zeroi2v_layout(_port().state_dict(), "epoch_40.pth")
    with pytest.raises(CheckpointError) as error:  # no config: adapter_scale and the long shift must be said
        zeroi2v_settings(layout, None, {"adapter_scale": 0.5}, "epoch_40.pth")
    _one_line(error, "long_shift_div", "--option long_shift_div=-1", "long_shift_right=true")
    with pytest.raises(CheckpointError) as error:
        zeroi2v_settings(layout, None, {"long_shift_div": -1}, "epoch_40.pth")
    _one_line(error, "adapter_scale", "--option adapter_scale=", "0.5")
    options: dict[str, object] = {"adapter_scale": 1, "long_shift_div": 12, "long_shift_right": True,
                                  "quick_gelu": True}
    said = zeroi2v_settings(layout, None, options, "epoch_40.pth")
    assert (said["adapter_scale"], said["long_shift_div"], said["long_shift_right"], said["shift_div"]) == \
        (1.0, 12, True, 12)
    assert options == {"quick_gelu": True}  # the rest are the backbone's
    with pytest.raises(CheckpointError) as error:  # an option that disagrees with the config
        zeroi2v_settings(layout, SSV2_CONFIG, {"adapter_scale": 0.5}, "ssv2.pth")
    _one_line(error, "disagrees", "adapter_scale=1")
    with pytest.raises(CheckpointError) as error:
        zeroi2v_settings(layout, SSV2_CONFIG.replace("divide_head=False", "divide_head=True"), {}, "ssv2.pth")
    _one_line(error, "divide_head=True")


def test_the_merged_form_takes_the_k400_shift_unless_told():
    flat = {k: v for k, v in _port().state_dict().items() if "Adapter" not in k}
    layout = infer_zeroi2v_layout(flat, "epoch_40_eval.pth")
    assert zeroi2v_settings(layout, None, {}, "epoch_40_eval.pth") == {
        "shift_div": 12, "long_shift_div": -1, "long_shift_right": False, "merged": True}
    told = zeroi2v_settings(layout, None, {"long_shift_div": 12, "long_shift_right": True}, "epoch_40_eval.pth")
    assert (told["long_shift_div"], told["long_shift_right"], told["merged"]) == (12, True, True)
    # an eval model's config: its blocks default shift_div to 4 and never read the long shift
    evaluation = "backbone=dict(type='ViT_Zero_CLIP_eval', stdha_cfg=dict(divide_head=False, long_shift_div=12))"
    assert zeroi2v_settings(layout, evaluation, {}, "eval.pth") == {
        "shift_div": 4, "long_shift_div": -1, "long_shift_right": False, "merged": True}


# ---------------------------------------------------------------------------------------------------------------
# end to end: the imported folder gives the port's logits
# ---------------------------------------------------------------------------------------------------------------

K400_STDHA = {"shift_div": 12, "divide_head": False}
SSV2_STDHA = {"shift_div": 12, "divide_head": False, "long_shift_div": 12, "long_shift_right": True}


def _video(seed: int = 1) -> torch.Tensor:
    """Two clips as both models take them: (B, 3, T, H, W), already normalised."""
    return torch.randn(2, 3, T, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _max_diff(model: torch.nn.Module, port: torch.nn.Module) -> float:
    video = _video()
    with torch.no_grad():
        want, got = port(video), model(video)
    assert want.abs().max() > 0.1  # logits that say something
    return (got - want).abs().max().item()


@pytest.mark.parametrize("num_tadapter, stdha, scale", [(1, K400_STDHA, 0.5), (2, SSV2_STDHA, 1.0)])
def test_an_imported_training_checkpoint_gives_the_ports_logits(num_tadapter: int, stdha: dict, scale: float,
                                                                 tmp_path: Path):
    from stadapt.api import load_model
    from stadapt.tools.interop.zeroi2v import import_zeroi2v

    port = _port(num_tadapter=num_tadapter, adapter_scale=scale, stdha_cfg=stdha)
    path = save_training_checkpoint(port, tmp_path / "epoch_40.pth")
    out = import_zeroi2v(path, out=tmp_path / "imported", backbone=BACKBONE)
    record = json.loads((out / "stadapt.json").read_text())["model"]
    assert (record["tuning"], record["num_frames"], record["num_classes"]) == ("zeroi2v", T, 5)
    settings = record["adapter"]
    assert (settings["num_tadapter"], settings["adapter_scale"], settings["shift_div"], settings["merged"]) == \
        (num_tadapter, scale, 12, False)
    assert (settings["long_shift_div"], settings["long_shift_right"]) == \
        (stdha.get("long_shift_div", -1), stdha.get("long_shift_right", False))
    diff = _max_diff(load_model(out), port)
    print(f"training form, num_tadapter={num_tadapter}, scale {scale}: max |diff| {diff:.2e}")
    assert diff <= 1e-4


def test_the_merged_flat_form_gives_the_ports_logits(tmp_path: Path):
    """weight_reparam.py's flat state dict: merged=True, no adapters, the folded tower in backbone.safetensors;
    its logits are the port's eval model's on the same weights. An SSv2 model merged the same way keeps its
    long shift when told (`--option`), and then gives the logits of the model it was trained as."""
    from reference_zeroi2v import build_tiny_zeroi2v_eval, merge_linear_adapters
    from safetensors.torch import load_file

    from stadapt.api import load_model
    from stadapt.tools.interop.zeroi2v import import_zeroi2v

    port = _port(num_tadapter=2, adapter_scale=0.5, stdha_cfg=K400_STDHA)
    flat = merge_linear_adapters(port.state_dict(), scale=0.5)
    torch.save(flat, tmp_path / "epoch_40_eval.pth")
    evaluation = build_tiny_zeroi2v_eval(num_classes=5, width=WIDTH, heads=HEADS, layers=LAYERS, num_frames=T,
                                         stdha_cfg=K400_STDHA)
    evaluation.load_state_dict(flat, strict=True)
    out = import_zeroi2v(tmp_path / "epoch_40_eval.pth", out=tmp_path / "merged", backbone=BACKBONE)
    settings = json.loads((out / "stadapt.json").read_text())["model"]["adapter"]
    assert settings["merged"] is True and (settings["shift_div"], settings["long_shift_div"]) == (12, -1)
    tower = load_file(out / "backbone.safetensors")
    assert torch.equal(tower["visual.transformer.resblocks.0.mlp.c_fc.weight"],
                       flat["backbone.transformer.resblocks.0.mlp.c_fc.weight"])  # the folded weights
    assert not any("adapter" in k.lower() and "temporal" not in k for k in load_model(out).state_dict())
    diff = _max_diff(load_model(out), evaluation)
    print(f"merged form: max |diff| {diff:.2e} against the port's eval model")
    assert diff <= 1e-4

    ssv2 = _port(num_tadapter=1, adapter_scale=1.0, stdha_cfg=SSV2_STDHA)
    torch.save(merge_linear_adapters(ssv2.state_dict(), scale=1.0), tmp_path / "ssv2_eval.pth")
    out = import_zeroi2v(tmp_path / "ssv2_eval.pth", out=tmp_path / "ssv2", backbone=BACKBONE,
                         options={"long_shift_div": 12, "long_shift_right": True})
    diff = _max_diff(load_model(out), ssv2)
    print(f"merged SSv2 form with its long shift: max |diff| {diff:.2e} against the adapted port")
    assert diff <= 1e-4


def test_the_console_script_imports_and_predicts(tmp_path: Path):
    """`stadapt import-checkpoint --format zeroi2v` then `stadapt predict` on the folder alone; a damaged file
    is refused in one line with exit code 2."""
    from helpers import run_cli

    from stadapt.data.synthetic import SyntheticSpec, write_synthetic

    root = tmp_path / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=1, val_per_class=1, frames=10,
                                        size=SIZE, clutter=2))
    classes = root / "classes.txt"
    port = build_tiny_zeroi2v(seed=3, num_classes=len(classes.read_text().splitlines()), width=WIDTH, heads=HEADS,
                              layers=LAYERS, num_frames=T, num_tadapter=2)
    path = save_training_checkpoint(port, tmp_path / "best_acc_top1_epoch_40.pth")
    out = tmp_path / "imported"
    done = run_cli("import-checkpoint", "--format", "zeroi2v", str(path), "--out", str(out), "--backbone", BACKBONE,
                   "--classes", str(classes), "--views", "1x1", "--stride", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "zeroi2v: " in done.stdout and "shift_div 12" in done.stdout
    predicted = run_cli("predict", str(next(root.rglob("*.mp4"))), "--checkpoint", str(out), "--json",
                        "--device", "cpu")
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:4096])
    refused = run_cli("import-checkpoint", "--format", "zeroi2v", str(truncated), "--out", str(tmp_path / "no"))
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "truncated" in lines[0], refused.stderr
    assert not (tmp_path / "no").exists()
