"""Plugin discovery through entry points, the conformance suite, and plugin errors."""

from pathlib import Path

import pytest
from helpers import run_cli

from stadapt.backbones import installed_plugins, load_plugin, parse_backbone
from stadapt.errors import PluginError, UnknownBackboneError
from stadapt.model.conformance import assert_conformant, check_plugin


def _fake_distribution(root: Path, dist: str, version: str, entry: str, module: str = "", source: str = "") -> None:
    info = root / f"{dist}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[stadapt.backbones]\n{entry}\n")
    if module:
        (root / f"{module}.py").write_text(source)


def test_clip_plugin_passes_the_conformance_suite():
    results = assert_conformant(load_plugin("clip"))
    assert len(results) >= 7 and all(r.ok for r in results)


def test_built_in_clip_is_found_through_its_entry_point():
    [clip] = [e for e in installed_plugins() if e.name == "clip"]
    assert clip.target == "stadapt_clip:plugin" and clip.distribution.startswith("stadapt ")


def test_third_party_plugin_is_discovered_from_package_metadata_and_conforms(example_plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(example_plugin))
    entries = {e.name: e for e in installed_plugins()}
    assert entries["regvit"].distribution == "stadapt-plugin-example 0.1.0"
    plugin, variant = parse_backbone("regvit:TINY")
    assert variant.name == "tiny" and type(plugin).__module__ == "stadapt_regvit.plugin"
    assert parse_backbone("regvit:vit-s-16-reg4")[1].name == "small"
    assert_conformant(plugin)  # two prefix tokens (CLS + a register), mean-pooled features
    assert_conformant(plugin, "small")


def test_conformance_catches_a_wrong_decomposition(example_plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(example_plugin))
    from stadapt_regvit.backbone import RegViTBackbone

    monkeypatch.setattr(RegViTBackbone, "video_norm", lambda self, f: f)  # forgets the final norm
    failed = [r.name for r in check_plugin(load_plugin("regvit")) if not r.ok]
    assert failed == ["decomposition matches the model's own forward"]


def test_cli_lists_third_party_plugins_with_their_distribution(example_plugin):
    result = run_cli("backbones", env={"PYTHONPATH": str(example_plugin)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("regvit:tiny") and "stadapt-plugin-example 0.1.0" in line for line in lines)
    assert any(line.startswith("clip:ViT-B-16") and "stadapt 0.1.0" in line for line in lines)
    checked = run_cli("backbones", "--check", "regvit", env={"PYTHONPATH": str(example_plugin)})
    assert checked.returncode == 0 and "FAIL" not in checked.stdout and checked.stdout.count("PASS") >= 7


def test_two_plugins_with_one_name_is_an_error_naming_both(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "other_clip", "1.0", "clip = other_clip_mod:plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        installed_plugins()
    message = str(info.value)
    assert "two backbone plugins are named 'clip'" in message
    assert "other_clip 1.0" in message and "stadapt 0.1.0" in message


def test_a_plugin_that_fails_to_import_names_its_distribution(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "broken_vit", "2.1", "broken = broken_mod:plugin", "broken_mod",
                       "import not_a_real_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"'broken'.*broken_vit 2\.1.*not_a_real_module_xyz"):
        load_plugin("broken")
    result = run_cli("backbones", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1 and "clip:ViT-B-16" in result.stdout
    assert "broken_vit 2.1" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("clop:ViT-B-16", r"unknown backbone plugin 'clop'.*did you mean 'clip'"),
        ("clip:ViT-B-61", r"no variant 'ViT-B-61'.*did you mean 'ViT-B-16'"),
        ("ViT-B-16", r"not of the form PLUGIN:VARIANT"),
    ],
)
def test_unknown_backbones_name_what_exists(spec, pattern):
    with pytest.raises(UnknownBackboneError, match=pattern):
        parse_backbone(spec)


def test_variant_aliases_resolve():
    assert parse_backbone("clip:ViT-L/14@336px")[1].name == "ViT-L-14-336"
    assert parse_backbone("clip:vit-b/16")[1].name == "ViT-B-16"
