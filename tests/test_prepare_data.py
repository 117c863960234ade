"""`stadapt prepare-data` end to end, as a user runs it: each data set's published layout in miniature,
with tiny real videos in the publisher's container and codec (K400 mp4/H.264, SSv2 webm/VP9,
UCF-101 and HMDB-51 avi/MPEG-4 or XVID), and the bad files real downloads have: a zero-byte file, a
truncated file, a file whose content does not match its extension, a missing file. Every count, label
and quarantine entry is checked; then the prepared lists are read back and their clips decoded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from stadapt.data.encode import write_video
from stadapt.data.prepared import open_prepared

CODECS = {".mp4": {}, ".mkv": {}, ".webm": {"codec": "libvpx-vp9"},
          ".avi": {"codec": "mpeg4", "codec_tag": "XVID"}}


def video(path: Path, seed: int = 0, frames: int = 8) -> Path:
    """A tiny real video in the container (and codec) its extension implies."""
    rng = np.random.default_rng(seed)
    clip = np.repeat(rng.integers(0, 255, (frames, 1, 1, 3), dtype=np.uint8), 32, 1).repeat(32, 2)
    return write_video(path, clip, **CODECS[path.suffix.lower()])


def truncated(path: Path) -> Path:
    """A real video cut in half, as an interrupted download leaves it (its header survives)."""
    video(path, frames=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def prepare(*args: str) -> tuple[dict, str]:
    result = run_cli("prepare-data", *args, "--quiet")
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def read_out(out: Path) -> tuple[dict, list[str], dict[str, list[tuple[str, int]]], list[tuple[str, str]]]:
    """manifest, classes, {split: [(path, label)]}, quarantine [(path, reason)] of a prepared directory."""
    manifest = json.loads((out / "manifest.json").read_text())
    classes = (out / "classes.txt").read_text().splitlines()
    splits = {}
    for split, info in manifest["splits"].items():
        rows = [line.rsplit(" ", 1) for line in (out / info["file"]).read_text(encoding="utf-8").splitlines()]
        splits[split] = [(path, int(label)) for path, label in rows]
    quarantine = []
    if (out / "quarantine.txt").exists():
        quarantine = [tuple(line.split("\t")) for line in (out / "quarantine.txt").read_text().splitlines()]
    return manifest, classes, splits, quarantine


def test_ucf101(tmp_path):
    root = tmp_path / "UCF101 data"  # a space in every path
    lists = root / "ucfTrainTestlist"
    write(lists / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n3 YoYo\n", newline="\r\n")
    for n in (1, 2, 3):
        write(lists / f"trainlist0{n}.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
              "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n"
              "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 1\n"
              "ApplyEyeMakeup/v_ApplyEyeMakeup_g10_c01.avi 1\n"
              "ApplyEyeMakeup/v_ApplyEyeMakeup_g11_c01.avi 1\n", newline="\r\n")
        write(lists / f"testlist0{n}.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
              "HandstandPushups/v_HandStandPushups_g01_c01.avi\n"
              "YoYo/v_YoYo_g01_c01.avi\n", newline="\r\n")
    videos = root / "UCF-101"
    good = [videos / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
            videos / "HandstandPushups/v_HandStandPushups_g08_c01.avi",
            videos / "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
            videos / "HandstandPushups/v_HandStandPushups_g01_c01.avi"]
    for n, path in enumerate(good):
        video(path, seed=n)
    empty = videos / "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi"
    empty.write_bytes(b"")
    cut = truncated(videos / "ApplyEyeMakeup/v_ApplyEyeMakeup_g10_c01.avi")
    not_video = write(videos / "ApplyEyeMakeup/v_ApplyEyeMakeup_g11_c01.avi", "<html>404 Not Found</html>\n")
    missing = videos / "YoYo/v_YoYo_g01_c01.avi"

    # without --check: what the file system alone shows (missing, empty) is quarantined
    out = tmp_path / "prepared quick"
    stdout, stderr = prepare("ucf101", "--root", str(root), "--out", str(out), "--split", "2")
    manifest, classes, splits, quarantine = read_out(out)
    assert classes == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    assert splits["train"] == [(str(good[0]), 0), (str(good[1]), 1), (str(cut), 0), (str(not_video), 0)]
    assert quarantine == [(str(empty), "train: empty file (0 bytes)"), (str(missing), "val: missing: no such file")]
    assert manifest["details"]["split"] == 2 and manifest["checked"] is False
    assert "add --check" in stdout

    # with --check: every video is decoded too, so the cut and the fake one join the quarantine
    out = tmp_path / "prepared"
    stdout, stderr = prepare("ucf101", "--root", str(root), "--out", str(out), "--check", "--workers", "2")
    manifest, classes, splits, quarantine = read_out(out)
    assert splits == {"train": [(str(good[0]), 0), (str(good[1]), 1)], "val": [(str(good[2]), 0), (str(good[3]), 1)]}
    assert [(p, r.split(":")[0]) for p, r in quarantine] == [
        (str(empty), "train"), (str(cut), "train"), (str(not_video), "train"), (str(missing), "val")]
    reasons = dict(quarantine)
    assert "truncated or damaged" in reasons[str(cut)] or "not a readable video" in reasons[str(cut)]
    assert "not a readable video container" in reasons[str(not_video)]
    assert manifest["counts"] == {"train": {"listed": 5, "kept": 2, "quarantined": 3},
                                  "val": {"listed": 3, "kept": 2, "quarantined": 1}}
    assert manifest["quarantine"]["count"] == 4 and manifest["checked"] is True
    assert manifest["empty_classes"] == {"train": ["YoYo"], "val": ["YoYo"]}
    assert "1 class(es) have no train videos: YoYo" in stderr
    assert "train 2 (3 quarantined), val 2 (1 quarantined)" in stdout

    # the prepared lists feed the clip reader directly
    prepared = open_prepared(out)
    from stadapt.data.pyav_reader import read_frames

    for entry in prepared.entries("val"):
        assert read_frames(entry.path, [0, 7]).shape == (2, 32, 32, 3)


def test_hmdb51_odd_names(tmp_path):
    root = tmp_path / "hmdb"
    names = {
        "brush_hair": [("#20_Rhume_brush_hair_h_nm_np1_le_goo_0.avi", "1"),
                       ("Café de Flore!_brush_hair_u_nm_np1_ba_goo_1.avi", "2"),
                       ("gone_brush_hair_f_nm_np1_fr_med_0.avi", "1")],
        "draw_sword": [("Glitter_(Fairy_Tail)_&_Keine_(Touhou)_draw_sword_f_cm_np1_fr_med_0.avi", "2"),
                       ("Bob's;clip_draw_sword_f_cm_np1_ri_med_1.avi", "1"),
                       ("unused_draw_sword_0.avi", "0")],
        "shoot_ball": [("only_unused_shoot_ball_0.avi", "0")],
    }
    splits_dir = root / "testTrainMulti_7030_splits"
    for cls, rows in names.items():
        write(splits_dir / f"{cls}_test_split1.txt", "".join(f"{name} {flag} \n" for name, flag in rows),
              newline="\r\n")
        for n, (name, _) in enumerate(rows):
            if not name.startswith("gone"):
                video(root / "hmdb51_org" / cls / name, seed=n)
    out = tmp_path / "out"
    stdout, stderr = prepare("hmdb51", "--root", str(root), "--out", str(out), "--check")
    manifest, classes, splits, quarantine = read_out(out)
    org = root.resolve() / "hmdb51_org"
    assert classes == ["brush_hair", "draw_sword", "shoot_ball"]
    assert splits == {
        "train": [(str(org / "brush_hair/#20_Rhume_brush_hair_h_nm_np1_le_goo_0.avi"), 0),
                  (str(org / "draw_sword/Bob's;clip_draw_sword_f_cm_np1_ri_med_1.avi"), 1)],
        "val": [(str(org / "brush_hair/Café de Flore!_brush_hair_u_nm_np1_ba_goo_1.avi"), 0),
                (str(org / "draw_sword/Glitter_(Fairy_Tail)_&_Keine_(Touhou)_draw_sword_f_cm_np1_fr_med_0.avi"), 1)],
    }
    assert quarantine == [(str(org / "brush_hair/gone_brush_hair_f_nm_np1_fr_med_0.avi"),
                           "train: missing: no such file")]
    assert manifest["details"]["unused"] == 2
    assert manifest["empty_classes"] == {"train": ["shoot_ball"], "val": ["shoot_ball"]}


K400_TRAIN = """label,youtube_id,time_start,time_end,split,is_cc
abseiling,-abc123def45,14,24,train,0
"passing American football (in game)",_xyz987uvw65,0,10,train,0
abseiling,gone00000000,30,40,train,0
"dancing ""funky"" chicken, (fast)",qqq,5,15,train,0
"""
K400_VAL = """label,youtube_id,time_start,time_end,split
zumba,zzz,1,11,val
abseiling,vvv,2,12,val
"""


@pytest.mark.parametrize("layout", ["cvdf", "class_folders"])
def test_k400(tmp_path, layout):
    root = tmp_path / "k400"
    if layout == "cvdf":
        write(root / "annotations" / "train.csv", K400_TRAIN)
        write(root / "annotations" / "val.csv", K400_VAL)
        folders = {"abseiling": root / "train", "passing American football (in game)": root / "train",
                   "dancing": root / "train", "zumba": root / "val", "vvv": root / "val"}
    else:
        write(root / "kinetics_train.csv", K400_TRAIN)
        write(root / "kinetics_val.csv", K400_VAL)
        folders = {"abseiling": root / "train" / "abseiling",
                   "passing American football (in game)": root / "train" / "passing_American_football_in_game",
                   "dancing": root / "train" / "dancing_funky_chicken_fast", "zumba": root / "val" / "zumba",
                   "vvv": root / "val" / "abseiling"}
    a = video(folders["abseiling"] / "-abc123def45_000014_000024.mp4")
    b = video(folders["passing American football (in game)"] / "_xyz987uvw65_000000_000010.mkv")  # as downloaded
    c = video(folders["dancing"] / "qqq_000005_000015.webm")
    z = video(folders["zumba"] / "zzz_000001_000011.mp4")
    v = folders["vvv"] / "vvv_000002_000012.mp4"
    v.parent.mkdir(parents=True, exist_ok=True)
    v.write_bytes(video(tmp_path / "x.webm").read_bytes())  # VP9 content under an .mp4 name: still decodes
    out = tmp_path / "out"
    stdout, _ = prepare("k400", "--root", str(root), "--out", str(out), "--check")
    manifest, classes, splits, quarantine = read_out(out)
    assert classes == ["abseiling", 'dancing "funky" chicken, (fast)', "passing American football (in game)", "zumba"]
    assert splits == {"train": [(str(a), 0), (str(b), 2), (str(c), 1)], "val": [(str(z), 3), (str(v), 0)]}
    assert quarantine == [(str(root / "train" / "gone00000000_000030_000040.mp4"), "train: missing: no such file")]
    assert manifest["dataset"] == "k400" and manifest["counts"]["train"] == {"listed": 4, "kept": 3, "quarantined": 1}


def test_ssv2(tmp_path):
    root = tmp_path / "ssv2"
    labels = {"Approaching something with your camera": "0", "Holding something next to something": "1",
              "Pretending to put something onto something": "2"}
    train = [{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
              "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks"]},
             {"id": "42", "label": "approaching a cup with your camera",
              "template": "Approaching [something] with your camera", "placeholders": ["a cup"]},
             {"id": "7", "label": "juggling balls", "template": "Juggling [something]", "placeholders": ["balls"]},
             {"id": "13", "label": "approaching a pen with your camera",
              "template": "Approaching [something] with your camera", "placeholders": ["a pen"]}]
    val = [{"id": "5", "label": "holding a box next to a cup", "template": "Holding [something] next to [something]",
            "placeholders": ["a box", "a cup"]}]
    write(root / "labels" / "something-something-v2-labels.json", json.dumps(labels, indent=4))
    write(root / "labels" / "something-something-v2-train.json", json.dumps(train))
    write(root / "labels" / "something-something-v2-validation.json", json.dumps(val))
    folder = root / "20bn-something-something-v2"
    paths = {vid: video(folder / f"{vid}.webm", seed=n) for n, vid in enumerate(("78687", "42", "7", "5"))}
    truncated(folder / "13.webm")
    out = tmp_path / "out"
    _, _ = prepare("ssv2", "--root", str(root), "--out", str(out), "--check")
    manifest, classes, splits, quarantine = read_out(out)
    assert classes == list(labels)
    assert splits == {"train": [(str(paths["78687"]), 1), (str(paths["42"]), 0)], "val": [(str(paths["5"]), 1)]}
    assert [(p.split(": ")[0], r.split(":")[0]) for p, r in quarantine] == [
        ("something-something-v2-train.json item 2", "annotation"), (str(folder / "13.webm"), "train")]
    assert "Juggling [something]" in quarantine[0][1] and "truncated" in quarantine[1][1]
    assert manifest["empty_classes"] == {"train": ["Pretending to put something onto something"],
                                         "val": ["Approaching something with your camera",
                                                 "Pretending to put something onto something"]}


def test_own_lists_with_spaces_and_non_ascii(tmp_path):
    root = tmp_path / "my videos"
    a = video(root / "días de campo" / "clip one.mp4")
    b = video(root / "naïve cat" / "chat 2.webm")
    write(root / "train.txt", "días de campo/clip one.mp4 1\nnaïve cat/chat 2.webm 0\n")
    write(root / "val.csv", 'path,label\n"días de campo/clip one.mp4",1\n"nowhere/x.mp4",0\n')
    write(root / "classes.txt", "cat\nfield\n")
    out = tmp_path / "out"
    prepare("list", "--root", str(root), "--train", str(root / "train.txt"), "--val", str(root / "val.csv"),
            "--classes", str(root / "classes.txt"), "--out", str(out))
    manifest, classes, splits, quarantine = read_out(out)
    assert classes == ["cat", "field"]
    assert splits == {"train": [(str(a), 1), (str(b), 0)], "val": [(str(a), 1)]}
    assert quarantine == [(str(root.resolve() / "nowhere/x.mp4"), "val: missing: no such file")]
    entries = open_prepared(out).entries("train")  # `path label` with spaces in the path reads back
    assert [(e.path, e.label) for e in entries] == [(a, 1), (b, 0)]


def test_never_overwrites_what_it_did_not_write(tmp_path):
    root = tmp_path / "mine"
    a = video(root / "a.mp4")
    write(root / "train.txt", "a.mp4 0\n")
    args = ("list", "--root", str(root), "--train", str(root / "train.txt"), "--quiet")
    # --out pointing at the user's own directory: refused, with or without --overwrite
    for extra in ((), ("--overwrite",)):
        result = run_cli("prepare-data", *args, "--out", str(root), *extra)
        assert result.returncode == 2 and "Traceback" not in result.stderr
    assert a.read_bytes() and (root / "train.txt").read_text() == "a.mp4 0\n"
    assert "is not a directory stadapt prepared" in result.stderr
    out = tmp_path / "out"
    assert run_cli("prepare-data", *args, "--out", str(out)).returncode == 0
    result = run_cli("prepare-data", *args, "--out", str(out))
    assert result.returncode == 2 and "--overwrite" in result.stderr
    (out / "notes.md").write_text("my notes")
    assert run_cli("prepare-data", *args, "--out", str(out), "--overwrite").returncode == 0
    assert (out / "notes.md").read_text() == "my notes"  # only the files it wrote were replaced


def test_missing_annotations_name_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    for fmt, option in (("k400", "--annotations"), ("ssv2", "--labels"), ("ucf101", "--splits-dir"),
                        ("hmdb51", "--splits-dir")):
        result = run_cli("prepare-data", fmt, "--root", str(tmp_path / "empty"), "--out", str(tmp_path / fmt))
        assert result.returncode == 2, result.stderr
        assert option in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / fmt).exists()


def test_bench_data_compares_the_decoders_on_the_same_clips(tmp_path):
    root = tmp_path / "data"
    for n in range(3):
        video(root / f"v{n}.mp4", seed=n, frames=60)
    write(root / "train.txt", "v0.mp4 0\nv1.mp4 0\nv2.mp4 0\n")
    out = tmp_path / "prepared"
    prepare("list", "--root", str(root), "--train", str(root / "train.txt"), "--out", str(out))
    result = run_cli("bench-data", str(out), "--clips", "6", "--frames", "4", "--stride", "8", "--json",
                     str(tmp_path / "bench.json"), "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["identical_frames"] is True and report["clips"] == 6 and report["videos"] == 3
    assert set(report["decoders"]) == {"seeking", "whole_video"}
    assert all(r["clips_per_s"] > 0 for r in report["decoders"].values())
    assert "speed-up" in result.stdout and "frames identical: yes" in result.stdout


def _crash_on_hostile(path: str):
    """decode_problem, except that the worker process dies on a 'hostile' file (as on a segfault)."""
    import os

    from stadapt.data.prepare import file_problem

    if "hostile" in path:
        os._exit(139)
    return file_problem(Path(path))


def test_a_decoder_crash_quarantines_one_video_not_the_preparation(tmp_path, monkeypatch):
    """A worker process that dies (as FFmpeg can on a hostile file) costs only that video."""
    import stadapt.data.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "decode_problem", _crash_on_hostile)  # forked workers inherit it
    paths = [str(video(tmp_path / name)) for name in ("a.mp4", "b.mp4", "hostile.mp4", "c.mp4", "d.mp4")]
    bad = prepare_module._check_all(paths, workers=2, progress=False)
    assert bad == {paths[2]: "the decoder crashed on this file"}
