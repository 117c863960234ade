"""An output place that cannot be written is one clear line (exit code 2) naming the path and the reason, in
every command that writes: train (a new run, an empty folder, a resumed run), eval, predict --out,
extract-features, export, push --to-dir, recipe schema, prepare-data (and quickstart, which meets the console
script's last-resort conversion of an OSError).

The places are real: a read-only bind mount (EROFS) in a private user and mount namespace (`unshare --user
--map-root-user --mount`), and a folder without write permission (EACCES) for a process whose capabilities
are dropped (`setpriv`), so that being root in the namespace does not override the permission bits. All
commands run in ONE process inside the namespace, each through the console script's own main() (as
tests/helpers.run_cli does), to pay the interpreter's start once.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import train_synthetic_run

RECIPE = """\
backbone: {{name: clip:tiny, weights: synthetic}}
adapter: {{bottleneck: 8}}
data: {{root: {root}, frames: 4, stride: 2, views: 1x1, num_workers: 0}}
optim: {{lr: 1.0e-3, batch_size: 4, steps: 1, warmup_steps: 0}}
train: {{device: cpu, val_every: 0, loggers: []}}
"""

# runs each command in this process (tests/helpers.py's in-process run_cli) and records what it gave
DRIVER = """\
import json, sys
sys.path.insert(0, sys.argv[1])
from helpers import run_cli
commands, results = json.loads(open(sys.argv[2]).read()), {}
for name, args in commands.items():
    done = run_cli(*args)
    results[name] = {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
open(sys.argv[3], "w").write(json.dumps(results))
"""

SCRIPT = """\
set -u
mount --bind "$RO" "$RO" && mount -o remount,bind,ro "$RO" || exit 99
exec setpriv --bounding-set=-all --inh-caps=-all "$PYTHON" "$DRIVER" "$TESTS" "$COMMANDS" "$RESULTS"
"""


def _commands(base: Path, place: Path) -> dict[str, list[str]]:
    """Every command that writes, each writing under `place` (which holds a copy of the trained run)."""
    recipe, run, videos = str(base / "tiny.yaml"), str(place / "run"), str(base / "data" / "videos" / "val")
    return {
        "train-new": ["train", recipe, f"output.dir={place / 'new'}", "-q"],
        "train-empty": ["train", recipe, f"output.dir={place / 'empty'}", "-q"],
        "train-resume": ["train", recipe, f"output.dir={run}", "--resume", "-q"],
        "eval": ["eval", run, "-q"],
        "predict": ["predict", videos, "--checkpoint", run, "--out", str(place / "predictions.csv")],
        "extract-features": ["extract-features", videos, "--checkpoint", run, "--out", str(place / "f.npy")],
        "export": ["export", "--onnx", "--checkpoint", run],
        "push": ["push", run, "--repo", "acme/tiny", "--to-dir", str(place / "pushed")],
        "recipe-schema": ["recipe", "schema", "--out", str(place / "schema.json")],
        "prepare-data": ["prepare-data", "synthetic", "--out", str(place / "data"), "--motions", "horizontal",
                         "--train-per-class", "1", "--val-per-class", "1", "--frames", "4", "--size", "16", "-q"],
        # no check of its own: its raw OSError reaches the console script's last-resort conversion
        "quickstart": ["quickstart", "--out", str(place), "-q"],
    }


# what each command writes first, under the place: the path its line must name
_WRITES = {"train-new": "new", "train-empty": "empty", "train-resume": "run", "eval": "run",
           "predict": "predictions.csv", "extract-features": "f.npy", "export": "run", "push": "pushed",
           "recipe-schema": "schema.json", "prepare-data": "data", "quickstart": "data"}


def _can_remount_read_only(where: Path) -> bool:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount --bind {shlex.quote(str(where))} {shlex.quote(str(where))} && "
                            f"mount -o remount,bind,ro {shlex.quote(str(where))} && setpriv --bounding-set=-all true"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """(the read-only place, the no-permission place) and what every command gave against each."""
    base = tmp_path_factory.mktemp("readonly")
    if shutil.which("unshare") is None or shutil.which("setpriv") is None or not _can_remount_read_only(base):
        pytest.skip("needs `unshare --user --map-root-user --mount` and `setpriv` to mount a folder read-only")
    trained = train_synthetic_run(base, RECIPE)
    readonly, denied = base / "readonly", base / "denied"
    commands: dict[str, list[str]] = {}
    for place, tag in ((readonly, "ro"), (denied, "denied")):
        place.mkdir()
        shutil.copytree(trained, place / "run")
        (place / "empty").mkdir()
        commands.update({f"{tag}:{name}": args for name, args in _commands(base, place).items()})
    readonly.chmod(0o777)  # writable by its mode: only the mount stops the writes
    for path in [denied, *denied.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    (base / "commands.json").write_text(json.dumps(commands))
    (base / "driver.py").write_text(DRIVER)
    env = {**os.environ, "RO": str(readonly), "PYTHON": sys.executable, "DRIVER": str(base / "driver.py"),
           "TESTS": str(Path(__file__).parent), "COMMANDS": str(base / "commands.json"),
           "RESULTS": str(base / "results.json")}
    try:
        done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", SCRIPT], env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        for path in [denied, *denied.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    assert done.returncode == 0, done.stdout + done.stderr
    return base, json.loads((base / "results.json").read_text())


@pytest.mark.parametrize("place,reason", [("readonly", "read-only file system"), ("denied", "permission denied")])
@pytest.mark.parametrize("name", list(_WRITES))
def test_an_unwritable_output_is_one_line_naming_the_path(results: tuple[Path, dict[str, dict]], name: str,
                                                          place: str, reason: str) -> None:
    base, found = results
    got = found[f"{'ro' if place == 'readonly' else place}:{name}"]
    stderr = got["stderr"]
    assert got["rc"] == 2, f"{name}: exit code {got['rc']}: {stderr}"
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, f"{name}: {stderr}"
    assert stderr.startswith("stadapt: error: "), stderr
    assert str(base / place / _WRITES[name]) in stderr and reason in stderr.lower(), stderr
