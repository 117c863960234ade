"""Lists as users write them, through the console script: a UTF-8 byte-order mark (Windows editors
write one), class names with spaces in `path label` lines, and lists whose every row is rejected.

Each test runs the real `stadapt prepare-data list`, `train` and `eval` on real mp4 clips.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

BOM = b"\xef\xbb\xbf"
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_tiny.yaml"
TINY_RUN = ("data.frames=4", "optim.steps=2", "optim.warmup_steps=1", "optim.batch_size=4", "-q")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic set: classes "moving right" / "moving left", 2 training and 2 validation clips each."""
    root = tmp_path_factory.mktemp("lists") / "synthetic"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=2, frames=10,
                                        size=32, clutter=4))
    return root


def with_bom(path: Path, text: str | None = None) -> Path:
    """`text` (default: the file's own) saved as an editor that writes a UTF-8 byte-order mark saves it."""
    body = path.read_bytes() if text is None else text.encode("utf-8")
    path.write_bytes(BOM + body)
    return path


def one_line_error(result) -> str:
    """A refusal: exit 2, no traceback, one line on stderr; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bom_lists_train_and_evaluate_every_video(clips: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(clips, data)
    for name in ("classes.txt", "train.txt", "val.txt"):
        with_bom(data / name)
    run = tmp_path / "run"
    trained = run_cli("train", str(RECIPE), f"data.root={data}", f"output.dir={run}", *TINY_RUN)
    assert trained.returncode == 0, trained.stderr
    # 2 steps x 4 clips draw all 4 training videos: none may be missing (the first one was, behind the BOM)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e for e in events if e["split"] == "data"] == []
    assert "cannot decode" not in trained.stdout + trained.stderr
    evaluated = run_cli("eval", str(run), "--views", "1x1", "-q")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((run / "eval.json").read_text())
    assert (report["listed"], report["videos"], report["skipped"]) == (4, 4, 0)
    assert list(report["per_class"]) == ["moving right", "moving left"]  # no BOM glued to the first name
    # `eval --list` of another list, saved with a BOM elsewhere: nothing skipped either
    listing = with_bom(tmp_path / "held out.txt", (clips / "val.txt").read_text(encoding="utf-8"))
    evaluated = run_cli("eval", str(run), "--views", "1x1", "--list", str(listing), "--out", str(tmp_path / "e.json"),
                        "-q")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    assert (report["listed"], report["videos"], report["skipped"]) == (4, 4, 0)


def user_videos(clips: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """The synthetic clips copied to a user's folder whose paths have spaces: (root, [right, right, left, left])."""
    root = tmp_path / "my videos"
    sources = sorted((clips / "videos" / "train").glob("*.mp4"))  # 00_* moving right, 01_* moving left
    paths = []
    for n, source in enumerate(sources):
        target = root / ("take two" if n % 2 else "take one") / f"clip {n}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        paths.append(target)
    return root, paths


def prepared_rows(out: Path, split: str = "train") -> list[tuple[str, int]]:
    rows = [line.rsplit(" ", 1) for line in (out / f"{split}.txt").read_text(encoding="utf-8").splitlines()]
    return [(path, int(label)) for path, label in rows]


def test_space_separated_labels_with_spaces_match_the_class_file(clips: Path, tmp_path: Path) -> None:
    root, paths = user_videos(clips, tmp_path)
    rel = [str(p.relative_to(root)) for p in paths]
    # "right" is a class too: the longest class name the line ends with wins
    classes = with_bom(tmp_path / "classes.txt", "moving right\nmoving left\nright\n")
    listing = with_bom(tmp_path / "train.txt", f"{rel[0]} moving right\n{rel[1]}  moving   right \n"
                                               f"{rel[2]}\tmoving left\r\n{rel[3]} right\n")
    out = tmp_path / "out"
    result = run_cli("prepare-data", "list", "--root", str(root), "--train", str(listing),
                     "--classes", str(classes), "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    assert "rejected" not in result.stdout and not (out / "quarantine.txt").exists()
    assert (out / "classes.txt").read_text(encoding="utf-8").splitlines() == ["moving right", "moving left", "right"]
    assert prepared_rows(out) == [(str(paths[0]), 0), (str(paths[1]), 0), (str(paths[2]), 1), (str(paths[3]), 2)]


def test_csv_list_with_bom_and_names_with_spaces(clips: Path, tmp_path: Path) -> None:
    root, paths = user_videos(clips, tmp_path)
    rel = [str(p.relative_to(root)) for p in paths]
    rows = "".join(f"{p},moving {'right' if n < 2 else 'left'}\n" for n, p in enumerate(rel))
    listing = with_bom(tmp_path / "train.csv", "path,label\n" + rows)
    out = tmp_path / "out"
    result = run_cli("prepare-data", "list", "--root", str(root), "--train", str(listing), "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["details"]["csv_header"] == {"train": True}  # the BOM did not hide the header
    assert (out / "classes.txt").read_text(encoding="utf-8").splitlines() == ["moving left", "moving right"]
    assert prepared_rows(out) == [(str(paths[0]), 1), (str(paths[1]), 1), (str(paths[2]), 0), (str(paths[3]), 0)]


def test_a_list_whose_every_row_is_rejected_is_an_error(clips: Path, tmp_path: Path) -> None:
    root, paths = user_videos(clips, tmp_path)
    listing = tmp_path / "train.txt"
    listing.write_text("".join(f"{p.relative_to(root)} moving right\n" for p in paths), encoding="utf-8")
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n", encoding="utf-8")
    out = tmp_path / "out"
    # a class file without those names: every row rejected
    line = one_line_error(run_cli("prepare-data", "list", "--root", str(root), "--train", str(listing),
                                  "--classes", str(classes), "--out", str(out), "-q"))
    assert str(listing) in line and "no usable" in line and "train.txt line 1" in line
    assert "is not in the class file" in line
    assert not out.exists()
    # no class file: the label is the last field, so every path ends in " moving" and is missing
    line = one_line_error(run_cli("prepare-data", "list", "--root", str(root), "--train", str(listing),
                                  "--out", str(out), "-q"))
    assert str(listing) in line and "no usable" in line and "missing" in line and "--classes" in line
    assert not out.exists()


def test_prepared_list_with_class_names_is_refused_with_the_converter(clips: Path, tmp_path: Path) -> None:
    """The prepared layout's own lists take class indices; one labelled with names is refused before a
    run folder exists, naming the file and the command that converts it."""
    data = tmp_path / "data"
    shutil.copytree(clips, data)
    names = ["moving right", "moving left"]
    rows = [line.rsplit(" ", 1) for line in (data / "train.txt").read_text(encoding="utf-8").splitlines()]
    with_bom(data / "train.txt", "".join(f"{path} {names[int(label)]}\n" for path, label in rows))
    run = tmp_path / "run"
    line = one_line_error(run_cli("train", str(RECIPE), f"data.root={data}", f"output.dir={run}", *TINY_RUN))
    assert str(data / "train.txt") in line and "'right' is not an integer" in line
    assert "stadapt prepare-data list" in line and "--classes" in line
    assert not run.exists()
