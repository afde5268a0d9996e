"""Train the `digits` zoo model: a spiking MLP on scikit-learn's bundled digits (no download).

    pip install scikit-learn            # training only; `snnc zoo digits` needs neither it nor torch
    python examples/train_digits.py     # rewrites compiler/zoo/data/digits.npz (deterministic)
    python examples/train_digits.py --check   # retrain in memory, compare with the shipped file

Data: sklearn.datasets.load_digits (1,797 8x8 images, pixels 0..16). The test split is 360
images drawn with sklearn's train_test_split(test_size=360, stratify=labels, random_state=0);
the other 1,437 train the network. The test split ships with the weights, so the zoo can write
`test.npz` without sklearn.

Network (what compiler/zoo/digits.py builds from the file), T = 16 timesteps:
    input   [T, 1, 64]  direct coding: pixel / 16 at every step (multiples of 2^-4, exact in
                        the accelerator's 8-fractional-bit input)
    fc1     dense 64 -> 128, IF neuron (threshold 1, subtract reset): spikes
    fc2     dense 128 -> 10: the per-step logits, the graph output `logits` [T, 1, 10]
The prediction is the argmax of the logits summed over the timesteps (rate decoding), which is
also what ELSA's elastic inference accumulates (softmax of the running sum).

Weights and biases are then rounded to WEIGHT_SIGNIFICANT_BITS = 12 significant bits per layer
(multiples of a power-of-two step 2^-f, |w| * 2^f < 2^11): every product and sum of the model is
then exact in float32, so onnxruntime, the snn interpreter and the accelerator at >= 12 weight
bits compute the same logits bit for bit (docs/numerics.md); the script prints the accuracy
before and after the rounding.

Training: BPTT over the 16 steps with a fast-sigmoid surrogate gradient for the spike
(slope 25, snnTorch's default), cross-entropy on the time-mean of the logits, Adam,
torch seeded, one thread, deterministic algorithms: the same torch version gives the same
weights. The file stores them as float32, exactly the values the ONNX model's initializers get.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = ROOT / "compiler" / "zoo" / "data" / "digits.npz"

TIMESTEPS = 16
HIDDEN = 128
TEST_SIZE = 360
SEED = 0
EPOCHS = 60
BATCH = 32
LEARNING_RATE = 2e-3
SURROGATE_SLOPE = 25.0
WEIGHT_SIGNIFICANT_BITS = 12


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels); images uint8 [N, 64] in 0..16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.data.astype(np.uint8)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_SIZE, stratify=labels, random_state=SEED)
    return x_train, y_train, x_test, y_test


def train(x_train: np.ndarray, y_train: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            ctx.save_for_backward(v)
            return (v >= 0).to(v.dtype)

        @staticmethod
        def backward(ctx, grad):
            (v,) = ctx.saved_tensors
            return grad / (SURROGATE_SLOPE * v.abs() + 1.0) ** 2

    fc1 = torch.nn.Linear(64, HIDDEN)
    fc2 = torch.nn.Linear(HIDDEN, 10)
    params = list(fc1.parameters()) + list(fc2.parameters())
    optimiser = torch.optim.Adam(params, lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, EPOCHS)

    def forward(x: torch.Tensor) -> torch.Tensor:
        """x [N, 64] in [0, 1] -> summed logits [N, 10] over TIMESTEPS steps."""
        current = fc1(x)  # direct coding: the same input current at every step
        v = torch.zeros_like(current)
        total = torch.zeros(x.shape[0], 10)
        for _ in range(TIMESTEPS):
            v = v + current
            s = Spike.apply(v - 1.0)
            v = v - s  # subtract reset (threshold 1)
            total = total + fc2(s)
        return total

    x = torch.tensor(x_train / 16.0, dtype=torch.float32)
    y = torch.tensor(y_train)
    generator = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], BATCH):
            batch = order[start:start + BATCH]
            loss = torch.nn.functional.cross_entropy(forward(x[batch]) / TIMESTEPS, y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        schedule.step()
        if (epoch + 1) % 10 == 0:
            with torch.no_grad():
                accuracy = (forward(x).argmax(1) == y).float().mean().item()
            print(f"epoch {epoch + 1}: loss {loss.item():.4f}, train accuracy {100 * accuracy:.2f} %",
                  file=sys.stderr)
    return {
        "fc1_weight": fc1.weight.detach().numpy().T.astype(np.float32).copy(),  # [K, N]
        "fc1_bias": fc1.bias.detach().numpy().astype(np.float32).copy(),
        "fc2_weight": fc2.weight.detach().numpy().T.astype(np.float32).copy(),
        "fc2_bias": fc2.bias.detach().numpy().astype(np.float32).copy(),
    }


def round_layer(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias as multiples of the layer's step 2^-f, the largest f with
    max|weight| * 2^f <= 2^(WEIGHT_SIGNIFICANT_BITS - 1) - 1 (half to even)."""
    limit = 2 ** (WEIGHT_SIGNIFICANT_BITS - 1) - 1
    frac = int(np.floor(np.log2(limit / float(np.abs(weight).max()))))
    step = 2.0 ** -frac
    return ((np.round(weight / step) * step).astype(np.float32),
            (np.round(bias / step) * step).astype(np.float32))


def accuracy(weights: dict[str, np.ndarray], images: np.ndarray, labels: np.ndarray) -> float:
    """The network of the module docstring in float64 numpy: argmax of the summed logits."""
    current = images / 16.0 @ weights["fc1_weight"] + weights["fc1_bias"]
    v = np.zeros_like(current)
    total = np.zeros((images.shape[0], weights["fc2_bias"].size))
    for _ in range(TIMESTEPS):
        v = v + current
        s = (v >= 1.0).astype(np.float64)
        v = v - s
        total += s @ weights["fc2_weight"] + weights["fc2_bias"]
    return float((total.argmax(axis=1) == labels).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    parser.add_argument("-o", "--output", type=Path, default=DATA_FILE)
    args = parser.parse_args(argv)
    x_train, y_train, x_test, y_test = load_split()
    trained = train(x_train, y_train)
    weights = dict(trained)
    for layer in ("fc1", "fc2"):
        weights[f"{layer}_weight"], weights[f"{layer}_bias"] = round_layer(trained[f"{layer}_weight"],
                                                                          trained[f"{layer}_bias"])
    print(f"test accuracy: trained {100 * accuracy(trained, x_test, y_test):.2f} %, "
          f"{WEIGHT_SIGNIFICANT_BITS}-bit rounded (shipped) {100 * accuracy(weights, x_test, y_test):.2f} %",
          file=sys.stderr)
    arrays = {**weights, "test_images": x_test, "test_labels": y_test,
              "timesteps": np.array(TIMESTEPS, dtype=np.int64)}
    if args.check:
        shipped = np.load(args.output)
        same = set(shipped.files) == set(arrays) and all(np.array_equal(shipped[k], v) for k, v in arrays.items())
        print("same as the shipped file" if same else "DIFFERENT from the shipped file")
        return 0 if same else 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
