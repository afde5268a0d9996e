"""prune-weights: zero every synapse weight whose magnitude is below a threshold.

CONTRACT
  Requires: snn-level IR (runs before quantise; `ir_level = "snn"`).
  Guarantees: every snn.dense / snn.conv2d weight w with |w| < threshold becomes
    0.0; nothing else changes. The module still verifies. Results change when a
    pruned weight mattered (that is the point: fewer matched operations).
  Options:
    threshold  float, default 0.0 (prune nothing)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from snnc.backend.errors import CompileError
from snnc.dialects.snn import Conv2dOp, DenseOp, tensor_attr, tensor_value


@dataclass
class _PruneDense(RewritePattern):
    threshold: float

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: DenseOp, rewriter: PatternRewriter) -> None:
        _prune(op, self.threshold, rewriter)


@dataclass
class _PruneConv(RewritePattern):
    threshold: float

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: Conv2dOp, rewriter: PatternRewriter) -> None:
        _prune(op, self.threshold, rewriter)


def _prune(op: DenseOp | Conv2dOp, threshold: float, rewriter: PatternRewriter) -> None:
    weight = tensor_value(op.weight)
    small = (np.abs(weight) < threshold) & (weight != 0)
    if not small.any():
        return  # nothing to do: returning without a change lets the walker stop
    op.weight = tensor_attr(np.where(small, 0.0, weight))
    rewriter.has_done_action = True


@dataclass(frozen=True)
class PruneWeights(ModulePass):
    """Zero synapse weights with |w| < threshold (magnitude pruning)."""

    name = "prune-weights"
    ir_level: ClassVar[str] = "snn"  # before quantise and the loop level

    threshold: float = 0.0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.threshold < 0:
            raise CompileError(f"prune-weights: threshold={self.threshold} must be >= 0")
        PatternRewriteWalker(
            _PruneDense(self.threshold), apply_recursively=False
        ).rewrite_module(op)
        PatternRewriteWalker(_PruneConv(self.threshold), apply_recursively=False).rewrite_module(op)
