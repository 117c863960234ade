"""ONNX that consumers can use (issue 18.7): the dynamo exporter first (the TorchScript one only as the
fallback, with the reason in the output and the metadata), weights in one external data file moved into
place together with the graph, and `--input uint8` graphs that normalise raw frames inside."""

from __future__ import annotations

import hashlib
import json
import shutil
from itertools import islice
from pathlib import Path

import av
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from helpers import run_cli
from test_export import run  # noqa: F401 - the tiny trained run fixture (clip:tiny, 4 frames, 32 px, 2 classes)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _opset(path: Path) -> int:
    return next(e.version for e in onnx.load(str(path), load_external_data=False).opset_import if e.domain == "")


def _session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _videos(run: Path) -> list[Path]:  # noqa: F811
    meta = json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())
    return sorted(Path(meta["recipe"]["data"]["root"]).glob("videos/val/*.mp4"))


def _digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


# --- 1. the dynamo exporter first, TorchScript only as the fallback --------------------------------------


def test_the_dynamo_exporter_writes_the_graph_and_says_so(run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "m.onnx"
    done = run_cli("export", "--onnx", "--checkpoint", str(run), "--out", str(out), "--verify")
    assert done.returncode == 0, done.stderr
    assert "dynamo exporter, opset 18" in done.stdout and "TorchScript" not in done.stdout
    assert "verified with onnxruntime" in done.stdout
    props = _props(out)
    assert props["exporter"] == "dynamo" and "exporter_fallback_reason" not in props
    assert _opset(out) == 18
    from stadapt.cli.export import DEFAULT_OPSET as CLI_DEFAULT
    from stadapt.tools.export.graph import DEFAULT_OPSET
    assert CLI_DEFAULT == DEFAULT_OPSET == 18  # the CLI's copy (it imports no torch for --help) agrees
    assert done.stderr.count("\n") <= 2, done.stderr  # the exporter's progress and graph dumps stay off the console


def test_an_opset_the_dynamo_exporter_cannot_reach_falls_back_and_says_why(run: Path, tmp_path: Path) -> None:  # noqa: F811
    """The dynamo exporter makes opset 18 graphs; its down-conversion to 17 fails for this graph (onnx's
    converter has no adapter for some of its nodes) and would otherwise hand back opset 18 silently."""
    out = tmp_path / "m17.onnx"
    done = run_cli("export", "--onnx", "--checkpoint", str(run), "--out", str(out), "--opset", "17", "--verify")
    assert done.returncode == 0, done.stderr
    assert "torchscript exporter, opset 17" in done.stdout, done.stdout
    assert "used the TorchScript exporter because the dynamo exporter failed" in done.stdout
    assert "opset 17" in done.stdout.split("because", 1)[1] and "verified with onnxruntime" in done.stdout
    props = _props(out)
    assert props["exporter"] == "torchscript" and "opset 17" in props["exporter_fallback_reason"]
    assert _opset(out) == 17


def test_a_model_torch_export_cannot_capture_is_traced_instead(tmp_path: Path) -> None:
    from stadapt.tools.export.graph import export_graph

    class DataDependent(torch.nn.Module):  # a Python branch on a tensor's value: torch.export refuses it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if float(x.abs().sum()) > 1e9:
                return x
            return x * 3

    graph = export_graph(DataDependent().eval(), torch.ones(2, 3), tmp_path / "d.onnx", 18)
    assert graph.exporter == "torchscript"
    assert graph.fallback_reason is not None and "data-dependent" in graph.fallback_reason
    assert "\x1b[" not in graph.fallback_reason and "\n" not in graph.fallback_reason
    x = np.arange(12, dtype=np.float32).reshape(4, 3)  # batch 4: the batch dimension stayed dynamic
    np.testing.assert_allclose(_session(tmp_path / "d.onnx").run(None, {"video": x})[0], x * 3)


# --- 2. external data: the graph and one data file, together ----------------------------------------------


def test_external_data_is_one_file_beside_the_graph_moved_in_together(run: Path, tmp_path: Path) -> None:  # noqa: F811
    from stadapt.api import load_model
    from stadapt.errors import StadaptError
    from stadapt.tools.export import export_onnx

    checkpoint, out, videos = run / "checkpoints" / "last", tmp_path / "m.onnx", _videos(run)
    data = tmp_path / "m.onnx.data"
    result = export_onnx(checkpoint, out, verify_clips=videos[:2], external_data_above=0)  # the 2 GiB rule, lowered
    assert result["data_file"] == data and result["verification"]["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]  # no staging left behind
    proto = onnx.load(str(out), load_external_data=False)
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and {e.value for t in external for e in t.external_data if e.key == "location"} == {data.name}
    assert data.stat().st_size > out.stat().st_size and result["data_bytes"] == data.stat().st_size

    moved = tmp_path / "elsewhere"  # the pair works wherever it is copied: the graph names its data relatively
    moved.mkdir()
    for path in (out, data):
        shutil.copy(path, moved / path.name)
    video = torch.randn(3, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = load_model(checkpoint)(video).numpy()
    got = _session(moved / "m.onnx").run(["logits"], {"video": video.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

    before = _digest([out, data])  # a failed replacement leaves the pair as it was
    with pytest.raises(StadaptError, match="tolerance"):
        export_onnx(checkpoint, out, verify_clips=videos[:1], external_data_above=0, overwrite=True, tolerance=-1.0)
    assert _digest([out, data]) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "elsewhere", "m.onnx", "m.onnx.data"]

    predicted = run_cli("predict", str(videos[0]), "--onnx", str(out), "--json")
    assert predicted.returncode == 0 and json.loads(predicted.stdout)["top"], predicted.stderr


def test_external_data_through_the_cli_and_what_replacing_it_does(run: Path, tmp_path: Path) -> None:  # noqa: F811
    out, data = tmp_path / "m.onnx", tmp_path / "m.onnx.data"
    data.write_text("a user's file")  # a user's data file of that name is never replaced, --overwrite or not
    refused = run_cli("export", "--onnx", "--checkpoint", str(run), "--out", str(out))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"{data} exists and stadapt did not write it" in refused.stderr and "--overwrite" not in refused.stderr
    assert data.read_text() == "a user's file" and not out.exists()
    data.unlink()

    done = run_cli("export", "--onnx", "--checkpoint", str(run), "--out", str(out), "--external-data", "--verify")
    assert done.returncode == 0, done.stderr
    assert f"weights in {data}" in done.stdout and "verified with onnxruntime" in done.stdout
    assert _props(out)["exporter"] == "dynamo"

    again = run_cli("export", "--onnx", "--checkpoint", str(run), "--out", str(out), "--overwrite", "-q")
    assert again.returncode == 0, again.stderr  # one file now: the data file only the old graph used is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and "weights in" not in again.stdout
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(str(out)).graph.initializer)


# --- 3. --input uint8: raw frames in, normalised inside ----------------------------------------------------


def _raw_frames(video: Path, count: int) -> np.ndarray:
    """The first `count` frames of a video as PyAV decodes them: (T, H, W, 3) uint8 RGB."""
    with av.open(str(video)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in islice(container.decode(video=0), count)]
    return np.stack(frames)


def test_the_uint8_graph_matches_pytorch_on_raw_frames(run: Path, tmp_path: Path) -> None:  # noqa: F811
    from stadapt.api import load_model

    out = tmp_path / "u8.onnx"
    done = run_cli("export", "--onnx", "--checkpoint", str(run), "--out", str(out), "--input", "uint8", "--verify")
    assert done.returncode == 0, done.stderr
    assert "input video (batch, 4, 32, 32, 3) uint8 RGB, normalised inside" in done.stdout
    assert "verified with onnxruntime" in done.stdout
    props = _props(out)
    assert props["input_dtype"] == "uint8" and props["input_layout"].startswith("B,T,H,W,3 uint8 RGB")
    session = _session(out)
    (inp,) = session.get_inputs()
    assert inp.type == "tensor(uint8)" and not isinstance(inp.shape[0], int) and inp.shape[1:] == [4, 32, 32, 3]

    videos = _videos(run)  # the synthetic clips are 32 x 32: decoded frames are the model's input size
    decoded = np.stack([_raw_frames(v, 4) for v in videos[:2]])
    noise = np.random.default_rng(0).integers(0, 256, (3, 4, 32, 32, 3), dtype=np.uint8)  # batch 3: never exported
    model = load_model(run / "checkpoints" / "last")
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1, 1)
    for frames in (decoded, noise):
        with torch.no_grad():  # what the PyTorch model gives on the same frames, normalised outside
            expected = model((torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 255 - mean) / std).numpy()
        got = session.run(["logits"], {"video": frames})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        assert np.abs(expected).max() > 1e-3  # logits that say something

    # stadapt predict feeds a uint8 graph uint8 frames, and answers as the checkpoint does
    from_onnx = run_cli("predict", *map(str, videos[:2]), "--onnx", str(out), "--json")
    from_ckpt = run_cli("predict", *map(str, videos[:2]), "--checkpoint", str(run), "--json")
    assert from_onnx.returncode == 0 and from_ckpt.returncode == 0, from_onnx.stderr + from_ckpt.stderr
    for a, b in zip(map(json.loads, from_onnx.stdout.splitlines()), map(json.loads, from_ckpt.stdout.splitlines()),
                    strict=True):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert a["top"][0]["probability"] == pytest.approx(b["top"][0]["probability"], abs=1e-4)


def test_unknown_input_type_is_refused_in_one_line(run: Path, tmp_path: Path) -> None:  # noqa: F811
    done = run_cli("export", "--onnx", "--checkpoint", str(run), "--out", str(tmp_path / "m.onnx"), "--input", "int8")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "unknown --input 'int8'" in done.stderr and "float32, uint8" in done.stderr
    assert not list(tmp_path.iterdir())


def test_the_exporter_a_user_names_is_the_one_used(run: Path, tmp_path: Path) -> None:  # noqa: F811
    """--exporter torchscript writes a verified TorchScript graph with no fallback reason (none was needed);
    an exporter that does not exist is one line, nothing written."""
    out = tmp_path / "m.onnx"
    done = run_cli("export", "--onnx", "--exporter", "torchscript", "--checkpoint", str(run), "--out", str(out),
                   "--verify")
    assert done.returncode == 0, done.stderr
    assert "torchscript exporter, opset 18" in done.stdout and "because" not in done.stdout
    props = _props(out)
    assert props["exporter"] == "torchscript" and "exporter_fallback_reason" not in props
    assert "verified with onnxruntime" in done.stdout
    bad = run_cli("export", "--onnx", "--exporter", "jit", "--checkpoint", str(run), "--out", str(tmp_path / "x.onnx"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "unknown --exporter 'jit'" in bad.stderr and "auto, dynamo, torchscript" in bad.stderr
    assert not (tmp_path / "x.onnx").exists()
