"""User-facing errors shared by the compiler and the runtime.

Every error a user can cause (bad model, bad binary, bad config, bad input)
is a `SnncError`. Its message is one line that names the ONNX node, the binary
field or the config key, what was expected and what was found. The CLI prints
it as `snnc: error: <message>` and exits with status 1, without a traceback.
This module imports only the standard library so the runtime can use it.
"""


class SnncError(Exception):
    """Base class of every user-facing error."""


class FrontendError(SnncError):
    """The ONNX/NIR model cannot be imported (names the node and op)."""


class CompileError(SnncError):
    """A model that imported cannot be lowered (names the layer)."""


class BinaryFormatError(SnncError):
    """prog.bin is malformed: wrong magic/version/checksum, truncated (names the field)."""


class HwConfigError(SnncError):
    """A hardware config file is invalid (names the key)."""


class InputError(SnncError):
    """Runtime inputs (npz) do not match the program's I/O descriptors."""
