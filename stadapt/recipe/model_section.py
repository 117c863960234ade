"""The recipe's `model:` section: the classifier head (linear, or the text tower's class embeddings) and
where the adapters start from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from stadapt.recipe.fields import Float, Section
from stadapt.vocabulary import DEFAULT_TEMPLATE, holds_label_once


class HeadSection(Section):
    """What the classifier is: a linear layer, or the backbone's text tower's embeddings of the class names."""

    type: Literal["linear", "text"] = "linear"
    """`linear`: a trained layer over the pooled video feature. `text`: the logits are the model's logit
    scale times the cosine of the projected video feature (the image side's projection, frozen) with each
    class name's text embedding (plus SigLIP's bias): needs a backbone with a text tower (CLIP, SigLIP) and
    its pretrained `backbone.weights`."""
    template: str | list[str] = DEFAULT_TEMPLATE
    """The prompt each class name (classes.txt) is filled into at `{}`; several: their embeddings averaged
    (prompt ensembling, as zero-shot does). Recorded in checkpoints, so new labels are embedded the same way."""
    train: bool = False
    """`false`: the class embeddings stay frozen and the adapters learn to map video into the text space; the
    run can then answer labels it never trained on (`stadapt predict --labels`, `stadapt eval --labels`).
    `true`: a linear head over the normalised projected feature, initialised from the text embeddings (step 0
    gives the frozen head's logits), that trains."""

    @field_validator("template")
    @classmethod
    def _holds_label(cls, value: str | list[str]) -> str | list[str]:
        for template in [value] if isinstance(value, str) else value or [""]:
            if not holds_label_once(template):
                raise PydanticCustomError("template", "{template} must hold '{}' exactly once, where the class "
                                          "name goes, e.g. 'a video of {}.'", {"template": repr(template)})
        return value

    @property
    def templates(self) -> list[str]:
        return [self.template] if isinstance(self.template, str) else list(self.template)


class ModelSection(Section):
    """The classifier head, and where the adapters start from."""

    dropout: Float = Field(0.5, ge=0, lt=1)
    """Dropout probability on the video feature, in training, before the linear classifier head."""
    init_from: str | None = None
    """A stadapt checkpoint folder (one with a `stadapt.json`, e.g. `runs/k400_vitb/checkpoints/last`)
    whose trained tensors initialise this run's: every tensor this run trains besides the head (the
    method's modules, and the backbone parameters it trains) must be there with the same shape; its head is
    not used (the classes differ). Not applied on `--resume`. How finetune-transfer starts;
    null = the method's modules start from their own initialisation."""
    head: HeadSection = Field(default_factory=HeadSection)
    """The classifier: `{type: linear}` (the default) or a text head, `{type: text, template: 'a video of
    {}.', train: false}`."""
