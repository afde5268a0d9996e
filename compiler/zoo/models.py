"""The model zoo: deterministic canonical-form ONNX SNNs with exact numbers.

Contract
    build(name, *, timesteps=None, weight_sparsity=None, spike_sparsity=None, seed=0,
          form="unrolled") -> (onnx.ModelProto, {graph input name: [T, B, ...] float32})
    Same arguments => same model and inputs (numpy Generator seeded with `seed`).

Every number is representable so that quantised hardware can be exact:
    weights     small integers in [-7, 7] times 2^-4, with exactly
                round(weight_sparsity * size) zeros per tensor (pruned);
    biases      integers in [-2, 2] times 2^-4;
    thresholds  multiples of 2^-4, calibrated on the generated input: for each
                neuron layer, the multiple whose firing leaves a fraction of zero
                spikes closest to `spike_sparsity` (search over the layer run with the
                snn reference kernels);
    betas       0.5, 0.75, 0.875 (exact in binary);
    inputs      binary spikes (mlp) or analog direct coding, multiples of 2^-8 in
                [-4, 4) (vgg-small).

Adding a model: write `def _build_x(cfg: ZooConfig) -> Network` using the helpers
below (`_weights`, `_neuron`), and register it in `ZOO` with its defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from snnc.backend.errors import FrontendError
from snnc.compiler.frontend.canonical import Network, Value
from snnc.dialects.snn_interpreter import lif_forward

WEIGHT_STEP = 2.0**-4  # weights, biases and thresholds are multiples of this
WEIGHT_MAX_INT = 7
BIAS_MAX_INT = 2
INPUT_STEP = 2.0**-8  # analog input resolution
INPUT_RANGE = 4.0


@dataclass(frozen=True)
class ZooConfig:
    """The resolved build options handed to a model's builder."""

    timesteps: int
    weight_sparsity: float
    spike_sparsity: float
    rng: np.random.Generator


@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str  # one line
    builder: Callable[[ZooConfig], tuple[Network, dict[str, np.ndarray]]]
    timesteps: int = 4
    weight_sparsity: float = 0.5
    spike_sparsity: float = 0.8


# ------------------------------------------------------------------------------------------
# Helpers shared by the builders
# ------------------------------------------------------------------------------------------


def _weights(cfg: ZooConfig, shape: tuple[int, ...]) -> np.ndarray:
    """Pruned representable weights: ints in [-7, 7] \\ {0} * 2^-4, exact zero count."""
    magnitudes = cfg.rng.integers(1, WEIGHT_MAX_INT + 1, size=shape)
    signs = cfg.rng.choice(np.array([-1, 1]), size=shape)
    values = (magnitudes * signs).astype(np.float32).reshape(-1)
    zeros = int(round(cfg.weight_sparsity * values.size))
    values[cfg.rng.permutation(values.size)[:zeros]] = 0.0
    return (values * WEIGHT_STEP).reshape(shape).astype(np.float32)


def _bias(cfg: ZooConfig, length: int) -> np.ndarray:
    return (cfg.rng.integers(-BIAS_MAX_INT, BIAS_MAX_INT + 1, size=length) * WEIGHT_STEP).astype(np.float32)


def zero_fraction(spikes: np.ndarray) -> float:
    """Spike sparsity: the fraction of (neuron, step) entries that did not fire."""
    return float(np.mean(spikes == 0))


def calibrate_threshold(current: np.ndarray, beta: float | None, target_sparsity: float) -> float:
    """The multiple of 2^-4 whose firing sparsity on `current` is closest to the target.

    Sparsity grows (weakly) with the threshold, so a binary search over the multiple
    finds the crossing; the better of its two neighbours is returned.
    """
    leak = "none" if beta is None else "beta"

    def sparsity(k: int) -> float:
        spikes, _ = lif_forward(current, leak=leak, beta=beta, threshold=k * WEIGHT_STEP)
        return zero_fraction(spikes)

    peak = float(np.abs(current).max()) * current.shape[0]  # no membrane can exceed this
    low, high = 1, max(2, int(np.ceil(peak / WEIGHT_STEP)) + 1)
    while high - low > 1:
        middle = (low + high) // 2
        if sparsity(middle) < target_sparsity:
            low = middle
        else:
            high = middle
    best = min((low, high), key=lambda k: abs(sparsity(k) - target_sparsity))
    return best * WEIGHT_STEP


def _neuron(
    net: Network, cfg: ZooConfig, inputs: dict[str, np.ndarray], current: Value,
    *, beta: float | None, name: str, reset: str = "subtract",
) -> tuple[Value, Value]:
    """A neuron layer whose threshold is calibrated to the requested spike sparsity."""
    train = net.evaluate(inputs)[current]
    threshold = calibrate_threshold(train, beta, cfg.spike_sparsity)
    if beta is None:
        return net.if_neuron(current, threshold=threshold, reset=reset, name=name)
    return net.lif(current, beta=beta, threshold=threshold, reset=reset, name=name)


def _binary_input(cfg: ZooConfig, shape: tuple[int, ...]) -> np.ndarray:
    density = 1.0 - cfg.spike_sparsity
    return (cfg.rng.random((cfg.timesteps, *shape)) < density).astype(np.float32)


def _analog_input(cfg: ZooConfig, shape: tuple[int, ...]) -> np.ndarray:
    """Direct coding: the same analog frame at every step, multiples of 2^-8 in [-4, 4)."""
    levels = int(INPUT_RANGE / INPUT_STEP)
    frame = cfg.rng.integers(-levels, levels, size=shape) * INPUT_STEP
    return np.broadcast_to(frame, (cfg.timesteps, *shape)).astype(np.float32)


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------


def _build_mlp(cfg: ZooConfig) -> tuple[Network, dict[str, np.ndarray]]:
    net = Network(cfg.timesteps, name="mlp")
    inputs = {"input": _binary_input(cfg, (1, 64))}
    x = net.input("input", (1, 64))
    h1 = net.dense(x, _weights(cfg, (64, 128)), _bias(cfg, 128), name="fc1")
    s1, _ = _neuron(net, cfg, inputs, h1, beta=0.875, name="lif1")
    h2 = net.dense(s1, _weights(cfg, (128, 128)), _bias(cfg, 128), name="fc2")
    s2, _ = _neuron(net, cfg, inputs, h2, beta=0.75, name="lif2", reset="zero")
    residual = net.add(s1, s2, name="residual")
    h3 = net.dense(residual, _weights(cfg, (128, 10)), _bias(cfg, 10), name="fc3")
    s3, v3 = _neuron(net, cfg, inputs, h3, beta=0.5, name="lif3")
    net.output(s3, "spikes")
    net.output(v3, "membrane")
    return net, inputs


def _build_vgg_small(cfg: ZooConfig) -> tuple[Network, dict[str, np.ndarray]]:
    net = Network(cfg.timesteps, name="vgg_small")
    inputs = {"image": _analog_input(cfg, (1, 3, 32, 32))}
    x = net.input("image", (1, 3, 32, 32))
    h = net.conv2d(x, _weights(cfg, (16, 3, 3, 3)), _bias(cfg, 16), pads=1, name="conv1")
    s, _ = _neuron(net, cfg, inputs, h, beta=0.875, name="lif1")
    h = net.conv2d(s, _weights(cfg, (32, 16, 3, 3)), _bias(cfg, 32), pads=1, name="conv2")
    s, _ = _neuron(net, cfg, inputs, h, beta=0.875, name="lif2")
    s = net.max_pool2d(s, 2, name="maxpool")  # 16x16
    h = net.conv2d(s, _weights(cfg, (32, 32, 3, 3)), _bias(cfg, 32), pads=1, name="conv3")
    s, _ = _neuron(net, cfg, inputs, h, beta=0.75, name="lif3")
    a = net.avg_pool2d(s, 2, name="avgpool")  # 8x8, multi-bit
    f = net.flatten(a, name="flatten")
    h = net.dense(f, _weights(cfg, (32 * 8 * 8, 10)), _bias(cfg, 10), name="fc")
    s, v = _neuron(net, cfg, inputs, h, beta=0.5, name="lif_out")
    net.output(s, "spikes")
    net.output(v, "membrane")
    return net, inputs


ZOO: dict[str, ZooModel] = {
    "mlp": ZooModel(
        "mlp", "MLP 64-128-128-10 on binary spikes, LIF, a residual add (B=1, T=4)",
        _build_mlp,
    ),
    "vgg-small": ZooModel(
        "vgg-small", "3 conv3x3 (3-16-32-32) + LIF, maxpool, avgpool, dense-10 on 32x32 analog input (T=4)",
        _build_vgg_small,
    ),
}


def build_network(
    name: str, *, timesteps: int | None = None, weight_sparsity: float | None = None,
    spike_sparsity: float | None = None, seed: int = 0,
) -> tuple[Network, dict[str, np.ndarray]]:
    """The zoo model as a `Network` (before export) and its inputs."""
    if name not in ZOO:
        raise FrontendError(f"unknown zoo model '{name}' (known: {', '.join(sorted(ZOO))})")
    entry = ZOO[name]
    cfg = ZooConfig(
        timesteps=entry.timesteps if timesteps is None else int(timesteps),
        weight_sparsity=entry.weight_sparsity if weight_sparsity is None else float(weight_sparsity),
        spike_sparsity=entry.spike_sparsity if spike_sparsity is None else float(spike_sparsity),
        rng=np.random.default_rng(seed),
    )
    if cfg.timesteps < 1:
        raise FrontendError(f"zoo model '{name}': timesteps must be >= 1, got {cfg.timesteps}")
    for what in ("weight_sparsity", "spike_sparsity"):
        value = getattr(cfg, what)
        if not 0.0 <= value < 1.0:
            raise FrontendError(f"zoo model '{name}': {what} must be in [0, 1), got {value}")
    return entry.builder(cfg)


def build(
    name: str, *, timesteps: int | None = None, weight_sparsity: float | None = None,
    spike_sparsity: float | None = None, seed: int = 0, form: str = "unrolled",
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The zoo model `name` as canonical ONNX (`form` "unrolled" or "scan") and its inputs."""
    net, inputs = build_network(
        name, timesteps=timesteps, weight_sparsity=weight_sparsity,
        spike_sparsity=spike_sparsity, seed=seed,
    )
    return net.to_onnx(form), inputs


def save_inputs(path: str | Path, inputs: dict[str, np.ndarray]) -> Path:
    """Write the inputs as an .npz keyed by graph input name (what the runtime reads)."""
    path = Path(path)
    np.savez(path, **{name: np.asarray(array, np.float32) for name, array in inputs.items()})
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
