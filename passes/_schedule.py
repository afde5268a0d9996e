"""Helpers shared by the scheduling passes (loop-reorder, time-batch, layer-fuse).

They read and update the `#snn.schedule` attribute (dialects/snn.py,
`ScheduleAttr`) on every synapse op (`snn.dense`, `snn.conv2d`).
"""

from __future__ import annotations

from collections.abc import Iterator

from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import VerifyException

from snnc.backend.errors import CompileError
from snnc.dialects.snn import SCHEDULE_ATTR, Conv2dOp, DenseOp, ScheduleAttr, schedule_of


def synapse_ops(module: ModuleOp) -> Iterator[DenseOp | Conv2dOp]:
    for op in module.walk():
        if isinstance(op, DenseOp | Conv2dOp):
            yield op


def update_schedule(op: DenseOp | Conv2dOp, pass_name: str, **changes) -> None:
    """Set fields of the op's schedule (creating the default FTP schedule first)."""
    current = schedule_of(op) or ScheduleAttr()
    try:
        op.attributes[SCHEDULE_ATTR] = current.replace(**changes)
    except VerifyException as exc:
        where = op.source.data if op.source is not None else op.name
        raise CompileError(f"{pass_name}: {op.name} '{where}': {exc}") from None
