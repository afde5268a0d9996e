"""Energy per component from counted accesses and operations (hw config `[energy]`, `[sram]`, `[dram]`).

CONTRACT: `layer_energy(hw, counters, cycles) -> {component: pJ}`
  dram        DRAM bits read x dram.read_fj_per_bit + bits written x write_fj_per_bit
              (STEMS Table 1: 11,000 / 12,000 fJ/bit), incl. partial-sum spills
  sram        global-cache bits read / written x sram.read/write_fj_per_bit (STEMS Table 1:
              130 / 170 fJ/bit for 128 KB banks), incl. the modelled bitmask / psum streams
  pe          accumulations: FTP pseudo-accumulator adds (one per matched position), or
              one per lane SOP for the t-sequential baselines, x energy.sop_fj (STEMS: 70 fJ)
  correction  FTP correction-accumulator adds (one per matched position per silent lane) x sop_fj
  mac         multi-bit-input MACs x energy.mac_fj (STEMS: 160 fJ)
  plif        P-LIF lane updates (neurons x lanes) x sop_fj (assumption: one add+compare per lane
              costs one SOP)
  static      energy.static_power_mw x cycles x ns per cycle (LoAS Table IV: 188.9 mW) -- mW x ns = pJ
"""

from __future__ import annotations

from snnc.backend.hwconfig import HwConfig

COMPONENTS = ("dram", "sram", "pe", "correction", "mac", "plif", "static")


def layer_energy(hw: HwConfig, c, cycles: int) -> dict[str, float]:
    e = hw.energy
    return {
        "dram": (c.dram_read * hw.dram.read_fj_per_bit + c.dram_written * hw.dram.write_fj_per_bit) * 8 / 1e3,
        "sram": (c.sram_read * hw.sram.read_fj_per_bit + c.sram_written * hw.sram.write_fj_per_bit) * 8 / 1e3,
        "pe": c.events.get("pseudo_acc", 0) * e.sop_fj / 1e3,
        "correction": c.events.get("correction_acc", 0) * e.sop_fj / 1e3,
        "mac": c.macs * e.mac_fj / 1e3,
        "plif": c.events.get("plif_lanes", 0) * e.sop_fj / 1e3,
        "static": e.static_power_mw * cycles * hw.cycle_ns,
    }
