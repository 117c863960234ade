"""Files on the Hugging Face hub, taken from huggingface_hub's cache where it holds them.

A machine whose cache (HF_HUB_CACHE / HF_HOME) already holds a file works without a network; with
HF_HUB_OFFLINE=1 nothing is fetched. Otherwise the error names the file to fetch and how to pass it.
"""

from __future__ import annotations

from pathlib import Path

from stadapt.errors import WeightsError, first_line


def hub_url(repo_id: str, filename: str) -> str:
    """The file's download address on the hub."""
    return f"https://huggingface.co/{repo_id}/resolve/main/{filename}"


def hf_cached_file(repo_id: str, filename: str, *, what: str | None = None) -> Path:
    """The local path of `filename` in the hub repository `repo_id`: from the cache if it is there
    (no network needed), else downloaded into it; a WeightsError naming the file otherwise.
    `what` names the file in the error (e.g. "timm:NAME weights 'TAG'")."""
    where = hub_url(repo_id, filename)
    what = what or f"{filename} of {repo_id}"
    try:
        import huggingface_hub
    except ImportError as exc:
        raise WeightsError(f"downloading {what} needs huggingface_hub",
                           f"pip install huggingface_hub, or download {where} elsewhere and pass the local path"
                           ) from exc
    cached = huggingface_hub.try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename))
    except Exception as exc:  # no network, offline mode, hub errors
        raise WeightsError(
            f"could not download {what} from the Hugging Face hub ({first_line(exc)})",
            f"without a network, download {where} elsewhere and pass the local path (or put it in the "
            f"huggingface_hub cache: HF_HUB_CACHE, repo {repo_id}, file {filename})",
        ) from exc
