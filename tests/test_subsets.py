"""`stadapt prepare-data subset`: few-shot lists (seeded, reproducible), class subsets (base / novel) and the
exact videos of a ViFi-CLIP split file, on a prepared folder of text files alone (no video is decoded)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli

from stadapt.data.prepared import open_prepared

CLASSES = ["archery", "bowling", "cooking", "diving"]


def prepared(tmp_path: Path, per_class: dict[str, int] | None = None) -> Path:
    """classes.txt and train.txt / val.txt of `per_class` videos each (`videos/CLASS/CLASS_N.mp4 LABEL`)."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    counts = per_class or dict.fromkeys(CLASSES, 6)
    for split in ("train", "val"):
        lines = [f"videos/{c}/{split}_{c}_{n}.mp4 {CLASSES.index(c)}\n" for c, k in counts.items() for n in range(k)]
        (root / f"{split}.txt").write_text("".join(lines))
    return root


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_shots_are_seeded_and_reproducible(tmp_path: Path) -> None:
    root = prepared(tmp_path)
    for name, seed in (("a.txt", 1), ("b.txt", 1), ("c.txt", 2)):
        result = run_cli("prepare-data", "subset", "--root", str(root), "--list", "train.txt", "--shots", "2",
                         "--seed", str(seed), "--out", name)
        assert result.returncode == 0, result.stderr
        assert "8 videos of 4 classes" in result.stdout
    a = lines(root / "a.txt")
    assert a == lines(root / "b.txt") and a != lines(root / "c.txt")
    assert sorted(int(line.rsplit(None, 1)[1]) for line in a) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert set(a) <= set(lines(root / "train.txt"))  # the list's own lines, labels unchanged
    assert len(open_prepared(root).entries("a.txt")) == 8  # a list of the same prepared set
    # the same list is never replaced
    again = run_cli("prepare-data", "subset", "--root", str(root), "--list", "train.txt", "--shots", "2",
                    "--out", "a.txt")
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    assert lines(root / "a.txt") == a


def test_too_few_videos_names_the_class(tmp_path: Path) -> None:
    root = prepared(tmp_path, {"archery": 4, "bowling": 1, "cooking": 4, "diving": 4})
    result = run_cli("prepare-data", "subset", "--root", str(root), "--list", "train.txt", "--shots", "2",
                     "--out", "two.txt")
    assert result.returncode == 2
    assert "'bowling' (1)" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # the problem and the fix
    assert not (root / "two.txt").exists()


def test_class_subset_as_prepared_root(tmp_path: Path) -> None:
    """--classes (names or ViFi-CLIP's id,name CSV) into --out DIR: only those classes, re-indexed; a second
    list of the same classes joins the folder."""
    root = prepared(tmp_path)
    (tmp_path / "novel.csv").write_text("id,name\n0,bowling\n1,diving\n")
    out = tmp_path / "novel"
    for split in ("train.txt", "val.txt"):
        result = run_cli("prepare-data", "subset", "--root", str(root), "--list", split, "--classes",
                         str(tmp_path / "novel.csv"), "--out", str(out))
        assert result.returncode == 0, result.stderr
    data = open_prepared(out)
    assert data.classes == ["bowling", "diving"]
    val = data.entries("val.txt")
    assert len(val) == 12 and {e.label for e in val} == {0, 1}
    assert all(e.path.name.startswith(("val_bowling", "val_diving")) for e in val)
    assert {e.label for e in val if "diving" in e.path.name} == {1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["val"]["count"] == 12 and manifest["splits"]["train"]["count"] == 12
    # other classes into the same folder are refused
    (tmp_path / "base.txt").write_text("archery\n")
    result = run_cli("prepare-data", "subset", "--root", str(root), "--list", "train.txt", "--classes",
                     str(tmp_path / "base.txt"), "--out", str(out), "--shots", "1")
    assert result.returncode == 2 and "other classes" in result.stderr


def test_vifi_split_file_videos(tmp_path: Path) -> None:
    """A ViFi-CLIP split file (`name label`, bare file names, its own label indices) selects those videos."""
    root = prepared(tmp_path)
    split = tmp_path / "fs_base_s1_train.txt"
    split.write_text("train_cooking_3.mp4 0\ntrain_cooking_5.mp4 0\ntrain_archery_0.mp4 1\n")
    result = run_cli("prepare-data", "subset", "--root", str(root), "--list", "train.txt", "--split-file",
                     str(split), "--out", "vifi.txt")
    assert result.returncode == 0, result.stderr
    assert lines(root / "vifi.txt") == ["videos/archery/train_archery_0.mp4 0", "videos/cooking/train_cooking_3.mp4 2",
                                        "videos/cooking/train_cooking_5.mp4 2"]
    # a split file naming videos of another list: one line, naming them
    result = run_cli("prepare-data", "subset", "--root", str(root), "--list", "val.txt", "--split-file",
                     str(split), "--out", "bad.txt")
    assert result.returncode == 2 and "train_cooking_3.mp4" in result.stderr


def test_a_split_file_finds_videos_whatever_their_container(tmp_path: Path) -> None:
    """ViFi-CLIP's K400 files name `val/{youtube_id}_{start}_{end}.mp4`; prepare-data k400 lists the video it
    found by that stem, which a download script may have left as .mkv or .webm."""
    root = tmp_path / "k400"
    root.mkdir()
    (root / "classes.txt").write_text("abseiling\nair drumming\n")
    (root / "val.txt").write_text("val/abseiling/-egPJubR-CE_000001_000011.mkv 0\n"
                                  "val/air drumming/0htNc0u9TDk_000000_000010.webm 1\n"
                                  "val/air drumming/1438aE9LMgY_000055_000065.mp4 1\n")
    split = tmp_path / "novel_val.txt"
    split.write_text("val/-egPJubR-CE_000001_000011.mp4 74\nval/0htNc0u9TDk_000000_000010.mp4 14\n")
    result = run_cli("prepare-data", "subset", "--root", str(root), "--list", "val.txt", "--split-file",
                     str(split), "--out", "novel.txt")
    assert result.returncode == 0, result.stderr
    assert lines(root / "novel.txt") == ["val/abseiling/-egPJubR-CE_000001_000011.mkv 0",
                                         "val/air drumming/0htNc0u9TDk_000000_000010.webm 1"]


def test_unknown_class_and_no_selection(tmp_path: Path) -> None:
    root = prepared(tmp_path)
    (tmp_path / "c.txt").write_text("archery\nyodelling\n")
    result = run_cli("prepare-data", "subset", "--root", str(root), "--list", "train.txt", "--classes",
                     str(tmp_path / "c.txt"), "--out", "x.txt")
    assert result.returncode == 2 and "yodelling" in result.stderr
    result = run_cli("prepare-data", "subset", "--root", str(root), "--list", "train.txt", "--out", "x.txt")
    assert result.returncode == 2 and "nothing to select" in result.stderr
