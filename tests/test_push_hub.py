"""`stadapt push` and `hf-hub:` checkpoint ids: the --to-dir output is a checkpoint that loads to the same
logits, its card states the eval.json it came from, and the same files laid out in huggingface_hub's cache
are used by name, offline, by load_model and the console script's --checkpoint options."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from helpers import HUB_REVISION, run_cli, train_synthetic_run, write_hub_cache

RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 32
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  lr: 1.0e-3
  batch_size: 4
  micro_batch: 2
  steps: 2
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  val_every: 2
  save_every: 100
"""
REPO = "someone/tiny-st-adapter"
REVISION = HUB_REVISION


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run on 2 synthetic classes, evaluated (eval.json) with 1x2 views."""
    trained = train_synthetic_run(tmp_path_factory.mktemp("push"), RECIPE)
    evaluated = run_cli("eval", str(trained), "--views", "1x2", "-q")
    assert evaluated.returncode == 0, evaluated.stderr
    return trained


@pytest.fixture(scope="module")
def pushed(run: Path) -> Path:
    out = run.parent / "to_upload"
    result = run_cli("push", str(run), "--repo", REPO, "--to-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    return out


def _clip(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_to_dir_holds_the_checkpoint_and_card_and_loads_to_identical_logits(run: Path, pushed: Path) -> None:
    from stadapt.api import load_model

    last = run / "checkpoints" / "best"  # what push (and eval) take from a run by default since issue 18.4
    names = sorted(p.name for p in pushed.iterdir() if not p.name.startswith("."))
    assert names == ["README.md", "eval.json", "stadapt.json", "trainable.safetensors"]  # no trainer state
    assert (pushed / "trainable.safetensors").read_bytes() == (last / "trainable.safetensors").read_bytes()
    for pushed_file, local_file in ((pushed / "stadapt.json", last / "stadapt.json"), (pushed / "eval.json",
                                                                                      run / "eval.json")):
        published, local = json.loads(pushed_file.read_text()), json.loads(local_file.read_text())
        assert published.keys() == local.keys()  # the same, but for its local paths (test_push_privacy.py)
        assert {k: v for k, v in published.items() if k not in ("recipe", "checkpoint", "list")} == \
            {k: v for k, v in local.items() if k not in ("recipe", "checkpoint", "list")}
    original, shared = load_model(last), load_model(pushed)
    with torch.no_grad():
        assert torch.equal(original(_clip()), shared(_clip()))
    assert shared.classes == original.classes == ["moving right", "moving left"]


def test_the_card_states_the_numbers_of_the_eval_json_it_came_from(run: Path, pushed: Path) -> None:
    report = json.loads((run / "eval.json").read_text())
    card = (pushed / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "stadapt" and "video-classification" in meta["tags"]
    assert meta["datasets"] == ["synthetic"]
    metrics = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"top-1": report["top1"], f"top-{report['top5_k']}": report["top5"]}
    assert f"{100 * report['top1']:.2f}% ({report['top1']})" in body
    assert f"{100 * report['mean_class_accuracy']:.2f}%" in body
    for fingerprint in ("list_sha256", "classes_sha256", "checkpoint_sha256"):
        assert report[fingerprint] in body
    assert report["views"] == "1x2" and "| views | 1x2 " in body
    assert f'stadapt.load_model("hf-hub:{REPO}")' in body and f"--checkpoint hf-hub:{REPO}" in body
    assert "`clip:tiny`" in body and "`synthetic` (the backbone plugin's weights tag" in body
    assert "tuned with the method `st_adapter`" in body and "| tuning method | `st_adapter` (settings below) |" in body
    assert "| bottleneck | `32` |" in body and "| kernel | `[3, 1, 1]` |" in body  # the recorded settings
    assert "0. moving right\n1. moving left" in body
    assert "steps: 2" in body  # the recipe


def test_a_stale_eval_json_is_refused_rather_than_put_on_the_card(run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(run / "checkpoints" / "last", copy)
    report = json.loads((run / "eval.json").read_text())
    (copy / "eval.json").write_text(json.dumps({**report, "checkpoint_sha256": "0" * 64}))
    result = run_cli("push", str(copy), "--repo", REPO, "--to-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "evaluated another checkpoint" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_to_dir_refuses_a_folder_it_did_not_write_and_replaces_its_own(run: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = run_cli("push", str(run), "--repo", REPO, "--to-dir", str(mine))
    assert result.returncode == 2 and "notes.txt" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    out = tmp_path / "out"
    assert run_cli("push", str(run), "--repo", REPO, "--to-dir", str(out)).returncode == 0
    again = run_cli("push", str(run), "--repo", "other/name", "--to-dir", str(out))
    assert again.returncode == 0, again.stderr
    assert "# other/name" in (out / "README.md").read_text()
    with (out / "README.md").open("a") as card:  # the user edits the card before uploading it
        card.write("\nMy notes.\n")
    edited = run_cli("push", str(run), "--repo", REPO, "--to-dir", str(out))
    assert edited.returncode == 2 and "README.md (changed since)" in edited.stderr
    assert (out / "README.md").read_text().endswith("My notes.\n")


def test_upload_without_token_or_network_is_one_line(run: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    no_token = run_cli("push", str(run), "--repo", REPO, env={**env, "HF_HOME": str(tmp_path / "hf")})
    offline = run_cli("push", str(run), "--repo", REPO, env={"HF_TOKEN": "hf_not_a_real_token",
                                                               "HF_HUB_OFFLINE": "1"})
    assert no_token.returncode == 2 and "no Hugging Face token" in no_token.stderr and "--to-dir" in no_token.stderr
    assert offline.returncode == 2 and f"uploading to the hub repository {REPO} failed" in offline.stderr
    for result in (no_token, offline):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    bad = run_cli("push", str(run), "--repo", "no-org-here", "--to-dir", str(tmp_path / "x"))
    assert bad.returncode == 2 and "--repo ORG/NAME" in bad.stderr


def test_hub_ids_load_offline_from_the_cache(run: Path, pushed: Path, tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants as hub

    from stadapt.api import load_model
    from stadapt.errors import CheckpointError

    cache = write_hub_cache(tmp_path / "hub", REPO, pushed)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    expected = load_model(run / "checkpoints" / "last")
    with torch.no_grad():
        for name in (f"hf-hub:{REPO}", f"hf-hub:{REPO}@{REVISION}"):
            assert torch.equal(load_model(name)(_clip(1)), expected(_clip(1)))
    with pytest.raises(CheckpointError) as missing:
        load_model("hf-hub:someone/not-cached")
    assert "hf-hub:someone/not-cached" in missing.value.message
    assert "hf download someone/not-cached" in missing.value.hint
    with pytest.raises(CheckpointError, match="not a hub checkpoint id"):
        load_model("hf-hub:no-org")


def test_eval_and_predict_take_hub_ids_through_the_console_script(run: Path, pushed: Path, tmp_path: Path) -> None:
    cache = write_hub_cache(tmp_path / "hub", REPO, pushed)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    work = tmp_path / "work"
    work.mkdir()
    report = json.loads((run / "eval.json").read_text())
    root = json.loads((run / "checkpoints" / "best" / "stadapt.json").read_text())["recipe"]["data"]["root"]
    snapshot = sorted(p.name for p in (cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / REVISION).iterdir())

    result = run_cli("eval", f"hf-hub:{REPO}", "--root", root, "--views", "1x2", "-q", env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    written = json.loads((work / "hf-hub" / REPO / "eval.json").read_text())
    assert {k: written[k] for k in ("top1", "top5", "confusion", "checkpoint_sha256", "list_sha256")} == \
        {k: report[k] for k in ("top1", "top5", "confusion", "checkpoint_sha256", "list_sha256")}
    assert sorted(p.name for p in (cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / REVISION).iterdir()) \
        == snapshot  # nothing written into the cache

    video = Path(root) / next(iter((Path(root) / "val.txt").read_text().split()))
    hub_pred = run_cli("predict", str(video), "--checkpoint", f"hf-hub:{REPO}", "--json", env=env, cwd=work)
    local_pred = run_cli("predict", str(video), "--checkpoint", str(run), "--json")
    assert hub_pred.returncode == 0, hub_pred.stderr
    assert json.loads(hub_pred.stdout)["top"] == json.loads(local_pred.stdout)["top"]

    missing = run_cli("eval", "hf-hub:someone/elsewhere", env=env, cwd=work)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "hf-hub:someone/elsewhere" in missing.stderr and "hf download someone/elsewhere" in missing.stderr
