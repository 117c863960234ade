"""The recipe schema: every knob of a run, typed, with the paper's values as defaults.

Models are frozen (a recipe is a value that a run records) and reject unknown keys (a misspelt key
must not silently fall back to a default). Values are checked here; files and installed plugins are
checked by the loader, which also turns pydantic's errors into one-line problems.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from stadapt.vocabulary import (
    BackboneStorage,
    CheckpointingLevel,
    Precision,
    TuningMode,
    checkpointing_level,
    kernel_is_odd,
)

Position = Literal["pre_attn", "pre_mlp"]
Logger = Literal["tensorboard", "wandb"]
RULES = "recipe_rules"  # error type of cross-field rules; ctx["problems"] = [(key, message), ...]


def _no_bool(value: Any) -> Any:
    """Pydantic's lax mode reads `true` as 1; in a recipe that is a mistake, not a number."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_for_number", "expected a number, got {value}", {"value": str(value).lower()})
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _rules(problems: list[tuple[str, str]]) -> None:
    """Raise every cross-field problem of a section at once (pydantic allows one error per validator)."""
    if problems:
        raise PydanticCustomError(RULES, "; ".join(m for _, m in problems), {"problems": problems})


class BackboneSection(_Section):
    """The frozen image model: `plugin:variant`, its weights (a file, a hub tag, or None = random)."""

    name: str
    weights: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class AdapterSection(_Section):
    """ST-Adapter size and placement; defaults are the paper's K400 ViT-B/16 setting (12x384)."""

    bottleneck: Int = Field(384, gt=0)
    # per-adapter bottleneck = round(ratio x token width), for backbones whose width changes (Swin)
    bottleneck_ratio: float | None = Field(None, gt=0, le=4)
    kernel: tuple[Int, Int, Int] = (3, 1, 1)
    positions: list[Position] = Field(default_factory=lambda: list[Position](["pre_mlp"]), min_length=1)
    blocks: list[Int] | None = None

    @field_validator("positions", mode="before")
    @classmethod
    def _one_position(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("positions")
    @classmethod
    def _unique_positions(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("duplicate", "lists a position twice; use each of pre_attn, pre_mlp at most once")
        return value

    @field_validator("kernel")
    @classmethod
    def _odd_kernel(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if not kernel_is_odd(value):
            raise PydanticCustomError(
                "odd_kernel", "sizes must be odd and positive (T, H, W), got {kernel}", {"kernel": list(value)}
            )
        return value


class ModelSection(_Section):
    """The classifier head, and where the adapters start from.

    `init_from`: a stadapt checkpoint (e.g. of a Kinetics-400 run) whose adapters initialise this
    run's; its head is not used (the classes differ). How finetune-transfer starts.
    """

    dropout: Float = Field(0.5, ge=0, lt=1)
    init_from: str | None = None


class AugmentSection(_Section):
    """Clip-level training augmentation (one draw per clip, shared by all its frames).

    - `crop: jitter` (K400, UCF, HMDB): short side = crop size x U(scale), then a random crop;
      the paper's 224-256 is `scale: [1.0, 1.143]`, the reference's 224 x [1.0, 1.15] the default.
    - `crop: resized` (SSv2): RandomResizedCrop with area fraction `area` and aspect ratio `ratio`.
    - `randaugment`: a timm-style policy such as `rand-m7-n4-mstd0.5-inc1` (SSv2), applied to the
      decoded frames before cropping, as the reference does; null = none.
    - `flip`: horizontal mirror with p = 0.5; off by default because it swaps SSv2's left/right classes.
    """

    crop: Literal["jitter", "resized"] = "jitter"
    scale: tuple[Float, Float] = (1.0, 1.15)
    area: tuple[Float, Float] = (0.08, 1.0)
    ratio: tuple[Float, Float] = (0.75, 4 / 3)
    flip: bool = False
    randaugment: str | None = None

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise PydanticCustomError(
                "scale_range", "expected [low, high] with 0 < low <= high, got {scale}", {"scale": list(value)}
            )
        return value

    @field_validator("area")
    @classmethod
    def _fraction(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 1:
            raise PydanticCustomError(
                "area_range", "expected [low, high] with 0 < low <= high <= 1, got {area}", {"area": list(value)}
            )
        return value

    @field_validator("randaugment")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from stadapt.data.randaugment_config import parse_config
        from stadapt.errors import DataError

        try:
            parse_config(value)
        except DataError as exc:
            raise PydanticCustomError("randaugment", "{problem}", {"problem": exc.message}) from None
        return value


VIEWS = re.compile(r"^[1-9][0-9]*x[1-9][0-9]*$")


class DataSection(_Section):
    """A data set made by `stadapt prepare-data`; list files are relative to `root`."""

    format: Literal["prepared"] = "prepared"
    root: str
    train_list: str = "train.txt"
    val_list: str = "val.txt"
    frames: Int = Field(8, gt=0)
    sampling: Literal["stride", "segment"] = "stride"
    stride: Int = Field(16, gt=0)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    views: str = "1x1"
    num_workers: Int = Field(2, ge=0)
    # PyAV (default) or torchcodec (the extra stadapt[torchcodec]); decode_device: cuda decodes with NVDEC
    decoder: Literal["pyav", "torchcodec"] = "pyav"
    decode_device: Literal["cpu", "cuda"] = "cpu"

    @model_validator(mode="after")
    def _decoding(self) -> DataSection:
        problems = []
        if self.decode_device == "cuda" and self.decoder != "torchcodec":
            problems.append(("decode_device", "cuda needs decoder: torchcodec (PyAV decodes on the CPU only)"))
        if self.decode_device == "cuda" and self.num_workers:
            problems.append(("decode_device", f"cuda decodes in the main process (CUDA does not start in forked "
                                              f"DataLoader workers); set num_workers: 0, got {self.num_workers}"))
        _rules(problems)
        return self

    @field_validator("views")
    @classmethod
    def _views(cls, value: str) -> str:
        if not VIEWS.match(value):
            raise PydanticCustomError(
                "views",
                "expected TxS test views like '1x1', '3x1' or '1x3' (T, S >= 1), got {value}",
                {"value": repr(value)},
            )
        return value

    @property
    def train_path(self) -> Path:
        """The training list as an absolute path (an absolute `train_list` is kept)."""
        return Path(self.root) / self.train_list


class ScaleSection(_Section):
    """Multipliers of the learning rate AND weight decay of each part of the model (the paper's
    baselines: full fine-tuning trains the backbone at 1/100; transfer trains adapters at 1/10)."""

    backbone: Float = Field(1.0, gt=0)
    adapters: Float = Field(1.0, gt=0)
    head: Float = Field(1.0, gt=0)


class OptimSection(_Section):
    """AdamW with linear warmup and cosine decay; paper Table 1: lr 5e-4 at batch 128.

    `batch_size` is the GLOBAL batch (all processes together); `micro_batch` is the most clips one
    device runs in one forward pass; gradient accumulation makes up the rest.
    """

    lr: Float = Field(5e-4, gt=0)
    weight_decay: Float = Field(1e-2, ge=0)
    betas: tuple[Float, Float] = (0.9, 0.999)
    batch_size: Int = Field(128, gt=0)
    micro_batch: Int | None = Field(None, gt=0)
    steps: Int = Field(20000, gt=0)
    warmup_steps: Int = Field(0, ge=0)
    grad_clip: Float | None = Field(None, gt=0)
    scale: ScaleSection = Field(default_factory=ScaleSection)

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise PydanticCustomError("betas", "each beta must be in [0, 1), got {betas}", {"betas": list(value)})
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OptimSection:
        problems = []
        if self.batch_size % self.resolved_micro_batch:
            fits = max(d for d in range(1, self.resolved_micro_batch + 1) if self.batch_size % d == 0)
            problems.append(
                (
                    "micro_batch",
                    f"batch_size {self.batch_size} is not a multiple of micro_batch {self.resolved_micro_batch}; "
                    f"use a divisor of batch_size, e.g. micro_batch={fits}",
                )
            )
        if self.warmup_steps >= self.steps:
            problems.append(
                ("warmup_steps", f"must be less than steps ({self.steps}), got {self.warmup_steps}")
            )
        _rules(problems)
        return self

    @property
    def resolved_micro_batch(self) -> int:
        """Clips per forward pass (None in the recipe means the whole batch)."""
        return self.micro_batch if self.micro_batch is not None else self.batch_size


DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


class TrainSection(_Section):
    """Run mechanics: seed, device, precision, logging, validation and checkpoint cadence."""

    seed: Int = 0
    device: str = "auto"
    precision: Precision = "auto"
    log_every: Int = Field(10, gt=0)
    val_every: Int = Field(0, ge=0)
    save_every: Int = Field(1000, ge=0)
    keep_checkpoints: Int = Field(1, ge=1)  # the newest N step checkpoints are kept
    keep_best: bool = True  # checkpoints/best: the checkpoint of the best validation top-1 so far
    # memory and speed
    backbone_storage: BackboneStorage = "auto"  # auto: half when frozen, on CUDA, with autocast
    # recompute activations in the backward pass: adapters < mlp (adapters + MLP branches) < true (whole
    # blocks); the default "adapters" costs about 1% of a step and saves about 8% of ST-Adapter's memory
    checkpointing: bool | CheckpointingLevel = "adapters"
    compile: bool = False  # torch.compile the model
    # where metrics go besides RUN/metrics.jsonl (always written) and RUN/train.log: TensorBoard event
    # files in RUN/tensorboard (skipped with one notice when tensorboard is not installed), Weights &
    # Biases (the [wandb] extra; WANDB_MODE=offline works without an account)
    loggers: list[Logger] = Field(default_factory=lambda: list[Logger](["tensorboard"]))

    @model_validator(mode="before")
    @classmethod
    def _tensorboard_flag(cls, data: Any) -> Any:
        """`tensorboard: true|false`, the older spelling (in existing runs' recipe.yaml), read into loggers."""
        if not isinstance(data, dict) or "tensorboard" not in data:
            return data
        data = dict(data)
        flag = data.pop("tensorboard")
        if not isinstance(flag, bool):
            raise PydanticCustomError("tensorboard_flag", "tensorboard must be true or false, got {value}; "
                                      "prefer train.loggers: [tensorboard]", {"value": repr(flag)})
        loggers = data.get("loggers", ["tensorboard"])
        loggers = [loggers] if isinstance(loggers, str) else list(loggers or [])
        data["loggers"] = [x for x in loggers if x != "tensorboard"] + (["tensorboard"] if flag else [])
        return data

    @field_validator("loggers", mode="before")
    @classmethod
    def _one_logger(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("loggers")
    @classmethod
    def _unique_loggers(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("checkpointing", mode="before")
    @classmethod
    def _checkpointing(cls, value: Any) -> bool | str:
        level = checkpointing_level(value)
        if level is not None:
            return level
        raise PydanticCustomError(
            "checkpointing", "expected false, adapters, mlp or true, got {value}", {"value": repr(value)}
        )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE.match(value):
            raise PydanticCustomError(
                "device", "expected auto, cpu, cuda, cuda:N or mps, got {value}", {"value": repr(value)}
            )
        return value


class OutputSection(_Section):
    """Where the run directory goes (the loader fills in runs/<name>)."""

    dir: str | None = None


class Recipe(_Section):
    """A whole training run. `load_recipe` fills `name` and `output.dir` and makes paths absolute."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    name: str | None = None
    backbone: BackboneSection
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    tuning: TuningMode = "st_adapter"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)

    @model_validator(mode="after")
    def _adapters_to_train(self) -> Recipe:
        """`tuning: st_adapter` with `adapter.blocks: []` would silently train the head alone."""
        if self.tuning == "st_adapter" and self.adapter.blocks is not None and not self.adapter.blocks:
            _rules([("adapter.blocks", "is empty, so tuning: st_adapter would train no adapters (a linear probe); "
                                       "list the blocks to adapt (or leave it unset for every block), or set "
                                       "tuning: linear for a head-only model")])
        return self

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and (value in ("", ".", "..") or any(c in value for c in "/\\")):
            raise PydanticCustomError(
                "run_name",
                "must be a plain name without / or \\ (it names runs/<name>), got {value}",
                {"value": repr(value)},
            )
        return value

    @property
    def micro_batch(self) -> int:
        """Clips per forward pass, resolved (optim.micro_batch or else optim.batch_size)."""
        return self.optim.resolved_micro_batch

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able data, every field included (tuples become lists)."""
        return self.model_dump(mode="json")
