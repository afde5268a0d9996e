"""What every SYN-unit timing model returns for one visit: `SynTiming`.

CONTRACT: the FTP model (runtime/timing.py `ftp_syn`, on runtime/tppe.py) and the
baseline dataflows (runtime/baselines.py) each return one SynTiming per SYN visit;
runtime/timing.py `syn_timing` dispatches on the layer's dataflow, and the simulator
and the report read the fields below. A module of its own so that timing.py can
import the baselines without the baselines importing timing.py (no import cycle).
Imports only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SynTiming:
    """What the SYN unit model reports for one visit."""

    cycles: int
    pe_work: int  # compute-bound work: matched positions (FTP) or lane SOPs (t-sequential dataflows)
    stalls: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)  # counted operations for energy
    sram_extra: dict[str, int] = field(default_factory=dict)  # modelled SRAM bytes per operand
    dram_extra: dict[str, int] = field(default_factory=dict)  # modelled DRAM bytes per operand (spills)
