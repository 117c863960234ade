"""`stadapt export` onto a full disk (a real one: a tiny tmpfs mounted in a private mount namespace)
says the disk is full, names the path, says nothing else was lost and how to fix it; it is not
mistaken for an exporter problem ("try another --opset") and leaves no temporary file behind."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_export import run  # noqa: F401 - the tiny trained run fixture

STADAPT = Path(sys.executable).with_name("stadapt")


def on_a_full_disk(mount: Path, command: list[str], size: str = "256k") -> subprocess.CompletedProcess:
    """Run `command` with a `size` tmpfs mounted at `mount` (unprivileged: user + mount namespace)."""
    script = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mount))} && exec {shlex.join(command)}"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def mountable(tmp_path_factory: pytest.TempPathFactory) -> None:
    probe = tmp_path_factory.mktemp("probe")
    if subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                       f"mount -t tmpfs tmpfs {shlex.quote(str(probe))}"], capture_output=True).returncode != 0:
        pytest.skip("this machine cannot mount a tmpfs in a user namespace")


def test_export_onto_a_full_disk_says_so(run: Path, tmp_path: Path, mountable: None) -> None:  # noqa: F811
    mount = tmp_path / "small"
    mount.mkdir()
    target = mount / "model.onnx"
    # the disk holds a user's file besides: it must be there, unchanged, after the failed export
    script = (f"printf keep > {shlex.quote(str(mount / 'notes.txt'))} && "
              f"{shlex.join([str(STADAPT), 'export', '--onnx', '--checkpoint', str(run), '--out', str(target), '-q'])}"
              f"; status=$?; ls -A {shlex.quote(str(mount))}; cat {shlex.quote(str(mount / 'notes.txt'))}; "
              f"exit $status")
    result = on_a_full_disk(mount, ["sh", "-c", script])
    assert result.returncode == 2, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("stadapt: error:")]
    assert len(error) == 1 and "Traceback" not in result.stderr, result.stderr
    message = error[0]
    assert "full" in message and str(target) in message and "nothing was lost" in message, message
    assert "free" in message and "opset" not in message, message
    assert result.stdout.split() == ["notes.txt", "keep"]  # no half-written model, no temp file
