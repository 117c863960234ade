"""`stadapt methods` on a real backbone's shapes (clip:ViT-B-16 on the meta device: no weights): the counts
are those `stadapt backbones --params` reports (st_adapter: the paper's one 384-wide adapter before each MLP,
about 7.1M, plus the head; linear: the head alone), and the header names the head they include."""

from __future__ import annotations

from helpers import run_cli

from stadapt.model.adapters import AdapterConfig
from stadapt.tools.bench.params import parameter_report
from stadapt.tools.methods import format_methods, method_rows


def test_the_counts_on_vit_b_16_are_the_parameter_reports() -> None:
    rows = {r["name"]: r for r in method_rows("clip:ViT-B-16", num_classes=400)}
    report = parameter_report("clip:ViT-B-16", adapter=AdapterConfig(), num_classes=400)
    parts = report["parts"]
    assert parts["adapters"] == 12 * ((768 * 384 + 384) + (384 * 3 + 384) + (384 * 768 + 768))  # down, conv, up
    assert rows["st_adapter"]["trainable"] == report["with_adapters"]["trainable"] == parts["adapters"] + parts["head"]
    assert rows["linear"]["trainable"] == report["without_adapters"]["trainable"] == parts["head"] == 768 * 400 + 400
    assert rows["full_finetune"]["trainable"] == parts["backbone"] + parts["head"] == rows["linear"]["total"]
    assert rows["linear"]["total"] == rows["partial_finetune"]["total"] == report["without_adapters"]["total"]
    assert rows["st_adapter"]["total"] == report["with_adapters"]["total"]
    assert parts["head"] < rows["partial_finetune"]["trainable"] < rows["st_adapter"]["trainable"]
    text = format_methods(list(rows.values()), "clip:ViT-B-16", 400)
    assert text.splitlines()[0] == \
        "tuning methods (trainable parameters on clip:ViT-B-16 with a 400-class head, default settings):"
    assert "7,417,744" in text and "307,600" in text


def test_the_console_script_names_the_head_its_counts_include() -> None:
    done = run_cli("methods", "--classes", "10")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == \
        "tuning methods (trainable parameters on clip:tiny with a 10-class head, default settings):"
    linear = next(line for line in done.stdout.splitlines() if line.startswith("linear "))
    assert linear.split()[1] == f"{128 * 10 + 10:,}"
