"""The snnc model zoo: `build(name, ...)` -> (canonical ONNX model, inputs); see models.py."""

from snnc.compiler.zoo.models import DATASET_LABELS, ZOO, ZooModel, build, build_dataset, build_network, save_inputs

__all__ = ["DATASET_LABELS", "ZOO", "ZooModel", "build", "build_dataset", "build_network", "save_inputs"]
