"""Hardware configuration of the simulated accelerator, strictly parsed from TOML.

CONTRACT:
  * `load_hw(spec)` -> `HwConfig`: `spec` is None (the "loas" preset), a preset
    name (a file `backend/presets/<name>.toml`) or a path to a .toml file.
  * `HwConfig.from_toml(text, source=...)` parses strictly: an unknown section or
    key, a value of the wrong type, or a value out of range raises
    `HwConfigError` naming the key and the source. Missing keys take the
    defaults below (so a file only overrides what it names).
  * `HwConfig.from_mapping(doc, source=...)`: the same on a parsed {section: {key:
    value}} document (snnc sweep validates its grid points through it).
  * `HwConfig.to_toml()` is canonical: sections and keys sorted, every key
    written, deterministic; `from_toml(cfg.to_toml()) == cfg`. The compiler
    embeds this text in prog.bin (section hw_config).
Imports only the standard library and snnc.backend.errors (the runtime uses it).

Every default cites its source: "LoAS" = Yin et al., "LoAS: Fully Temporal-
Parallel Dataflow for Dual-Sparse Spiking Neural Networks", MICRO 2024
(§V text, Table III configuration, Table IV power); "STEMS" = the STEMS paper's
Table 1 (energy per bit / per operation). "assumption" marks values the papers
do not give; docs/isa.md lists them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from snnc.backend.errors import HwConfigError

PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_PRESET = "loas"


def _param(default, source: str, lo=None, hi=None, choices: tuple[str, ...] | None = None):
    """A config key: its default, the citation for it, and its valid range (numbers)
    or its valid values (strings)."""
    return field(default=default, metadata={"source": source, "min": lo, "max": hi, "choices": choices})


TPPE_SCHEDULERS = ("balanced", "rounds")  # tppe.scheduler (runtime/timing.py ftp_syn)


@dataclass(frozen=True)
class ComputeConfig:
    num_pes: int = _param(16, "LoAS Table III: 16 TPPEs", 1, 4096)
    timestep_lanes: int = _param(4, "LoAS §V: configured for SNNs with 4 timesteps (4 correction accumulators)", 1, 64)
    clock_mhz: float = _param(800.0, "LoAS §V: synthesised at 800 MHz", 1.0, 10000.0)
    weight_bits: int = _param(8, "LoAS Table III: 8-bit weight", 1, 16)
    membrane_bits: int = _param(32, "assumption: 32-bit membrane/accumulator registers (LoAS gives 12/10-bit accumulators only)", 8, 32)
    syn_overhead_cycles: int = _param(2, "assumption: pipeline fill per SYN (scheduler dispatch + first fiber-B broadcast from the global cache); later fiber-B fetches overlap correction (LoAS §IV-C, Fig. 10); the laggy prefix-sum is modelled per task in runtime/tppe.py", 0, 1_000_000)
    lif_overhead_cycles: int = _param(1, "assumption: one cycle to issue a P-LIF visit (LoAS: P-LIF fires all lanes in one operation)", 0, 1_000_000)
    vector_overhead_cycles: int = _param(1, "assumption: one cycle to issue PACK/POOL/ADD", 0, 1_000_000)


@dataclass(frozen=True)
class TppeConfig:
    bitmask_buffer_bits: int = _param(128, "LoAS §V: 2 128-bit buffers for holding bitmasks", 1, 1 << 20)
    laggy_prefix_adders: int = _param(16, "LoAS §V: laggy prefix-sum circuit contains 16 adders", 1, 4096)
    fifo_depth: int = _param(8, "LoAS §V: 2 depth-8 FIFOs for correction", 2, 4096)
    weight_buffer_bytes: int = _param(128, "LoAS §V: 128-byte buffer for the non-zero weights of fiber-B", 1, 1 << 20)
    pseudo_acc_bits: int = _param(12, "LoAS §V: 1 12-bit pseudo-accumulator", 1, 64)
    correction_acc_bits: int = _param(10, "LoAS §V: 4 10-bit correction accumulators", 1, 64)
    scheduler: str = _param(
        "balanced", "assumption: LoAS §IV has 'a scheduler that distributes workloads across the TPPEs' but gives "
        "no policy. balanced: a visit of up to 2 positions per TPPE is cut into one contiguous run of output "
        "neurons per TPPE of about equal estimated work (bm-A popcount x fiber-B non-zeros), a larger one is dealt "
        "in rounds in decreasing order of bm-A popcount; rounds: one position per TPPE in position order, rounds "
        "that last their slowest TPPE (docs/isa.md, runtime/timing.py ftp_syn)",
        choices=TPPE_SCHEDULERS)


@dataclass(frozen=True)
class SramConfig:
    size_bytes: int = _param(256 * 1024, "LoAS Table III: global cache 256 KB", 1024, 1 << 24)
    banks: int = _param(16, "LoAS Table III: 16 banks", 1, 4096)
    ways: int = _param(16, "LoAS Table III: 16-way associative", 1, 4096)
    read_fj_per_bit: float = _param(130.0, "STEMS Table 1: SRAM (128 kB/bank) read ~130 fJ/bit", 0.0, 1e6)
    write_fj_per_bit: float = _param(170.0, "STEMS Table 1: SRAM (128 kB/bank) write ~170 fJ/bit", 0.0, 1e6)
    port_bytes: int = _param(16, "assumption: 128-bit port per bank (the width of a TPPE bitmask buffer, LoAS §V); consecutive port_bytes blocks interleave across banks", 1, 4096)
    line_bytes: int = _param(64, "assumption: 64 B cache lines for hit/miss counting (FiberCache-style lines, LoAS §IV-D)", 1, 1 << 20)
    psum_share: float = _param(0.5, "assumption: baselines keep partial sums in one half of the double-buffered global cache (LoAS §V: 256 KB double-buffered)", 0.0, 1.0)


@dataclass(frozen=True)
class DramConfig:
    bandwidth_gb_s: float = _param(128.0, "LoAS Table III: 128 GB/s main memory (HBM)", 0.001, 1e6)
    size_bytes: int = _param(1 << 30, "assumption: 1 GiB of DRAM (LoAS gives the bandwidth only); the largest dram_size a program may declare, which bounds every tensor and feature map (docs/isa.md \"Limits\")", 1 << 16, 1 << 32)
    channels: int = _param(16, "LoAS Table III: 16 HBM channels", 1, 4096)
    channel_bits: int = _param(64, "LoAS Table III: 64-bit HBM channels", 8, 4096)
    interleave_bytes: int = _param(32, "assumption: one HBM burst (4 beats x 64-bit channel = 32 B); consecutive bursts go to consecutive channels", 1, 1 << 20)
    latency_cycles: int = _param(64, "assumption: ~80 ns HBM access latency = 64 cycles at 800 MHz, paid once per DMA instruction", 0, 1_000_000)
    read_fj_per_bit: float = _param(11000.0, "STEMS Table 1: DRAM read 11,000 fJ/bit", 0.0, 1e7)
    write_fj_per_bit: float = _param(12000.0, "STEMS Table 1: DRAM write 12,000 fJ/bit", 0.0, 1e7)


@dataclass(frozen=True)
class EnergyConfig:
    sop_fj: float = _param(70.0, "STEMS Table 1: synaptic operation (SOP) 70 fJ", 0.0, 1e7)
    mac_fj: float = _param(160.0, "STEMS Table 1: multiply-accumulate (MAC) 160 fJ", 0.0, 1e7)
    static_power_mw: float = _param(188.9, "LoAS Table IV: total on-chip power 188.9 mW, charged per cycle of run time (upper bound for leakage)", 0.0, 1e6)


@dataclass(frozen=True)
class HwConfig:
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    tppe: TppeConfig = field(default_factory=TppeConfig)
    sram: SramConfig = field(default_factory=SramConfig)
    dram: DramConfig = field(default_factory=DramConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)

    # ---- derived quantities (not config keys) ----
    @property
    def dram_bytes_per_cycle(self) -> float:
        """DRAM bytes moved per accelerator clock: GB/s / clock (128 GB/s / 800 MHz = 160)."""
        return self.dram.bandwidth_gb_s * 1e9 / (self.compute.clock_mhz * 1e6)

    @property
    def cycle_ns(self) -> float:
        return 1e3 / self.compute.clock_mhz

    def summary(self) -> str:
        return (f"{self.compute.num_pes} PEs x {self.compute.timestep_lanes} lanes @ "
                f"{self.compute.clock_mhz:g} MHz, SRAM {self.sram.size_bytes // 1024} KB, "
                f"DRAM {self.dram.bandwidth_gb_s:g} GB/s")

    # ---- TOML ----
    def to_toml(self) -> str:
        lines: list[str] = []
        for sec in sorted(f.name for f in dataclasses.fields(self)):
            section = getattr(self, sec)
            if lines:
                lines.append("")
            lines.append(f"[{sec}]")
            for key in sorted(f.name for f in dataclasses.fields(section)):
                lines.append(f"{key} = {_toml_value(getattr(section, key))}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> HwConfig:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise HwConfigError(f"{source}: not valid TOML: {exc}") from None
        return cls.from_mapping(doc, source)

    @classmethod
    def from_mapping(cls, doc: dict, source: str = "<mapping>") -> HwConfig:
        """`from_toml` on an already parsed document {section: {key: value}}, as strict."""
        sections = {f.name: f for f in dataclasses.fields(cls)}
        built = {}
        for sec_name, table in doc.items():
            if not isinstance(table, dict):
                raise HwConfigError(f"{source}: {sec_name}: top-level keys are not allowed, expected a [section]")
            if sec_name not in sections:
                raise HwConfigError(f"{source}: unknown section [{sec_name}] (known: {', '.join(sorted(sections))})")
            built[sec_name] = _parse_section(sections[sec_name].default_factory, sec_name, table, source)
        return cls(**built)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest round-trip representation; always has '.' or 'e'
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string (the choices are plain ASCII words)
    raise TypeError(value)


def _parse_section(section_cls, sec_name: str, table: dict, source: str):
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    values = {}
    for key, value in table.items():
        where = f"{source}: {sec_name}.{key}"
        if key not in fields:
            raise HwConfigError(f"{where}: unknown key (known in [{sec_name}]: {', '.join(sorted(fields))})")
        f = fields[key]
        want = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str}[f.type]
        if want is str:
            choices = f.metadata["choices"]
            if not isinstance(value, str) or value not in choices:
                raise HwConfigError(f"{where}: expected one of {', '.join(map(repr, choices))}, found {value!r}")
            values[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HwConfigError(f"{where}: expected {want.__name__}, found {type(value).__name__} {value!r}")
        if want is int and not isinstance(value, int):
            raise HwConfigError(f"{where}: expected an integer, found {value!r}")
        if want is float:
            value = float(value)
            if not math.isfinite(value):
                raise HwConfigError(f"{where}: expected a finite number, found {value!r}")
        lo, hi = f.metadata["min"], f.metadata["max"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise HwConfigError(f"{where} = {value!r} is out of range [{lo}, {hi}]")
        values[key] = value
    return section_cls(**values)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_hw(spec: str | Path | None = None) -> HwConfig:
    """A preset name ("loas" when None) or a path to a .toml file."""
    if spec is None:
        spec = DEFAULT_PRESET
    path = Path(spec)
    if isinstance(spec, str) and not spec.endswith(".toml") and "/" not in spec and "\\" not in spec:
        path = PRESET_DIR / f"{spec}.toml"
        if not path.is_file():
            raise HwConfigError(f"unknown hardware preset {spec!r} (presets: {', '.join(preset_names())}; or give a .toml path)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HwConfigError(f"{path}: no such hardware config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HwConfigError(f"{path}: cannot read hardware config ({exc})") from None
    return HwConfig.from_toml(text, source=str(path))


def describe_keys() -> list[tuple[str, str, object, str]]:
    """(section, key, default, source) for every key; used by docs/isa.md."""
    out = []
    defaults = HwConfig()
    for sec in dataclasses.fields(HwConfig):
        for f in dataclasses.fields(getattr(defaults, sec.name)):
            out.append((sec.name, f.name, getattr(getattr(defaults, sec.name), f.name), f.metadata["source"]))
    return out
