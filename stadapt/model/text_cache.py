"""The text embeddings of a label set, kept beside an output (`OUT.text.safetensors`) so a second run over
the same labels reads them instead of running the text tower again.

The file is keyed by a digest of what the embeddings depend on: the backbone, its weights source, the text
tower's own fingerprint (its tensors: the text encoder and the image-text projection), the labels and the
templates. A file with another key (other labels, other weights) is recomputed and replaced; a file at that
name that stadapt did not write is never read or replaced (the CLI refuses it before any work).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from stadapt.backbones.text import TextTower
from stadapt.backbones.weights import fingerprint
from stadapt.fileio import atomic_write_bytes

FORMAT = "stadapt-text-embeddings"
TENSOR = "class_embeddings"


def text_cache_path(out: Path) -> Path:
    """Where the text embeddings of an output's labels are kept: OUT.text.safetensors beside OUT."""
    return Path(out).with_suffix(".text.safetensors")


def text_key(backbone: str, source: str, tower: TextTower, labels: Sequence[str], templates: Sequence[str]) -> str:
    """The digest the embeddings are filed under: any change to what they depend on changes it."""
    payload = {"backbone": backbone, "weights": source, "text_tower": fingerprint(tower), "labels": list(labels),
               "templates": list(templates)}
    return "sha256:" + hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def _metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            return file.metadata() or {}
    except Exception:  # not a safetensors file, or damaged: safetensors raises various errors
        return None


def text_cache_by_stadapt(path: Path) -> bool:
    """Whether the file at `path` is a text-embedding file stadapt wrote (and so may be replaced)."""
    meta = _metadata(Path(path))
    return meta is not None and meta.get("format") == FORMAT


def read_text_cache(path: Path, key: str, count: int) -> torch.Tensor | None:
    """The (count, D) embeddings filed at `path` under `key`, or None when there are none for that key."""
    path = Path(path)
    if not path.is_file() or (_metadata(path) or {}).get("key") != key:
        return None
    from safetensors.torch import load_file

    try:
        found = load_file(str(path)).get(TENSOR)
    except Exception:  # damaged since: recomputed and replaced
        return None
    return found if found is not None and found.ndim == 2 and found.shape[0] == count else None


def write_text_cache(path: Path, key: str, embeddings: torch.Tensor, labels: Sequence[str],
                     templates: Sequence[str]) -> None:
    """File the embeddings at `path` under `key` (atomically; the labels and templates in its metadata)."""
    from safetensors.torch import save

    metadata = {"format": FORMAT, "key": key, "labels": json.dumps(list(labels), ensure_ascii=False),
                "templates": json.dumps(list(templates), ensure_ascii=False)}
    atomic_write_bytes(path, save({TENSOR: embeddings.detach().float().cpu().contiguous()}, metadata=metadata))


def cached_class_embeddings(tower: TextTower, labels: Sequence[str], templates: Sequence[str], *, backbone: str,
                            source: str, cache: Path | None) -> torch.Tensor:
    """`tower.embed_labels(labels, templates)`, read from `cache` when it holds them under the same key,
    else computed and, with a `cache`, filed there."""
    if cache is None:
        return tower.embed_labels(labels, templates)
    key = text_key(backbone, source, tower, labels, templates)
    found = read_text_cache(cache, key, len(labels))
    if found is not None:
        device = next((p.device for p in tower.parameters()), torch.device("cpu"))
        return found.to(device)
    embeddings = tower.embed_labels(labels, templates)
    write_text_cache(cache, key, embeddings, labels, templates)
    return embeddings
