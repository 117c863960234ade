"""Parsing timm's RandAugment config strings (`rand-m7-n4-mstd0.5-inc1`) without importing torch,
so that loading a recipe can validate one cheaply."""

from __future__ import annotations

import math
import re

from stadapt.errors import DataError

EXAMPLE_CONFIG = "rand-m7-n4-mstd0.5-inc1"


def _config_error(config: str, problem: str) -> DataError:
    return DataError(
        f"bad RandAugment config {config!r}: {problem}",
        f"write 'rand' followed by dash-separated options m<int> (magnitude 0..10), n<int> (ops per "
        f"clip), mstd<float> (magnitude noise; >100 = uniform), mmax<int>, p<float> (op "
        f"probability), inc<0|1> (increasing ops), e.g. {EXAMPLE_CONFIG!r}",
    )


def parse_config(config: str) -> dict:
    """timm's `rand_augment_transform` grammar; every option it does not understand is an error."""
    if not isinstance(config, str):
        raise DataError(f"RandAugment config must be a string, got {type(config).__name__}",
                        f"e.g. {EXAMPLE_CONFIG!r}")
    text = config.strip()
    sections = text.split("-")
    if sections[0] != "rand":
        raise _config_error(config, f"it must start with 'rand', not {sections[0]!r}")
    parsed: dict = {"magnitude": 10, "num_layers": 2, "prob": 0.5, "magnitude_std": 0.0,
                    "magnitude_max": None, "increasing": False}
    seen: set[str] = set()
    for section in sections[1:]:
        if section.startswith("t"):
            raise _config_error(config, f"transform-set section {section!r} is not supported")
        parts = re.split(r"(\d.*)", section)
        if len(parts) < 2:
            raise _config_error(config, f"section {section!r} has no value"
                                if section else "empty section (two dashes in a row?)")
        key, value = parts[0], parts[1]
        if key in seen:
            raise _config_error(config, f"option {key!r} is given twice")
        seen.add(key)
        try:
            if key == "m":
                parsed["magnitude"] = int(value)
            elif key == "n":
                parsed["num_layers"] = int(value)
            elif key == "mstd":
                std = float(value)
                parsed["magnitude_std"] = math.inf if std > 100 else std
            elif key == "mmax":
                parsed["magnitude_max"] = int(value)
            elif key == "p":
                parsed["prob"] = float(value)
            elif key == "inc":
                parsed["increasing"] = bool(int(value))
            else:
                raise _config_error(config, f"unknown option {key!r} in section {section!r}")
        except ValueError:
            raise _config_error(config, f"section {section!r}: {value!r} is not a valid "
                                f"{'number' if key in ('mstd', 'p') else 'integer'}") from None
    return parsed
