"""`stadapt push`: share a checkpoint on the Hugging Face hub with a generated model card.

What is uploaded is built once, as name -> bytes (`bundle`): the checkpoint's `stadapt.json` and
`adapters.safetensors` byte for byte, the run's `eval.json` when it evaluated this very checkpoint, and
`README.md`, a model card whose YAML metadata the hub reads (library, tags, data set, results) and whose
body says what the model is and how to load it (`stadapt.load_model("hf-hub:ORG/NAME")`). The same
bytes go to the hub (`upload`) or to a local folder (`write_dir`, for `--to-dir`).

What is published names no absolute path of the machine that trained (`public_json`): a path inside the run
becomes relative to it (`./checkpoints/best`), one under the data root `<local>/...`, any other `<local>/NAME`;
the local checkpoint keeps its paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stadapt.checkpoints.files import BACKBONE_FILE, META_FILE, TEXT_HEAD_FILE, tensors_path
from stadapt.checkpoints.format import read_checkpoint
from stadapt.checkpoints.hub import PREFIX, parse_hub_id
from stadapt.errors import StadaptError, first_line, preview
from stadapt.fileio import fsync_dir, make_temp_dir, write_durable

CARD_FILE = "README.md"
EVAL_FILE = "eval.json"
MARKER_FILE = ".stadapt-push.json"  # in a --to-dir folder only: what stadapt wrote there (never uploaded)
MARKER_FORMAT = "stadapt-push"
LOCAL = "<local>"  # what a published path outside the run says instead of the trainer's absolute path
# an absolute path in free text (POSIX or Windows), not a URL's `//host`, not the `/16` of `ViT-B/16`
_ABSOLUTE = re.compile(r"(?<![\w.:/~<>-])(?:/|[A-Za-z]:[\\/])[^\s'\"]*[^\s'\",;:)\]}]")
_KEEP = frozenset({"classes", "per_class", "confusion"})  # class names: data, never rewritten


def check_repo_id(repo: str) -> str:
    """`ORG/NAME` as the hub spells a model repository; anything else is a one-line error naming what --repo
    takes (not the `hf-hub:` id that reads it back)."""
    if repo.startswith(PREFIX):
        raise StadaptError(f"--repo {repo} is a checkpoint id, not a repository name",
                           f"push to --repo {repo[len(PREFIX):]}")
    try:
        name, revision = parse_hub_id(PREFIX + repo)
    except StadaptError:
        raise StadaptError(f"--repo {repo!r} is not a hub repository name",
                           "write --repo ORG/NAME (your user or organisation, a slash, the model's name)") from None
    if revision is not None:
        raise StadaptError(f"--repo {repo} names a revision", "push to a repository: --repo ORG/NAME")
    return name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle(target: Path | None, repo: str,
           which: str | None = None) -> tuple[dict[str, bytes], dict[str, Any] | None]:
    """(the files to upload as name -> bytes, the evaluation report they include or None) for a run, a
    checkpoint or None (the latest run). An eval.json that evaluated another checkpoint is refused: the card
    would state numbers this model did not score."""
    from stadapt.inference.evaluate import resolve_target

    checkpoint, run = resolve_target(target, which)
    meta, _ = read_checkpoint(checkpoint)
    places = _places(run if run is not None else checkpoint, meta)
    tensor_file = tensors_path(checkpoint)  # under its own name: an older checkpoint's adapters.safetensors too
    tensors = tensor_file.read_bytes()
    files = {META_FILE: public_json((checkpoint / META_FILE).read_bytes(), places), tensor_file.name: tensors}
    if (meta.get("backbone_weights") or {}).get("source") == BACKBONE_FILE:  # it carries its backbone: so does the copy
        files[BACKBONE_FILE] = (checkpoint / BACKBONE_FILE).read_bytes()
    if (checkpoint / TEXT_HEAD_FILE).is_file():  # a frozen text head's class embeddings: loading reads them
        files[TEXT_HEAD_FILE] = (checkpoint / TEXT_HEAD_FILE).read_bytes()
    eval_path = (run if run is not None else checkpoint) / EVAL_FILE
    report = None
    if eval_path.is_file():
        try:
            report = json.loads(eval_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StadaptError(f"{eval_path} is not valid JSON ({exc})",
                               f"run `stadapt eval {run or checkpoint}` again") from exc
        found = str(report.get("checkpoint_sha256"))
        if found != _sha256(tensors):
            raise StadaptError(
                f"{eval_path} evaluated another checkpoint (adapters sha256 {found[:12]}..., this one "
                f"{_sha256(tensors)[:12]}...), so its numbers do not belong on this model's card",
                f"evaluate this checkpoint first: stadapt eval {run or checkpoint}",
            )
        files[EVAL_FILE] = public_json(eval_path.read_bytes(), places)
        report = json.loads(files[EVAL_FILE])
    from stadapt.tools.model_card import model_card

    card = model_card(json.loads(files[META_FILE]), report, repo, dataset_name(meta))
    files[CARD_FILE] = _public_text(card, places, anywhere=False).encode("utf-8")  # made of the public JSON
    return files, report


def _places(home: Path, meta: Mapping[str, Any]) -> list[tuple[re.Pattern[str], str]]:
    """(absolute location, what is published instead), most specific first: the run (or the checkpoint
    outside a run) is `.`, the recipe's data root `<local>`, the user's home `<local>`; each as written and
    resolved."""
    data = ((meta.get("recipe") or {}).get("data") or {}).get("root")
    named = [(home, "."), *([(Path(str(data)), LOCAL)] if data else []), (Path.home(), LOCAL)]
    found: dict[str, str] = {}
    for path, public in named:
        for text in (str(path.absolute()), str(path.resolve())):
            if len(text) > 1 and text not in found:
                found[text] = public
    ordered = sorted(found.items(), key=lambda item: -len(item[0]))
    return [(re.compile(re.escape(text) + r"(?![\w.-])"), public) for text, public in ordered]


def _public_text(text: str, places: list[tuple[re.Pattern[str], str]], anywhere: bool = True) -> str:
    """`text` with each known absolute location replaced by its public form, and (`anywhere`: not in markdown,
    whose `</tag>` reads as a path) any other absolute path by `<local>/NAME`."""
    for pattern, public in places:
        text = pattern.sub(public, text)  # "." or "<local>": no escapes
    return _ABSOLUTE.sub(lambda found: f"{LOCAL}/{_name(found.group())}", text) if anywhere else text


def _name(path: str) -> str:
    """The last part of a POSIX or Windows path."""
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1]


def public_json(data: bytes, places: list[tuple[re.Pattern[str], str]]) -> bytes:
    """A JSON file as published: every string value with `_public_text` (class names kept); the same bytes
    when nothing changes."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _public_text(value, places)
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {key: item if key in _KEEP else walk(item) for key, item in value.items()}
        return value

    parsed = json.loads(data)
    published = walk(parsed)
    return data if published == parsed else (json.dumps(published, indent=2) + "\n").encode()


def dataset_name(meta: Mapping[str, Any]) -> str | None:
    """The training data set's name: the prepared layout's recorded source (k400, ssv2, synthetic...), else
    the name of its folder; None for a checkpoint without a recipe."""
    data = (meta.get("recipe") or {}).get("data") or {}
    root = data.get("root")
    if not root:
        return None
    try:
        source = json.loads((Path(root) / "manifest.json").read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        source = None
    return str(source) if source else Path(str(root)).name


def _marker(files: Mapping[str, bytes], repo: str) -> bytes:
    record = {"format": MARKER_FORMAT, "repo": repo, "files": {name: _sha256(data) for name, data in files.items()}}
    return (json.dumps(record, indent=2) + "\n").encode()


def _refuse_unless_ours(out: Path) -> None:
    """--to-dir replaces only a missing or empty folder, or one an earlier `stadapt push --to-dir` wrote whose
    files are all unchanged: a user's file, or a card the user edited, is never overwritten."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise StadaptError(f"{out} exists and is not a directory", "choose another --to-dir")
    present = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    if not present:
        return
    fix = "choose a new or empty --to-dir, or move those files out first"
    try:
        written = json.loads((out / MARKER_FILE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise StadaptError(f"{out} holds files stadapt push did not write ({preview(present)}), so it is not "
                           "replaced", fix) from None
    foreign = [p for p in present if p != MARKER_FILE and p not in written]
    changed = [p for p in present if p in written and _sha256((out / p).read_bytes()) != written[p]]
    if foreign or changed:
        what = [f"{p} (not written by stadapt push)" for p in foreign] + [f"{p} (changed since)" for p in changed]
        raise StadaptError(f"{out} holds {preview(what)}, so it is not replaced", fix)


def write_dir(files: Mapping[str, bytes], out: Path, repo: str) -> Path:
    """Write exactly the files an upload sends into folder `out` (plus the hidden marker that lets a later
    push replace them), atomically: a staging folder renamed into place."""
    out = Path(out)
    _refuse_unless_ours(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(out.parent, out.name)
    try:
        for name, data in {**files, MARKER_FILE: _marker(files, repo)}.items():
            write_durable(staging / name, data)
        fsync_dir(staging)
        aside = out.with_name(f".{out.name}.old")
        if out.exists():
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(out, aside)
        os.replace(staging, out)
        fsync_dir(out.parent)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def upload(files: Mapping[str, bytes], repo: str, *, private: bool = False) -> str:
    """Create the hub repository `repo` (kept if it exists) and upload the files in one commit; the commit's
    address. No token, no network, no write access: one line saying so and what to do instead."""
    import tempfile

    from huggingface_hub import HfApi, get_token

    instead = "or write the files with --to-dir DIR and upload them from elsewhere"
    if get_token() is None:
        raise StadaptError(f"no Hugging Face token on this machine, so nothing can be uploaded to {repo}",
                           f"log in with `hf auth login` (or set HF_TOKEN), {instead}")
    with tempfile.TemporaryDirectory(prefix="stadapt-push-") as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        api = HfApi()
        try:
            api.create_repo(repo, private=True if private else None, exist_ok=True)
            commit = api.upload_folder(repo_id=repo, folder_path=folder, commit_message="stadapt push",
                                       delete_patterns=None if EVAL_FILE in files else [EVAL_FILE])
        except Exception as exc:  # offline, no access, HTTP and network errors: all end the upload the same way
            raise StadaptError(f"uploading to the hub repository {repo} failed ({first_line(exc)})",
                               f"check the network and that your token may write to it (`hf auth whoami`), {instead}")\
                from None
    return str(getattr(commit, "commit_url", f"https://huggingface.co/{repo}"))

