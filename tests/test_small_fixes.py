"""Small dead ends of issue 23: what a refusal tells the user to type is what the command then takes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli
from test_push_hub import RECIPE


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run stopped after 1 of its 2 steps (synthetic classes) and, in its data, a list naming one video
    300 times: enough work to be in the middle of when a Ctrl-C comes."""
    from stadapt.data.synthetic import SyntheticSpec, write_synthetic

    base = tmp_path_factory.mktemp("small")
    write_synthetic(base / "data", SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=2,
                                                 frames=10, size=32, clutter=4))
    (base / "tiny.yaml").write_text(RECIPE.format(root=json.dumps(str(base / "data"))))
    trained = base / "run"
    done = run_cli("train", str(base / "tiny.yaml"), f"output.dir={trained}", "--stop-after", "1", "-q")
    assert done.returncode == 0, done.stderr
    # long enough that a loaded machine cannot finish it before the test, reading the progress bar, sends SIGINT
    (trained.parent / "data" / "many.txt").write_text("videos/val/00_0000.mp4 0\n" * 20000)
    return trained


def test_push_repo_refusal_names_what_repo_takes(tmp_path: Path) -> None:
    """23.11: `push --repo acme` asked for `hf-hub:ORG/NAME`, which --repo refuses."""
    result = run_cli("push", str(tmp_path), "--repo", "acme", "--to-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--repo ORG/NAME" in result.stderr and "hf-hub:" not in result.stderr
    prefixed = run_cli("push", str(tmp_path), "--repo", "hf-hub:acme/model", "--to-dir", str(tmp_path / "out"))
    assert prefixed.returncode == 2 and "--repo acme/model" in prefixed.stderr


def test_backbones_check_refuses_a_name_the_plugin_does_not_take_as_params_does() -> None:
    """23.12: an unknown or unsupported name is the user's mistake (one line, rc 2), not a broken plugin; an
    empty variant is refused rather than checking the whole plugin."""
    for name in ("clip:tinyy", "timm:resnet50"):
        check, params = run_cli("backbones", "--check", name), run_cli("backbones", "--params", name)
        assert check.returncode == params.returncode == 2, check.stdout + check.stderr
        assert check.stderr == params.stderr and len(check.stderr.strip().splitlines()) == 1
        assert "FAIL" not in check.stdout
    empty = run_cli("backbones", "--check", "clip:")
    assert empty.returncode == 2 and len(empty.stderr.strip().splitlines()) == 1 and not empty.stdout
    assert "--check clip:VARIANT" in empty.stderr


def test_a_folder_holding_a_symlinked_folder_of_videos_gives_its_videos_once(run: Path) -> None:
    """23.13a: symbolic links to folders are followed, a link back up (a cycle) only once."""
    shared = run.parent / "shared"
    shared.mkdir()
    for video in sorted((run.parent / "data" / "videos" / "val").glob("00_*.mp4")):
        shutil.copy(video, shared / video.name)
    (shared / "again").symlink_to(shared)  # a cycle
    linked = run.parent / "linked"
    linked.mkdir()
    (linked / "clips").symlink_to(shared)
    result = run_cli("predict", str(linked), "--checkpoint", str(run), "--json", "-q")
    assert result.returncode == 0, result.stderr
    assert [Path(json.loads(line)["video"]).name for line in result.stdout.splitlines()] == \
        ["00_0000.mp4", "00_0001.mp4"]


def _interrupt(*args: str, when: bytes) -> tuple[int, str]:
    """`stadapt ARGS` as a real process, sent SIGINT (Ctrl-C) once its progress bar shows `when` on stderr:
    (exit status, the stderr after the progress bar)."""
    exe = Path(sys.executable).with_name("stadapt")
    process = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    while when not in seen:
        chunk = os.read(process.stderr.fileno(), 4096)  # type: ignore[union-attr]
        assert chunk, f"the command ended before its progress bar: {seen!r}"
        seen += chunk
    assert process.poll() is None, "the command finished before the Ctrl-C: make its list longer"
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr.decode().rsplit("\r", 1)[-1]


def test_ctrl_c_in_predict_and_eval_says_what_was_written(run: Path) -> None:
    """23.13b: a Ctrl-C exits 130 with one line saying what was written (here: nothing; files left as they were)."""
    out = run.parent / "predictions.csv"
    code, stderr = _interrupt("predict", str(run.parent / "data" / "many.txt"), "--checkpoint", str(run),
                              "--workers", "0", "--out", str(out), when=b"predict:")
    assert code == 130 and stderr.strip().splitlines() == \
        ["stadapt: interrupted: nothing was written (the predictions are written once every video is done)"], stderr
    assert not out.exists()
    report = run.parent / "mine.json"
    code, stderr = _interrupt("eval", str(run), "--list", "many.txt", "--workers", "0", "--out", str(report),
                              when=b"eval:")
    assert code == 130 and stderr.strip().splitlines() == \
        [f"stadapt: interrupted: nothing was written (the report, {report}, is written once every video is done)"], \
        stderr
    assert not report.exists()


def test_a_users_file_in_a_checkpoint_folder_is_refused_before_training_resumes(run: Path) -> None:
    """23.13c: a user's file inside checkpoints/last was found only at the next save, after the training."""
    notes = run / "checkpoints" / "last" / "notes.txt"
    notes.write_text("mine")
    metrics = (run / "metrics.jsonl").read_bytes()
    try:
        for flag in ("--resume", "--auto-resume"):
            refused = run_cli("train", str(run.parent / "tiny.yaml"), f"output.dir={run}", "-q", flag)
            assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
            assert "checkpoints/last/notes.txt" in refused.stderr and "move" in refused.stderr
        assert (run / "metrics.jsonl").read_bytes() == metrics and notes.read_text() == "mine"
    finally:
        notes.unlink(missing_ok=True)


def test_a_ctrl_c_swallowed_inside_a_finalizer_still_stops_the_command(capsys: pytest.CaptureFixture) -> None:
    """A Ctrl-C whose KeyboardInterrupt is raised inside a __del__ (a decoder or DataLoader being freed) is
    printed as "Exception ignored" and lost; predict went on to its end (seen under load in CI). The
    command must stop all the same, within a couple of seconds."""
    import signal
    import time

    from stadapt.cli.interrupt import interrupt_says

    class FreedDuringCtrlC:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:  # the signal is handled here, inside the finalizer
                pass

    start = time.monotonic()
    with pytest.raises(SystemExit) as stopped, interrupt_says([], "never"):
        FreedDuringCtrlC()  # freed at once
        while time.monotonic() - start < 10:  # the rest of a long prediction
            time.sleep(0.01)
    assert stopped.value.code == 130 and time.monotonic() - start < 5
    assert "stadapt: interrupted: nothing was written (never)" in capsys.readouterr().err
