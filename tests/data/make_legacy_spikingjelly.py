"""Regenerate the legacy SpikingJelly (0.0.0.0.14, clock_driven) exports used by the tests.

Legacy SpikingJelly cannot be installed next to SpikingJelly 2.0 (same package name), so the
tests use these files. Run in an environment that has it (torch 2.13.0 CPU):
    python -m venv --system-site-packages /tmp/sj014
    /tmp/sj014/bin/pip install --no-deps spikingjelly==0.0.0.0.14
    /tmp/sj014/bin/python tests/data/make_legacy_spikingjelly.py
Writes legacy_sj_<kind>_<reset>.onnx (TorchScript exporter, multi-step nodes, backend='torch',
representable weights) and legacy_sj_input.npz next to this script.
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from spikingjelly.clock_driven import functional, layer, neuron

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from exporters_util import B, T, inputs_for, representable  # noqa: E402

VARIANTS = {"lif_hard": ("lif", 0.0), "if_soft": ("if", None), "plif_hard": ("plif", 0.0)}


def make(kind, v_reset):
    node = {"lif": lambda: neuron.MultiStepLIFNode(tau=2.0, v_reset=v_reset, backend="torch"),
            "if": lambda: neuron.MultiStepIFNode(v_reset=v_reset, backend="torch"),
            "plif": lambda: neuron.MultiStepParametricLIFNode(init_tau=2.0, v_reset=v_reset, backend="torch")}[kind]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.n1 = layer.SeqToANNContainer(torch.nn.Conv2d(1, 4, 3, padding=1)), node()
            self.fc, self.n2 = layer.SeqToANNContainer(torch.nn.Flatten(), torch.nn.Linear(144, 5)), node()

        def forward(self, x):
            functional.reset_net(self)
            return self.n2(self.fc(self.n1(self.conv(x))))

    return Net()


if __name__ == "__main__":
    x = inputs_for((T, B, 1, 6, 6))
    np.savez(HERE / "legacy_sj_input.npz", x=x)
    for name, (kind, v_reset) in VARIANTS.items():
        model = representable(make(kind, v_reset)).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.tensor(x),), str(HERE / f"legacy_sj_{name}.onnx"), dynamo=False,
                              input_names=["x"], output_names=["spk"])
        print("wrote", name)
