"""`snn-opt`: the xDSL optimiser driver with snnc's dialects and passes.

Same flags as `xdsl-opt` (`-p PASS[,PASS]`, `--print-between-passes`, ...).
Besides the built-ins it registers plugin passes (entry-point group
`snnc.passes`) and classes named with `--load-pass module:Class`.
"""

from __future__ import annotations

import sys

from xdsl.xdsl_opt_main import xDSLOptMain

from snnc.backend.errors import SnncError
from snnc.dialects import get_all_dialects
from snnc.passes import get_all_passes


class SnnOptMain(xDSLOptMain):
    def __init__(self, args=None, load_passes: tuple[str, ...] = ()):
        self._load_passes = load_passes
        super().__init__(args=args)

    def register_all_dialects(self):
        super().register_all_dialects()  # builtin + upstream (+ snnc via entry point)
        for name, factory in get_all_dialects().items():
            if name not in self.ctx.registered_dialect_names:
                self.ctx.register_dialect(name, factory)

    def register_all_passes(self):
        super().register_all_passes()
        for name, factory in get_all_passes(self._load_passes).items():
            self.register_pass(name, factory)


def _split_load_pass(argv: list[str]) -> tuple[list[str], tuple[str, ...]]:
    rest, loads = [], []
    it = iter(argv)
    for arg in it:
        if arg == "--load-pass":
            loads.append(next(it, ""))
        elif arg.startswith("--load-pass="):
            loads.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return rest, tuple(loads)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, loads = _split_load_pass(argv)
    try:
        SnnOptMain(args=args, load_passes=loads).run()
    except SnncError as exc:
        print(f"snn-opt: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
