"""The `--views TxS` reader: test views as a command or a recipe gives them, checked, with the error a
user reads. The spelling itself is read by `stadapt.vocabulary.split_views`, which the layers below the
runtime (the recipe schema, the input contract) use too."""

from __future__ import annotations

from stadapt.errors import StadaptError
from stadapt.vocabulary import split_views


def parse_views(text: str) -> tuple[int, int]:
    """'2x3' -> (2 temporal, 3 spatial)."""
    try:
        temporal, spatial = split_views(text)
    except ValueError:
        raise StadaptError(f"views '{text}' is not TxS", "write temporal x spatial views, e.g. --views 1x3") from None
    if temporal < 1 or spatial < 1:
        raise StadaptError(f"views '{text}': need T >= 1 and S >= 1", "e.g. --views 3x1 or 1x3")
    return temporal, spatial
