"""`stadapt backbones`: installed backbone plugins, their variants and distributions."""

from __future__ import annotations

import json

import typer


def backbones(
    check: str = typer.Option(None, "--check", metavar="PLUGIN[:VARIANT]|all",
                              help="Run the conformance suite on a plugin's test variant, or on one variant "
                                   "(any name the plugin accepts, full size, random weights)."),
    search: str = typer.Option(None, "--search", metavar="PATTERN",
                               help="List the backbones the installed plugins accept that match PATTERN "
                                    "(shell-style, e.g. 'vit_*dinov2*'; a plain word matches anywhere)."),
    params: str = typer.Option(None, "--params", metavar="PLUGIN:VARIANT",
                               help="Count a backbone's parameters with and without ST-Adapters."),
    bottleneck: int = typer.Option(384, "--bottleneck", min=1, help="With --params: adapter bottleneck."),
    bottleneck_ratio: float = typer.Option(None, "--bottleneck-ratio", min=0.0,
                                           help="With --params: bottleneck = ratio x token width, per block "
                                                "(for Swin's stages; overrides --bottleneck)."),
    positions: str = typer.Option("pre_mlp", "--positions", help="With --params: pre_mlp, pre_attn or both, "
                                                                  "comma-separated."),
    classes: int = typer.Option(400, "--classes", min=1, help="With --params: classifier outputs."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List installed backbone plugins and their variants, check a plugin's conformance, or count a
    backbone's parameters with and without adapters (`--params`, instant: no weights are allocated)."""
    from stadapt.backbones.registry import installed_plugins, load_plugin
    from stadapt.errors import StadaptError

    if params is not None:
        _params(params, bottleneck, bottleneck_ratio, positions, classes, as_json)
        return
    entries = installed_plugins()
    if check is not None:
        _check(entries, check)
        return
    if search is not None:
        _search(entries, search, as_json)
        return
    rows, broken, open_ended = [], [], []
    for entry in entries:
        try:
            plugin = load_plugin(entry.name)
            variants = plugin.variants()
        except StadaptError as exc:
            broken.append(f"{entry.name}: {exc}")
            continue
        if plugin.open_ended:
            open_ended.append(entry.name)
        for info in variants.values():
            rows.append({
                "backbone": f"{entry.name}:{info.name}",
                "family": info.family or entry.name,
                "input": info.image_size,
                "text_tower": info.text_tower,
                "distribution": entry.distribution,
                "aliases": list(info.aliases),
                **({"pretrained_tags": list(plugin.pretrained_tags(info.name))} if as_json else {}),
                "description": info.description,
            })
    if as_json:
        typer.echo(json.dumps({"backbones": rows, "open_ended": open_ended, "broken": broken}, indent=2))
    else:
        _table(rows)
        if open_ended:
            typer.echo(f"Plugins that accept any model their library builds: {', '.join(open_ended)} "
                       "(stadapt backbones --search PATTERN lists them).")
        for problem in broken:
            typer.echo(f"stadapt: error: {problem}", err=True)
    if broken:
        raise typer.Exit(1)


def _table(rows: list[dict]) -> None:
    if not rows:
        typer.echo("no backbone plugins installed (the `stadapt.backbones` entry-point group is empty)")
        return
    headers = ("BACKBONE", "FAMILY", "INPUT", "TEXT", "DISTRIBUTION", "DESCRIPTION")
    cells = [(r["backbone"], r["family"], f"{r['input']}px", "yes" if r["text_tower"] else "-", r["distribution"],
              r["description"] + (f" [aka {', '.join(r['aliases'])}]" if r["aliases"] else "")) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers[:-1])]
    for line in (headers, *cells):
        typer.echo("  ".join(v.ljust(w) for v, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1])
    typer.echo("\nUse as --backbone PLUGIN:VARIANT; weights from a local file, or a pretrained tag where a "
               "network exists. TEXT: the model has a text tower (stadapt zero-shot, text heads).")


def _params(spec: str, bottleneck: int, ratio: float | None, positions: str, classes: int, as_json: bool) -> None:
    from stadapt.errors import StadaptError
    from stadapt.model.adapters import AdapterConfig
    from stadapt.tools.bench.params import format_parameter_report, parameter_report

    try:
        adapter = AdapterConfig(bottleneck=bottleneck, bottleneck_ratio=ratio,
                                positions=tuple(p.strip() for p in positions.split(",") if p.strip()))
    except ValueError as exc:
        raise StadaptError(str(exc), "e.g. --positions pre_attn,pre_mlp --bottleneck-ratio 0.5") from exc
    report = parameter_report(spec, adapter=adapter, num_classes=classes)
    typer.echo(json.dumps(report, indent=2) if as_json else format_parameter_report(report))


def _search(entries: list, pattern: str, as_json: bool) -> None:
    """Every accepted name matching `pattern`, one `plugin:name` a line (or JSON)."""
    from stadapt.backbones.registry import load_plugin

    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    found = [f"{entry.name}:{name}" for entry in entries for name in load_plugin(entry.name).search(pattern)]
    if as_json:
        typer.echo(json.dumps({"pattern": pattern, "backbones": found}, indent=2))
        return
    for name in found:
        typer.echo(name)
    if not found:
        typer.echo(f"no installed plugin accepts a backbone matching '{pattern}'", err=True)
        raise typer.Exit(1)


def _check(entries: list, which: str) -> None:
    from stadapt.backbones.registry import load_plugin, resolve_variant
    from stadapt.errors import StadaptError
    from stadapt.model.conformance import check_plugin

    name, colon, variant = which.partition(":")
    if colon and not variant:
        raise StadaptError(f"--check {which} names no variant",
                           f"write --check {name} for its test variant, or --check {name}:VARIANT")
    if variant:  # a name the plugin does not take is the user's mistake, refused as --params refuses it
        resolve_variant(load_plugin(name), variant)
    names = [e.name for e in entries] if which == "all" else [name]
    failures = 0
    for name in names:
        plugin = load_plugin(name)
        for result in check_plugin(plugin, variant or None):
            failures += not result.ok
            mark = "PASS" if result.ok else "FAIL"
            detail = f": {result.detail}" if result.detail else ""
            typer.echo(f"{mark}  {name}  {result.name}{detail}")
    if failures:
        typer.echo(f"{failures} check(s) failed", err=True)
        raise typer.Exit(1)
