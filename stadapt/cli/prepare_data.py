"""`stadapt prepare-data FORMAT ...`: turn a data set into the prepared layout everything reads."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Write a data set in the prepared layout: classes.txt, 'path label' lists, manifest.json.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("synthetic", short_help="Synthetic motion clips (time-reversal class pairs), no download needed.")
def synthetic(
    out: Path = typer.Option(..., "--out", help="Directory to write (clips in videos/, lists, manifest)."),
    motions: str = typer.Option(",".join(("horizontal", "vertical", "scale")), "--motions",
                                help="Comma-separated motions, each a time-reversal pair of classes: "
                                     "horizontal, vertical, scale, rotation."),
    train_per_class: int = typer.Option(100, "--train-per-class", min=1, help="Training clips per class."),
    val_per_class: int = typer.Option(30, "--val-per-class", min=1, help="Validation clips per class."),
    frames: int = typer.Option(16, "--frames", min=2, help="Frames per clip."),
    size: int = typer.Option(48, "--size", min=16, help="Frame width and height in pixels (even)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes the same clips."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Small mp4 clips of objects moving over clutter, in time-reversal class pairs (moving left /
    right, up / down, growing / shrinking, rotating): a model that averages frames over time is at
    chance within each pair, so only temporal modelling can solve it."""
    from stadapt.data.synthetic import SyntheticSpec, prepare_synthetic
    from stadapt.fileio import check_writable

    check_writable(out)  # before any clip is made
    spec = SyntheticSpec(motions=tuple(m.strip() for m in motions.split(",") if m.strip()),
                         train_per_class=train_per_class, val_per_class=val_per_class, frames=frames, size=size,
                         seed=seed)
    manifest = prepare_synthetic(out, spec, overwrite=overwrite, progress=not quiet)
    splits = ", ".join(f"{name} {info['count']}" for name, info in manifest["splits"].items())
    typer.echo(f"wrote {out}: {manifest['num_classes']} classes; {splits} clips")


# ------------------------------------------------------------------------------------ real data sets
# Each command reads the publisher's own layout (found from --root alone; explicit paths as options)
# and writes the same prepared layout; the shared options are declared once here.

_ROOT = typer.Option(..., "--root", help="The data set as downloaded and unpacked.")
_OUT = typer.Option(..., "--out", help="Directory to write classes.txt, the lists and manifest.json into "
                                       "(the videos stay where they are; lists name them by absolute path).")
_CHECK = typer.Option(False, "--check", help="Also decode the first and last frame of every video; "
                                             "the ones that fail go to quarantine.txt.")
_WORKERS = typer.Option(None, "--workers", min=1, help="Processes for --check (default: cores, at most 8).")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace a data set stadapt prepared in --out before.")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")
_SPLIT = typer.Option(1, "--split", min=1, max=3, help="The official train/test split to write (1, 2 or 3).")


def _write(listing, out: Path, check: bool, workers: int | None, overwrite: bool, quiet: bool) -> None:
    from stadapt.data.prepare import prepare_listing, summary
    from stadapt.fileio import check_writable

    check_writable(out)  # before --check decodes every video
    manifest = prepare_listing(listing, out, check=check, workers=workers, overwrite=overwrite,
                               progress=not quiet, log=lambda line: typer.echo(line, err=True))
    typer.echo(summary(manifest, out))


@app.command("k400", short_help="Kinetics-400: official CSVs (CVDF or per-class folders) or path-label lists.")
def k400(
    root: Path = _ROOT,
    out: Path = _OUT,
    annotations: Path = typer.Option(None, "--annotations", help="Directory of the annotation CSVs "
                                                                 "(default: found under --root)."),
    train_list: Path = typer.Option(None, "--train-list", help="A `path label` list instead of the CSVs "
                                                               "(the reference implementation's lists)."),
    val_list: Path = typer.Option(None, "--val-list", help="The validation `path label` list."),
    classes: Path = typer.Option(None, "--classes", help="Class names, one a line, for --train-list labels."),
    check: bool = _CHECK,
    workers: int = _WORKERS,
    overwrite: bool = _OVERWRITE,
    quiet: bool = _QUIET,
) -> None:
    """Kinetics-400: the official CSVs (label,youtube_id,time_start,time_end,split[,is_cc]) with videos
    named {youtube_id}_{start:06d}_{end:06d}.mp4, in the CVDF layout (annotations/ beside train/ val/)
    or in per-class folders. Class indices are the sorted class names."""
    from stadapt.data.formats.k400 import read_k400

    listing = read_k400(root, annotations=annotations, train_list=train_list, val_list=val_list,
                        classes_file=classes)
    _write(listing, out, check, workers, overwrite, quiet)


@app.command("ssv2", short_help="Something-Something-v2: labels.json, train/validation.json, {id}.webm.")
def ssv2(
    root: Path = _ROOT,
    out: Path = _OUT,
    labels: Path = typer.Option(None, "--labels", help="labels.json (default: found under --root)."),
    train: Path = typer.Option(None, "--train", help="train.json (default: found under --root)."),
    val: Path = typer.Option(None, "--val", help="validation.json (default: found under --root)."),
    videos: Path = typer.Option(None, "--videos", help="Directory of the {id}.webm videos."),
    check: bool = _CHECK,
    workers: int = _WORKERS,
    overwrite: bool = _OVERWRITE,
    quiet: bool = _QUIET,
) -> None:
    """Something-Something-v2: labels.json, train.json and validation.json (also with the
    something-something-v2- prefix, or in labels/ beside 20bn-something-something-v2/), videos {id}.webm.
    The class of an entry is its template without brackets; indices are those of labels.json."""
    from stadapt.data.formats.ssv2 import read_ssv2

    listing = read_ssv2(root, labels=labels, train=train, val=val, videos=videos)
    _write(listing, out, check, workers, overwrite, quiet)


@app.command("ucf101", short_help="UCF-101: ucfTrainTestlist/ and UCF-101/, official split 1, 2 or 3.")
def ucf101(
    root: Path = _ROOT,
    out: Path = _OUT,
    split: int = _SPLIT,
    splits_dir: Path = typer.Option(None, "--splits-dir", help="The ucfTrainTestlist directory."),
    videos: Path = typer.Option(None, "--videos", help="The UCF-101 video directory (per-class folders)."),
    check: bool = _CHECK,
    workers: int = _WORKERS,
    overwrite: bool = _OVERWRITE,
    quiet: bool = _QUIET,
) -> None:
    """UCF-101: ucfTrainTestlist/ (classInd.txt, trainlist0N.txt, testlist0N.txt) and the UCF-101/
    video folders. Writes train.txt and val.txt (the official test list) of split N."""
    from stadapt.data.formats.ucf101 import read_ucf101

    listing = read_ucf101(root, split=split, splits_dir=splits_dir, videos=videos)
    _write(listing, out, check, workers, overwrite, quiet)


@app.command("hmdb51", short_help="HMDB-51: testTrainMulti_7030_splits/ and per-class folders, split 1-3.")
def hmdb51(
    root: Path = _ROOT,
    out: Path = _OUT,
    split: int = _SPLIT,
    splits_dir: Path = typer.Option(None, "--splits-dir", help="The testTrainMulti_7030_splits directory."),
    videos: Path = typer.Option(None, "--videos", help="The video directory (per-class folders)."),
    check: bool = _CHECK,
    workers: int = _WORKERS,
    overwrite: bool = _OVERWRITE,
    quiet: bool = _QUIET,
) -> None:
    """HMDB-51: testTrainMulti_7030_splits/<class>_test_split<N>.txt (1 train, 2 test, 0 unused) and
    per-class video folders. Writes train.txt and val.txt (the official test videos) of split N."""
    from stadapt.data.formats.hmdb51 import read_hmdb51

    listing = read_hmdb51(root, split=split, splits_dir=splits_dir, videos=videos)
    _write(listing, out, check, workers, overwrite, quiet)


@app.command("list", short_help="Your own videos: path-label lists or CSVs, integer or name labels.")
def list_(
    out: Path = _OUT,
    train: Path = typer.Option(None, "--train", help="Training list: `path label` lines or a path,label CSV."),
    val: Path = typer.Option(None, "--val", help="Validation list, same format."),
    test: Path = typer.Option(None, "--test", help="Test list, same format."),
    classes: Path = typer.Option(None, "--classes", help="Class names, one a line (line N = label N); "
                                                         "a `path label` line may end with one that has spaces."),
    root: Path = typer.Option(Path("."), "--root", help="Directory that relative video paths start from."),
    check: bool = _CHECK,
    workers: int = _WORKERS,
    overwrite: bool = _OVERWRITE,
    quiet: bool = _QUIET,
) -> None:
    """Your own videos: `path label` lists (paths may contain spaces) or CSVs, with integer labels
    (names from --classes) or class names as labels."""
    from stadapt.data.formats.listfile import read_list

    listing = read_list(root, train=train, val=val, test=test, classes_file=classes)
    _write(listing, out, check, workers, overwrite, quiet)


@app.command("subset", short_help="K videos per class, a class subset, or a published split file's videos.")
def subset(
    root: Path = typer.Option(..., "--root", help="The prepared data directory the list belongs to."),
    list_file: Path = typer.Option(..., "--list", help="The list to take the subset from (e.g. train.txt)."),
    shots: int = typer.Option(None, "--shots", min=1, help="Videos per class (few-shot), drawn with --seed."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --shots draw: the same seed writes the same lines."),
    classes: Path = typer.Option(None, "--classes", help="Keep these classes: one name a line (as in "
                                                         "classes.txt), or ViFi-CLIP's `id,name` label CSV."),
    split_file: Path = typer.Option(None, "--split-file", help="Keep the videos a published split file names "
                                                               "(ViFi-CLIP's datasets_splits/ lists: "
                                                               "`video label` lines), matched by file name."),
    out: Path = typer.Option(..., "--out", help="NAME.txt: a list added to --root (labels unchanged). A "
                                                "directory: a prepared folder of the subset's classes alone, "
                                                "labels re-indexed (one written before with the same classes "
                                                "gains the list). No file is ever replaced."),
) -> None:
    """A subset of a prepared list for the open-vocabulary protocols: --shots K per class (seeded), the
    classes of --classes, or exactly the videos of a ViFi-CLIP split file (its few-shot train1_few_shot_K
    lists, its base2novel base_train / base_val / novel_val lists)."""
    from stadapt.data.prepared import open_prepared
    from stadapt.data.subsets import (
        list_rows,
        read_class_names,
        read_split_file,
        select,
        write_subset_list,
        write_subset_root,
    )
    from stadapt.errors import StadaptError

    if shots is None and classes is None and split_file is None:
        raise StadaptError("nothing to select", "pass --shots K, --classes FILE or --split-file FILE")
    prepared = open_prepared(root)
    keep = read_class_names(classes, prepared.classes) if classes is not None else None
    videos = read_split_file(split_file) if split_file is not None else None
    rows = select(list_rows(prepared, list_file), prepared.classes, keep=keep, videos=videos, shots=shots,
                  seed=seed, split_file=split_file)
    if out.suffix.lower() == ".txt":
        target = write_subset_list(prepared, rows, out)
    else:
        target = write_subset_root(prepared, rows, out, prepared.list_path(list_file).name)
    kinds = len({row.label for row in rows})
    typer.echo(f"wrote {target}: {len(rows)} videos of {kinds} classes")
