"""The words stadapt's settings use, each defined once: the recipe schema, the model, the API and the CLI
all read their allowed values (and the rules that go with them) from here, so a new value is added in one
place. This module sits at the bottom of the layers: it imports nothing of stadapt."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

# The built-in tuning methods (plugins/stadapt_tuners), for the documentation: adapters + head, the head alone,
# everything, or the last block + head (the paper's baselines). A recipe takes any installed method.
TuningMode = Literal["st_adapter", "linear", "full_finetune", "partial_finetune"]
TUNING_MODES: tuple[str, ...] = get_args(TuningMode)

# Autocast precision of a run ("auto": bf16 on GPUs that have it, else fp16; fp32 on the CPU).
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

# The dtype a frozen backbone is stored in ("auto": half when frozen, on CUDA, with autocast).
BackboneStorage = Literal["auto", "fp32", "half"]
BACKBONE_STORAGES: tuple[str, ...] = get_args(BackboneStorage)

# What the backward pass recomputes: False (nothing) < "adapters" < "mlp" (adapters + MLP branches) < True
# (whole blocks).
CheckpointingLevel = Literal["adapters", "mlp"]
CHECKPOINTING_WORDS: dict[str, bool | str] = {"false": False, **{w: w for w in get_args(CheckpointingLevel)},
                                               "true": True}


def checkpointing_level(value: object) -> bool | str | None:
    """A checkpointing setting as the model takes it (False, "adapters", "mlp", True), from a bool or its
    spelling in a recipe or on the command line; None if it is none of them."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return CHECKPOINTING_WORDS.get(value.lower())
    return None


def kernel_is_odd(kernel: Sequence[int]) -> bool:
    """An adapter's depthwise conv kernel is three odd, positive sizes (T, H, W): padding k//2 then keeps
    the token grid's shape."""
    return len(kernel) == 3 and all(k >= 1 and k % 2 == 1 for k in kernel)


def split_views(text: str) -> tuple[int, int]:
    """'2x3' -> (2, 3): the T and S of a `TxS` test-views setting, the one reading of that spelling (any
    case of x, what `int` reads on either side); ValueError if it is not two integers around an x. Callers
    say what else they need (T, S >= 1; the canonical spelling in a recipe)."""
    temporal, spatial = (int(v) for v in text.lower().split("x"))
    return temporal, spatial


# The prompt a class name is filled into at `{}` (text heads, zero-shot), where none is given.
DEFAULT_TEMPLATE = "a video of {}."


def holds_label_once(template: str) -> bool:
    """Whether a prompt template marks where the label goes with `{}` exactly once, and holds no other brace."""
    rest = template.replace("{}", "", 1)
    return template.count("{}") == 1 and "{" not in rest and "}" not in rest


def weights_is_path(weights: str | Path) -> bool:
    """A backbone weights value is a file path if it looks like one (a separator or a dot) or exists;
    otherwise it is a plugin's hub tag (e.g. `openai`)."""
    text = str(weights)
    return any(c in text for c in "/\\.") or Path(text).exists()


def closest(word: str, choices: Sequence[str], n: int = 1) -> list[str]:
    """Up to `n` of `choices` a typo of `word` most likely meant: the same word but for case and dashes,
    a close spelling, the initials of a snake_case word (`wd`), or a prefix either way."""
    def norm(text: str) -> str:
        return text.lower().replace("-", "_")

    by_norm = {norm(c): c for c in reversed(choices)}  # the first of two choices equal but for case wins
    typed = norm(word)
    if typed in by_norm:
        return [by_norm[typed]]
    close = difflib.get_close_matches(typed, list(by_norm), n=n, cutoff=0.6)
    if close:
        return [by_norm[c] for c in close]
    for key, choice in by_norm.items():
        if len(typed) >= 2 and "_" in key and "".join(w[0] for w in key.split("_")) == typed:
            return [choice]
    for key, choice in by_norm.items():
        if len(typed) >= 3 and (key.startswith(typed) or typed.startswith(key)):
            return [choice]
    return []


def did_you_mean(word: str, choices: Sequence[str], n: int = 1) -> str:
    """'did you mean 'x'? ' for the closest of `choices` to `word` (see `closest`), or ''."""
    quoted = [f"'{c}'" for c in closest(word, choices, n)]
    if not quoted:
        return ""
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"did you mean {listed}? "
