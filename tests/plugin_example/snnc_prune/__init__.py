"""An example snnc plugin (docs/writing-a-pass.md)."""
