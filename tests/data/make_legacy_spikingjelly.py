"""Regenerate the legacy SpikingJelly (0.0.0.0.14) exports used by the tests.

Legacy SpikingJelly cannot be installed next to SpikingJelly 2.0 (same package name), so the
tests use these files. Install it into a folder of its own and run this script with that
folder first on the path (torch 2.13.0 CPU):
    pip install --no-deps --target /tmp/sj014 spikingjelly==0.0.0.0.14
    PYTHONPATH=/tmp/sj014 python tests/data/make_legacy_spikingjelly.py
Every model uses the TorchScript exporter (dynamo=False) and representable weights unless
named *_float. It writes, next to this script:
  legacy_sj_<kind>_<reset>.onnx   clock_driven MultiStep*Node (backend='torch'): the Python
                                  loop over T is traced, so the graph is unrolled;
                                  input legacy_sj_input.npz, [4, 2, 1, 6, 6]
  legacy_sj_loop_<kind>_<reset>.onnx
                                  activation_based LIFNode / IFNode with step_mode='m': in eval
                                  mode their multi-step forward is a torch.jit.script function, so
                                  the export is an ONNX Loop over T that writes each step's spike
                                  into a [T, ...] buffer (ScatterND) and reads buf[t] for its shape;
                                  Conv -> LIF -> Flatten -> Linear -> LIF on input
                                  legacy_sj_loop_input.npz, [4, 2, 1, 8, 8]
  legacy_sj_loop_lif_soft_vfinal.onnx
                                  the same, also returning the last neuron's final membrane
                                  (the Loop's final state) as output 'v'
  legacy_sj_loop_lif_hard_float.onnx
                                  float weights (torch's initialisation, seed 0)
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from exporters_util import B, T, inputs_for, representable  # noqa: E402

# (SpikingJelly 2.0 has no clock_driven package: this import fails unless the legacy version is first on the path)
from spikingjelly.activation_based import functional as ab_functional  # noqa: E402
from spikingjelly.activation_based import layer as ab_layer  # noqa: E402
from spikingjelly.activation_based import neuron as ab_neuron  # noqa: E402
from spikingjelly.clock_driven import functional, layer, neuron  # noqa: E402

CLOCK_DRIVEN = {"lif_hard": ("lif", 0.0), "if_soft": ("if", None), "plif_hard": ("plif", 0.0)}
LOOP = {"lif_hard": ("lif", 0.0), "lif_soft": ("lif", None), "if_hard": ("if", 0.0), "if_soft": ("if", None)}


def clock_driven_net(kind, v_reset):
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


def loop_net(kind, v_reset, return_v=False):
    def node():
        if kind == "lif":
            return ab_neuron.LIFNode(tau=2.0, v_reset=v_reset, step_mode="m")
        return ab_neuron.IFNode(v_reset=v_reset, step_mode="m")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.n1 = ab_layer.Conv2d(1, 4, 3, padding=1, step_mode="m"), node()
            self.flat, self.fc = ab_layer.Flatten(step_mode="m"), ab_layer.Linear(4 * 8 * 8, 5, step_mode="m")
            self.n2 = node()

        def forward(self, x):
            ab_functional.reset_net(self)
            spikes = self.n2(self.fc(self.flat(self.n1(self.conv(x)))))
            return (spikes, self.n2.v) if return_v else spikes

    return Net()


def export(model, x, name, outputs=("spk",)):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.tensor(x),), str(HERE / name), dynamo=False,
                          input_names=["x"], output_names=list(outputs))
    print("wrote", name)


if __name__ == "__main__":
    x = inputs_for((T, B, 1, 6, 6))
    np.savez(HERE / "legacy_sj_input.npz", x=x)
    for name, (kind, v_reset) in CLOCK_DRIVEN.items():
        export(representable(clock_driven_net(kind, v_reset)), x, f"legacy_sj_{name}.onnx")
    x = inputs_for((T, B, 1, 8, 8))
    np.savez(HERE / "legacy_sj_loop_input.npz", x=x)
    for name, (kind, v_reset) in LOOP.items():
        export(representable(loop_net(kind, v_reset)), x, f"legacy_sj_loop_{name}.onnx")
    export(representable(loop_net("lif", None, return_v=True)), x, "legacy_sj_loop_lif_soft_vfinal.onnx", ("spk", "v"))
    torch.manual_seed(0)
    export(loop_net("lif", 0.0), x, "legacy_sj_loop_lif_hard_float.onnx")
