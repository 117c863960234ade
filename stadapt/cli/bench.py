"""`stadapt bench`: the paper's Table 4: parameters, latency and throughput with and without adapters."""

from __future__ import annotations

from pathlib import Path

import typer


def bench(
    backbone: str = typer.Option("clip:ViT-B-16", "--backbone", help="plugin:variant (random weights: no download)."),
    frames: int = typer.Option(8, "--frames", min=1, help="Frames per clip."),
    bottleneck: int = typer.Option(384, "--bottleneck", min=1, help="Adapter bottleneck width (one adapter per "
                                                                      "block, before the MLP, as for K400)."),
    batch: int = typer.Option(None, "--batch", min=1, help="Clips per forward pass for the throughput. Default: "
                                                           "32 (the paper's) on CUDA, 4 on the CPU."),
    runs: int = typer.Option(None, "--runs", min=1, help="Measured runs per model for latency and for "
                                                         "throughput (medians reported). Default: 30 latency + "
                                                         "10 throughput runs on CUDA, 5 + 3 on the CPU."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 or fp16 autocast on CUDA, fp32 on the "
                                                              "CPU), fp32, bf16 or fp16."),
    compile: bool = typer.Option(False, "--compile", help="Run both models through torch.compile."),
    option: list[str] = typer.Option(None, "--option", metavar="KEY=VALUE",
                                     help="A backbone build option (repeatable), as backbone.options in a recipe, "
                                          "e.g. img_size=224 for a timm DINOv2."),
    methods: str = typer.Option(None, "--methods", metavar="A,B,...",
                                help="Compare these installed tuning methods (or all) side by side instead (`stadapt "
                                     "methods` lists them), each with its default settings, every one against "
                                     "--reference in the same run: parameters, GFLOPs, latency, throughput "
                                     "and its ratio with the spread of the runs. --bottleneck is then unused."),
    reference: str = typer.Option("st_adapter", "--reference", metavar="METHOD",
                                  help="With --methods: the method the ratios are taken to (added when not listed)."),
    merged: bool = typer.Option(False, "--merged", help="With --methods: also measure each method that merges "
                                                        "as `stadapt merge` writes it (a row NAME merged)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the report as JSON to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print the table only."),
) -> None:
    """Measure inference cost with and without ST-Adapters (the paper's Table 4): total parameters,
    GFLOPs per clip (and on CUDA the fraction of the GPU's bf16 peak reached), latency of one clip and
    throughput (videos/s) at --batch, for the frozen backbone + head and for the
    same backbone with adapters, in eval mode on random clips (400 classes). The runs of the two models
    alternate so machine noise hits both alike. On the CPU the defaults keep ViT-B/16 to a few minutes;
    --batch and --runs scale the work. With --methods, the listed tuning methods side by side instead,
    each against --reference (st_adapter) in the same run."""
    from stadapt.cli.reports import show_report
    from stadapt.errors import StadaptError
    from stadapt.tools.bench.inference import bench_inference, format_report
    from stadapt.vocabulary import PRECISIONS

    if precision not in PRECISIONS:
        raise StadaptError(f"unknown --precision {precision!r}", f"choose one of: {', '.join(PRECISIONS)}")
    from stadapt.recipe.overrides import parse_override

    options = {".".join(keys): value for keys, value in (parse_override(text) for text in option or [])}
    say = None if quiet else lambda m: typer.echo(m, err=True)
    if merged and methods is None:
        raise StadaptError("--merged measures merged methods side by side",
                           "add --methods, e.g. --methods zeroi2v,lora")
    if methods is not None:
        from stadapt.tools.bench.side_by_side import bench_methods, format_methods_report

        compared = bench_methods(backbone, methods.split(","), reference=reference, frames=frames, batch=batch,
                                 latency_runs=runs, throughput_runs=runs, device=device, precision=precision,
                                 compile=compile, options=options, merged=merged, progress=say)
        show_report(format_methods_report(compared), compared, json_out, announce=not quiet)
        return
    report = bench_inference(backbone, frames=frames, bottleneck=bottleneck, batch=batch, latency_runs=runs,
                             throughput_runs=runs, device=device, precision=precision, compile=compile,
                             options=options, progress=say)
    show_report(format_report(report), report, json_out, announce=not quiet)
