"""A full disk during train, resume and eval is one clear line (exit code 2) that names the file and
says nothing was lost; the earlier checkpoint stays whole and the run continues once there is space.

The disk is real: a small tmpfs mounted in a private mount namespace (`unshare --user
--map-root-user --mount`), so every write hits a genuine ENOSPC.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 8
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  batch_size: 2
  steps: 3
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  save_every: 1
"""

# one checkpoint of this recipe takes about 130 KiB: the first save fits in 200 KiB, a second one does not
SCRIPT = """\
set -u
mount -t tmpfs -o size=200k tmpfs "$DISK" || exit 99
cli() {{ name=$1; shift; {stadapt} "$@" -q >"$OUT/$name.stdout" 2>"$OUT/$name.stderr"; echo $? >"$OUT/$name.rc";
        cp -a "$DISK/run" "$OUT/$name.run"; }}
cli train train {recipe} output.dir="$DISK/run"
cli resume train {recipe} output.dir="$DISK/run" --resume
echo '{{"stadapt_version": "0", "checkpoint_sha256": "0", "top1": 0.5}}' >"$DISK/run/eval.json"  # an earlier report
dd if=/dev/zero of="$DISK/filler" bs=4k 2>/dev/null
cli eval eval "$DISK/run"
rm "$DISK/filler"
mount -o remount,size=4m "$DISK"
cli continue train {recipe} output.dir="$DISK/run" --auto-resume
"""


def _can_mount_a_private_tmpfs(where: Path) -> bool:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(where))}"], capture_output=True)
    return probe.returncode == 0


def _assert_one_clean_line(out: Path, name: str, written: str) -> str:
    rc, stderr = (out / f"{name}.rc").read_text().strip(), (out / f"{name}.stderr").read_text()
    assert rc == "2", f"{name}: exit code {rc}: {stderr}"
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, f"{name}: {stderr}"
    assert stderr.startswith("stadapt: error: the disk is full: could not write ") and written in stderr, stderr
    assert "nothing was lost" in stderr and "free some space" in stderr, stderr
    return stderr


def _hidden_leftovers(run: Path) -> list[str]:
    """Hidden entries other than the run's own marker and lock: staging folders and temp files."""
    from stadapt.runs.layout import LOCK_FILE, MARKER_FILE

    return sorted(str(p.relative_to(run)) for p in run.rglob(".*") if p.name not in (MARKER_FILE, LOCK_FILE))


def test_a_full_disk_in_train_resume_and_eval_is_one_line_and_loses_nothing(tmp_path: Path) -> None:
    from stadapt.checkpoints.format import read_checkpoint
    from stadapt.checkpoints.meta import complete_step

    if shutil.which("unshare") is None or not _can_mount_a_private_tmpfs(tmp_path):
        pytest.skip("needs `unshare --user --map-root-user --mount` to mount a small tmpfs")
    root = tmp_path / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=8,
                                        size=32, clutter=2))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.format(root=json.dumps(str(root))))
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    stadapt = shlex.quote(str(Path(sys.executable).with_name("stadapt")))
    script = SCRIPT.format(stadapt=stadapt, recipe=shlex.quote(str(recipe)))
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          env={**__import__("os").environ, "DISK": str(disk), "OUT": str(out)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    for name in ("train", "resume"):  # the second save does not fit: the first one is intact
        message = _assert_one_clean_line(out, name, f"{disk}/run/checkpoints/last")
        assert "the previous checkpoint" in message and "--auto-resume" in message, message
        run = out / f"{name}.run"
        assert complete_step(run / "checkpoints" / "last") == 1
        meta, tensors = read_checkpoint(run / "checkpoints" / "last")
        assert meta["step"] == 1 and tensors
        assert _hidden_leftovers(run) == [], f"{name} left a staging folder behind"

    _assert_one_clean_line(out, "eval", f"{disk}/run/eval.json")
    run = out / "eval.run"
    earlier = {"stadapt_version": "0", "checkpoint_sha256": "0", "top1": 0.5}
    assert json.loads((run / "eval.json").read_text()) == earlier
    assert _hidden_leftovers(run) == [] and not (run / "eval.predictions.csv").exists()

    assert (out / "continue.rc").read_text().strip() == "0", (out / "continue.stderr").read_text()
    finished = out / "continue.run" / "checkpoints" / "last"
    assert json.loads((finished / "stadapt.json").read_text())["step"] == 3
    steps = [e["step"] for e in map(json.loads, (out / "continue.run" / "metrics.jsonl").read_text().splitlines())
             if e["split"] == "train"]
    assert steps == [1, 2, 3]
