"""The recipe schema: every knob of a run, typed, with the paper's values as defaults.

`Recipe` and its sections (the `data:` section lives in stadapt.recipe.data_section; what every section
is built from, in stadapt.recipe.fields). Models are frozen (a recipe is a value that a run records) and
reject unknown keys (a misspelt key must not silently fall back to a default). Values are checked here;
files and installed plugins are checked by the loader, and stadapt.recipe.messages turns pydantic's
errors into one-line problems.

Each field's description is the docstring under it (pydantic's `use_attribute_docstrings`): it goes into
the JSON Schema (`stadapt recipe schema`) and the generated recipe reference of the docs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from stadapt.recipe.data_section import DataSection
from stadapt.recipe.fields import Float, Int, PositiveFloat, PositiveInt, Section, raise_rules
from stadapt.recipe.model_section import ModelSection
from stadapt.vocabulary import (
    TUNING_MODES,
    BackboneStorage,
    CheckpointingLevel,
    Precision,
    checkpointing_level,
    kernel_is_odd,
)

Position = Literal["pre_attn", "pre_mlp"]
Logger = Literal["tensorboard", "wandb"]


class BackboneSection(Section):
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


class AdapterSection(Section):
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


class ScaleSection(Section):
    """Multipliers of the learning rate AND weight decay of each part of the model (the paper's
    baselines: full fine-tuning trains the backbone at 1/100; transfer trains adapters at 1/10)."""

    backbone: Float = Field(1.0, gt=0)
    """Multiplier for the backbone parameters that train (`tuning: full_finetune` or `partial_finetune`);
    the paper's full fine-tuning uses 0.01."""
    adapters: Float = Field(1.0, gt=0)
    """Multiplier for the adapters; finetune-transfer uses 0.1 (the paper's transfer setting)."""
    head: Float = Field(1.0, gt=0)
    """Multiplier for the classifier head."""


class OptimSection(Section):
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
        raise_rules(problems)
        return self

    @property
    def resolved_micro_batch(self) -> int:
        """Clips per forward pass (None in the recipe means the whole batch)."""
        return self.micro_batch if self.micro_batch is not None else self.batch_size


DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


class TrainSection(Section):
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


class OutputSection(Section):
    """Where the run directory goes (the loader fills in runs/<name>)."""

    dir: str | None = None
    """The run folder; null = `runs/<name>`. A relative path is taken from the working directory."""


class Recipe(Section):
    """A whole training run. `load_recipe` fills `name` and `output.dir` and makes paths absolute."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    name: str | None = None
    """The run's name, which names its folder `runs/<name>` unless `output.dir` says otherwise; a plain
    name (no `/` or `\\`). Null = the recipe file's name (not inherited from a `base:`)."""
    backbone: BackboneSection
    """The frozen image model."""
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    """The ST-Adapters' size and placement (read with `tuning: st_adapter` only)."""
    tuning: str = Field("st_adapter", json_schema_extra={"examples": list(TUNING_MODES)})
    """What trains: the tuning method, any installed one (`stadapt methods` lists them). Built in:
    `st_adapter` (the adapters and the head; the backbone frozen) and the paper's baselines `linear` (the
    head only), `full_finetune` (the whole backbone and the head), `partial_finetune` (the backbone's last
    block and the head). A method's settings come from its own section (st_adapter's: `adapter`)."""
    method: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude=True)
    """A method's settings from a recipe section this schema does not name (a third party's method), by
    section; written back under that section."""
    model: ModelSection = Field(default_factory=ModelSection)
    """The classifier head (linear, or the text tower's class embeddings) and its dropout, and a checkpoint to
    start the adapters from."""
    data: DataSection
    """The prepared data set, how clips are sampled and augmented, test views, decoding."""
    optim: OptimSection = Field(default_factory=OptimSection)
    """The optimizer, its schedule and the batch."""
    train: TrainSection = Field(default_factory=TrainSection)
    """Run mechanics: seed, device, precision, logging, validation, checkpoints, memory and speed."""
    output: OutputSection = Field(default_factory=OutputSection)
    """Where the run folder goes."""

    @model_validator(mode="before")
    @classmethod
    def _method_section(cls, data: Any) -> Any:
        """Sections this schema does not name that are an installed method's (a third party's, AIM's...):
        kept under `method`, the selected method's and the others' alike, so that `tuning=linear` on an AIM
        recipe runs the baseline instead of refusing its `aim:` section. Any other unknown key is refused."""
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            sections = _installed_sections() if unknown else {}
            moved = {k: data[k] or {} for k in unknown if k in sections}
            section = _section_of(data.get("tuning", "st_adapter"))
            if section is not None and section not in cls.model_fields:
                moved[section] = _resolved(str(data.get("tuning")), moved.get(section) or {})
            if moved:
                data = {k: v for k, v in data.items() if k not in moved} | {"method": moved}
        return data

    @field_validator("tuning")
    @classmethod
    def _installed_method(cls, value: str) -> str:
        from stadapt.tuners import load_tuner

        try:
            load_tuner(value)
        except Exception as exc:
            raise PydanticCustomError("tuning", "{message}", {"message": getattr(exc, "message", str(exc))}) from exc
        return value

    @model_validator(mode="after")
    def _text_head_weights(self) -> Recipe:
        """A text head is the pretrained text tower's: a random backbone has none to embed the classes with."""
        if self.model.head.type == "text" and self.backbone.weights is None:
            raise_rules([("model.head.type", "text needs the backbone's pretrained weights (its text tower's): "
                          "set backbone.weights")])
        return self

    @model_validator(mode="after")
    def _method_settings(self) -> Recipe:
        """The method's own rules on its settings (e.g. st_adapter's `adapter.blocks: []` would train the
        head alone)."""
        from stadapt.tuners import load_tuner

        tuner = load_tuner(self.tuning)
        if tuner.section is None:
            return self
        settings = self.tuner_section()
        if tuner.section not in type(self).model_fields and tuner.settings is not None:
            try:
                tuner.settings.model_validate(settings)
            except ValidationError as exc:
                raise_rules([(".".join(map(str, (tuner.section, *e["loc"]))), e["msg"]) for e in exc.errors()])
        raise_rules([(f"{tuner.section}.{key}", message)
                     for key, message in tuner.recipe_problems(settings)])
        return self

    def tuner_section(self) -> dict[str, Any] | None:
        """The settings section of this recipe's method, as plain data (None when it has none)."""
        section = _section_of(self.tuning)
        if section is None:
            return None
        value = getattr(self, section, None) if section in type(self).model_fields else self.method.get(section)
        return value.model_dump(mode="json") if isinstance(value, Section) else dict(value or {})

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
        """Plain YAML-able data, every field included (tuples become lists); a method's section under its
        own name (the selected method's resolved with its defaults: what the run is built with, even if a
        later version changes a paper default)."""
        return {**self.model_dump(mode="json"), **self.method}


def _section_of(tuning: Any) -> str | None:
    """The recipe section of the method `tuning`, None for an unknown one (the field's check names it)."""
    from stadapt.tuners import load_tuner

    try:
        return load_tuner(str(tuning)).section
    except Exception:
        return None


def _installed_sections() -> dict[str, str]:
    """{recipe section: method} of the installed methods that load (a broken one is named when selected)."""
    from stadapt.tuners import installed_tuners, load_tuner

    found: dict[str, str] = {}
    for name in installed_tuners():
        try:
            section = load_tuner(name).section
        except Exception:
            continue
        if section is not None:
            found.setdefault(section, name)
    return found


def _resolved(tuning: str, section: Any) -> Any:
    """The selected method's section with its defaults filled in, or as given when it does not validate (the
    after-validator then names each problem by its key)."""
    from stadapt.tuners import load_tuner

    tuner = load_tuner(tuning)
    try:
        return tuner.settings_dict(tuner.read_settings(section)) or {}
    except Exception:
        return section
