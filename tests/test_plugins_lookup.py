"""backend/plugins.py: entry points as importlib.metadata gives them, from a skim of the
installed metadata when no package declares the group, and again after an install."""

from __future__ import annotations

import importlib.metadata

import snnc.backend.plugins as plugins


def _agree(group: str) -> list:
    got = list(plugins.entry_points(group))
    assert got == list(importlib.metadata.entry_points(group=group)), group
    return got


def test_every_declared_group_reads_as_importlib_metadata_reads_it():
    groups = plugins._declared_groups()
    assert groups is not None and "console_scripts" in groups  # (pip, pytest, ... declare scripts)
    for group in sorted(groups) + ["snnc.passes", "snnc.no-such-group"]:
        _agree(group)


def test_a_plugin_installed_meanwhile_is_found(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _agree("snnc.test-plugins") == []
    info = tmp_path / "snnc_fake_plugin-1.0.dist-info"  # what pip writes for a package's entry points
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: snnc-fake-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[snnc.test-plugins]\nfake = snnc_fake_plugin:Fake\n")
    (found,) = _agree("snnc.test-plugins")
    assert (found.name, found.value) == ("fake", "snnc_fake_plugin:Fake")
    assert _agree("snnc.passes") == []


def test_a_zip_on_the_path_is_left_to_importlib_metadata(tmp_path, monkeypatch):
    archive = tmp_path / "plugins.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip archive
    monkeypatch.syspath_prepend(str(archive))
    assert plugins._declared_groups() is None
    _agree("snnc.passes")
