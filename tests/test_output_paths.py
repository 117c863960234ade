"""Every command that writes, with a user's file at each of its output paths (the files named after --out
included): refused before any work, in one line that names the file, with or without --overwrite, and the
user's file is byte-identical afterwards. A directory at --out, or a plain file where its folder should be,
is refused the same way (issue 23, items 1, 2, 3 and 7)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import run_cli, train_synthetic_run, write_hub_cache
from test_export import RECIPE

USER = b"the user's own file\n"
REPO = "someone/tiny"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run on 2 synthetic classes (moving right / left)."""
    return train_synthetic_run(tmp_path_factory.mktemp("outputs"), RECIPE)


@pytest.fixture(scope="module")
def video(run: Path) -> Path:
    return next((run.parent / "data" / "videos" / "val").glob("*.mp4"))


def refused(result, path: Path, content: bytes | None = USER, named: str | None = None) -> None:
    """One line on stderr, exit 2, naming `path` (or `named`), which still holds `content`."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("stadapt: error:"), result.stderr
    assert (named or str(path)) in lines[0], result.stderr
    if content is not None:
        assert path.read_bytes() == content


def each_output(tmp_path: Path, names: list[str], command, *, with_overwrite: bool = True,
                folder_named: bool = False) -> None:
    """A user's file at each of `names` in turn: `command(overwrite)` is refused naming it, and it stays."""
    for name in names:
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        mine = folder / name
        mine.write_bytes(USER)
        for extra in ([], ["--overwrite"]) if with_overwrite else ([],):
            result = command(folder, extra)
            refused(result, mine, named=str(folder) if folder_named else None)
            assert name in result.stderr
        assert sorted(p.name for p in folder.iterdir()) == [name]  # nothing else was written


def test_eval_refuses_a_users_file_at_each_report_path(run: Path, tmp_path: Path) -> None:
    each_output(tmp_path, ["mine.json", "mine.predictions.csv", "mine.confusion.png"],
                lambda folder, extra: run_cli("eval", str(run), "--out", str(folder / "mine.json"), "-q", *extra))


def test_eval_replaces_its_own_report_only_with_overwrite(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine.json"
    assert run_cli("eval", str(run), "--out", str(out), "-q").returncode == 0
    refused(run_cli("eval", str(run), "--out", str(out), "-q"), out, out.read_bytes())
    done = run_cli("eval", str(run), "--out", str(out), "-q", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert run_cli("eval", str(run), "-q").returncode == 0 and run_cli("eval", str(run), "-q").returncode == 0
    (run / "eval.predictions.csv").write_bytes(USER)  # a user's file in the run's default place
    refused(run_cli("eval", str(run), "-q"), run / "eval.predictions.csv")
    (run / "eval.predictions.csv").unlink()


def test_eval_and_recipe_schema_refuse_a_directory_at_out(run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    refused(run_cli("eval", str(run), "--out", str(folder), "-q"), folder, None)
    refused(run_cli("recipe", "schema", "--out", str(folder), "--overwrite"), folder, None)
    blocker = tmp_path / "plain"
    blocker.write_bytes(USER)
    refused(run_cli("eval", str(run), "--out", str(blocker / "eval.json"), "-q"), blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "reports"] and not any(folder.iterdir())


def test_hub_ids_refuse_a_plain_file_named_hf_hub_and_a_users_eval_json(run: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    import huggingface_hub.constants as hub

    cache = write_hub_cache(tmp_path / "cache", REPO, run / "checkpoints" / "last")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    work = tmp_path / "work"
    work.mkdir()
    (work / "hf-hub").write_bytes(USER)
    root = str(run.parent / "data")
    for command in (("eval", f"hf-hub:{REPO}", "--root", root), ("export", "--onnx", "--checkpoint", f"hf-hub:{REPO}")):
        refused(run_cli(*command, "-q", cwd=work), work / "hf-hub", named="hf-hub is a file")
    assert (work / "hf-hub").read_bytes() == USER
    (work / "hf-hub").unlink()
    mine = work / "hf-hub" / REPO / "eval.json"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(USER)
    refused(run_cli("eval", f"hf-hub:{REPO}", "--root", root, "-q", cwd=work), mine, named=f"hf-hub/{REPO}/eval.json")


def test_predict_refuses_a_users_file(run: Path, video: Path, tmp_path: Path) -> None:
    each_output(tmp_path, ["mine.csv"], lambda folder, extra: run_cli(
        "predict", str(video), "--checkpoint", str(run), "--out", str(folder / "mine.csv"), "-q", *extra))
    each_output(tmp_path, ["mine.jsonl"], lambda folder, extra: run_cli(
        "predict", str(video), "--checkpoint", str(run), "--out", str(folder / "mine.jsonl"), "-q", *extra))


def test_extract_features_refuses_a_users_file_beside_out(run: Path, video: Path, tmp_path: Path) -> None:
    def extract(out: Path, *extra: str):
        return run_cli("extract-features", str(video), "--checkpoint", str(run), "--out", str(out), "-q", *extra)

    each_output(tmp_path, ["g.npy", "g.json", "g.frames.npy"],
                lambda folder, extra: extract(folder / "g.npy", "--per-frame", *extra))
    each_output(tmp_path, ["g.safetensors"], lambda folder, extra: extract(folder / "g.safetensors", *extra))
    ours = tmp_path / "ours"
    ours.mkdir()
    assert extract(ours / "g.npy", "--per-frame").returncode == 0
    refused(extract(ours / "g.npy", "--per-frame"), ours / "g.npy", (ours / "g.npy").read_bytes())
    assert extract(ours / "g.npy", "--per-frame", "--overwrite").returncode == 0  # its own files: replaced
    (ours / "g.frames.npy").write_bytes(USER)  # the user's file where stadapt's was
    refused(extract(ours / "g.npy", "--per-frame", "--overwrite"), ours / "g.frames.npy")


def test_export_refuses_a_users_file_at_the_graph_and_its_data(run: Path, tmp_path: Path) -> None:
    each_output(tmp_path, ["m.onnx", "m.onnx.data"], lambda folder, extra: run_cli(
        "export", "--onnx", "--checkpoint", str(run), "--out", str(folder / "m.onnx"), "-q", *extra))


def test_recipe_schema_refuses_a_users_file_and_replaces_its_own(tmp_path: Path) -> None:
    each_output(tmp_path, ["schema.json"],
                lambda folder, extra: run_cli("recipe", "schema", "--out", str(folder / "schema.json"), *extra))
    ours = tmp_path / "ours.json"
    assert run_cli("recipe", "schema", "--out", str(ours)).returncode == 0
    assert run_cli("recipe", "schema", "--out", str(ours), "--overwrite").returncode == 0
    assert json.loads(ours.read_text())["title"] == "Recipe"


def test_visualize_refuses_a_users_png(run: Path, video: Path, tmp_path: Path) -> None:
    each_output(tmp_path, ["mine.png"], lambda folder, extra: run_cli(
        "visualize", str(video), "--checkpoint", str(run), "--out", str(folder / "mine.png"), "-q", *extra))


def test_push_to_dir_and_import_checkpoint_refuse_a_users_folder(run: Path, tmp_path: Path) -> None:
    each_output(tmp_path, ["notes.txt"], lambda folder, extra: run_cli(
        "push", str(run), "--repo", REPO, "--to-dir", str(folder)), with_overwrite=False, folder_named=True)
    dummy = tmp_path / "checkpoint-11.pth"
    dummy.write_bytes(b"not read: the refusal comes first")
    each_output(tmp_path, ["notes.txt"], lambda folder, extra: run_cli(
        "import-checkpoint", "--checkpoint", str(dummy), "--backbone-weights", str(dummy), "--backbone",
        "clip:tiny", "--out", str(folder), *extra), folder_named=True)


SYNTHETIC = ("prepare-data", "synthetic", "--motions", "horizontal", "--train-per-class", "1", "--val-per-class", "1",
             "--frames", "4", "--size", "32", "-q")


def test_prepare_data_overwrite_keeps_the_users_files_under_videos(tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert run_cli(*SYNTHETIC, "--out", str(out)).returncode == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    mine = {out / "videos" / "train" / "mine.mp4": USER, out / "videos" / "readme.txt": b"notes\n",
            out / "videos" / "extra" / "x.mp4": USER, out / "notes.md": b"mine\n"}
    for path, data in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    done = run_cli(*SYNTHETIC, "--out", str(out), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert all(path.read_bytes() == data for path, data in mine.items())
    now = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p not in mine)
    assert now == written
    video = next((out / "videos" / "val").glob("*.mp4"))
    video.write_bytes(USER)  # a video stadapt wrote, since replaced by the user's own file
    refused(run_cli(*SYNTHETIC, "--out", str(out), "--overwrite"), video, named=str(video.relative_to(out)))
    assert all(path.read_bytes() == data for path, data in mine.items())


def test_prepare_data_list_overwrite_refuses_a_users_file_it_would_write(run: Path, tmp_path: Path) -> None:
    data = run.parent / "data"
    out = tmp_path / "p"
    args = ("prepare-data", "list", "--root", str(data), "--train", str(data / "train.txt"), "-q", "--out", str(out))
    assert run_cli(*args).returncode == 0
    for name in ("val.txt", "quarantine.txt"):  # files this preparation did not write, where the next one writes
        (out / name).write_bytes(USER)
        refused(run_cli(*args, "--val", str(data / "val.txt"), "--overwrite"), out / name, named=name)
        assert (out / "manifest.json").is_file()
        os.remove(out / name)
    (out / "notes.md").write_bytes(USER)
    done = run_cli(*args, "--val", str(data / "val.txt"), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (out / "notes.md").read_bytes() == USER and (out / "val.txt").read_bytes() != USER
