"""`hf-hub:ORG/NAME[@REVISION]` checkpoint ids, resolved to a local checkpoint directory through
huggingface_hub's own cache.

Every checkpoint reader (`read_checkpoint`, `stadapt.load_model`, each command's `--checkpoint`) calls
`checkpoint_dir` first, so a checkpoint shared with `stadapt push` is used by name everywhere. A machine
whose cache holds the repository works offline (HF_HUB_OFFLINE=1; HF_HUB_CACHE / HF_HOME say where the
cache is); without network or cache the error names the repository and how to fetch it.
"""

from __future__ import annotations

import re
from pathlib import Path

from stadapt.checkpoints.files import READER_FILES
from stadapt.errors import CheckpointError

PREFIX = "hf-hub:"
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def is_hub_id(path: object) -> bool:
    """Whether a checkpoint argument names a hub repository (`hf-hub:ORG/NAME[@REVISION]`)."""
    return str(path).startswith(PREFIX)


def parse_hub_id(text: str) -> tuple[str, str | None]:
    """(repo id, revision or None) of `hf-hub:ORG/NAME[@REVISION]`; a malformed id is a one-line error."""
    body = str(text)[len(PREFIX):]
    repo, _, revision = body.partition("@")
    if not _REPO.fullmatch(repo) or "--" in repo or ".." in repo or (revision == "" and "@" in body):
        raise CheckpointError(f"{text!r} is not a hub checkpoint id",
                              "write hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION (a branch, tag or commit)")
    return repo, revision or None


def checkpoint_dir(path: str | Path) -> Path:
    """The local checkpoint directory of `path`: a hub id becomes its snapshot folder in huggingface_hub's
    cache (downloaded into the cache when it is not there and a network is); anything else is a local path."""
    if not is_hub_id(path):
        return Path(path)
    from huggingface_hub import snapshot_download

    repo, revision = parse_hub_id(str(path))
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=list(READER_FILES)))
    except Exception as exc:  # offline, no cache, unknown repo or revision, no access: all say "not here"
        reason = type(exc).__name__
    fetch = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
    raise CheckpointError(
        f"the checkpoint {path} is neither in the Hugging Face cache of this machine nor downloadable here "
        f"({reason})",
        f"fetch it where a network is (`{fetch}`, huggingface_hub's CLI) into this machine's cache (HF_HUB_CACHE), "
        "or pass a local checkpoint directory",
    )


def output_home(checkpoint: Path) -> Path:
    """Where a command writes what it would put beside a checkpoint outside a run (eval.json, model.onnx):
    the checkpoint directory itself, except for a snapshot in the hub cache, which is never written to:
    then `hf-hub/ORG/NAME` in the current directory."""
    snapshots = checkpoint.parent
    repo_folder = snapshots.parent
    if snapshots.name == "snapshots" and repo_folder.name.startswith("models--"):
        org, _, name = repo_folder.name[len("models--"):].partition("--")
        return Path("hf-hub") / org / name if name else Path("hf-hub") / org
    return checkpoint
