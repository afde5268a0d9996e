"""Hardware config: LoAS defaults, canonical TOML, strict parsing."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from snnc.backend.errors import HwConfigError
from snnc.backend.hwconfig import PRESET_DIR, HwConfig, describe_keys, load_hw


def test_loas_preset_is_the_default_and_matches_table_iii():
    hw = load_hw()
    assert hw == load_hw("loas") == HwConfig()
    assert (hw.compute.num_pes, hw.compute.timestep_lanes, hw.compute.clock_mhz) == (16, 4, 800.0)
    assert (hw.sram.size_bytes, hw.sram.banks, hw.sram.ways) == (256 * 1024, 16, 16)
    assert (hw.dram.bandwidth_gb_s, hw.dram.channels, hw.dram.channel_bits) == (128.0, 16, 64)
    assert hw.dram_bytes_per_cycle == 160.0
    assert load_hw("small-sram").sram.size_bytes == 128 * 1024
    # loas-rounds names one key; everything else is the loas default
    rounds = load_hw("loas-rounds")
    assert rounds.tppe.scheduler == "rounds" and hw.tppe.scheduler == "balanced"
    assert rounds == dataclasses.replace(hw, tppe=dataclasses.replace(hw.tppe, scheduler="rounds"))


def test_every_default_cites_a_source_in_code_and_preset():
    preset = (PRESET_DIR / "loas.toml").read_text()
    for section, key, _default, source in describe_keys():
        assert source.strip(), f"{section}.{key} has no source"
        line = next(l for l in preset.splitlines() if l.startswith(f"{key} ="))
        assert "#" in line, f"preset line for {key} has no citation"


def test_canonical_toml_round_trip():
    hw = HwConfig.from_toml("[compute]\nnum_pes = 32\nclock_mhz = 1000\n[tppe]\nscheduler = \"rounds\"\n")
    text = hw.to_toml()
    assert HwConfig.from_toml(text) == hw
    assert text == HwConfig.from_toml(text).to_toml()
    assert tomllib.loads(text)["compute"]["clock_mhz"] == 1000.0
    assert tomllib.loads(text)["tppe"]["scheduler"] == "rounds" == hw.tppe.scheduler
    sections = [l for l in text.splitlines() if l.startswith("[")]
    assert sections == sorted(sections)


@pytest.mark.parametrize("text,pattern", [
    ("[compute]\nnum_pe = 4\n", r"cfg\.toml: compute\.num_pe: unknown key"),
    ("[cpu]\nx = 1\n", r"cfg\.toml: unknown section \[cpu\]"),
    ("[compute]\nnum_pes = 4.5\n", r"compute\.num_pes: expected an integer"),
    ("[compute]\nnum_pes = \"16\"\n", r"compute\.num_pes: expected int, found str"),
    ("[compute]\nnum_pes = true\n", r"compute\.num_pes: expected int, found bool"),
    ("[compute]\nnum_pes = 0\n", r"compute\.num_pes = 0 is out of range"),
    ("[sram]\nread_fj_per_bit = -1.0\n", r"sram\.read_fj_per_bit = -1\.0 is out of range"),
    ("num_pes = 3\n", r"cfg\.toml: num_pes: top-level keys are not allowed"),
    ("[tppe]\nscheduler = \"greedy\"\n", r"tppe\.scheduler: expected one of 'balanced', 'rounds', found 'greedy'"),
    ("[tppe]\nscheduler = 1\n", r"tppe\.scheduler: expected one of 'balanced', 'rounds', found 1"),
    ("[compute\n", r"cfg\.toml: not valid TOML"),
])
def test_strict_errors_name_key_and_file(text, pattern):
    with pytest.raises(HwConfigError, match=pattern):
        HwConfig.from_toml(text, source="cfg.toml")


def test_load_hw_paths_and_unknown_presets(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[dram]\nlatency_cycles = 10\n")
    assert load_hw(path).dram.latency_cycles == 10
    assert load_hw(str(path)).dram.latency_cycles == 10
    with pytest.raises(HwConfigError, match="unknown hardware preset 'nope'"):
        load_hw("nope")
    with pytest.raises(HwConfigError, match=r"missing\.toml: no such hardware config file"):
        load_hw(tmp_path / "missing.toml")
    path.write_text("[dram]\nlatency_cycle = 10\n")
    with pytest.raises(HwConfigError, match=rf"{path}: dram\.latency_cycle: unknown key"):
        load_hw(path)
