"""The recipe schema: every knob of a run, typed, with the paper's values as defaults.

Models are frozen (a recipe is a value that a run records) and reject unknown keys (a misspelt key
must not silently fall back to a default). Values are checked here; files and installed plugins are
checked by the loader, which also turns pydantic's errors into one-line problems.

Each field's description is the docstring under it (pydantic's `use_attribute_docstrings`): it goes into
the JSON Schema (`stadapt recipe schema`) and the generated recipe reference of the docs.
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
# for an optional positive number: the bound before the validator, so that the JSON Schema states it in
# its own keyword (exclusiveMinimum), which editors read, rather than pydantic's `gt`
PositiveInt = Annotated[int, Field(gt=0), BeforeValidator(_no_bool)]
PositiveFloat = Annotated[float, Field(gt=0), BeforeValidator(_no_bool)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _rules(problems: list[tuple[str, str]]) -> None:
    """Raise every cross-field problem of a section at once (pydantic allows one error per validator)."""
    if problems:
        raise PydanticCustomError(RULES, "; ".join(m for _, m in problems), {"problems": problems})


class BackboneSection(_Section):
    """The frozen image model: `plugin:variant`, its weights (a file, a hub tag, or None = random)."""

    name: str
    """The backbone as `plugin:variant`, e.g. `clip:ViT-B-16`, `timm:swin_base_patch4_window7_224`,
    `clip:tiny`; `stadapt backbones` lists what the installed plugins accept."""
    weights: str | None = None
    """Pretrained weights: a local file (a value with `/`, `\\` or `.` in it, or one that exists, is a
    path; a relative path is taken from the working directory), else a tag of the plugin (`openai`,
    `ms_in22k`, `synthetic` for `clip:tiny`); null = a random backbone, built from `train.seed`."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Build options handed to the backbone plugin, e.g. `{image_size: 336}` or `{quick_gelu: true}` for
    `clip:`, `timm.create_model` arguments such as `{img_size: 224}` for `timm:`; recorded in checkpoints."""


class AdapterSection(_Section):
    """ST-Adapter size and placement; defaults are the paper's K400 ViT-B/16 setting (12x384)."""

    bottleneck: Int = Field(384, gt=0)
    """Channels of each adapter's bottleneck: `fc1` maps the token width to it, `fc2` back (the paper's
    384); not used when `bottleneck_ratio` is set."""
    bottleneck_ratio: float | None = Field(None, gt=0, le=4)
    """Size each adapter from the width of the tokens it sees instead: bottleneck = round(ratio x width),
    at least 1. For backbones whose width changes between stages (Swin); 0.5 is ViT-B/16's 384 / 768.
    Overrides `bottleneck`; null = use `bottleneck`."""
    kernel: tuple[Int, Int, Int] = (3, 1, 1)
    """Size (T, H, W) of the adapter's depthwise 3D convolution over the frames x token grid; odd sizes,
    so the grid keeps its shape. The paper's 3x1x1: three neighbouring frames, one token position."""
    positions: list[Position] = Field(default_factory=lambda: list[Position](["pre_mlp"]), min_length=1)
    """Where each adapted block gets an adapter: `pre_attn` (before its attention branch), `pre_mlp`
    (before its MLP branch), or both. The paper: `[pre_mlp]` for K400, `[pre_attn, pre_mlp]` for SSv2.
    A single name reads as a list of one."""
    blocks: list[Int] | None = None
    """Indices of the blocks that get adapters (0 = the first; negative ones count from the end, so
    `[-2, -1]` is the last two); null = every block. An empty list is refused with `tuning: st_adapter`."""

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
    """The classifier head, and where the adapters start from."""

    dropout: Float = Field(0.5, ge=0, lt=1)
    """Dropout probability on the video feature, in training, before the linear classifier head."""
    init_from: str | None = None
    """A stadapt checkpoint folder (one with a `stadapt.json`, e.g. `runs/k400_vitb/checkpoints/last`)
    whose adapters initialise this run's: every adapter tensor must be there with the same shape; its
    head is not used (the classes differ). Not applied on `--resume`. How finetune-transfer starts;
    null = adapters start from their own initialisation."""


class AugmentSection(_Section):
    """Clip-level training augmentation (one draw per clip, shared by all its frames): RandAugment, crop, flip."""

    crop: Literal["jitter", "resized"] = "jitter"
    """The training crop, to the backbone's input size S: `jitter` (K400, UCF, HMDB: the short side
    resized to S x U(`scale`), then a random S x S crop) or `resized` (SSv2: RandomResizedCrop with
    `area` and `ratio`)."""
    scale: tuple[Float, Float] = (1.0, 1.15)
    """`crop: jitter`: the short side is resized to the crop size x U(low, high), 1 <= low <= high (a
    short side below the crop size leaves nothing to crop). The paper's 224-256 px is [1.0, 1.143]; the
    default is the reference's."""
    area: tuple[Float, Float] = (0.08, 1.0)
    """`crop: resized`: [low, high] of the crop's area, as a fraction of the frame's."""
    ratio: tuple[Float, Float] = (0.75, 4 / 3)
    """`crop: resized`: [low, high] of the crop's aspect ratio (width / height), drawn log-uniformly."""
    flip: bool = False
    """Mirror the clip horizontally with p = 0.5; off by default because it swaps SSv2's left/right
    classes."""
    randaugment: str | None = None
    """A timm-style RandAugment policy such as `rand-m7-n4-mstd0.5-inc1` (SSv2), applied to the decoded
    frames before the crop, as the reference does; null = none."""

    @field_validator("scale")
    @classmethod
    def _at_least_the_crop(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 1 <= value[0] <= value[1]:
            raise PydanticCustomError(
                "scale_range", "expected [low, high] with 1 <= low <= high (the short side never below the crop), "
                "got {scale}", {"scale": list(value)}
            )
        return value

    @field_validator("ratio")
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
    """The data set's layout: `prepared` (a folder written by `stadapt prepare-data`) is the only one."""
    root: str
    """The prepared data folder (`classes.txt` and the lists); a relative path is taken from the working
    directory."""
    train_list: str = "train.txt"
    """The training list (`path label` lines), relative to `root`."""
    val_list: str = "val.txt"
    """The validation list, relative to `root`: validation during training, and `stadapt eval`'s default."""
    frames: Int = Field(8, gt=0)
    """Frames per clip (T): the paper's main setting is 8 (the `*_16f` and `*_32f` recipes: 16 and 32)."""
    sampling: Literal["stride", "segment"] = "stride"
    """How a clip's frames are chosen: `stride` (K400: `frames` frames `stride` apart, from a random start
    in training, evenly spaced starts at test) or `segment` (SSv2: the whole video cut into `frames` equal
    segments, a random frame of each in training, their centres at test)."""
    stride: Int = Field(16, gt=0)
    """`sampling: stride`: the gap between sampled frames, in frames of the video, so a clip spans
    (frames - 1) x stride + 1 frames (a shorter video repeats its last frame); not used by `segment`."""
    augment: AugmentSection = Field(default_factory=AugmentSection)
    """Training augmentation (validation and test clips are not augmented)."""
    views: str = "1x1"
    """Test views, `TxS`: T clips evenly spaced in time x S crops (S = 1: the centre crop; more: spread
    along the long side), their softmax averaged. Used by validation and recorded in checkpoints as the
    default of eval and predict (`--views` overrides it)."""
    num_workers: Int = Field(2, ge=0)
    """DataLoader worker processes that decode clips, per training process, in training and validation;
    also `stadapt eval`'s default (`--workers`). 0 = decode in the main process."""
    decoder: Literal["pyav", "torchcodec"] = "pyav"
    """The video decoder: `pyav` (PyAV) or `torchcodec` (the `stadapt[torchcodec]` extra)."""
    decode_device: Literal["cpu", "cuda"] = "cpu"
    """Where frames are decoded: `cpu`, or `cuda` (the GPU's NVDEC; needs `decoder: torchcodec` and
    `num_workers: 0`)."""

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
    """Multiplier for the backbone parameters that train (`tuning: full_finetune` or `partial_finetune`);
    the paper's full fine-tuning uses 0.01."""
    adapters: Float = Field(1.0, gt=0)
    """Multiplier for the adapters; finetune-transfer uses 0.1 (the paper's transfer setting)."""
    head: Float = Field(1.0, gt=0)
    """Multiplier for the classifier head."""


class OptimSection(_Section):
    """AdamW with linear warmup and cosine decay; paper Table 1: lr 5e-4 at batch 128."""

    lr: Float = Field(5e-4, gt=0)
    """AdamW's peak learning rate, reached after `warmup_steps`, then decayed along a cosine towards 0 at
    `steps` (set every step); used as written, not scaled by the batch size; each part trains at lr x
    `scale.<part>`. The paper's 5e-4."""
    weight_decay: Float = Field(1e-2, ge=0)
    """AdamW's (decoupled) weight decay, times `scale.<part>`; none on 1-d tensors (biases, norm scales).
    The paper's 1e-2."""
    betas: tuple[Float, Float] = (0.9, 0.999)
    """AdamW's [beta1, beta2], each in [0, 1)."""
    batch_size: Int = Field(128, gt=0)
    """Clips per optimizer step, GLOBAL: all processes together (it must split evenly over them). The
    paper's 128."""
    micro_batch: PositiveInt | None = None
    """The most clips one device runs in one forward pass (a divisor of `batch_size`); gradient
    accumulation makes up the rest, so it does not change the result. Also bounds validation's forward
    passes (micro_batch / views videos each). Null = the whole batch at once."""
    steps: Int = Field(20000, gt=0)
    """The run's length, in optimizer steps of `batch_size` clips."""
    warmup_steps: Int = Field(0, ge=0)
    """Optimizer steps of linear warmup (step s, from 0, at lr x (s + 1) / warmup_steps) before the cosine
    decay; 0 = none (the paper states none). Less than `steps`."""
    grad_clip: PositiveFloat | None = None
    """Clip the gradients' total L2 norm (over all trainable parameters, after undoing fp16 loss scaling)
    to this before each step; null = no clipping."""
    scale: ScaleSection = Field(default_factory=ScaleSection)
    """Per-part multipliers of `lr` and `weight_decay`."""

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
    """Seeds torch, a random backbone (`backbone.weights: null`), the order of the training clips and
    their augmentation."""
    device: str = "auto"
    """Where to train: `auto` (the first CUDA GPU if there is one, else the CPU), `cpu`, `cuda`, `cuda:N`
    or `mps`; under torchrun, `cuda` is each process's own GPU."""
    precision: Precision = "auto"
    """Autocast precision: `auto` (bf16 on GPUs that have it, fp16 with loss scaling on older GPUs,
    float32 on the CPU and MPS), `fp32`, `bf16`, or `fp16` (CUDA only)."""
    log_every: Int = Field(10, gt=0)
    """Log training loss, accuracy, learning rate, clips/s and peak memory (averaged since the last log)
    every N optimizer steps, and at the last step."""
    val_every: Int = Field(0, ge=0)
    """Validate on `data.val_list` every N optimizer steps, and at the last step; 0 = at the last step only."""
    save_every: Int = Field(1000, ge=0)
    """Checkpoint every N optimizer steps; 0 = only when the run stops (it always saves then: at the
    end, after `--stop-after`, on SIGTERM or Ctrl-C)."""
    keep_checkpoints: Int = Field(1, ge=1)
    """How many checkpoints to keep: `checkpoints/last` and the newest N - 1 older ones, as
    `checkpoints/step_*`; 1 = `last` only."""
    keep_best: bool = True
    """Keep `checkpoints/best`, the weights of the best validation top-1 so far (eval, predict, export
    and the other commands that take a run use it when it exists)."""
    backbone_storage: BackboneStorage = "auto"
    """The dtype the backbone is stored in: `auto` (16 bits where it is frozen, on CUDA, with autocast on;
    else float32), `fp32`, or `half` (the autocast dtype; needs autocast and a frozen backbone)."""
    checkpointing: bool | CheckpointingLevel = "adapters"
    """Activation checkpointing, what the backward pass recomputes: `false` (nothing), `adapters` (about 1%
    of a step, about 8% of ST-Adapter's memory saved), `mlp` (the adapters and the MLP branches), or
    `true` (whole blocks, about one more forward pass)."""
    compile: bool = False
    """Run the model through `torch.compile`."""
    loggers: list[Logger] = Field(default_factory=lambda: list[Logger](["tensorboard"]))
    """Where metrics go besides `metrics.jsonl` and `train.log` (always written): `tensorboard` (event
    files in RUN/tensorboard; skipped with one notice when tensorboard is not installed), `wandb` (Weights
    & Biases, the `[wandb]` extra; WANDB_MODE=offline works without an account). `[]` = neither."""

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
    """The run folder; null = `runs/<name>`. A relative path is taken from the working directory."""


class Recipe(_Section):
    """A whole training run. `load_recipe` fills `name` and `output.dir` and makes paths absolute."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    name: str | None = None
    """The run's name, which names its folder `runs/<name>` unless `output.dir` says otherwise; a plain
    name (no `/` or `\\`). Null = the recipe file's name (not inherited from a `base:`)."""
    backbone: BackboneSection
    """The frozen image model."""
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    """The ST-Adapters' size and placement (read with `tuning: st_adapter` only)."""
    tuning: TuningMode = "st_adapter"
    """What trains: `st_adapter` (the adapters and the head; the backbone frozen) or the paper's baselines
    `linear` (the head only), `full_finetune` (the whole backbone and the head), `partial_finetune` (the
    backbone's last block and the head)."""
    model: ModelSection = Field(default_factory=ModelSection)
    """The classifier head's dropout, and a checkpoint to start the adapters from."""
    data: DataSection
    """The prepared data set, how clips are sampled and augmented, test views, decoding."""
    optim: OptimSection = Field(default_factory=OptimSection)
    """The optimizer, its schedule and the batch."""
    train: TrainSection = Field(default_factory=TrainSection)
    """Run mechanics: seed, device, precision, logging, validation, checkpoints, memory and speed."""
    output: OutputSection = Field(default_factory=OutputSection)
    """Where the run folder goes."""

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
