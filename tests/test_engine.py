"""The training loop's parts: schedule, optimizer groups, data stream, trainer state, quickstart plumbing."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import write_trainer_state
from torch import nn

from stadapt.errors import StadaptError
from stadapt.runtime.views import parse_views
from stadapt.training.optim import param_groups
from stadapt.training.schedule import lr_factor
from stadapt.training.state import RunCounters, restore_state, state_files
from stadapt.training.stream import ClipStream


def test_warmup_then_half_cosine_to_zero() -> None:
    assert [lr_factor(s, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 20) == 1.0
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)  # half-way through the decay
    assert lr_factor(20, 4, 20) == pytest.approx(0.0)
    values = [lr_factor(s, 4, 20) for s in range(4, 20)]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert lr_factor(0, 0, 10) == 1.0  # no warmup


def test_no_weight_decay_on_biases_and_norms() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[2].requires_grad_(False)
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}


def test_stream_resumes_at_any_position_and_reshuffles_each_epoch() -> None:
    full = list(itertools.islice(ClipStream(5, seed=3), 17))
    assert [i for _, i in full[:5]] != [i for _, i in full[5:10]]  # a new order each epoch
    assert sorted(i for _, i in full[:5]) == list(range(5))
    assert [e for e, _ in full] == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 2
    for start in (0, 3, 5, 11):
        assert list(itertools.islice(ClipStream(5, seed=3, start=start), 17 - start)) == full[start:]


def test_views_are_parsed_with_clear_errors() -> None:
    assert parse_views("2x3") == (2, 3) and parse_views("1x1") == (1, 1) and parse_views("2x2") == (2, 2)
    for bad in ("3", "2x0", "0x1", "ax1", "1x2x3"):
        with pytest.raises(StadaptError):
            parse_views(bad)


def test_trainer_state_round_trips_without_pickle(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(7)
    files = state_files(optimizer, scaler, RunCounters(step=3, clips_seen=12))
    expected_next = torch.rand(3)
    write_trainer_state(tmp_path, files)
    json.loads((tmp_path / "trainer_state.json").read_text())  # plain JSON beside safetensors

    fresh = torch.optim.AdamW(nn.Linear(3, 2).parameters(), lr=0.1)
    fresh.param_groups[0]["params"] = optimizer.param_groups[0]["params"]
    torch.manual_seed(0)
    progress = restore_state(tmp_path, fresh, scaler)
    assert progress.step == 3 and progress.clips_seen == 12
    assert torch.equal(torch.rand(3), expected_next)  # the RNG continues where it was saved
    for a, b in zip(optimizer.state.values(), fresh.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert fresh.param_groups[0]["betas"] == (0.9, 0.999)


def test_quickstart_plumbing_on_a_tiny_budget(tmp_path: Path) -> None:
    """The quickstart's pieces end to end (its accuracy is measured by running it: see the README)."""
    from stadapt.data.synthetic import SyntheticSpec
    from stadapt.tools.quickstart import format_summary, run_quickstart

    spec = SyntheticSpec(motions=("horizontal",), train_per_class=3, val_per_class=2, frames=8, size=32, clutter=2)
    summary = run_quickstart(tmp_path / "qs", spec=spec, steps=2, progress=False,
                             summary_file=tmp_path / "quickstart.json")
    written = json.loads((tmp_path / "quickstart.json").read_text())
    assert [m["tuning"] for m in written["models"]] == ["st_adapter", "linear"]
    for row in written["models"]:
        assert row["steps"] == 2 and row["videos"] == 4 and math.isfinite(row["top1"]) and row["train_seconds"] >= 0
    adapters, linear = written["models"]
    assert adapters["trainable_parameters"] > linear["trainable_parameters"] > 0
    assert adapters["total_parameters"] - adapters["trainable_parameters"] == \
        linear["total_parameters"] - linear["trainable_parameters"]  # the same frozen backbone
    assert "quickstart_st_adapter" in format_summary(summary)
    again = run_quickstart(tmp_path / "qs", spec=spec, steps=2, progress=False,
                           summary_file=tmp_path / "quickstart.json")
    assert again["data"]["state"] == "reused"
