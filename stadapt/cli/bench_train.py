"""`stadapt bench-train`: peak training memory and step time of ST-Adapter vs full fine-tuning."""

from __future__ import annotations

from pathlib import Path

import typer

from stadapt.cli.logs import quiet_option


def bench_train(
    backbone: str = typer.Option("clip:ViT-B-16", "--backbone", help="plugin:variant (random weights: no download)."),
    frames: int = typer.Option(8, "--frames", min=1, help="Frames per clip."),
    micro_batch: int = typer.Option(4, "--micro-batch", min=1, help="Clips per forward pass."),
    accumulation: int = typer.Option(1, "--accumulation", min=1,
                                     help="Micro-batches accumulated per optimizer step, as the loop runs them."),
    steps: int = typer.Option(3, "--steps", min=1, help="Measured steps per mode (after one warm-up step)."),
    modes: str = typer.Option(None, "--modes",
                              help="Comma-separated installed tuning methods (`stadapt methods`), each with its "
                                   "default settings. Default: st_adapter,full_finetune (and their ratio)."),
    methods: str = typer.Option(None, "--methods", metavar="A,B,...",
                                help="Compare these installed tuning methods (or all) side by side instead, each "
                                     "against --reference: GFLOPs per clip, step time and peak memory with their "
                                     "ratios to the reference's."),
    reference: str = typer.Option("st_adapter", "--reference", metavar="METHOD",
                                  help="With --methods: the method the ratios are taken to (added when not listed)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16 (autocast), as "
                                                              "train.precision."),
    backbone_storage: str = typer.Option("auto", "--backbone-storage",
                                         help="auto, fp32 or half, as train.backbone_storage; half applies to "
                                              "modes whose backbone is frozen (a trained backbone stays fp32)."),
    checkpointing: str = typer.Option("adapters", "--checkpointing",
                                      help="false, adapters, mlp or true (whole blocks), as train.checkpointing: "
                                           "what is recomputed in the backward pass; the same in every mode."),
    option: list[str] = typer.Option(None, "--option", metavar="KEY=VALUE",
                                     help="A backbone build option (repeatable), as backbone.options in a recipe, "
                                          "e.g. img_size=224 for a timm DINOv2."),
    json_out: Path = typer.Option(None, "--json", help="Also write the report as JSON to this file."),
    quiet: bool = quiet_option(help="Print the table only."),
) -> None:
    """Measure training memory and speed per tuning mode: the training loop's own step (forward, backward,
    accumulation, AdamW step) on random clips (autocast and backbone storage of train.precision=auto and
    train.backbone_storage=auto). On the CPU each mode runs in a fresh process and memory is the peak
    resident-set growth over the built model; on CUDA it is torch.cuda.max_memory_allocated. With --methods,
    the listed methods side by side, each against --reference (st_adapter), with GFLOPs per clip."""
    from stadapt.cli.reports import show_report
    from stadapt.errors import StadaptError
    from stadapt.tools.bench.train_memory import DEFAULT_MODES, bench_train_memory, format_report

    if modes is not None and methods is not None:
        raise StadaptError("--modes and --methods both given", "pass one: --methods compares against --reference")
    chosen = [m.strip() for m in (modes or ",".join(DEFAULT_MODES)).split(",") if m.strip()]
    from stadapt.vocabulary import BACKBONE_STORAGES, CHECKPOINTING_WORDS, PRECISIONS, checkpointing_level

    level = checkpointing_level(checkpointing)
    if level is None:
        raise StadaptError(f"unknown --checkpointing {checkpointing!r}", f"choose {', '.join(CHECKPOINTING_WORDS)}")
    if precision not in PRECISIONS or backbone_storage not in BACKBONE_STORAGES:
        raise StadaptError(f"unknown --precision {precision!r} or --backbone-storage {backbone_storage!r}",
                           f"precision: {', '.join(PRECISIONS)}; backbone storage: {', '.join(BACKBONE_STORAGES)}")
    from stadapt.recipe.overrides import parse_override

    options = {".".join(keys): value for keys, value in (parse_override(text) for text in option or [])}
    say = None if quiet else lambda m: typer.echo(m, err=True)
    settings = dict(micro_batch=micro_batch, accumulation=accumulation, steps=steps, device=device,
                    precision=precision, backbone_storage=backbone_storage, checkpointing=level)
    if methods is not None:
        from stadapt.tools.bench.train_side_by_side import bench_train_methods, format_methods_report

        compared = bench_train_methods(backbone, methods.split(","), reference=reference, frames=frames,
                                       options=options, progress=say, **settings)
        show_report(format_methods_report(compared), compared, json_out, announce=not quiet)
        return
    report = bench_train_memory(backbone, frames=frames, modes=chosen, options=options, progress=say,
                                **settings)
    show_report(format_report(report), report, json_out, announce=not quiet)
