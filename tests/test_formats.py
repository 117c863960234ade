"""Data set readers: each publisher's own on-disk layout, built in miniature, becomes a `Listing`.

The annotation files use the publishers' exact formats (headers, CSV quoting, CRLF, trailing spaces,
1-based indices, string indices in labels.json, prefixed file names). Videos are empty placeholder
files: readers decide where videos are and never open them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stadapt.data.formats import READERS, read_hmdb51, read_k400, read_list, read_ssv2, read_ucf101
from stadapt.data.formats.videos import (
    VideoIndex,
    index_videos,
    numbered_classes,
    read_class_names,
)
from stadapt.data.prepared import open_prepared, write_prepared
from stadapt.data.textfile import read_lines
from stadapt.errors import DataError

# ----------------------------------------------------------------------------------------- builders


def touch(path: Path) -> Path:
    """An empty placeholder video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write(path: Path, text: str, newline: str = "\n", bom: bool = False) -> Path:
    """Text written byte-exactly, with the given line ending."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.replace("\n", newline).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def rel_rows(listing, split: str, base: Path) -> list[tuple[str, int]]:
    """A split's rows as (path relative to base, label), checking every path is absolute."""
    rows = listing.splits[split]
    assert all(p.is_absolute() for p, _ in rows)
    return [(p.relative_to(base).as_posix(), label) for p, label in rows]


def reasons(listing) -> list[tuple[str, str]]:
    return [(ref, reason) for ref, reason in listing.rejected]


K400_CLASSES = ["abseiling", 'dancing "funky" chicken, (fast)', "passing American football (in game)", "zumba"]
K400_TRAIN_CSV = """label,youtube_id,time_start,time_end,split,is_cc
abseiling,-abc123def45,14,24,train,0
"passing American football (in game)",_xyz987uvw65,0,10,train,0
abseiling,mmm111nnn22,30.0,40.0,train,0
"dancing ""funky"" chicken, (fast)",qqq,5,15,train,0
abseiling,badtime,1.5,11,train,0
,nolabel,1,11,train,0
abseiling,short,1
"""
K400_VAL_CSV = """label,youtube_id,time_start,time_end,split
zumba,zzz,1,11,val
abseiling,vvv,2,12,val
"""
K400_TEST_CSV = """youtube_id,time_start,time_end,split
ttt,3,13,test
"""


def make_k400_cvdf(root: Path) -> Path:
    """CVDF release: annotations/{train,val,test}.csv beside train/ val/ test/ video folders."""
    write(root / "annotations" / "train.csv", K400_TRAIN_CSV)
    write(root / "annotations" / "val.csv", K400_VAL_CSV)
    write(root / "annotations" / "test.csv", K400_TEST_CSV)
    touch(root / "train" / "-abc123def45_000014_000024.mp4")
    touch(root / "train" / "_xyz987uvw65_000000_000010.mkv")  # another container, found by stem
    touch(root / "train" / "qqq_000005_000015.mp4")
    touch(root / "train" / "zzz_000001_000011.mp4")  # same stem in train/ and val/: val's wins for val
    touch(root / "val" / "zzz_000001_000011.mp4")
    touch(root / "test" / "ttt_000003_000013.mp4")
    return root


def make_k400_class_folders(root: Path, split_folders: bool = True) -> Path:
    """Per-class folders as download scripts leave them, CSVs directly in root with prefixed names."""
    write(root / "kinetics-400_train.csv", K400_TRAIN_CSV)
    write(root / "kinetics-400_validate.csv", K400_VAL_CSV)
    train = root / "train" if split_folders else root
    val = root / "val" if split_folders else root
    touch(train / "abseiling" / "-abc123def45_000014_000024.mp4")
    touch(train / "passing_American_football_in_game" / "_xyz987uvw65_000000_000010.webm")
    touch(train / "dancing funky chicken, fast" / "qqq_000005_000015.mp4")
    touch(val / "zumba" / "zzz_000001_000011.mp4")
    return root


SSV2_LABELS = {"Holding something next to something": "1", "Approaching something with your camera": "0",
               "Pretending to put something onto something": "2"}
SSV2_TRAIN = [
    {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
     "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks vaporub bottle"]},
    {"id": "42", "label": "approaching a cup with your camera", "template": "Approaching [something] with your camera",
     "placeholders": ["a cup"]},
    {"id": "999", "label": "approaching a pen with your camera",
     "template": "Approaching [something] with your camera", "placeholders": ["a pen"]},
    {"id": "7", "label": "juggling three balls", "template": "Juggling [something]", "placeholders": ["balls"]},
]
SSV2_VAL = [{"id": "5", "label": "holding a box next to a cup", "template": "Holding [something] next to [something]",
             "placeholders": ["a box", "a cup"]}]


def make_ssv2(root: Path, prefixed: bool = True) -> Path:
    """20BN release: labels/ with something-something-v2-*.json beside 20bn-something-something-v2/."""
    prefix = "something-something-v2-" if prefixed else ""
    folder = root / "labels" if prefixed else root
    videos = root / ("20bn-something-something-v2" if prefixed else "videos")
    write(folder / f"{prefix}labels.json", json.dumps(SSV2_LABELS, indent=4))
    write(folder / f"{prefix}train.json", json.dumps(SSV2_TRAIN))
    write(folder / f"{prefix}validation.json", json.dumps(SSV2_VAL))
    write(folder / f"{prefix}test.json", json.dumps([{"id": "1"}]))
    for vid in ("78687", "42", "7", "5"):
        touch(videos / f"{vid}.webm")
    return root


UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


def make_ucf101(root: Path) -> Path:
    """ucfTrainTestlist/ with CRLF files beside UCF-101/<Class>/v_<Class>_gXX_cYY.avi."""
    lists = root / "ucfTrainTestlist"
    write(lists / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n3 YoYo\n", newline="\r\n")
    write(lists / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
          "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n"
          "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 2\n"
          "Unknown/v_Unknown_g01_c01.avi 1\n", newline="\r\n")
    write(lists / "testlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
          "HandStandPushups/v_HandstandPushups_g01_c01.avi\n"
          "YoYo/v_YoYo_g01_c01.avi\n", newline="\r\n")
    videos = root / "UCF-101"
    for name in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi",
                 "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "HandstandPushups/v_HandStandPushups_g08_c01.avi",
                 "HandstandPushups/v_HandStandPushups_g01_c01.avi"):
        touch(videos / name)
    return root


HMDB_NAMES = {
    "brush_hair": ["#20_Rhume_brush_hair_h_nm_np1_le_goo_0.avi 1 ",
                   "Café de Flore!_brush_hair_u_nm_np1_ba_goo_1.avi 2 ",
                   "missing_brush_hair_f_nm_np1_fr_med_0.avi 1 "],
    "draw_sword": ["Glitter_(Fairy_Tail)_&_Keine_(Touhou)_draw_sword_f_cm_np1_fr_med_0.avi 2 ",
                   "Bob's;clip_draw_sword_f_cm_np1_ri_med_1.avi 1 ", "unused_draw_sword_0.avi 0 ",
                   "noflag_draw_sword.avi", "badflag_draw_sword.avi 3 "],
    "shoot_ball": ["only_unused_shoot_ball_0.avi 0 "],
}


def make_hmdb51(root: Path) -> Path:
    """testTrainMulti_7030_splits/<class>_test_split<N>.txt (trailing spaces, CRLF) beside hmdb51_org/<class>/."""
    splits = root / "testTrainMulti_7030_splits"
    for cls, lines in HMDB_NAMES.items():
        write(splits / f"{cls}_test_split1.txt", "".join(f"{line}\n" for line in lines), newline="\r\n")
        write(splits / f"{cls}_test_split2.txt", "".join(f"{line.rsplit(None, 1)[0]} 1 \n" for line in lines[:1]))
        for line in lines:
            name = line.rsplit(None, 1)[0] if len(line.split()) > 1 else line
            if not name.startswith(("missing", "noflag", "badflag")):
                touch(root / "hmdb51_org" / cls / name)
    return root


@pytest.fixture
def tiny_layouts(tmp_path):
    """Builders of every published layout, each in its own folder under tmp_path."""
    def build(kind: str, **kwargs) -> Path:
        makers = {"k400_cvdf": make_k400_cvdf, "k400_folders": make_k400_class_folders, "ssv2": make_ssv2,
                  "ucf101": make_ucf101, "hmdb51": make_hmdb51}
        root = tmp_path / kind
        root.mkdir(exist_ok=True)
        return makers[kind](root, **kwargs).resolve()

    return build


# ----------------------------------------------------------------------------------------- helpers


def test_readers_registry():
    assert READERS == {"k400": read_k400, "ssv2": read_ssv2, "ucf101": read_ucf101, "hmdb51": read_hmdb51,
                       "list": read_list}


def test_index_videos_by_stem_follows_symlinks_without_looping(tmp_path):
    touch(tmp_path / "a" / "clip.mp4")
    touch(tmp_path / "b" / "clip.MKV")
    touch(tmp_path / "b" / "notes.txt")
    real = touch(tmp_path / "elsewhere" / "linked.webm")
    os.symlink(real.parent, tmp_path / "a" / "link")
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a cycle back to the root
    index = index_videos(tmp_path)
    assert sorted(index) == ["clip", "linked"]
    assert index["clip"] == [tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.MKV"]
    assert len(index["linked"]) == 1


def test_video_index_finds_ignoring_case_and_extension(tmp_path):
    touch(tmp_path / "Cls" / "v_HandStand_g01.avi")
    touch(tmp_path / "Cls" / "converted.mp4")
    index = VideoIndex(tmp_path)
    assert index.find("Cls/v_HandStand_g01.avi") == (tmp_path / "Cls" / "v_HandStand_g01.avi", True)
    assert index.find("cls/v_Handstand_g01.avi") == (tmp_path / "Cls" / "v_HandStand_g01.avi", False)
    assert index.find("Other/v_HandStand_g01.avi") == (tmp_path / "Cls" / "v_HandStand_g01.avi", False)
    assert index.find("Cls/converted.avi") == (tmp_path / "Cls" / "converted.mp4", False)
    assert index.find("Cls/absent.avi") == (None, False)


def test_read_lines_bom_crlf_and_errors(tmp_path):
    path = write(tmp_path / "a.txt", "one \ntwo\n", newline="\r\n", bom=True)
    assert read_lines(path, "list") == ["one ", "two"]
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt is not UTF-8.*re-save it as UTF-8"):
        read_lines(tmp_path / "latin.txt", "list")
    with pytest.raises(DataError, match=r"list .*nope\.txt does not exist; check --train"):
        read_lines(tmp_path / "nope.txt", "list", "check --train")


def test_class_names_file_and_numbered(tmp_path):
    assert read_class_names(write(tmp_path / "c.txt", " a \nb\n\n", newline="\r\n")) == ["a", "b"]
    with pytest.raises(DataError, match="blank lines"):
        read_class_names(write(tmp_path / "d.txt", "a\n\nb\n"))
    with pytest.raises(DataError, match="repeats class names: a"):
        read_class_names(write(tmp_path / "e.txt", "a\nb\na\n"))
    assert numbered_classes(3) == ["class_0", "class_1", "class_2"]
    assert numbered_classes(11)[:2] == ["class_00", "class_01"]
    assert numbered_classes(2, min_width=3) == ["class_000", "class_001"]


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass the folder"):
        read_k400(tmp_path / "nope")


# ----------------------------------------------------------------------------------------- Kinetics-400


K400_REJECTED = [
    ("train.csv line 6: abseiling,badtime,1.5,11,train,0", "time_start '1.5' is not a whole number of seconds"),
    ("train.csv line 7: ,nolabel,1,11,train,0", "empty label"),
    ("train.csv line 8: abseiling,short,1", "has 3 fields, the header has 6"),
]


def test_k400_cvdf_layout(tiny_layouts):
    root = tiny_layouts("k400_cvdf")
    listing = read_k400(root)
    assert listing.name == "k400"
    assert listing.classes == K400_CLASSES
    assert list(listing.splits) == ["train", "val"]
    assert rel_rows(listing, "train", root) == [
        ("train/-abc123def45_000014_000024.mp4", 0),
        ("train/_xyz987uvw65_000000_000010.mkv", 2),
        ("train/mmm111nnn22_000030_000040.mp4", 0),  # missing: expected path, file absent
        ("train/qqq_000005_000015.mp4", 1),
    ]
    assert not (root / "train" / "mmm111nnn22_000030_000040.mp4").exists()
    assert rel_rows(listing, "val", root) == [("val/zzz_000001_000011.mp4", 3), ("val/vvv_000002_000012.mp4", 0)]
    assert reasons(listing) == K400_REJECTED
    d = listing.details
    assert d["annotations"] == [str(root / "annotations" / f) for f in ("train.csv", "val.csv", "test.csv")]
    assert d["unlabelled_splits"] == ["test"]
    assert d["empty_classes"] == {"train": ["zumba"], "val": [K400_CLASSES[1], K400_CLASSES[2]]}
    assert d["counts"] == {"train": 4, "val": 2} and d["rejected"] == 3
    assert listing.source == f"Kinetics-400 annotations in {root / 'annotations'}"
    json.dumps(d)


def test_k400_labelled_test_csv_becomes_a_split(tiny_layouts):
    root = tiny_layouts("k400_cvdf")
    write(root / "annotations" / "test.csv", "label,youtube_id,time_start,time_end,split\nyoga,ttt,3.0,13.0,test\n")
    listing = read_k400(root)
    assert listing.classes == sorted([*K400_CLASSES, "yoga"])
    assert rel_rows(listing, "test", root) == [("test/ttt_000003_000013.mp4", 3)]
    assert listing.details["unlabelled_splits"] == []


def test_k400_test_csv_with_blank_label_column_is_unlabelled(tiny_layouts):
    root = tiny_layouts("k400_cvdf")
    write(root / "annotations" / "test.csv", "label,youtube_id,time_start,time_end,split\n,ttt,3,13,test\n")
    listing = read_k400(root)
    assert list(listing.splits) == ["train", "val"] and listing.details["unlabelled_splits"] == ["test"]
    assert len(listing.rejected) == 3


@pytest.mark.parametrize("split_folders", [True, False])
def test_k400_class_folder_layout(tiny_layouts, split_folders):
    root = tiny_layouts("k400_folders", split_folders=split_folders)
    listing = read_k400(root)
    assert listing.classes == K400_CLASSES
    train = "train/" if split_folders else ""
    val = "val/" if split_folders else ""
    assert rel_rows(listing, "train", root) == [
        (f"{train}abseiling/-abc123def45_000014_000024.mp4", 0),
        (f"{train}passing_American_football_in_game/_xyz987uvw65_000000_000010.webm", 2),
        ("train/mmm111nnn22_000030_000040.mp4", 0),
        (f"{train}dancing funky chicken, fast/qqq_000005_000015.mp4", 1),
    ]
    assert rel_rows(listing, "val", root) == [(f"{val}zumba/zzz_000001_000011.mp4", 3),
                                              ("val/vvv_000002_000012.mp4", 0)]
    assert listing.details["annotations"] == [str(root / "kinetics-400_train.csv"),
                                              str(root / "kinetics-400_validate.csv")]
    assert len(listing.rejected) == 3


def test_k400_classes_file_orders_classes_and_rejects_unknown(tiny_layouts, tmp_path):
    root = tiny_layouts("k400_cvdf")
    classes = write(tmp_path / "k400_classes.txt", "zumba\nabseiling\n")
    listing = read_k400(root, classes_file=classes)
    assert listing.classes == ["zumba", "abseiling"]
    assert [label for _, label in listing.splits["train"]] == [1, 1]
    why = dict(listing.rejected)
    assert why["train.csv line 3: passing American football (in game),_xyz987uvw65,0,10,train,0"] == \
        "class 'passing American football (in game)' is not in the class file"
    assert str(classes) in listing.details["annotations"]


def test_k400_missing_annotations_is_a_clear_error(tmp_path):
    touch(tmp_path / "train" / "abseiling" / "x_000001_000011.mp4")
    with pytest.raises(DataError) as err:
        read_k400(tmp_path)
    text = str(err.value)
    assert str(tmp_path.resolve() / "annotations") in text and "--annotations DIR" in text and "--train-list" in text
    empty = tmp_path / "ann"
    empty.mkdir()
    with pytest.raises(DataError, match=r"ann/\{train,val,test\}\.csv.*--annotations DIR"):
        read_k400(tmp_path, annotations=empty)
    with pytest.raises(DataError, match=r"--annotations .*missing does not exist"):
        read_k400(tmp_path, annotations=tmp_path / "missing")


def test_k400_csv_with_wrong_header(tmp_path):
    write(tmp_path / "train.csv", "name,url\na,b\n")
    with pytest.raises(DataError, match="lacks youtube_id, time_start, time_end.*--annotations DIR"):
        read_k400(tmp_path)


def test_k400_lists_with_class_sources(tiny_layouts, tmp_path):
    root = tiny_layouts("k400_folders")
    train = write(tmp_path / "train_list.txt", "train/abseiling/-abc123def45_000014_000024.mp4 0\n"
                  "/data/k400/with space/clip one.mp4 3\n\nno_label_here\ntrain/x.mp4 abc\ntrain/y.mp4 9\n")
    val = write(tmp_path / "val_list.txt", "val/zumba/zzz_000001_000011.mp4 3\n", newline="\r\n")
    listing = read_k400(root, train_list=train, val_list=val)
    assert listing.classes == K400_CLASSES  # from the CSVs found in root
    assert listing.details["classes_from"] == "annotations"
    assert [(str(p), lab) for p, lab in listing.splits["train"]] == [
        (str(root / "train/abseiling/-abc123def45_000014_000024.mp4"), 0), ("/data/k400/with space/clip one.mp4", 3)]
    assert rel_rows(listing, "val", root) == [("val/zumba/zzz_000001_000011.mp4", 3)]
    assert reasons(listing) == [
        ("train_list.txt line 4: no_label_here", "no label: expected `path label`"),
        ("train_list.txt line 5: train/x.mp4 abc", "label 'abc' is not a class index (a non-negative integer)"),
        ("train_list.txt line 6: train/y.mp4 9", "label 9 is not an index of the 4 classes (annotations)"),
    ]
    assert listing.details["annotations"][:2] == [str(train), str(val)]
    assert listing.source.startswith("Kinetics-400 lists ")

    bare = tmp_path / "bare"  # no CSVs: per-class folder names when they match the label count
    for cls in ("b class", "a_class"):
        touch(bare / "train" / cls / "v.mp4")
    two = write(tmp_path / "two.txt", "train/a_class/v.mp4 0\ntrain/b class/v.mp4 1\n")
    listing = read_k400(bare, train_list=two)
    assert listing.classes == ["a_class", "b class"] and listing.details["classes_from"] == "class_folders"
    three = write(tmp_path / "three.txt", "x.mp4 2\n")
    listing = read_k400(bare, train_list=three)
    assert listing.classes == ["class_000", "class_001", "class_002"]
    assert listing.details["empty_classes"] == {"train": ["class_000", "class_001"]}
    with pytest.raises(DataError, match="no usable rows"):
        read_k400(bare, train_list=write(tmp_path / "bad.txt", "x.mp4 a\n"))
    names = write(tmp_path / "names.txt", "a\nb\nc\n")
    assert read_k400(bare, train_list=three, classes_file=names).classes == ["a", "b", "c"]


# ----------------------------------------------------------------------------------------- SSv2


def test_ssv2_20bn_layout(tiny_layouts):
    root = tiny_layouts("ssv2")
    listing = read_ssv2(root)
    assert listing.name == "ssv2"
    assert listing.classes == ["Approaching something with your camera", "Holding something next to something",
                               "Pretending to put something onto something"]
    videos = "20bn-something-something-v2"
    assert rel_rows(listing, "train", root) == [(f"{videos}/78687.webm", 1), (f"{videos}/42.webm", 0),
                                                (f"{videos}/999.webm", 0)]  # 999 is missing on disk
    assert not (root / videos / "999.webm").exists()
    assert rel_rows(listing, "val", root) == [(f"{videos}/5.webm", 1)]
    [(ref, why)] = listing.rejected
    assert ref.startswith("something-something-v2-train.json item 3: ")
    assert why == "template 'Juggling [something]' is not in something-something-v2-labels.json"
    labels = root / "labels"
    assert listing.details["annotations"] == [str(labels / f"something-something-v2-{n}.json")
                                              for n in ("labels", "train", "validation")]
    assert listing.details["videos"] == str(root / videos)
    assert listing.details["empty_classes"] == {
        "train": ["Pretending to put something onto something"],
        "val": ["Approaching something with your camera", "Pretending to put something onto something"]}


def test_ssv2_plain_names_in_root_and_videos_folder(tiny_layouts, tmp_path):
    root = tiny_layouts("ssv2", prefixed=False)
    listing = read_ssv2(root)
    assert rel_rows(listing, "val", root) == [("videos/5.webm", 1)]
    assert listing.details["annotations"][0] == str(root / "labels.json")
    other = tmp_path / "mirror"  # explicit options override discovery
    touch(other / "5.mp4")
    listing = read_ssv2(tmp_path, labels=root / "labels.json", val=root / "validation.json", videos=other)
    assert list(listing.splits) == ["val"]
    assert [(str(p), lab) for p, lab in listing.splits["val"]] == [(str(other.resolve() / "5.mp4"), 1)]


def test_ssv2_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"no SSv2 labels\.json found.*--labels FILE"):
        read_ssv2(tmp_path)
    write(tmp_path / "labels.json", json.dumps(SSV2_LABELS))
    with pytest.raises(DataError, match=r"no SSv2 train\.json / validation\.json.*--train FILE and --val FILE"):
        read_ssv2(tmp_path)
    write(tmp_path / "labels.json", json.dumps({"a": "0", "b": "2"}))
    write(tmp_path / "train.json", "[]")
    with pytest.raises(DataError, match=r"not 0\.\.1 \(missing 1\)"):
        read_ssv2(tmp_path)


# ----------------------------------------------------------------------------------------- UCF-101


def test_ucf101_official_split(tiny_layouts):
    root = tiny_layouts("ucf101")
    listing = read_ucf101(root)
    assert listing.name == "ucf101"
    assert listing.classes == UCF_CLASSES
    assert rel_rows(listing, "train", root) == [
        ("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
        ("UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi", 1),
    ]
    assert rel_rows(listing, "val", root) == [
        ("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0),
        ("UCF-101/HandstandPushups/v_HandStandPushups_g01_c01.avi", 1),  # resolved ignoring case
        ("UCF-101/YoYo/v_YoYo_g01_c01.avi", 2),  # missing: expected path
    ]
    assert reasons(listing) == [
        ("trainlist01.txt line 3: ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 2",
         "label 2 (HandstandPushups) disagrees with the folder's class ApplyEyeMakeup"),
        ("trainlist01.txt line 4: Unknown/v_Unknown_g01_c01.avi 1",
         "folder of 'Unknown/v_Unknown_g01_c01.avi' is not a class in classInd.txt"),
    ]
    lists = root / "ucfTrainTestlist"
    d = listing.details
    assert d["split"] == 1 and d["found_ignoring_case"] == 1
    assert d["annotations"] == [str(lists / f) for f in ("classInd.txt", "trainlist01.txt", "testlist01.txt")]
    assert d["empty_classes"] == {"train": ["YoYo"]}
    assert listing.source == f"UCF-101 split 1 from {lists}"


def test_ucf101_split_numbers_and_missing_lists(tiny_layouts, tmp_path):
    root = tiny_layouts("ucf101")
    for bad in (0, 4):
        with pytest.raises(DataError, match="--split must be 1, 2 or 3"):
            read_ucf101(root, split=bad)
    with pytest.raises(DataError, match=r"trainlist02\.txt does not exist; pass --splits-dir"):
        read_ucf101(root, split=2)
    beside = read_ucf101(root / "UCF-101")  # root is the video folder: the lists are found beside it
    assert rel_rows(beside, "val", root) == rel_rows(read_ucf101(root), "val", root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no UCF-101 classInd\.txt found.*empty/ucfTrainTestlist.*--splits-dir DIR"):
        read_ucf101(tmp_path / "empty")
    listing = read_ucf101(tmp_path, splits_dir=root / "ucfTrainTestlist", videos=root / "UCF-101")
    assert rel_rows(listing, "train", root)[0] == ("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0)


# ----------------------------------------------------------------------------------------- HMDB-51


def test_hmdb51_official_split(tiny_layouts):
    root = tiny_layouts("hmdb51")
    listing = read_hmdb51(root)
    assert listing.name == "hmdb51"
    assert listing.classes == ["brush_hair", "draw_sword", "shoot_ball"]
    assert rel_rows(listing, "train", root) == [
        ("hmdb51_org/brush_hair/#20_Rhume_brush_hair_h_nm_np1_le_goo_0.avi", 0),
        ("hmdb51_org/brush_hair/missing_brush_hair_f_nm_np1_fr_med_0.avi", 0),
        ("hmdb51_org/draw_sword/Bob's;clip_draw_sword_f_cm_np1_ri_med_1.avi", 1),
    ]
    assert rel_rows(listing, "val", root) == [
        ("hmdb51_org/brush_hair/Café de Flore!_brush_hair_u_nm_np1_ba_goo_1.avi", 0),
        ("hmdb51_org/draw_sword/Glitter_(Fairy_Tail)_&_Keine_(Touhou)_draw_sword_f_cm_np1_fr_med_0.avi", 1),
    ]
    assert (root / rel_rows(listing, "val", root)[0][0]).exists()
    assert reasons(listing) == [
        ("draw_sword_test_split1.txt line 4: noflag_draw_sword.avi",
         "expected `video.avi 0|1|2` (unused, train, test)"),
        ("draw_sword_test_split1.txt line 5: badflag_draw_sword.avi 3",
         "expected `video.avi 0|1|2` (unused, train, test)"),
    ]
    d = listing.details
    assert d["split"] == 1 and d["unused"] == 2
    assert d["empty_classes"] == {"train": ["shoot_ball"], "val": ["shoot_ball"]}
    assert d["annotations"] == [str(root / "testTrainMulti_7030_splits" / f"{c}_test_split1.txt")
                                for c in ("brush_hair", "draw_sword", "shoot_ball")]
    listing = read_hmdb51(root, split=2)
    assert listing.classes == ["brush_hair", "draw_sword", "shoot_ball"]
    assert [label for _, label in listing.splits["train"]] == [0, 1, 2] and listing.splits["val"] == []


def test_hmdb51_errors(tiny_layouts, tmp_path):
    root = tiny_layouts("hmdb51")
    with pytest.raises(DataError, match="--split must be 1, 2 or 3"):
        read_hmdb51(root, split=5)
    with pytest.raises(DataError, match="no HMDB-51 split-3 files.*splits there: 1, 2"):
        read_hmdb51(root, split=3)
    beside = read_hmdb51(root / "hmdb51_org")  # root is the video folder: the splits are found beside it
    assert rel_rows(beside, "train", root) == rel_rows(read_hmdb51(root), "train", root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no HMDB-51 <class>_test_split<N>\.txt files found.*--splits-dir DIR"):
        read_hmdb51(tmp_path / "empty")


# ----------------------------------------------------------------------------------------- own lists


def test_list_text_with_spaces_and_index_labels(tmp_path):
    train = write(tmp_path / "train.txt", "# my list\n\nclips/my clip ü.mp4 1\n/abs/a b.mp4   0\n"
                  "#20_weird.avi 0\nno_label\nneg.mp4 -1\n", newline="\r\n")
    val = write(tmp_path / "val.txt", "v.mp4 3\n")
    listing = read_list(tmp_path, train=train, val=val)
    root = tmp_path.resolve()
    assert listing.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert [(str(p), lab) for p, lab in listing.splits["train"]] == [
        (str(root / "clips" / "my clip ü.mp4"), 1), ("/abs/a b.mp4", 0), (str(root / "#20_weird.avi"), 0)]
    assert rel_rows(listing, "val", root) == [("v.mp4", 3)]
    assert reasons(listing) == [("train.txt line 6: no_label", "no label: expected `path label`"),
                                ("train.txt line 7: neg.mp4 -1", "negative label -1")]
    assert listing.details["label_kind"] == "index"
    assert listing.details["empty_classes"] == {"train": ["class_2", "class_3"],
                                                "val": ["class_0", "class_1", "class_2"]}


def test_list_csv_with_and_without_header_and_name_labels(tmp_path):
    train = write(tmp_path / "train.csv", 'path,label\n"clips/a, b.mp4",jump\nrun 1.mp4, run \n"x.mp4"\n')
    val = write(tmp_path / "val.csv", 'v.mp4,"run"\n')
    listing = read_list(tmp_path, train=train, val=val)
    assert listing.classes == ["jump", "run"]
    assert rel_rows(listing, "train", tmp_path.resolve()) == [("clips/a, b.mp4", 0), ("run 1.mp4", 1)]
    assert rel_rows(listing, "val", tmp_path.resolve()) == [("v.mp4", 1)]
    assert reasons(listing) == [("train.csv line 4: x.mp4", "has 1 field(s), fewer than the header")]
    assert listing.details["csv_header"] == {"train": True, "val": False}
    assert listing.details["label_kind"] == "name"


def test_list_classes_file_orders_names_and_rejects_unknown(tmp_path):
    classes = write(tmp_path / "classes.txt", "run\njump\nswim\n")
    train = write(tmp_path / "train.txt", "a.mp4 jump\nb.mp4 fly\n")
    listing = read_list(tmp_path, train=train, classes_file=classes)
    assert listing.classes == ["run", "jump", "swim"]
    assert rel_rows(listing, "train", tmp_path.resolve()) == [("a.mp4", 1)]
    assert reasons(listing) == [("train.txt line 2: b.mp4 fly", "class 'fly' is not in the class file")]
    indexed = write(tmp_path / "idx.txt", "a.mp4 2\nb.mp4 3\n")
    listing = read_list(tmp_path, test=indexed, classes_file=classes)
    assert rel_rows(listing, "test", tmp_path.resolve()) == [("a.mp4", 2)]
    assert reasons(listing) == [
        ("idx.txt line 2: b.mp4 3", "label 3 is not an index of the 3 classes in the class file")]
    assert listing.details["classes_file"] == str(classes)


def test_list_errors(tmp_path):
    with pytest.raises(DataError, match="no list file given; pass --train FILE and/or --val FILE"):
        read_list(tmp_path)
    mixed = write(tmp_path / "mixed.txt", "a.mp4 0\nb.mp4 run\n")
    with pytest.raises(DataError, match=r"mix integer labels \(mixed.txt line 1.*class names \(mixed.txt line 2"):
        read_list(tmp_path, train=mixed)
    with pytest.raises(DataError, match=r"train list .*absent\.txt does not exist; check --train"):
        read_list(tmp_path, train=tmp_path / "absent.txt")
    with pytest.raises(DataError, match="no usable rows"):
        read_list(tmp_path, train=write(tmp_path / "empty.txt", "# nothing\n"))


# ----------------------------------------------------------------------------------------- prepared layout


def test_every_listing_writes_a_prepared_directory(tiny_layouts, tmp_path):
    """The Listings fit the prepared layout: valid class names, labels in range, writable paths."""
    listings = [read_k400(tiny_layouts("k400_cvdf")), read_ssv2(tiny_layouts("ssv2")),
                read_ucf101(tiny_layouts("ucf101")), read_hmdb51(tiny_layouts("hmdb51"))]
    for listing in listings:
        out = tmp_path / "prepared" / listing.name
        splits = {name: [(str(p), lab) for p, lab in rows] for name, rows in listing.splits.items()}
        write_prepared(out, listing.classes, splits, source=listing.source, quarantine=listing.rejected,
                       extra={"details": listing.details})
        prepared = open_prepared(out)
        assert prepared.classes == listing.classes
        for name, rows in listing.splits.items():
            assert [(e.path, e.label) for e in prepared.entries(name)] == rows
