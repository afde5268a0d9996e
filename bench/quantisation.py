"""Spike agreement of real float exports at 8 and 16-bit weights, per quantisation method.

Two models are built with the real libraries, trained briefly on synthetic digits (glyphs
0-9 that matplotlib renders, shifted, rotated, scaled and noised: no download) so that
their weights are the float weights of a trained net, and exported to ONNX:

  csnn    snnTorch tutorial 6: Conv(1,12,5) -> MaxPool -> Leaky -> Conv(12,64,5) -> MaxPool
          -> Leaky -> Linear(1024,10) -> Leaky(output=True), beta 0.5, static image for T = 25
          (trained at T = 6), outputs spikes and the last membrane
  sj-lif  SpikingJelly 2.0 multi-step LIFNode (tau 2, hard reset): Conv(1,8,3) -> LIF -> MaxPool
          -> Conv(8,16,3) -> LIF -> MaxPool -> Linear(784,10) -> LIF, T = 4, outputs spikes

Each is compiled, simulated (snnc) and run by onnxruntime on two test inputs, per method:

  layer            one power-of-two weight scale per layer (--weight-scales layer)
  channel          a power-of-two scale per output channel where the layer's weights round
                   (the default; layers whose current is stored keep one scale per map)
  channel+input    channel, and the input's fixed-point scale calibrated on the given input
                   (--input-frac-bits from passes/numerics.input_frac_for)

and prints the output-spike agreement with onnxruntime and whether the predicted class (the
output neurons with the most spikes) is the same, at 8 and 16-bit weights. Every figure is
measured in the run that prints it. Needs torch, snntorch, spikingjelly (the test extra)
and matplotlib.

    python bench/quantisation.py [--steps 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

METHODS = {
    "layer": dict(weight_scales="layer"),
    "channel": dict(weight_scales="channel"),
    "channel+input": dict(weight_scales="channel", calibrate_input=True),
}
BITS = (8, 16)


# ------------------------------------------------------------------------------ data


def glyphs(size: int = 28) -> np.ndarray:
    """The digits 0-9 drawn by matplotlib, white on black, [10, size, size] in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy import ndimage

    out = []
    for digit in range(10):
        fig = Figure(figsize=(1, 1), dpi=4 * size)
        canvas = FigureCanvasAgg(fig)
        fig.patch.set_facecolor("black")
        fig.text(0.5, 0.5, str(digit), fontsize=64, ha="center", va="center", color="white")
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[..., 0].astype(np.float32) / 255
        out.append(ndimage.zoom(image, size / image.shape[0], order=1))
    return np.stack(out)


def digits(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """n jittered, noisy digit images [n, 1, size, size] in [0, 1] and their labels."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shapes = glyphs(size)
    labels = rng.integers(0, 10, n)
    images = np.empty((n, 1, size, size), np.float32)
    centre = np.array([size / 2, size / 2])
    for i, label in enumerate(labels):
        angle = np.radians(rng.uniform(-15, 15))
        matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / rng.uniform(0.8, 1.1)
        offset = centre - matrix @ (centre + rng.uniform(-3, 3, 2))
        image = ndimage.affine_transform(shapes[label], matrix, offset=offset, order=1)
        images[i, 0] = np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1)
    return images, labels


# ---------------------------------------------------------------------------- models


def csnn(steps: int, images: np.ndarray, labels: np.ndarray):
    """snnTorch tutorial 6's CSNN, trained for `steps` batches; forward(x [T, B, 1, 28, 28])
    -> (spikes [T, B, 10], membrane [T, B, 10])."""
    import snntorch as snn
    import torch
    from snntorch import functional as SF
    from snntorch import surrogate, utils

    grad = surrogate.fast_sigmoid(slope=25)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 12, 5), torch.nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        torch.nn.Conv2d(12, 64, 5), torch.nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        torch.nn.Flatten(), torch.nn.Linear(64 * 4 * 4, 10),
        snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, output=True),
    )

    class Tutorial6(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            utils.reset(self.net)
            spikes, membranes = [], []
            for t in range(x.shape[0]):
                s, m = self.net(x[t])
                spikes.append(s)
                membranes.append(m)
            return torch.stack(spikes), torch.stack(membranes)

    model = Tutorial6()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    loss = SF.ce_rate_loss()
    _train(model, optimiser, lambda out, y: loss(out[0], y), images, labels, steps, timesteps=6)
    return model


def sj_lif(steps: int, images: np.ndarray, labels: np.ndarray):
    """A SpikingJelly multi-step LIF conv net, trained for `steps` batches; forward(x [T, B,
    1, 28, 28]) -> spikes [T, B, 10]."""
    import torch
    from spikingjelly.activation_based import functional, layer, neuron

    def lif():
        return neuron.LIFNode(tau=2.0, v_reset=0.0, step_mode="m")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                layer.Conv2d(1, 8, 3, padding=1, step_mode="m"), lif(), layer.MaxPool2d(2, step_mode="m"),
                layer.Conv2d(8, 16, 3, padding=1, step_mode="m"), lif(), layer.MaxPool2d(2, step_mode="m"),
                layer.Flatten(step_mode="m"), layer.Linear(16 * 7 * 7, 10, step_mode="m"), lif(),
            )

        def forward(self, x):
            functional.reset_net(self)
            return self.body(x)

    model = Net()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    def rate_loss(out, y):
        return torch.nn.functional.cross_entropy(out.mean(0) * 10, y)

    _train(model, optimiser, rate_loss, images, labels, steps, timesteps=4)
    return model


def _train(model, optimiser, loss_fn, images, labels, steps: int, timesteps: int, batch: int = 16) -> None:
    import torch

    torch.manual_seed(0)
    x_all, y_all = torch.tensor(images), torch.tensor(labels)
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, len(x_all), (batch,))
        x = x_all[pick].unsqueeze(0).repeat(timesteps, 1, 1, 1, 1)  # a static image at every step
        loss = loss_fn(model(x), y_all[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def export(model, x: np.ndarray, path: Path, outputs: list[str]) -> Path:
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.tensor(x),), str(path), dynamo=True, input_names=["x"],
                          output_names=outputs, external_data=False)
    return path


# ------------------------------------------------------------------------- measuring


def predicted(spikes: np.ndarray) -> frozenset[int]:
    """The classes whose output neurons spike most (all of them on a tie), per [T, 1, N]."""
    counts = spikes.sum(axis=0).reshape(-1)
    return frozenset(np.flatnonzero(counts == counts.max()).tolist())


def measure(path: Path, x: np.ndarray, bits: int, method: dict) -> tuple[float, bool, str]:
    """(output-spike agreement, same predicted class, note) of snnc vs onnxruntime."""
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.compiler.reference import run_onnxruntime
    from snnc.passes.numerics import input_frac_for
    from snnc.runtime import simulate

    frac = input_frac_for(x) if method.get("calibrate_input") else 8
    options = CompileOptions(weight_bits=bits, weight_scales=method["weight_scales"], input_frac_bits=frac)
    result = compile_model(path, options)
    ours = simulate(result.image, {"x": x}, functional=True).outputs["spk"]
    reference = run_onnxruntime(path, {"x": x})["spk"]
    return float((ours == reference).mean()), predicted(ours) == predicted(reference), f"input frac {frac}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="training batches per model (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="test inputs' seed (default 0)")
    args = parser.parse_args(argv)

    import torch

    torch.manual_seed(0)
    train_x, train_y = digits(512, seed=1000)
    test_x, test_y = digits(2, seed=args.seed)
    models = {"csnn": (csnn, 25, ["spk", "mem"]), "sj-lif": (sj_lif, 4, ["spk"])}
    rows = []
    with tempfile.TemporaryDirectory(prefix="snnc-quant-") as tmp:
        for name, (build, timesteps, outputs) in models.items():
            start = time.perf_counter()
            model = build(args.steps, train_x, train_y)
            trained = time.perf_counter() - start
            for i in range(len(test_x)):
                x = np.repeat(test_x[i : i + 1][None], timesteps, axis=0)  # [T, 1, 1, 28, 28]
                path = export(model, x, Path(tmp) / f"{name}-{i}.onnx", outputs)
                for bits in BITS:
                    for method, options in METHODS.items():
                        agreement, same, note = measure(path, x, bits, options)
                        rows.append((name, i, int(test_y[i]), bits, method, agreement, same, note))
                        print(f"{name:<7} input {i} (digit {test_y[i]})  {bits:>2}-bit  {method:<14} "
                              f"spike agreement {100 * agreement:6.2f} %  same class: {'yes' if same else 'NO'}"
                              f"  ({note})", flush=True)
            print(f"  ({name}: trained {args.steps} batches in {trained:.0f} s)", flush=True)
    print("\nsummary: lowest spike agreement and class matches over the inputs")
    for name in models:
        for bits in BITS:
            for method in METHODS:
                picked = [r for r in rows if r[0] == name and r[3] == bits and r[4] == method]
                lowest = min(r[5] for r in picked)
                matches = sum(r[6] for r in picked)
                print(f"  {name:<7} {bits:>2}-bit  {method:<14} lowest {100 * lowest:6.2f} %  "
                      f"same class {matches}/{len(picked)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
