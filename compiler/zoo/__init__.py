"""The snnc model zoo: `build(name, ...)` -> (canonical ONNX model, inputs); see models.py."""

from snnc.compiler.zoo.models import ZOO, ZooModel, build, build_network, save_inputs

__all__ = ["ZOO", "ZooModel", "build", "build_network", "save_inputs"]
