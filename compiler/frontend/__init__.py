"""The ONNX and NIR frontends. Importing the package defers ml_dtypes (frontend/onnx_loading.py)."""

from snnc.compiler.frontend.onnx_loading import defer_ml_dtypes

defer_ml_dtypes()
