"""Names from a model file, written into one-line messages; notes on stderr.

Contract
    quote(name) -> str: `name` in quotes with newlines, tabs and other control characters
        escaped (Python's repr), so a message naming it stays on one line.
    stderr_note(message): print a frontend note ("note: ...") or warning on stderr, the
        default `warn` of the importers.
"""

from __future__ import annotations

import sys


def quote(name: str) -> str:
    return repr(str(name))


def stderr_note(message: str) -> None:
    prefix = "" if message.startswith("note: ") else "warning: "
    print(f"snnc: {prefix}{message}", file=sys.stderr)
