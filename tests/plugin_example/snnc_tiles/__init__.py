"""An example snnc plugin that reshapes loop nests (docs/writing-a-pass.md, section 6)."""
