"""`--labels` of predict and eval: a run trained with a frozen text head answers a label set it never trained on.

The head's classes become the text embeddings of the new labels, made by the text tower the checkpoint
records (rebuilt from its weights source and checked by fingerprint when the model loaded), with the run's
own prompt templates; the adapted video embedding is unchanged. Probabilities are the softmax over the new
labels, or each label's sigmoid for a SigLIP model: the head's own fusion (`stadapt.inference.loop.fusion_for`),
with or without new labels.
"""

from __future__ import annotations

from collections.abc import Sequence

from stadapt.checkpoints.load import LoadedModel
from stadapt.errors import StadaptError
from stadapt.model.text_head import TextHead


def relabel(loaded: LoadedModel, labels: str | Sequence[str]) -> None:
    """Make `loaded` answer over `labels` ('a,b,c', a file with one label a line, or the labels themselves)
    in place, its `classes` included."""
    from stadapt.inference.zero_shot import read_labels
    from stadapt.model.zero_shot import check_labels

    head = loaded.head
    if not isinstance(head, TextHead) or head.trains:
        kind = "a trained text head" if isinstance(head, TextHead) else "a linear head"
        raise StadaptError(f"{loaded.loaded_from.path} has {kind}, so it answers only the classes it trained on, "
                           "not --labels",
                           "leave --labels out, or train with model.head: {type: text, train: false}")
    names = check_labels(read_labels(labels) if isinstance(labels, str) else list(labels))
    head.set_labels(names, loaded.config.head.templates)
    loaded.classes = names


def check_label_indices(labels: list[int], classes: list[str], source: str) -> None:
    """Every label of the evaluated list must index into the new label set."""
    beyond = sorted({int(label) for label in labels if not 0 <= int(label) < len(classes)})
    if beyond:
        raise StadaptError(f"{source} has labels up to {beyond[-1]}, but --labels names {len(classes)} "
                           f"label{'s' if len(classes) != 1 else ''}",
                           "pass the label file the list's class indices refer to")
