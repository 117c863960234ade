"""The model card `stadapt push` writes (README.md of a hub repository), from a checkpoint's stadapt.json and
the eval.json of that checkpoint.

The YAML front matter is huggingface_hub's own (`ModelCardData`), so the hub reads the library, the tags,
the data set and the results (`model-index`, the exact numbers of eval.json). The body says what a user
needs before loading it: the backbone and where its weights come from, the tuning method (the checkpoint's
`tuning`, described by the installed method's summary) with its recorded settings, what trains of how many
parameters, the classes, the evaluation with its views and data fingerprint, the recipe, and how to load it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from stadapt.checkpoints.files import BACKBONE_FILE, META_FILE, TENSORS_FILE
from stadapt.errors import StadaptError


def model_card(meta: Mapping[str, Any], report: Mapping[str, Any] | None, repo: str, dataset: str | None) -> str:
    """The README.md text: front matter, then one section per topic."""
    method = _method(meta)
    what = f": {method.summary}" if method.summary else ""
    sections = [
        (f"# {repo}\n\nA video classifier made with stadapt from the image backbone "
         f"`{(meta.get('model') or {}).get('backbone')}`, tuned with the method `{method.name}`{what}. This "
         f"repository holds only the trained tensors (`{TENSORS_FILE}`) and their description (`{META_FILE}`)."),
        _usage(meta, repo),
        _model(meta, repo, method),
        _tuning(meta, method),
        _evaluation(report, dataset),
        _classes(meta),
        _recipe(meta),
    ]
    return f"---\n{_front_matter(meta, report, repo, dataset)}\n---\n\n" + "\n\n".join(sections) + "\n"


def _front_matter(meta: Mapping[str, Any], report: Mapping[str, Any] | None, repo: str, dataset: str | None) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    model = meta.get("model") or {}
    plugin = str(model.get("backbone", "")).split(":", 1)[0]
    results = None
    if report is not None and report.get("top1") is not None:
        split = PurePath(str(report.get("list", ""))).stem or None

        def accuracy(name: str, value: Any) -> EvalResult:
            return EvalResult(task_type="video-classification", task_name="Video Classification",
                              dataset_type=dataset or "unknown", dataset_name=dataset or "unknown",
                              dataset_split=split, metric_type="accuracy", metric_name=name, metric_value=value)

        results = [accuracy("top-1", report["top1"])]
        if report.get("top5") is not None:
            results.append(accuracy(f"top-{report.get('top5_k', 5)}", report["top5"]))
    data = ModelCardData(
        library_name="stadapt", pipeline_tag="video-classification",
        tags=["stadapt", _method(meta).name.replace("_", "-"), "video-classification", "action-recognition",
              *([plugin] if plugin else [])],
        datasets=[dataset] if dataset else None, model_name=repo.split("/")[-1], eval_results=results,
    )
    return data.to_yaml()


def _weights_source(meta: Mapping[str, Any], repo: str) -> str:
    """Where the frozen backbone's weights come from, and what a user passes when they are a local file."""
    recorded = meta.get("backbone_weights") or {}
    fingerprint = recorded.get("fingerprint")
    check = f" Its fingerprint is checked on load: `{fingerprint}`." if fingerprint else ""
    if recorded.get("random_init"):
        return (f"randomly initialised (no pretrained weights) with seed {recorded.get('seed')}; loading rebuilds "
                f"it and checks it.{check}")
    source = str(recorded.get("source"))
    if source == BACKBONE_FILE:  # an imported AIM checkpoint carries its tower: pushed with it
        return f"the file `{BACKBONE_FILE}` in this repository, read from there on load.{check}"
    if _weights_are_a_file(meta):
        name = re.split(r"[\\/]", source)[-1]
        return (f"the file `{name}`, which is not in this repository: pass your copy when loading, "
                f"`stadapt.load_model(\"hf-hub:{repo}\", backbone_weights=\"path/to/{name}\")` "
                f"(CLI: `--backbone-weights path/to/{name}`).{check}")
    return f"`{source}` (the backbone plugin's weights tag; fetched by the plugin).{check}"


class _Method:
    """The checkpoint's tuning method: its recorded name and settings, and what the installed method of that
    name says of itself (None where it is not installed here)."""

    def __init__(self, name: str, settings: Mapping[str, Any] | None) -> None:
        self.name, self.settings = name, settings
        self.summary: str | None = None
        self.section: str | None = None
        self.distribution: str | None = None
        from stadapt.tuners import load_tuner
        from stadapt.tuners.registry import tuner_distribution

        try:
            tuner = load_tuner(name)
            self.summary, self.section, self.distribution = tuner.summary, tuner.section, tuner_distribution(name)
        except StadaptError:  # not installed here (or broken): the card still names it
            pass


def _method(meta: Mapping[str, Any]) -> _Method:
    """The method a checkpoint records; one written before `tuning` was recorded trained adapters + head
    (st_adapter) or the head alone (linear), as ModelConfig.from_dict reads it."""
    from stadapt.model.classifier import LEGACY_TUNING

    model = meta.get("model") or {}
    settings = model.get("adapter")
    name = model.get("tuning") or meta.get("tuning") or LEGACY_TUNING[settings is not None]
    return _Method(str(name), settings if isinstance(settings, Mapping) else None)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`".replace("|", "\\|")


def _tuning(meta: Mapping[str, Any], method: _Method) -> str:
    """The method with its summary and where it comes from, and its recorded settings, one row each."""
    from_ = f" (from {method.distribution})" if method.distribution else \
        " (not installed where this card was written: install the package that provides it to load this model)"
    text = f"## Tuning method\n\n`{method.name}`{from_}" + (f": {method.summary}." if method.summary else ".")
    params = meta.get("parameters") or {}
    if params.get("total"):
        trainable, total = int(params.get("trainable", 0)), int(params["total"])
        text += f" It trains {trainable:,} of the model's {total:,} parameters ({100 * trainable / total:.2f}%)."
    if not method.settings:
        return text + "\n\nIt takes no settings."
    section = f" (the recipe's `{method.section}:` section)" if method.section else ""
    rows = "\n".join(f"| {key} | {_cell(value)} |" for key, value in method.settings.items())
    return f"{text}\n\nIts settings{section}, as recorded in `{META_FILE}`:\n\n| setting | value |\n|---|---|\n{rows}"


def _model(meta: Mapping[str, Any], repo: str, method: _Method) -> str:
    model = meta.get("model") or {}
    plugin = meta.get("backbone_plugin") or {}
    params = meta.get("parameters") or {}
    rows = [
        ("backbone", f"`{model.get('backbone')}`" + (f" with options `{json.dumps(model.get('backbone_options'))}`"
                                                     if model.get("backbone_options") else "")),
        ("backbone plugin", f"{plugin.get('name')} ({plugin.get('distribution')})"),
        ("backbone weights", _weights_source(meta, repo)),
        ("tuning method", f"`{method.name}` (settings below)" if method.settings else f"`{method.name}`"),
        ("frames per clip", str(model.get("num_frames"))),
        ("parameters", f"{params.get('total', 0):,} in all, {params.get('trainable', 0):,} trained"
                       if params else "not recorded"),
        ("trained steps", str(meta.get("step", "not recorded"))),
        ("stadapt version", str(meta.get("stadapt_version"))),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return f"## Model\n\n| | |\n|---|---|\n{table}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}%"


def _evaluation(report: Mapping[str, Any] | None, dataset: str | None) -> str:
    if report is None:
        return ("## Evaluation\n\nNo evaluation was recorded for this checkpoint (`stadapt eval` writes eval.json; "
                "`stadapt push` includes it).")
    rows = [
        ("data set", f"{dataset or 'unknown'}, list `{PurePath(str(report.get('list', ''))).name}`"),
        ("top-1", f"{_pct(report.get('top1'))} ({report.get('top1')})"),
        (f"top-{report.get('top5_k', 5)}", f"{_pct(report.get('top5'))} ({report.get('top5')})"),
        ("mean class accuracy", f"{_pct(report.get('mean_class_accuracy'))} ({report.get('mean_class_accuracy')})"),
        ("videos", (f"{report.get('videos')} evaluated of {report.get('listed')} listed, "
                    f"{report.get('skipped')} skipped (undecodable)")),
        ("views", f"{report.get('views')} (temporal x spatial; {report.get('fusion')})"),
        ("clips", (f"{report.get('frames')} frames, {report.get('sampling')} sampling, "
                   f"stride {report.get('stride')}, crop {report.get('crop_size')} px")),
        ("list sha256", f"`{report.get('list_sha256')}`"),
        ("classes sha256", f"`{report.get('classes_sha256')}`"),
        ("checkpoint sha256", f"`{report.get('checkpoint_sha256')}` (the trained tensors)"),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return (f"## Evaluation\n\nFrom `eval.json` (in this repository, with per-class accuracy and the confusion "
            f"matrix), written by stadapt {report.get('stadapt_version')}:\n\n| | |\n|---|---|\n{table}")


def _classes(meta: Mapping[str, Any]) -> str:
    classes = list(meta.get("classes") or [])
    listed = "\n".join(f"{i}. {name}" for i, name in enumerate(classes))
    return (f"## Classes\n\n{len(classes)} classes, in the order of the head's outputs (index: name):\n\n"
            f"<details>\n\n```\n{listed}\n```\n\n</details>")


def _recipe(meta: Mapping[str, Any]) -> str:
    import yaml

    recipe = meta.get("recipe")
    if not recipe:
        return "## Recipe\n\nThis checkpoint records no training recipe (it was imported, not trained by stadapt)."
    text = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)
    return f"## Recipe\n\nThe fully resolved training recipe (also in `{META_FILE}`):\n\n```yaml\n{text}```"


def _usage(meta: Mapping[str, Any], repo: str) -> str:
    return (
        "## How to load it\n\n```bash\npip install stadapt\n```\n\n```python\nimport stadapt\n\n"
        f"model = stadapt.load_model(\"hf-hub:{repo}\")   # the nn.Module: .input_spec, .classes, .meta\n"
        "clips = model.transform()(\"clip.mp4\")   # sampled, cropped, normalised views\n"
        "model.classes[model(clips).softmax(-1).mean(0).argmax()]\n```\n\n"
        f"```bash\nstadapt predict clip.mp4 --checkpoint hf-hub:{repo}\n"
        f"stadapt eval hf-hub:{repo} --root DATA --list val.txt   # DATA: a prepared data set with the same classes\n"
        f"stadapt export --onnx --checkpoint hf-hub:{repo} --out model.onnx\n```\n\n"
        "The files come through huggingface_hub's cache: once fetched, `HF_HUB_OFFLINE=1` works."
        + (f" Backbone weights: {_weights_source(meta, repo)}" if _weights_are_a_file(meta) else "")
    )


def _weights_are_a_file(meta: Mapping[str, Any]) -> bool:
    recorded = meta.get("backbone_weights") or {}
    source = str(recorded.get("source"))
    return not recorded.get("random_init") and ("/" in source or "\\" in source)
