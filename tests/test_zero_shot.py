"""`stadapt zero-shot` and the backbone plugin's text tower, against open_clip's own zero-shot computation.

Two tiny open_clip models with random weights, registered as open_clip model configurations and built by
open_clip's own `create_model`: a CLIP (open_clip ViT tower, text transformer, softmax) and a SigLIP-style
model (timm ViT tower with an attention-pool head, custom text tower, logit bias and sigmoid; CLIP's bundled
tokenizer, SigLIP's own needs a download). Each is saved as one full open_clip state dict, the `--weights`
file of both towers. The video is static (identical frames), so frame sampling and the mean over frames
cannot hide a difference: stadapt's probabilities must equal open_clip's on that one frame, preprocessed by
open_clip's own transform.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import perturb_layer_norms, run_cli

TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
CONFIGS = {
    "stadapt-zs-clip": {"embed_dim": 24, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32,
                                                        "patch_size": 8}, "text_cfg": TEXT},
    # SigLIP's layout (ViT-B-16-SigLIP.json) at test size; no "siglip" in the name: open_clip would pick its
    # SentencePiece tokenizer, whose vocabulary is a download
    "stadapt-zs-sigmoid": {"embed_dim": 96, "init_logit_bias": -10, "custom_text": True,
                           "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit3",
                                          "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"},
                           "text_cfg": {**TEXT, "width": 96, "no_causal_mask": True, "proj_bias": True,
                                        "pool_type": "last"}},
}
CLIP, SIGMOID = CONFIGS
LABELS = ["a cat", "a dog", "a red car", "fireworks"]
TEMPLATES = ["a video of {}.", "a photo of {}, moving."]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The two models (open_clip's), their weights files and a static video at each model's size."""
    import open_clip

    from stadapt.data.encode import write_video

    base = tmp_path_factory.mktemp("zero_shot")
    for name, config in CONFIGS.items():
        (base / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(base)
    found = {}
    for seed, name in enumerate(CONFIGS):
        torch.manual_seed(seed)
        model = perturb_layer_norms(open_clip.create_model(name, load_weights=False))
        with torch.no_grad():  # mid-range probabilities, so a wrong scale or bias shows
            model.logit_scale.fill_(math.log(20.0 if model.logit_bias is None else 10.0))
            if model.logit_bias is not None:
                model.logit_bias.fill_(-1.0)
        weights = base / f"{name}.pt"
        torch.save(model.state_dict(), weights)
        size = CONFIGS[name]["vision_cfg"]["image_size"]
        frame = np.random.default_rng(seed).integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        frame = np.kron(frame, np.ones((8, 8, 1), dtype=np.uint8))  # smooth blocks: little for the codec to lose
        video = write_video(base / f"{name}.mp4", np.stack([frame] * 8), options={"qp": "0"})
        found[name] = {"model": model, "weights": weights, "video": video}
    return found


def _open_clip_probabilities(entry: dict, name: str, labels: list[str], templates: list[str]) -> torch.Tensor:
    """open_clip's own zero-shot: encode_image of the video's first frame after open_clip's preprocessing,
    encode_text of the prompts (ensembled: normalised, averaged, normalised), logit_scale.exp() * cos
    (+ logit_bias), softmax (sigmoid with a bias)."""
    import av
    import open_clip

    model = entry["model"]
    with av.open(str(entry["video"])) as container:
        frame = next(container.decode(video=0)).to_image()
    size = CONFIGS[name]["vision_cfg"]["image_size"]
    image = open_clip.image_transform(size, is_train=False)(frame)[None]
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        image_embedding = torch.nn.functional.normalize(model.encode_image(image), dim=-1)
        texts = model.encode_text(tokenizer([t.format(label) for label in labels for t in templates]))
        texts = torch.nn.functional.normalize(texts, dim=-1).reshape(len(labels), len(templates), -1).mean(1)
        logits = model.logit_scale.exp() * image_embedding @ torch.nn.functional.normalize(texts, dim=-1).T
        if model.logit_bias is not None:
            return (logits + model.logit_bias).sigmoid()[0]
        return logits.softmax(-1)[0]


def _by_label(result: dict) -> torch.Tensor:
    probability = {t["class"]: t["probability"] for t in result["top"]}
    return torch.tensor([probability[label] for label in LABELS])


@pytest.mark.parametrize("name", [CLIP, SIGMOID], ids=["clip_softmax", "siglip_sigmoid"])
def test_probabilities_equal_open_clips_own_zero_shot(zoo: dict, name: str) -> None:
    """Two templates (prompt ensembling), through the inference loop as predict runs it."""
    from stadapt.inference.loop import fusion_for
    from stadapt.inference.zero_shot import load_zero_shot, zero_shot_spec, zero_shot_videos

    entry = zoo[name]
    model = load_zero_shot(f"clip:{name}", str(entry["weights"]), LABELS, TEMPLATES, device="cpu")
    assert model.model.tower.sigmoid == (name == SIGMOID)
    # the views' fusion (and eval.json's `fusion`) is the one predict and eval use for the same head
    assert fusion_for(model.model)[1] == f"mean of per-view {'sigmoid' if name == SIGMOID else 'softmax'} probabilities"
    results = zero_shot_videos([entry["video"]], model, zero_shot_spec(model, frames=2), top_k=len(LABELS))
    ours = _by_label(results[0])
    expected = _open_clip_probabilities(entry, name, LABELS, TEMPLATES)
    print(f"{name}: max |stadapt - open_clip| = {(ours - expected).abs().max().item():.2e}")
    assert (ours - expected).abs().max() <= 1e-3, (ours, expected)
    assert 0.05 < expected.max() < 0.95  # a probability that a wrong scale or bias would move
    single = _open_clip_probabilities(entry, name, LABELS, TEMPLATES[:1])
    assert (single - expected).abs().max() > 1e-3  # the second template counts


def test_cli_writes_predicts_csv_and_refuses_to_replace_it(zoo: dict, tmp_path: Path) -> None:
    from stadapt.inference.predict import predictions_text

    entry, out = zoo[CLIP], tmp_path / "zs.csv"
    args = ["zero-shot", str(entry["video"]), "--backbone", f"clip:{CLIP}", "--weights", str(entry["weights"]),
            "--labels", ",".join(LABELS), "--template", TEMPLATES[0], "-k", "4", "--out", str(out), "-q"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == predictions_text([], ".csv").strip() and len(lines) == 2
    top = dict(pair.rsplit(":", 1) for pair in lines[1].split(",")[5].split("|"))
    expected = _open_clip_probabilities(entry, CLIP, LABELS, TEMPLATES[:1])
    assert max(abs(float(top[label]) - float(p)) for label, p in zip(LABELS, expected, strict=True)) <= 1e-3
    again = run_cli(*args)
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr


def test_a_prepared_list_gets_evals_report(zoo: dict, tmp_path: Path) -> None:
    from stadapt.data.synthetic import SyntheticSpec, write_synthetic
    from stadapt.inference.evaluate import CSV_HEADER

    root = tmp_path / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=1, val_per_class=1, frames=6,
                                        size=32, clutter=2))
    out = tmp_path / "eval.json"
    done = run_cli("zero-shot", "--data", str(root), "--list", "val.txt", "--backbone", f"clip:{CLIP}", "--weights",
                   str(zoo[CLIP]["weights"]), "--labels", "moving right,moving left", "--out", str(out),
                   "--workers", "0", "-q")
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["videos"] == 2 and report["top1"] in (0.0, 0.5, 1.0) and report["checkpoint"] is None
    assert report["zero_shot"]["labels"] == ["moving right", "moving left"]
    assert out.with_suffix(".predictions.csv").read_text().splitlines()[0] == ",".join(CSV_HEADER)


@pytest.mark.parametrize(("args", "expected"), [
    (["--labels", "missing/labels.txt"], "label file missing/labels.txt does not exist"),
    (["--labels", " , "], "no labels given"),
    (["--labels", "a,,b"], "label 2 of 3 is empty"),
    (["--labels", "a,b", "--template", "a video"], "does not hold '{}' exactly once"),
    (["--labels", "a,b", "--backbone", "timm:swin_tiny_test"], "timm:swin_tiny_test is an image model without a text"),
])
def test_refusals_are_one_line(zoo: dict, args: list[str], expected: str) -> None:
    backbone = [] if "--backbone" in args else ["--backbone", f"clip:{CLIP}"]
    done = run_cli("zero-shot", str(zoo[CLIP]["video"]), *backbone, "--weights", str(zoo[CLIP]["weights"]), *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_image_only_weights_file_says_it_holds_no_text_tower(zoo: dict, tmp_path: Path) -> None:
    from stadapt.backbones import load_plugin
    from stadapt.errors import WeightsError

    visual_only = tmp_path / "visual.pt"
    torch.save({k: v for k, v in zoo[CLIP]["model"].state_dict().items() if k.startswith("visual.")}, visual_only)
    with pytest.raises(WeightsError, match="it holds no text tower"):
        load_plugin("clip").text_tower(CLIP, str(visual_only))


def test_a_label_file_from_a_windows_editor_reads_as_its_labels(tmp_path: Path) -> None:
    """A label file with a byte-order mark and CRLF line ends (what Windows editors save) gives the labels
    themselves: the mark must not stick to the first one."""
    from stadapt.inference.zero_shot import read_labels

    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffapplying eye makeup\r\n# a comment\r\n\r\narchery\r\n".encode())
    assert read_labels(str(path)) == ["applying eye makeup", "archery"]
