"""From a data set's `Listing` to the prepared layout, with bad videos quarantined.

Every format goes through this one step, so they all treat bad videos alike:
- a missing, empty or unlistable file goes to quarantine.txt with the reason (always);
- with `check`, every video is opened and its first and last frames decoded (in parallel); one that
  fails goes to quarantine.txt too;
- no list ever names a video known to be bad, and one bad video never stops a preparation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from stadapt.data.formats.base import Listing
from stadapt.data.prepared import CLASSES_FILE, MANIFEST_FILE, QUARANTINE_FILE, claim_out_dir, write_prepared
from stadapt.errors import DataError, preview


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be a video of a list, from the file system alone (no decoding), or None."""
    try:
        if not path.exists():
            return "missing: no such file"
        if not path.is_file():
            return "not a regular file"
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    text = str(path)
    if text != text.strip() or any(c in text for c in "\r\n\t"):
        return "its name has a tab, a newline or leading/trailing spaces, which a `path label` list cannot hold"
    return None


def decode_problem(path: str) -> str | None:
    """Why `path` does not decode (first and last frame), or None. Runs in worker processes."""
    from stadapt.data.pyav_reader import VideoReader
    from stadapt.errors import VideoDecodeError

    try:
        with VideoReader(path) as reader:
            reader.check()
    except VideoDecodeError as exc:
        return exc.message.removeprefix(f"cannot decode {path}: ")
    except Exception as exc:  # a decoder bug must not stop a preparation of 300k videos
        return f"{type(exc).__name__}: {exc}"
    return None


def _isolated(path: str) -> str | None:
    """`decode_problem` in a process of its own, so that a decoder crash (a segfault on a hostile
    file) quarantines that one video instead of ending the preparation."""
    with ProcessPoolExecutor(max_workers=1) as pool:
        try:
            return pool.submit(decode_problem, path).result()
        except BrokenProcessPool:
            return "the decoder crashed on this file"


def _check_all(paths: list[str], workers: int, progress: bool) -> dict[str, str]:
    """Decode-check `paths`; returns {path: reason} for the bad ones."""
    from tqdm import tqdm

    bad: dict[str, str] = {}
    done = 0
    with tqdm(total=len(paths), desc="checking videos", unit="video", disable=not progress,
              dynamic_ncols=True) as bar:
        if workers > 1 and len(paths) > 1:
            chunk = max(1, min(64, len(paths) // (8 * workers)))
            try:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    for path, reason in zip(paths, pool.map(decode_problem, paths, chunksize=chunk), strict=True):
                        if reason is not None:
                            bad[path] = reason
                        done += 1
                        bar.update(1)
            except BrokenProcessPool:  # a worker died: check what is left one process per video
                pass
        check = decode_problem if workers <= 1 or len(paths) < 2 else _isolated
        for path in paths[done:]:
            reason = check(path)
            if reason is not None:
                bad[path] = reason
            bar.update(1)
    return bad


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _empty_split_hint(listing: Listing) -> str:
    """The likely fix when a split has no usable video."""
    if listing.name == "list" and listing.details.get("label_kind") == "name":
        if listing.details.get("classes_file"):
            return "each row must end with a class name of the --classes file; fix those rows or that file"
        return ("class names with spaces need --classes FILE (one name a line) so that the whole name is "
                "matched; otherwise fix those rows or --root")
    return "fix those rows, or point --root (and the format's path options) at the videos"


def require_videos(listing: Listing, problems: dict[str, str]) -> None:
    """A split left without a single usable video is an error naming the first reasons, not a prepared
    set with an empty list (a misread label format or a wrong --root, found only when training)."""
    for split, rows in listing.splits.items():
        if any(not problems.get(str(path)) for path, _ in rows):
            continue
        reasons = [f"{ref}: {why}" for ref, why in listing.rejected]
        reasons += [f"{path}: {problems.get(str(path))}" for path, _ in rows]
        raise DataError(
            f"the {split} split of {listing.source or listing.name} has no usable videos "
            f"({len(rows)} listed, {len(listing.rejected)} annotation row(s) rejected): "
            f"{preview(reasons, limit=2, sep='; ') or 'the annotations list none'}",
            _empty_split_hint(listing),
        )


def prepare_listing(
    listing: Listing,
    out: str | Path,
    *,
    check: bool = False,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write `listing` to `out` in the prepared layout and return the manifest."""
    out = Path(out)
    if not overwrite:
        claim_out_dir(out, overwrite=False)  # refuse a non-empty --out before any work; removes nothing
    quarantine: list[tuple[str, str]] = [(row, f"annotation: {reason}") for row, reason in listing.rejected]
    problems: dict[str, str] = {}
    for rows in listing.splits.values():
        for path, _ in rows:
            key = str(path)
            if key not in problems:
                problems[key] = file_problem(Path(path)) or ""
    require_videos(listing, problems)  # before --overwrite replaces the data set prepared there
    planned = [CLASSES_FILE, QUARANTINE_FILE, MANIFEST_FILE, *(f"{split}.txt" for split in listing.splits)]
    claim_out_dir(out, overwrite=overwrite, planned=planned)
    if check:
        candidates = [p for p, reason in problems.items() if not reason]
        problems.update(_check_all(candidates, workers or default_workers(), progress))
        require_videos(listing, problems)
    splits: dict[str, list[tuple[str, int]]] = {}
    counts: dict[str, dict[str, int]] = {}
    empty: dict[str, list[str]] = {}
    for split, rows in listing.splits.items():
        kept = []
        for path, label in rows:
            reason = problems[str(path)]
            if reason:
                quarantine.append((str(path), f"{split}: {reason}"))
            else:
                kept.append((str(path), int(label)))
        splits[split] = kept
        counts[split] = {"listed": len(rows), "kept": len(kept), "quarantined": len(rows) - len(kept)}
        present = {label for _, label in kept}
        missing = [name for i, name in enumerate(listing.classes) if i not in present]
        if missing:
            empty[split] = missing
    if log is not None:
        for split, names in empty.items():
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            log(f"warning: {len(names)} class(es) have no {split} videos: {shown}")
    extra = {
        "dataset": listing.name,
        "checked": bool(check),
        "counts": counts,
        "rejected_annotations": len(listing.rejected),
        "empty_classes": empty,
        "details": listing.details,
    }
    return write_prepared(out, listing.classes, splits, source=listing.source or listing.name,
                          quarantine=quarantine, extra=extra)


def summary(manifest: dict[str, Any], out: Path) -> str:
    """Two lines for the terminal: what was written and what was left out."""
    counts = manifest.get("counts", {})
    parts = []
    for split, info in manifest["splits"].items():
        c = counts.get(split, {})
        bad = f" ({c['quarantined']} quarantined)" if c.get("quarantined") else ""
        parts.append(f"{split} {info['count']}{bad}")
    text = f"wrote {out}: {manifest['num_classes']} classes; {', '.join(parts)} videos"
    rejected = manifest.get("rejected_annotations", 0)
    if rejected:
        text += f"; {rejected} annotation rows rejected"
    q = manifest["quarantine"]["count"]
    if q:
        text += f"\n{q} entries in {out / 'quarantine.txt'} (path<TAB>reason)"
        if not manifest.get("checked"):
            text += "; add --check to also decode every video"
    return text
