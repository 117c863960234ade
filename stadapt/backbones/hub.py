"""Files of the Hugging Face hub through huggingface_hub's own cache, so that a machine whose cache holds
them works offline (HF_HUB_OFFLINE=1; HF_HUB_CACHE / HF_HOME say where it is) and a machine without either
gets an error naming the file to fetch and how to pass it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stadapt.errors import WeightsError


def hub_url(repo_id: str, filename: str) -> str:
    """The address of `filename` in the hub repository `repo_id` (what a user downloads by hand)."""
    return f"https://huggingface.co/{repo_id}/resolve/main/{filename}"


def hf_cached_file(repo_id: str, filename: str | Sequence[str], *, what: str = "weights") -> Path:
    """The local path of `filename` from hub repository `repo_id`: from the cache when it holds it (no network
    needed), else downloaded into the cache. A sequence of names tries each (cache first, then the network)
    and takes the first found. `what` names the file in the error ("weights", "configuration",
    "timm:NAME weights 'TAG'"). Without network or cache: a WeightsError naming the repository and file."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    names = [filename] if isinstance(filename, str) else list(filename)
    for name in names:
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str) and Path(cached).is_file():
            return Path(cached)
    failure = ""
    for name in names:
        try:
            return Path(hf_hub_download(repo_id, name))
        except Exception as exc:  # offline, unknown repo, missing file, HTTP errors: all say "not here"
            failure = failure or type(exc).__name__
    wanted = names[0]
    use = ("and pass the local path of the file as the weights" if "weights" in what
           else "into the Hugging Face cache (HF_HUB_CACHE) of this machine")
    raise WeightsError(
        f"the {what} file {wanted} of the hub repository {repo_id} is neither in the Hugging Face cache nor "
        f"downloadable here ({failure})",
        f"fetch {hub_url(repo_id, wanted)} on a machine with a network (or `hf download {repo_id} "
        f"{wanted}`) {use}",
    )
