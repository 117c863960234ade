"""`stadapt bench-data`: clips per second per data-loading worker, seeking decode vs whole-video decode."""

from __future__ import annotations

from pathlib import Path

import typer


def bench_data(
    data: Path = typer.Argument(None, help="A prepared data directory (from `stadapt prepare-data`)."),
    split: str = typer.Option("train", "--split", help="Which list of DATA to read clips from."),
    synthetic: Path = typer.Option(None, "--synthetic", metavar="DIR",
                                   help="Instead of DATA: write (or reuse) K400-like clips in DIR (300 frames, "
                                        "320x240 H.264, 30 fps, a keyframe every 2.5 s) and benchmark those."),
    videos: int = typer.Option(16, "--videos", min=1, help="With --synthetic: how many clips to write."),
    clips: int = typer.Option(64, "--clips", min=1, help="Clips to decode with each decoder."),
    frames: int = typer.Option(8, "--frames", min=1, help="Frames per clip."),
    stride: int = typer.Option(16, "--stride", min=1, help="Frame stride (sampling=stride)."),
    sampling: str = typer.Option("stride", "--sampling", help="stride (K400) or segment (SSv2)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the clip positions."),
    json_out: Path = typer.Option(None, "--json", help="Also write the report as JSON to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure data loading: one process decodes the same clips with stadapt's seeking decoder and with
    the reference implementation's whole-video decode, interleaved, and checks the frames are identical."""
    from stadapt.cli.reports import show_report
    from stadapt.data.bench import bench_decoders, format_report, write_k400_like
    from stadapt.data.prepared import open_prepared
    from stadapt.data.sampling import make_sampler
    from stadapt.errors import StadaptError

    if (data is None) == (synthetic is None):
        raise StadaptError("give either a prepared DATA directory or --synthetic DIR (not both)",
                           "e.g. `stadapt bench-data --synthetic /tmp/k400_like`")
    if synthetic is not None:
        data = write_k400_like(synthetic, videos, progress=not quiet)
    prepared = open_prepared(data)
    entries = prepared.entries(split)
    sampler = make_sampler(sampling, frames, stride)
    report = bench_decoders([e.path for e in entries], lambda n, rng: sampler.train(n, rng), clips=clips, seed=seed,
                            progress=not quiet)
    report["clip"] = f"{frames} frames, {sampling}" + (f" {stride}" if sampling == "stride" else "")
    report["data"] = str(prepared.root)
    show_report(format_report(report), report, json_out, announce=True)
    if not report["identical_frames"]:
        raise StadaptError(f"the decoders disagreed on {report['mismatched_clips']} clips",
                           "please report this with the video files")


def bench_pipeline(
    data: Path = typer.Option(None, "--data", help="A prepared data directory (from `stadapt prepare-data`)."),
    synthetic: Path = typer.Option(None, "--synthetic", metavar="DIR",
                                   help="Instead of --data: write (or reuse) K400-like clips in DIR (320x240 H.264, "
                                        "as `bench-data --synthetic`) and benchmark those."),
    recipe_path: Path = typer.Option(Path("recipes/k400_vitb.yaml"), "--recipe",
                                     help="The recipe whose frames, sampling, augmentation and backbone to use."),
    overrides: list[str] = typer.Option([], "--set", "-o", metavar="KEY=VALUE", help="Recipe override (repeatable)."),
    split: str = typer.Option("train", "--split", help="Which list of the data to read clips from."),
    videos: int = typer.Option(16, "--videos", min=1, help="With --synthetic: how many clips to write."),
    clips: int = typer.Option(32, "--clips", min=1, help="Clips timed on each worker path (whole batches)."),
    workers: int = typer.Option(1, "--workers", min=0, help="DataLoader workers for the loader's clips/s."),
    batch: int = typer.Option(8, "--batch", min=1, help="Clips per batch (worker paths, loader and model)."),
    batches: int = typer.Option(4, "--batches", min=1, help="Batches timed for the loader's clips/s."),
    model_steps: int = typer.Option(2, "--model-steps", min=0,
                                    help="Training steps timed on an in-memory batch (0: skip the model)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]: where the model runs."),
    json_out: Path = typer.Option(None, "--json", help="Also write the report as JSON to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Is training data-bound? Side by side in one run: worker ms per clip, timed in a DataLoader worker as
    training runs it (decode alone, the uint8 worker pipeline, the float one it replaced; wall clock and
    CPU time), clips/s the loader supplies with N workers, and clips/s the
    model consumes from an in-memory batch (random backbone weights: no download)."""
    from stadapt.cli.reports import show_report
    from stadapt.data.bench import write_k400_like
    from stadapt.data.prepared import open_prepared
    from stadapt.errors import StadaptError
    from stadapt.recipe import load_recipe
    from stadapt.runtime.device import resolve_device
    from stadapt.tools.bench.pipeline import bench_pipeline as run_bench
    from stadapt.tools.bench.pipeline import format_report

    if (data is None) == (synthetic is None):
        raise StadaptError("give either --data DIR (prepared) or --synthetic DIR (not both)",
                           "e.g. `stadapt bench-pipeline --synthetic /tmp/k400_like`")
    if synthetic is not None:
        data = write_k400_like(synthetic, videos, progress=not quiet)
    prepared = open_prepared(data)
    recipe = load_recipe(recipe_path, [*overrides, f"data.root={prepared.root}"], check_files=False)
    report = run_bench(recipe, prepared.entries(split), clips=clips, workers=workers, batch=batch, batches=batches,
                       model_steps=model_steps, device=resolve_device(device), num_classes=len(prepared.classes),
                       progress=not quiet)
    report["data"] = str(prepared.root)
    show_report(format_report(report), report, json_out, announce=not quiet)
