"""The open-ended part of the plugin contract: names a plugin does not list (`resolve_variant`), search,
full-size conformance checks and parameter counts for any accepted name, and attention for visualize.

The plugin here is a third party's, found through its entry point: it accepts `copy-of-<clip variant>` for
every clip variant without listing them, and refuses `cnn-*` names with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from stadapt.backbones import load_plugin, parse_backbone
from stadapt.errors import UnknownBackboneError

PLUGIN_SOURCE = '''
import dataclasses
from stadapt.backbones.plugin import BackbonePlugin
from stadapt.backbones.registry import load_plugin
from stadapt.errors import UnknownBackboneError

PREFIX = "copy-of-"


class OpenPlugin(BackbonePlugin):
    name = "open"
    test_variant = "copy-of-tiny"
    open_ended = True

    def _clip(self):
        return load_plugin("clip")

    def variants(self):
        info = self._clip().variants()["tiny"]
        # an image-only copy: this plugin keeps the default text_tower (none), as its VariantInfo must say
        return {"copy-of-tiny": dataclasses.replace(info, name="copy-of-tiny", aliases=(), text_tower=False)}

    def resolve_variant(self, name):
        if name.startswith("cnn-"):
            raise UnknownBackboneError(f"'{name}' is a CNN: ST-Adapters need transformer blocks",
                                       "use a ViT: stadapt backbones --search open")
        known = self._clip().variants()
        if name.startswith(PREFIX) and name[len(PREFIX):] in known:
            return dataclasses.replace(known[name[len(PREFIX):]], name=name, aliases=(), text_tower=False)
        return None

    def search(self, pattern):
        import fnmatch
        names = [PREFIX + n for n in self._clip().variants()]
        return sorted(n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower()))

    def build(self, variant, **options):
        return self._clip().build(variant[len(PREFIX):], **options)


plugin = OpenPlugin()
'''


@pytest.fixture()
def open_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin above installed as distribution `open-plugin` (a dist-info with its entry point) on this
    process's path, where run_cli's in-process commands discover it (tests/test_plugins.py covers discovery
    by a new process)."""
    info = tmp_path / "open_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: open-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[stadapt.backbones]\nopen = open_plugin_mod:plugin\n")
    (tmp_path / "open_plugin_mod.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_name_the_plugin_does_not_list_resolves_through_resolve_variant(open_plugin: None) -> None:
    plugin, info = parse_backbone("open:copy-of-ViT-B-16")
    assert info.name == "copy-of-ViT-B-16" and info.image_size == 224
    assert (info.width, info.blocks, info.patch_size, info.prefix_tokens) == (768, 12, 16, 1)
    assert "copy-of-ViT-B-16" not in plugin.variants()


def test_params_and_check_work_for_an_unlisted_name(open_plugin: None) -> None:
    params = run_cli("backbones", "--params", "open:copy-of-ViT-B-16", "--json")
    assert params.returncode == 0, params.stderr
    report = json.loads(params.stdout)
    assert report["with_adapters"] == {"total": 93_217_168, "trainable": 7_417_744}  # the reference's counts
    checked = run_cli("backbones", "--check", "open:copy-of-tiny")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "FAIL" not in checked.stdout and checked.stdout.count("PASS") >= 7


def test_search_lists_accepted_names_and_the_listing_names_open_plugins(open_plugin: None) -> None:
    found = run_cli("backbones", "--search", "vit-l-14")
    assert found.returncode == 0, found.stderr
    # the clip plugin is open-ended too (issue 15): it adds every open_clip ViT-L-14* model
    assert {"clip:ViT-L-14", "clip:ViT-L-14-336", "clip:ViT-L-14-quickgelu", "open:copy-of-ViT-L-14",
            "open:copy-of-ViT-L-14-336"} <= set(found.stdout.split())
    none = run_cli("backbones", "--search", "resnet*")
    assert none.returncode == 1 and "no installed plugin accepts" in none.stderr
    listing = run_cli("backbones", "--json")
    assert {"clip", "open", "timm"} <= set(json.loads(listing.stdout)["open_ended"])
    assert "accept any model their library builds: clip, open, timm" in run_cli("backbones").stdout


def test_bad_names_are_one_line_with_the_closest_names(open_plugin: None) -> None:
    typo = run_cli("backbones", "--params", "open:copy-of-ViT-B-61")
    assert typo.returncode == 2 and "Traceback" not in typo.stderr and len(typo.stderr.splitlines()) == 1
    assert "no variant 'copy-of-ViT-B-61'" in typo.stderr and "'copy-of-ViT-B-16'" in typo.stderr
    assert "--search" in typo.stderr
    cnn = run_cli("backbones", "--params", "open:cnn-resnet50")
    assert cnn.returncode == 2 and "is a CNN" in cnn.stderr and len(cnn.stderr.splitlines()) == 1
    with pytest.raises(UnknownBackboneError, match="did you mean 'copy-of-tiny'"):
        parse_backbone("open:copy-of-tiny2")


def test_typed_variant_fields_of_the_built_in_plugins() -> None:
    for spec, expected in (("clip:ViT-L-14", (1024, 24, 14, 1)), ("swag:ViT-H-14", (1280, 32, 14, 1))):
        info = parse_backbone(spec)[1]
        assert (info.width, info.blocks, info.patch_size, info.prefix_tokens) == expected
    found = load_plugin("clip").search("vit-b*")  # curated and open_clip's (issue 15), no ResNet
    assert {"ViT-B-16", "ViT-B-16-SigLIP2", "ViT-B-32-quickgelu"} <= set(found) and "RN50" not in found


def test_the_suite_holds_a_plugin_to_its_text_tower_flag() -> None:
    """A variant that says it has a text tower, from a plugin that keeps the default hook (none), fails the
    suite's text-tower check, and only that check (as the open plugin above did before it said so)."""
    from stadapt.backbones.plugin import BackbonePlugin
    from stadapt.model.conformance import check_plugin

    clip = load_plugin("clip")

    class Claims(BackbonePlugin):
        name = "claims"
        test_variant = "tiny"

        def variants(self):
            return {"tiny": clip.variants()["tiny"]}  # text_tower=True, as clip's own

        def build(self, variant, **options):
            return clip.build(variant, **options)

    failed = [r for r in check_plugin(Claims()) if not r.ok]
    assert [r.name for r in failed] == ["a text tower exactly where the variant says"]
    assert "without a text tower" in failed[0].detail
