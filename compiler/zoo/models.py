"""The model zoo: deterministic canonical-form ONNX SNNs with exact numbers.

Contract
    build(name, *, timesteps=None, weight_sparsity=None, spike_sparsity=None, seed=0,
          form="unrolled", silent_ratio=None, input_scale=1.0, residual=None,
          weight_profile=None, spike_profile=None, filter_spread=None)
        -> (onnx.ModelProto, {graph input name: [T, B, ...] float32})
    build_network(...same options but form...) -> (Network, inputs)
    build_dataset(name, *, timesteps=None) -> {graph input: [T, N, ...], "labels": [N] int64}
        for a model with a labelled data set (ZooModel.dataset: digits).
    Same arguments => same model and inputs (numpy Generator seeded with `seed`).
    None means the model's default (ZOO[name]); silent_ratio None on a model without
    one means "not calibrated". input_scale < 1 shrinks the input (and so every map) of
    the models marked `scalable`; residual "add"/"or" picks SEW-ADD or SEW-OR.
    weight_profile spreads the sparsity over the layers (WEIGHT_PROFILES):
      "layerwise"  (the default of the LoAS Table II models) prunes each layer of the
                   model's table to the matched work LoAS's own simulator logged for it
                   (LOAS_MATCHED_WORK, `matched_work_sparsity` on the layer's real input
                   spikes); the other layers get `weight_sparsity`;
      "uniform"    (the default of the others, and whenever weight_sparsity is given)
                   gives every weight layer `weight_sparsity`;
      "fan-in"/"fan-out" gives each layer the sparsity of global magnitude pruning
                   (`global_magnitude_sparsities`), so that the mean over the layers,
                   weighted by their sizes, is `weight_sparsity`.
    filter_spread spreads a layer's zeros over its filters (output channels): magnitude
                   pruning of filters whose weight scales are log-normal with this sigma
                   (`filter_kept_counts`); 0 places them at random over the tensor. The LoAS
                   models' default with "layerwise" is fitted to LoAS's logs (LOAS_FILTER_SPREAD).
    spike_profile  "layerwise" (the default of the LoAS Table II models unless spike_sparsity
                   or silent_ratio is given) calibrates each neuron layer that feeds a layer
                   LoAS logged to the spikes LoAS's run fed that layer: im2col non-zeros and
                   packed non-zeros (LOAS_SPARTEN_SPIKES, `Consumer`); "uniform" gives every
                   neuron layer `spike_sparsity` and `silent_ratio`.

Models
    mlp, vgg-small                    the spine's small models
    alexnet-cifar10, vgg16-cifar10,   LoAS Table II workloads (T=4, 32x32x3): LoAS's
    resnet19-cifar10                  architectures (RuokaiYin/LoAS archs/cifarsvhn), the
                                      spikes LoAS's runs fed each layer (spike_profile
                                      "layerwise"; Table II's sparsities elsewhere), each
                                      layer's weights pruned to the work LoAS logged for it
                                      (weight_profile "layerwise", LOAS_MATCHED_WORK) and spread
                                      over its filters (LOAS_FILTER_SPREAD)
    sew-resnet18-dvs                  STEMS SEW-ResNet-18, 128x128x2 events, T=16
    red-lif-gen4                      STEMS RED-LIF, 360x640x6 events, T=12
    spikformer-hff                    LoAS T-HFF layer 4x784x3072x3072
    resnet18-imagenet                 224x224x3, T=4, the scale test
    digits                            trained on scikit-learn's digits (examples/train_digits.py);
                                      weights and the test split ship in data/digits.npz;
                                      `build_dataset` gives the labelled test split
    The four before digits are `large` (bench/run.py, or the tests at a reduced input_scale).

Every number is representable so that quantised hardware can be exact:
    weights     small integers in [-7, 7] times 2^-4, with exactly
                round(sparsity * size) zeros per tensor (pruned; the layer's sparsity
                from `weight_profile`);
    biases      integers in [-2, 2] times 2^-4;
    thresholds  multiples of 2^-4, calibrated on the generated input: for each
                neuron layer, the multiple whose firing leaves a fraction of zero
                spikes closest to `spike_sparsity` (search over the layer run with the
                snn reference kernels); with a silent-ratio target, also a uniform
                shift of the layer's current (a multiple of 2^-4 folded into the
                synapse bias) so that that fraction of neurons never fires
                (`calibrate_neuron`; vectorised, on <= 32768 sampled neurons; against a
                consumer, on whole channels, <= 131072 neurons);
    betas       0.5, 0.75, 0.875 (exact in binary);
    inputs      binary spikes (mlp) or analog direct coding, multiples of 2^-8 in
                [-4, 4) (vgg-small).
The trained model (digits) keeps its trained weights, rounded to 12 significant bits per
layer (multiples of 2^-f): its float32 arithmetic is exact, so onnxruntime and the
accelerator at >= 12 weight bits agree bit for bit; 8-bit weights round further. Its
options are only `timesteps` (it was trained at T = 16).

Adding a model: write `def _build_x(cfg: ZooConfig) -> Network` using the helpers
below (`_weights`, `_neuron`), and register it in `ZOO` with its defaults.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
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
    silent_ratio: float | None = None  # target fraction of neurons silent at every step
    input_scale: float = 1.0  # spatial scale of the input (models that offer it)
    residual: str = "add"  # SEW residual function: "add" or "or" (sew-resnet18-dvs)
    # per-layer sparsities of the profiled weight layers, in `_weights` call order (None: uniform)
    layer_sparsities: LayerSparsities | None = None
    # weight_profile "layerwise": the matched work each named conv layer is pruned to (LOAS_MATCHED_WORK)
    matched_work: Mapping[str, int] | None = None
    # spike_profile "layerwise": (x_accesses, lane_sops, matched pairs) LoAS logged per conv layer
    spike_log: Mapping[str, tuple[int, int, int]] | None = None
    # sigma of the log-normal per-filter weight scale that magnitude pruning sees (0: zeros at random)
    filter_spread: float = 0.0
    # called with each neuron layer's name before it is calibrated (progress display)
    on_layer: Callable[[str], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str  # one line
    builder: Callable[[ZooConfig], tuple[Network, dict[str, np.ndarray]]]
    timesteps: int = 4
    weight_sparsity: float = 0.5
    spike_sparsity: float = 0.8
    silent_ratio: float | None = None  # None: calibrate the spike sparsity only
    residual: str = "add"
    large: bool = False  # too big for the fast tests (bench / slow tests only)
    scalable: bool = False  # accepts input_scale < 1
    matched_work: Mapping[str, int] | None = None  # per-layer table: weight_profile "layerwise" (the default)
    sparten_spikes: Mapping[str, tuple[int, int]] | None = None  # per-layer table: spike_profile "layerwise"
    filter_spread: float = 0.0  # default with weight_profile "layerwise" (LOAS_FILTER_SPREAD)
    trained: bool = False  # weights from a training run (a shipped file): no sparsity, profile or seed options
    # a labelled data set for `snnc eval`: {graph input: [T, N, ...], DATASET_LABELS: [N] int64}
    dataset: Callable[[ZooConfig], dict[str, np.ndarray]] | None = None


# ------------------------------------------------------------------------------------------
# Helpers shared by the builders
# ------------------------------------------------------------------------------------------


WEIGHT_PROFILES = ("layerwise", "uniform", "fan-in", "fan-out")
SPIKE_PROFILES = ("layerwise", "uniform")

# LoAS's own simulator runs behind the Table II cycle counts (RuokaiYin/LoAS,
# simulation_results/txt_results/snn_loas-mntk-normal_<model>_result.txt): `tot_comps` of every
# simulated layer, i.e. its matched pairs (packed spike non-zero x weight non-zero, summed over
# output positions and channels), by our layer name. Layer_1.. are the conv layers after the
# first in forward order (ResNet19: conv_a, conv_b, then the 1x1 shortcut of each block).
LOAS_MATCHED_WORK = {
    "alexnet-cifar10": {"conv2": 83_910, "conv3": 82_081, "conv4": 212_801, "conv5": 80_686},
    "vgg16-cifar10": {
        "conv2": 1_862_513, "conv3": 743_284, "conv4": 1_576_105, "conv5": 561_394, "conv6": 734_258,
        "conv7": 656_746, "conv8": 141_239, "conv9": 87_140, "conv10": 225_843, "conv11": 8_721,
        "conv12": 4_148, "conv13": 7_505,
    },
    "resnet19-cifar10": {
        "block1.conv_a": 1_042_562, "block1.conv_b": 1_390_301, "block1.down": 175_424,
        "block2.conv_a": 2_158_304, "block2.conv_b": 1_538_389,
        "block3.conv_a": 2_387_655, "block3.conv_b": 1_531_568,
        "block4.conv_a": 503_941, "block4.conv_b": 706_920, "block4.down": 203_917,
        "block5.conv_a": 1_022_469, "block5.conv_b": 1_494_920,
        "block6.conv_a": 814_046, "block6.conv_b": 4_037_375,
        "block7.conv_a": 129_176, "block7.conv_b": 46_579, "block7.down": 64_350,
        "block8.conv_a": 73_194, "block8.conv_b": 132_661,
    },
}

# The spikes LoAS's runs fed each simulated layer, from its SparTen-SNN run of the same
# matrices (RuokaiYin/LoAS simulation_results/txt_results/snn_sparten_<model>_result.txt):
#   x_accesses  hit_x + miss_x. Every fetched spike tile adds its non-zeros (a miss adds 1 to
#               miss_x and n - 1 to hit_x), and src/snn-sparten-result.py fetches each tile of
#               the im2col spike matrix [T, M, K] once per 16 output channels (tile 'w': (128, 16)),
#               so the matrix has x_accesses / ceil(N / 16) non-zeros;
#   lane_sops   tot_comps: (spike at t, non-zero weight) pairs, summed over t.
# With LOAS_MATCHED_WORK (the same pairs on the packed matrix) they give the packed non-zeros:
# packed = spikes x matched / lane_sops (zeros of both matrices at random). `spike_profile`
# "layerwise" calibrates the neuron layer feeding each of these layers to both counts.
LOAS_SPARTEN_SPIKES = {
    "alexnet-cifar10": {
        "conv2": (198_588 + 24, 324_742), "conv3": (737_664 + 2_568, 251_820),
        "conv4": (3_418_048 + 3_456, 562_756), "conv5": (2_029_216 + 2_304, 201_804),
    },
    "vgg16-cifar10": {
        "conv2": (1_557_100 + 2_516, 6_162_210), "conv3": (771_000 + 1_280, 2_063_473),
        "conv4": (1_935_504 + 2_304, 4_017_739), "conv5": (665_584 + 1_152, 1_324_937),
        "conv6": (1_396_912 + 2_304, 1_626_838), "conv7": (1_355_136 + 2_304, 1_393_068),
        "conv8": (560_480 + 2_304, 285_593), "conv9": (1_395_872 + 4_608, 196_917),
        "conv10": (3_648_000 + 4_608, 745_336), "conv11": (334_064 + 144, 24_428),
        "conv12": (421_488 + 144, 11_811), "conv13": (573_216 + 4_576, 24_670),
    },
    "resnet19-cifar10": {
        "block1.conv_a": (773_312 + 1_280, 3_431_763), "block1.conv_b": (1_354_616 + 2_304, 3_768_016),
        "block1.down": (89_968 + 32, 572_233),
        "block2.conv_a": (1_572_584 + 2_304, 5_393_427), "block2.conv_b": (1_129_912 + 2_304, 3_417_895),
        "block3.conv_a": (1_920_424 + 2_304, 5_729_270), "block3.conv_b": (1_610_984 + 2_304, 3_496_891),
        "block4.conv_a": (1_366_000 + 1_152, 1_245_883), "block4.conv_b": (2_396_400 + 2_304, 2_029_755),
        "block4.down": (182_888 + 8, 564_811),
        "block5.conv_a": (4_819_344 + 2_304, 3_443_944), "block5.conv_b": (6_314_864 + 2_304, 5_546_523),
        "block6.conv_a": (6_569_968 + 2_304, 3_135_329), "block6.conv_b": (7_645_312 + 2_304, 15_985_549),
        "block7.conv_a": (3_299_744 + 2_304, 488_816), "block7.conv_b": (3_756_640 + 4_608, 160_078),
        "block7.down": (436_984 + 8, 240_631),
        "block8.conv_a": (3_972_896 + 4_608, 251_956), "block8.conv_b": (5_123_808 + 4_608, 474_568),
    },
}
SPARTEN_COLUMNS = 16  # output channels per SparTen-SNN spike-tile fetch (LoAS tile 'w': (128, 16))
LOAS_LOG_TIMESTEPS = 4  # LoAS's runs (Table II: CIFAR-10, T=4)

# The filter spread of each LoAS model's weights (`filter_spread`, weight_profile "layerwise").
# Real pruned filters are far from equally dense, and nothing LoAS logged counts them except
# the cycles of its PE-per-output-channel baselines. `python bench/fit_filter_spread.py` fits the
# sigma for which LoAS's own GoSPA-SNN formula (src/snn-gospa-result.py) on the zoo's matrices
# gives the GoSPA-SNN cycles LoAS published; SparTen-SNN, the Table II criterion, is left to check it.
MAX_FILTER_SPREAD = 3.0
LOAS_FILTER_SPREAD = {"alexnet-cifar10": 0.13, "vgg16-cifar10": 0.13, "resnet19-cifar10": 0.38}


def im2col_column_counts(maps: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """Per column k = (input channel, ky, kx) of a conv layer's im2col matrix [M, K]: how
    many output positions see a non-zero there (padding is zero). maps: [C, H, W] ->
    int64 [C, kernel, kernel]."""
    padded = np.pad(maps != 0, ((0, 0), (pad, pad), (pad, pad)))
    out_h = (padded.shape[1] - kernel) // stride + 1
    out_w = (padded.shape[2] - kernel) // stride + 1
    columns = np.zeros((padded.shape[0], kernel, kernel), dtype=np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            window = padded[:, ky:ky + stride * (out_h - 1) + 1:stride, kx:kx + stride * (out_w - 1) + 1:stride]
            columns[:, ky, kx] = window.sum(axis=(1, 2))
    return columns


@functools.lru_cache(maxsize=64)
def im2col_coverage(shape: tuple[int, int], kernel: int, stride: int, pad: int) -> np.ndarray:
    """int64 [H, W]: how many (output position, tap) pairs of a conv read each input pixel,
    i.e. how often it appears in the im2col matrix (read-only, cached)."""
    h, w = shape
    out_h = (h + 2 * pad - kernel) // stride + 1
    out_w = (w + 2 * pad - kernel) // stride + 1
    padded = np.zeros((h + 2 * pad, w + 2 * pad), dtype=np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            padded[ky:ky + stride * (out_h - 1) + 1:stride, kx:kx + stride * (out_w - 1) + 1:stride] += 1
    coverage = padded[pad:pad + h, pad:pad + w].copy()
    coverage.flags.writeable = False
    return coverage


def packed_im2col_columns(spikes: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """Per column k = (input channel, ky, kx) of a conv layer's packed im2col spike matrix
    [M, K]: how many output positions see a neuron there that fires at some step (padding
    is zero). spikes: [T, 1, C, H, W] -> int64 [C, kernel, kernel]."""
    return im2col_column_counts(spikes.any(axis=0)[0], kernel, stride, pad)


@dataclass(frozen=True)
class Consumer:
    """The conv layer that reads a neuron layer's spikes (after an optional 2x2 spike
    max-pool): what `spike_profile` "layerwise" calibrates the neuron layer against."""

    name: str
    channels: int
    kernel: int = 3
    stride: int = 1
    pad: int = 1
    pool: bool = False

    def view(self, spikes: np.ndarray) -> np.ndarray:
        """Spikes [T, C, H, W] -> the map the consumer reads (OR over 2x2 windows if pooled)."""
        if not self.pool:
            return spikes
        t, c, h, w = spikes.shape
        return spikes[:, :, :h - h % 2, :w - w % 2].reshape(t, c, h // 2, 2, w // 2, 2).any(axis=(3, 5))

    def im2col_stats(self, spikes: np.ndarray) -> tuple[float, float]:
        """(sparsity, silent ratio) of the consumer's im2col spike matrix [T, M, K], padding
        left out: spikes [T, C, H, W] of (a channel sample of) the neuron layer. An input
        pixel appears in the matrix `im2col_coverage` times, whatever its channel."""
        seen = self.view(spikes != 0)
        coverage = im2col_coverage(seen.shape[2:], self.kernel, self.stride, self.pad)
        valid = seen.shape[1] * int(coverage.sum())
        nonzeros = int((seen.sum(axis=(0, 1), dtype=np.int64) * coverage).sum())
        packed = int((seen.any(axis=0).sum(axis=0, dtype=np.int64) * coverage).sum())
        return 1.0 - nonzeros / (seen.shape[0] * valid), 1.0 - packed / valid

    def logged_targets(self, logged: tuple[int, int, int], shape: tuple[int, ...]) -> tuple[float, float]:
        """The (sparsity, silent ratio) of im2col_stats that LoAS's run logged for this
        consumer: logged = (x_accesses, lane_sops) of LOAS_SPARTEN_SPIKES + (matched pairs,
        LOAS_MATCHED_WORK); shape: the neuron layer's [T, 1, C, H, W]. The sparsity is per
        step of LoAS's T (LOAS_LOG_TIMESTEPS), so a model built with another T keeps it."""
        x_accesses, lane_sops, matched = logged
        spikes = x_accesses / -(-self.channels // SPARTEN_COLUMNS)
        packed = spikes * matched / lane_sops
        seen = self.view(np.ones((1, *shape[2:]), dtype=bool))[0]
        valid = seen.shape[0] * int(im2col_coverage(seen.shape[1:], self.kernel, self.stride, self.pad).sum())
        sparsity = min(max(1.0 - spikes / (LOAS_LOG_TIMESTEPS * valid), 0.0), 1.0)
        return sparsity, min(max(1.0 - packed / valid, 0.0), sparsity)


def matched_work_sparsity(nonzeros: int, channels: int, size: int, matched: int) -> float:
    """The sparsity that prunes a layer to `matched` expected matched pairs on its input.

    With `nonzeros` packed im2col non-zeros and zeros placed at random, each meets
    density x `channels` non-zero weights: matched = nonzeros x channels x density.
    Clamped so that the layer keeps at least one weight."""
    density = matched / max(1, nonzeros * channels)
    return float(min(max(1.0 - density, 0.0), 1.0 - 1.0 / size))


class LayerSparsities:
    """The sparsity of each profiled weight layer, handed out in `_weights` call order.

    Recording mode (`sparsities` None): hands out `average` and remembers each layer's
    shape, so that a dry run of a builder lists the layers to profile."""

    def __init__(self, average: float, sparsities: list[float] | None = None) -> None:
        self.average = average
        self.sparsities = sparsities
        self.shapes: list[tuple[int, ...]] = []
        self.next = 0

    def take(self, shape: tuple[int, ...]) -> float:
        if self.sparsities is None:
            self.shapes.append(tuple(shape))
            return self.average
        sparsity = self.sparsities[self.next]
        self.next += 1
        return sparsity


def weight_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan-in, fan-out) of a conv weight [out, in, kh, kw] or a dense weight [in, out]."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def global_magnitude_sparsities(scales: list[float], sizes: list[int], average: float) -> list[float]:
    """Per-layer sparsity when one magnitude threshold prunes all layers together.

    Layer l's weights are taken as N(0, scales[l]^2); a global threshold tau keeps
    P(|w| >= tau) = erfc(tau / (scale * sqrt(2))) of each layer, and tau is chosen (bisection)
    so that the kept weights are (1 - average) of all sizes. This is lottery-ticket global
    pruning (LoAS trains its Table II networks that way: RuokaiYin/LoAS config_lth.py,
    pruning_scope "global") with each layer at its He-initialisation scale: layers with
    a larger fan are pruned harder."""
    scale = np.asarray(scales, dtype=np.float64)
    size = np.asarray(sizes, dtype=np.float64)
    keep = (1.0 - average) * size.sum()

    def kept(tau: float) -> np.ndarray:
        return np.array([math.erfc(tau / (s * math.sqrt(2.0))) for s in scale])

    low, high = 0.0, 1.0
    while (kept(high) * size).sum() > keep:
        high *= 2.0
    for _ in range(100):
        tau = (low + high) / 2
        low, high = (tau, high) if (kept(tau) * size).sum() > keep else (low, tau)
    return [float(1.0 - d) for d in kept((low + high) / 2)]


def profile_sparsities(shapes: list[tuple[int, ...]], profile: str, average: float) -> list[float]:
    """`weight_profile` "fan-in" / "fan-out": He-initialisation scale sqrt(2 / fan) per layer."""
    fan = [weight_fans(shape)[0 if profile == "fan-in" else 1] for shape in shapes]
    return global_magnitude_sparsities([math.sqrt(2.0 / f) for f in fan],
                                       [int(np.prod(shape)) for shape in shapes], average)


def filter_kept_counts(scales: np.ndarray, filter_size: int, kept: int) -> np.ndarray:
    """How many weights each filter keeps when one magnitude threshold prunes filters of
    N(0, scale^2) weights (`global_magnitude_sparsities` over the filters) so that `kept`
    remain in all: exact integers (largest remainders), each at most `filter_size`."""
    sizes = [filter_size] * len(scales)
    share = (1.0 - np.array(global_magnitude_sparsities(list(scales), sizes, 1.0 - kept / (filter_size * len(scales)))))
    exact = share * filter_size
    counts = np.minimum(np.floor(exact).astype(np.int64), filter_size)
    for j in np.argsort(-(exact - counts), kind="stable"):
        if counts.sum() >= kept:
            break
        if counts[j] < filter_size:
            counts[j] += 1
    return counts


def _weights(cfg: ZooConfig, shape: tuple[int, ...], sparsity: float | None = None) -> np.ndarray:
    """Pruned representable weights: ints in [-7, 7] \\ {0} * 2^-4, exact zero count.

    `sparsity` overrides cfg.weight_sparsity (the input layer of the deep models, see
    FIRST_LAYER_MAX_SPARSITY); without it, a weight profile gives the layer's own.
    With cfg.filter_spread > 0 the zeros are spread over the filters (output channels:
    axis 0 of a conv weight, axis 1 of a dense one) as magnitude pruning spreads them over
    filters whose scales are log-normal with that sigma (`filter_kept_counts`), and at
    random within a filter; else at random over the whole tensor.
    """
    if sparsity is None:
        sparsity = cfg.weight_sparsity if cfg.layer_sparsities is None else cfg.layer_sparsities.take(shape)
    magnitudes = cfg.rng.integers(1, WEIGHT_MAX_INT + 1, size=shape)
    signs = cfg.rng.choice(np.array([-1, 1]), size=shape)
    values = (magnitudes * signs).astype(np.float32)
    zeros = int(round(sparsity * values.size))
    if cfg.filter_spread > 0 and zeros > 0:
        filters = np.moveaxis(values, 1, 0) if len(shape) == 2 else values  # a view: [filter, ...]
        per_filter = values.size // filters.shape[0]
        scales = np.exp(cfg.filter_spread * cfg.rng.standard_normal(filters.shape[0]))
        counts = filter_kept_counts(scales, per_filter, values.size - zeros)
        pruned = np.stack([cfg.rng.permutation(per_filter) >= count for count in counts])
        filters[pruned.reshape(filters.shape)] = 0.0
    else:
        flat = values.reshape(-1)
        flat[cfg.rng.permutation(values.size)[:zeros]] = 0.0
    return (values * WEIGHT_STEP).reshape(shape).astype(np.float32)


def _bias(cfg: ZooConfig, length: int) -> np.ndarray:
    return (cfg.rng.integers(-BIAS_MAX_INT, BIAS_MAX_INT + 1, size=length) * WEIGHT_STEP).astype(np.float32)


def zero_fraction(spikes: np.ndarray) -> float:
    """Spike sparsity: the fraction of (neuron, step) entries that did not fire."""
    return float(np.mean(spikes == 0))


def bisect_steps(below, low: int, high: int) -> tuple[int, int]:
    """Binary search over integers for a predicate that holds up to some k and fails after
    it (`below(low)` assumed true, `below(high)` false): returns (k, k + 1), the last step
    where it holds and the first where it fails. Callers take whichever is nearer their
    target."""
    while high - low > 1:
        middle = (low + high) // 2
        if below(middle):
            low = middle
        else:
            high = middle
    return low, high


def calibrate_threshold(current: np.ndarray, beta: float | None, target_sparsity: float) -> float:
    """The multiple of 2^-4 whose firing sparsity on `current` is closest to the target.

    Sparsity grows (weakly) with the threshold, so a binary search over the multiple
    finds the crossing; the better of its two neighbours is returned. Layers with more
    than CALIBRATION_SAMPLE neurons are calibrated on an even subsample.
    """
    current = _sample(current)
    leak = "none" if beta is None else "beta"

    def sparsity(k: int) -> float:
        spikes, _ = lif_forward(current, leak=leak, beta=beta, threshold=k * WEIGHT_STEP)
        return zero_fraction(spikes)

    peak = float(np.abs(current).max()) * current.shape[0]  # no membrane can exceed this
    low, high = bisect_steps(lambda k: sparsity(k) < target_sparsity,
                             1, max(2, int(np.ceil(peak / WEIGHT_STEP)) + 1))
    best = min((low, high), key=lambda k: abs(sparsity(k) - target_sparsity))
    return best * WEIGHT_STEP


def silent_fraction(spikes: np.ndarray) -> float:
    """Silent-neuron ratio: the fraction of neurons that fire at no step (LoAS Table II)."""
    return float(np.mean(~spikes.reshape(spikes.shape[0], -1).any(axis=0)))


CALIBRATION_SAMPLE = 1 << 15  # neurons; bigger layers are calibrated on an even subsample


def _sample(current: np.ndarray) -> np.ndarray:
    """[T, ...] -> [T, n] with n <= CALIBRATION_SAMPLE neurons taken at an even stride."""
    flat = current.reshape(current.shape[0], -1)
    stride = max(1, -(-flat.shape[1] // CALIBRATION_SAMPLE))
    return np.ascontiguousarray(flat[:, ::stride])


CONSUMER_SAMPLE = 1 << 17  # neurons; channels fire unevenly (filter_spread), so sample whole layers where possible


def _channel_sample(current: np.ndarray) -> np.ndarray:
    """[T, 1, C, H, W] -> [T, C', H, W]: whole maps of every s-th channel, so that a
    consumer's windows stay intact, with C' x H x W <= CONSUMER_SAMPLE where possible."""
    maps = current[:, 0]
    stride = max(1, -(-int(np.prod(maps.shape[1:])) // CONSUMER_SAMPLE))
    return np.ascontiguousarray(maps[:, ::stride])


def calibrate_neuron(
    current: np.ndarray, beta: float | None, target_sparsity: float,
    target_silent: float | None = None, reset: str = "subtract", consumer: Consumer | None = None,
) -> tuple[float, float]:
    """(threshold, current shift), both multiples of 2^-4, for a neuron layer.

    With `target_silent` None the shift is 0 and the threshold is the one of
    `calibrate_threshold`. Otherwise a uniform shift of the current (folded into the
    synapse bias by the caller) is searched as well: for each candidate shift the
    threshold is fitted to the spike sparsity, and a more negative shift concentrates
    the same number of spikes on fewer neurons, raising the silent ratio. The shift is
    binary-searched on that (weakly monotone) relation; the best candidate seen by
    |sparsity error| + |silent error| wins. Everything runs vectorised on a sample.
    With a `consumer` (current [T, 1, C, H, W]), both are measured on the consumer's im2col
    spike matrix (`Consumer.im2col_stats`) instead of on the neurons.
    """
    x = _sample(current) if consumer is None else _channel_sample(current)
    leak = "none" if beta is None else "beta"

    def stats(shift: int, k: int) -> tuple[float, float]:
        spikes, _ = lif_forward(x + np.float32(shift * WEIGHT_STEP), leak=leak, beta=beta,
                                threshold=k * WEIGHT_STEP, reset=reset)
        if consumer is not None:
            return consumer.im2col_stats(spikes)
        return zero_fraction(spikes), silent_fraction(spikes)

    def fit_threshold(shift: int) -> int:
        peak = (float(np.abs(x).max()) + abs(shift) * WEIGHT_STEP) * x.shape[0]
        low, high = bisect_steps(lambda k: stats(shift, k)[0] < target_sparsity,
                                 1, max(2, int(np.ceil(peak / WEIGHT_STEP)) + 1))
        return min((low, high), key=lambda k: abs(stats(shift, k)[0] - target_sparsity))

    if target_silent is None:
        return fit_threshold(0) * WEIGHT_STEP, 0.0
    seen: dict[int, tuple[int, float]] = {}

    def evaluate(shift: int) -> float:
        k = fit_threshold(shift)
        sparsity, silent = stats(shift, k)
        seen[shift] = (k, abs(sparsity - target_sparsity) + abs(silent - target_silent))
        return silent

    span = int(np.ceil(float(np.abs(x).max()) / WEIGHT_STEP)) + 1
    evaluate(0)
    # the silent ratio falls (weakly) as the shift rises
    low, high = bisect_steps(lambda shift: evaluate(shift) > target_silent, -span, span)
    evaluate(low), evaluate(high)
    shift = min(seen, key=lambda sh: (seen[sh][1], abs(sh)))
    return seen[shift][0] * WEIGHT_STEP, shift * WEIGHT_STEP


def _neuron(
    net: Network, cfg: ZooConfig, inputs: dict[str, np.ndarray], current: Value,
    *, beta: float | None, name: str, reset: str = "subtract", silent: bool = True,
    feeds: Consumer | None = None,
) -> tuple[Value, Value]:
    """A neuron layer calibrated to the requested spike sparsity (and silent ratio,
    when the model has one and `silent`; the shift goes into the synapse bias). Under
    spike_profile "layerwise", a layer that `feeds` a logged conv layer is calibrated to
    the spikes LoAS's run fed that layer instead (`Consumer.logged_targets`)."""
    if cfg.on_layer is not None:
        cfg.on_layer(name)
    train = net.evaluate(inputs)[current]
    target_silent = cfg.silent_ratio if silent else None
    if feeds is not None and cfg.spike_log and feeds.name in cfg.spike_log:
        target_sparsity, target_silent = feeds.logged_targets(cfg.spike_log[feeds.name], train.shape)
        threshold, shift = calibrate_neuron(train, beta, target_sparsity, target_silent, reset, consumer=feeds)
        net.shift_bias(current, shift)
    elif target_silent is None:
        threshold = calibrate_threshold(train, beta, cfg.spike_sparsity)
    else:
        threshold, shift = calibrate_neuron(train, beta, cfg.spike_sparsity, target_silent, reset)
        net.shift_bias(current, shift)
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


# The deep models' input layer (K = 27 for an RGB 3x3 conv) keeps at least half its
# weights: LTH pruning leaves the first layer dense-ish, and at 98 % sparsity most of
# its channels would see no pixel at all. Its few weights barely move the average.
FIRST_LAYER_MAX_SPARSITY = 0.5

# LoAS Table II (T = 4): weight sparsity AvSpB, spike sparsity AvSpA-origin and the
# silent-neuron ratio AvSpA-packed, in that order.
LOAS_TABLE_II = {
    "alexnet-cifar10": (0.982, 0.812, 0.713),
    "vgg16-cifar10": (0.982, 0.823, 0.741),
    "resnet19-cifar10": (0.968, 0.686, 0.596),
}
HIDDEN_BETA = 0.875  # exact in binary
# The input layer integrates analog pixels (2^-8) x weights (2^-4): with beta = 0.5 its
# membrane needs 12 + T fractional bits, which the accelerator holds exactly at T = 4.
FIRST_BETA = 0.5
OUTPUT_BETA = 0.5
# Over T = 12..16 steps a beta of 7/8 adds 3 fractional bits per step (> 40 in all), more
# than float32 or the accelerator's membrane holds; beta = 1/2 adds one (4 + T bits).
LONG_BETA = 0.5


def _conv_weights(
    net: Network, cfg: ZooConfig, inputs: dict[str, np.ndarray], x: Value, cout: int, name: str,
    kernel: int, stride: int, pad: int, sparsity: float | None = None,
) -> np.ndarray:
    """A conv weight [cout, cin, k, k]; under weight_profile "layerwise" a layer of the
    model's table is pruned to its logged matched work on the spikes it really gets."""
    shape = (cout, x.shape[1], kernel, kernel)
    matched = cfg.matched_work.get(name) if cfg.matched_work else None
    if matched is not None:
        nonzeros = int(packed_im2col_columns(net.evaluate(inputs)[x], kernel, stride, pad).sum())
        sparsity = matched_work_sparsity(nonzeros, cout, int(np.prod(shape)), matched)
    return _weights(cfg, shape, sparsity)


def _conv_lif(
    net: Network, cfg: ZooConfig, inputs: dict[str, np.ndarray], x: Value, cout: int, name: str,
    *, kernel: int = 3, stride: int = 1, pad: int | None = None, first: bool = False,
    beta: float | None = HIDDEN_BETA, feeds: Consumer | None = None,
) -> Value:
    """conv (kernel x kernel, 'same' padding by default) + calibrated LIF -> spikes."""
    sparsity = min(cfg.weight_sparsity, FIRST_LAYER_MAX_SPARSITY) if first else None
    if first and beta is not None:
        beta = FIRST_BETA
    pad = kernel // 2 if pad is None else pad
    weight = _conv_weights(net, cfg, inputs, x, cout, name, kernel, stride, pad, sparsity)
    h = net.conv2d(x, weight, _bias(cfg, cout), strides=stride, pads=pad, name=name)
    spikes, _ = _neuron(net, cfg, inputs, h, beta=beta, name=f"{name}.lif", feeds=feeds)
    return spikes


def _dense_lif(
    net: Network, cfg: ZooConfig, inputs: dict[str, np.ndarray], x: Value, n: int, name: str,
) -> Value:
    h = net.dense(x, _weights(cfg, (x.shape[1], n)), _bias(cfg, n), name=name)
    spikes, _ = _neuron(net, cfg, inputs, h, beta=HIDDEN_BETA, name=f"{name}.lif")
    return spikes


def _classifier(
    net: Network, cfg: ZooConfig, inputs: dict[str, np.ndarray], x: Value, classes: int = 10,
    name: str = "fc_out",
) -> None:
    """The output layer: dense + LIF (sparsity-calibrated only); outputs spikes and membrane."""
    h = net.dense(x, _weights(cfg, (x.shape[1], classes)), _bias(cfg, classes), name=name)
    s, v = _neuron(net, cfg, inputs, h, beta=OUTPUT_BETA, name=f"{name}.lif", silent=False)
    net.output(s, "spikes")
    net.output(v, "membrane")


def _build_alexnet(cfg: ZooConfig) -> tuple[Network, dict[str, np.ndarray]]:
    """AlexNet for CIFAR-10 as LoAS simulates it (RuokaiYin/LoAS archs/cifarsvhn/alexnet.py):
    conv1 3->64 stride 2 (16x16), 2x2 max-pool, then conv2-conv5 (192, 384, 256, 256) all on
    the 8x8 map (its forward feeds conv3 the un-pooled conv2 spikes), 2x2 max-pool, 2x2
    average pool (4x4 -> 2x2, multi-bit), dense 1024 -> 10. 6 weight layers; conv4 is
    LoAS's A-L4 (T=4, M=8x8=64, N=256, K=384*9=3456)."""
    net = Network(cfg.timesteps, name="alexnet_cifar10")
    inputs = {"image": _analog_input(cfg, (1, 3, 32, 32))}
    x = net.input("image", (1, 3, 32, 32))
    s = _conv_lif(net, cfg, inputs, x, 64, "conv1", stride=2, first=True,
                  feeds=Consumer("conv2", 192, pool=True))  # 16x16
    s = net.max_pool2d(s, 2, name="pool1")  # 8x8
    s = _conv_lif(net, cfg, inputs, s, 192, "conv2", feeds=Consumer("conv3", 384))
    s = _conv_lif(net, cfg, inputs, s, 384, "conv3", feeds=Consumer("conv4", 256))
    s = _conv_lif(net, cfg, inputs, s, 256, "conv4", feeds=Consumer("conv5", 256))
    s = _conv_lif(net, cfg, inputs, s, 256, "conv5")
    s = net.max_pool2d(s, 2, name="pool3")  # 4x4
    a = net.avg_pool2d(s, 2, name="avgpool")  # 2x2, multi-bit
    f = net.flatten(a, name="flatten")
    _classifier(net, cfg, inputs, f, name="fc6")
    return net, inputs


VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _build_vgg16(cfg: ZooConfig) -> tuple[Network, dict[str, np.ndarray]]:
    """VGG16 for CIFAR-10, 14 weight layers (13 conv + dense-10), 2x2 spike max-pooling;
    conv8 is LoAS's V-L8 (T=4, M=4x4=16, N=512, K=256*9=2304)."""
    net = Network(cfg.timesteps, name="vgg16_cifar10")
    inputs = {"image": _analog_input(cfg, (1, 3, 32, 32))}
    s = net.input("image", (1, 3, 32, 32))
    conv = pool = 0
    for index, item in enumerate(VGG16_CONFIG):
        if item == "M":
            pool += 1
            s = net.max_pool2d(s, 2, name=f"pool{pool}")
        else:
            conv += 1
            rest = VGG16_CONFIG[index + 1:]
            following = [c for c in rest if c != "M"]
            feeds = Consumer(f"conv{conv + 1}", int(following[0]), pool=rest[0] == "M") if following else None
            s = _conv_lif(net, cfg, inputs, s, int(item), f"conv{conv}", first=conv == 1, feeds=feeds)
    s = net.flatten(s, name="flatten")  # 512 x 1 x 1
    _classifier(net, cfg, inputs, s, name="fc14")
    return net, inputs


def _basic_block(net: Network, cfg: ZooConfig, inputs, s, channels: int, stride: int, name: str,
                 feeds: Consumer | None = None):
    """A spiking basic block: LIF(conv_b(LIF(conv_a(s))) + shortcut(s)). The shortcut is a
    1x1 conv: strided and learned when the shape changes, else identity weights (1 = 2^0,
    exact), so the residual sum of two synapses is one accumulator group when lowered.
    `feeds`: the next block's conv_a (spike_profile "layerwise")."""
    a = _conv_lif(net, cfg, inputs, s, channels, f"{name}.conv_a", stride=stride,
                  feeds=Consumer(f"{name}.conv_b", channels))
    h = net.conv2d(a, _conv_weights(net, cfg, inputs, a, channels, f"{name}.conv_b", 3, 1, 1),
                   _bias(cfg, channels), pads=1, name=f"{name}.conv_b")
    if stride != 1 or s.shape[1] != channels:
        shortcut = net.conv2d(s, _conv_weights(net, cfg, inputs, s, channels, f"{name}.down", 1, stride, 0),
                              None, strides=stride, name=f"{name}.down")
    else:
        identity = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
        shortcut = net.conv2d(s, identity, None, name=f"{name}.identity")
    h = net.add(h, shortcut, name=f"{name}.residual")
    s, _ = _neuron(net, cfg, inputs, h, beta=HIDDEN_BETA, name=f"{name}.lif", feeds=feeds)
    return s


def _build_resnet19(cfg: ZooConfig) -> tuple[Network, dict[str, np.ndarray]]:
    """ResNet19 for CIFAR-10 as LoAS simulates it (RuokaiYin/LoAS archs/cifarsvhn/resnet.py):
    conv1 3->64 on the 32x32 map + 3/3/2 basic blocks of 128/256/512 channels, each stage
    entered with stride 2 and a learned 1x1 shortcut (16x16, 8x8, 4x4), average pool to
    1x1, dense-256 + dense-10 = 19 weight layers (the three 1x1 shortcuts are not counted).
    A block is LIF(conv_b(LIF(conv_a(x))) + shortcut(x)); the stage-3 entry conv is
    LoAS's R-L19 shape (T=4, M=4x4=16, N=512, K=256*9=2304).

    The identity shortcut is an explicit 1x1 conv with identity weights (1 = 2^0,
    exact), so the residual sum of two synapses is one accumulator group in the
    lowering (see `_basic_block`)."""
    net = Network(cfg.timesteps, name="resnet19_cifar10")
    inputs = {"image": _analog_input(cfg, (1, 3, 32, 32))}
    x = net.input("image", (1, 3, 32, 32))
    blocks = [(channels, 2 if b == 0 else 1) for channels, count in ((128, 3), (256, 3), (512, 2))
              for b in range(count)]
    entry = [Consumer(f"block{i + 1}.conv_a", channels, stride=stride) for i, (channels, stride) in enumerate(blocks)]
    s = _conv_lif(net, cfg, inputs, x, 64, "conv1", first=True, feeds=entry[0])  # 32x32
    for index, (channels, stride) in enumerate(blocks):
        feeds = entry[index + 1] if index + 1 < len(blocks) else None
        s = _basic_block(net, cfg, inputs, s, channels, stride, f"block{index + 1}", feeds)
    a = net.avg_pool2d(s, 4, name="avgpool")  # 512 x 1 x 1, multi-bit
    f = net.flatten(a, name="flatten")
    f = _dense_lif(net, cfg, inputs, f, 256, "fc18")
    _classifier(net, cfg, inputs, f, name="fc19")
    return net, inputs


def _scaled(size: int, scale: float, minimum: int = 8) -> int:
    return max(minimum, int(round(size * scale)))


def _binary_input_silent(cfg: ZooConfig, shape: tuple[int, ...], silent: float | None) -> np.ndarray:
    """Binary spikes [T, *shape] with fraction `cfg.spike_sparsity` of zeros and, when
    `silent` is given, that fraction of neurons silent at every step (the rest fire at
    least once: a neuron left all-zero by chance fires at one random step)."""
    T = cfg.timesteps
    if silent is None:
        return _binary_input(cfg, shape)
    n = int(np.prod(shape))
    active = cfg.rng.permutation(n) >= int(round(silent * n))
    wanted = (1.0 - cfg.spike_sparsity) * T / max(1e-9, 1.0 - silent)  # spikes per active neuron
    wanted = min(max(wanted, 1.0), float(T))
    low, high = 0.0, 1.0  # per-step probability q with T*q + (1-q)^T = wanted
    for _ in range(40):
        q = (low + high) / 2
        low, high = (q, high) if T * q + (1 - q) ** T < wanted else (low, q)
    spikes = cfg.rng.random((T, n)) < (low + high) / 2
    dead = ~spikes.any(axis=0)
    spikes[cfg.rng.integers(0, T, size=n)[dead], np.flatnonzero(dead)] = True
    spikes &= active[None, :]
    return spikes.reshape((T, *shape)).astype(np.float32)


def _build_sew_resnet18(cfg: ZooConfig) -> tuple[Network, dict[str, np.ndarray]]:
    """SEW-ResNet-18 for CIFAR10-DVS (STEMS §5.2.1; Fang et al. 2021): conv3x3 2->32 + LIF,
    then 7 SEW blocks [conv3x3+LIF, conv3x3+LIF, g(out, in), 2x2 spike max-pool], then
    dense-10. g is SEW-ADD (`Add`, multi-bit) or SEW-OR (`Max` of spikes) by cfg.residual.
    Input: DVS events, 2 polarity channels, 128x128 x input_scale."""
    side = _scaled(128, cfg.input_scale, 8)
    net = Network(cfg.timesteps, name="sew_resnet18_dvs")
    inputs = {"events": _binary_input(cfg, (1, 2, side, side))}
    x = net.input("events", (1, 2, side, side))
    s = _conv_lif(net, cfg, inputs, x, 32, "stem", beta=LONG_BETA)
    for b in range(1, 8):
        if s.shape[2] < 2:
            break
        a = _conv_lif(net, cfg, inputs, s, 32, f"sew{b}.conv_a", beta=LONG_BETA)
        c = _conv_lif(net, cfg, inputs, a, 32, f"sew{b}.conv_b", beta=LONG_BETA)
        if cfg.residual == "or":
            s = net.spike_or(c, s, name=f"sew{b}.or")
        else:
            s = net.add(c, s, name=f"sew{b}.add")
        s = net.max_pool2d(s, 2, name=f"sew{b}.pool")
    s = net.flatten(s, name="flatten")
    _classifier(net, cfg, inputs, s, name="fc")
    return net, inputs


def _build_red_lif(cfg: ZooConfig) -> tuple[Network, dict[str, np.ndarray]]:
    """RED-LIF for Gen4 (STEMS §5.2.2): 3 feed-forward residual blocks, then 5 conv-LIF
    layers. The feed-forward blocks have spike features but no neuron state (STEMS §4.4:
    "normal ANN layers with spike-based features"): LIF with beta = 0. A block is
    y = SF(conv3x3/2(x)); out = SF(conv3x3(y) + y) (the identity written as a 1x1 conv,
    see _build_resnet19). The LIF layers are conv3x3/2 with 256 channels. Input: 6 event
    channels, 360x640 x input_scale, T = 12 (LIF beta = 1/2, see LONG_BETA). Outputs: the
    last layer's spikes/membranes."""
    h, w = _scaled(360, cfg.input_scale, 32), _scaled(640, cfg.input_scale, 32)
    net = Network(cfg.timesteps, name="red_lif_gen4")
    inputs = {"events": _binary_input(cfg, (1, 6, h, w))}
    s = net.input("events", (1, 6, h, w))
    for b, channels in enumerate((32, 64, 128), start=1):
        y = _conv_lif(net, cfg, inputs, s, channels, f"ff{b}.down", stride=2, beta=0.0)
        hc = net.conv2d(y, _weights(cfg, (channels, channels, 3, 3)), _bias(cfg, channels),
                        pads=1, name=f"ff{b}.conv")
        identity = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
        hc = net.add(hc, net.conv2d(y, identity, None, name=f"ff{b}.identity"), name=f"ff{b}.residual")
        s, _ = _neuron(net, cfg, inputs, hc, beta=0.0, name=f"ff{b}.sf")
    for i in range(1, 6):
        h = net.conv2d(s, _weights(cfg, (256, s.shape[1], 3, 3)), _bias(cfg, 256),
                       strides=2, pads=1, name=f"lif{i}.conv")
        s, v = _neuron(net, cfg, inputs, h, beta=LONG_BETA, name=f"lif{i}")
    net.output(s, "spikes")
    net.output(v, "membrane")
    return net, inputs


def _build_spikformer_hff(cfg: ZooConfig) -> tuple[Network, dict[str, np.ndarray]]:
    """LoAS Table II T-HFF: the hidden feed-forward layer of Spikformer, T=4, M=784 tokens,
    K=N=3072: binary input spikes with the requested sparsity and silent ratio -> a
    3072x3072 linear layer over the tokens -> LIF. The 784 tokens are laid out as a
    784x1 map and the linear layer is the equivalent 1x1 conv ([1, K, 784, 1]): the same
    M x K x N product, tiled over token rows, where a [784, 3072] dense input would be
    lowered as 784 separate batch items (539k instructions). input_scale shrinks the
    token count and K=N (quick runs)."""
    m, k = _scaled(784, cfg.input_scale, 4), _scaled(3072, cfg.input_scale, 16)
    net = Network(cfg.timesteps, name="spikformer_hff")
    inputs = {"tokens": _binary_input_silent(cfg, (1, k, m, 1), cfg.silent_ratio)}
    x = net.input("tokens", (1, k, m, 1))
    h = net.conv2d(x, _weights(cfg, (k, k, 1, 1)), _bias(cfg, k), name="hff")
    s, v = _neuron(net, cfg, inputs, h, beta=HIDDEN_BETA, name="hff.lif")
    net.output(s, "spikes")
    net.output(v, "membrane")
    return net, inputs


def _build_resnet18_imagenet(cfg: ZooConfig) -> tuple[Network, dict[str, np.ndarray]]:
    """Spiking ResNet-18 for ImageNet (the scale test): conv7x7/2 64 + LIF, 3x3/2 spike
    max-pool, 4 stages x 2 basic blocks (64/128/256/512; 1x1/2 downsampling shortcuts,
    identity shortcuts as 1x1 identity convs), global spike max-pool, dense-1000.
    Input: analog 224x224x3 x input_scale, direct coding, T = 4."""
    side = _scaled(224, cfg.input_scale, 32)
    net = Network(cfg.timesteps, name="resnet18_imagenet")
    inputs = {"image": _analog_input(cfg, (1, 3, side, side))}
    x = net.input("image", (1, 3, side, side))
    s = _conv_lif(net, cfg, inputs, x, 64, "conv1", kernel=7, stride=2, pad=3, first=True)
    s = net.max_pool2d(s, 3, strides=2, pads=1, name="pool1")
    index = 0
    for channels, first_stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for b in range(2):
            index += 1
            s = _basic_block(net, cfg, inputs, s, channels, first_stride if b == 0 else 1, f"block{index}")
    # Global pooling as a spike max-pool: an average over the 7x7 map divides by 49, which
    # no binary fixed point holds exactly (the accelerator would round, onnxruntime not).
    a = net.max_pool2d(s, (s.shape[2], s.shape[3]), name="globalpool")
    f = net.flatten(a, name="flatten")
    _classifier(net, cfg, inputs, f, classes=1000, name="fc")
    return net, inputs


DIGITS_DATA = Path(__file__).resolve().parent / "data" / "digits.npz"
DATASET_LABELS = "labels"  # the key of a data set's labels [N] int64 (`snnc eval`)


@functools.lru_cache(maxsize=1)
def digits_data() -> dict[str, np.ndarray]:
    """The shipped `digits` file (examples/train_digits.py): weights, biases, test split."""
    with np.load(DIGITS_DATA, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _digits_frames(cfg: ZooConfig, images: np.ndarray) -> np.ndarray:
    """Direct coding: pixel / 16 (0..16 -> multiples of 2^-4) at every step, [T, N, 64]."""
    frames = images.astype(np.float32) / np.float32(16)
    return np.ascontiguousarray(np.broadcast_to(frames, (cfg.timesteps, *frames.shape)), dtype=np.float32)


def _build_digits(cfg: ZooConfig) -> tuple[Network, dict[str, np.ndarray]]:
    """A spiking MLP trained on scikit-learn's digits (examples/train_digits.py): 8x8 images,
    direct coding, dense 64-128 + IF, dense 128-10 whose per-step output is the graph output
    `logits`; the prediction is the argmax of the logits summed over time. Inputs: the first
    test image ([T, 1, 64]); the whole test split is `_digits_dataset`."""
    data = digits_data()
    net = Network(cfg.timesteps, name="digits")
    x = net.input("image", (1, 64))
    h = net.dense(x, data["fc1_weight"], data["fc1_bias"], name="fc1")
    spikes, _ = net.if_neuron(h, threshold=1.0, name="lif1")
    net.output(net.dense(spikes, data["fc2_weight"], data["fc2_bias"], name="fc2"), "logits")
    return net, {"image": _digits_frames(cfg, data["test_images"][:1])}


def _digits_dataset(cfg: ZooConfig) -> dict[str, np.ndarray]:
    """The test split: every image along the batch axis ([T, N, 64]) and its labels [N]."""
    data = digits_data()
    return {"image": _digits_frames(cfg, data["test_images"]),
            DATASET_LABELS: data["test_labels"].astype(np.int64)}


ZOO: dict[str, ZooModel] = {
    "mlp": ZooModel(
        "mlp", "MLP 64-128-128-10 on binary spikes, LIF, a residual add (B=1, T=4)",
        _build_mlp,
    ),
    "vgg-small": ZooModel(
        "vgg-small", "3 conv3x3 (3-16-32-32) + LIF, maxpool, avgpool, dense-10 on 32x32 analog input (T=4)",
        _build_vgg_small,
    ),
    "alexnet-cifar10": ZooModel(
        "alexnet-cifar10", "AlexNet (5 conv + dense) on CIFAR-10 32x32x3: LoAS's Table II workload, "
        "per-layer spikes, work and filter spread from its logs (T=4)",
        _build_alexnet, 4, *LOAS_TABLE_II["alexnet-cifar10"], matched_work=LOAS_MATCHED_WORK["alexnet-cifar10"],
        sparten_spikes=LOAS_SPARTEN_SPIKES["alexnet-cifar10"],
        filter_spread=LOAS_FILTER_SPREAD["alexnet-cifar10"],
    ),
    "vgg16-cifar10": ZooModel(
        "vgg16-cifar10", "VGG16 (13 conv + dense) on CIFAR-10 32x32x3: LoAS's Table II workload, "
        "per-layer spikes, work and filter spread from its logs (T=4)",
        _build_vgg16, 4, *LOAS_TABLE_II["vgg16-cifar10"], matched_work=LOAS_MATCHED_WORK["vgg16-cifar10"],
        sparten_spikes=LOAS_SPARTEN_SPIKES["vgg16-cifar10"],
        filter_spread=LOAS_FILTER_SPREAD["vgg16-cifar10"],
    ),
    "resnet19-cifar10": ZooModel(
        "resnet19-cifar10", "ResNet19 (conv + 8 basic blocks + 2 dense) on CIFAR-10: LoAS's Table II workload, "
        "per-layer spikes, work and filter spread from its logs (T=4)",
        _build_resnet19, 4, *LOAS_TABLE_II["resnet19-cifar10"], matched_work=LOAS_MATCHED_WORK["resnet19-cifar10"],
        sparten_spikes=LOAS_SPARTEN_SPIKES["resnet19-cifar10"],
        filter_spread=LOAS_FILTER_SPREAD["resnet19-cifar10"],
    ),
    "sew-resnet18-dvs": ZooModel(
        "sew-resnet18-dvs", "STEMS SEW-ResNet-18, CIFAR10-DVS 128x128x2 events, 7 SEW blocks + 2x2 spike "
        "max-pool, SEW-ADD or SEW-OR (T=16)",
        _build_sew_resnet18, 16, 0.5, 0.93, None, large=True, scalable=True,
    ),
    "red-lif-gen4": ZooModel(
        "red-lif-gen4", "STEMS RED-LIF, Gen4 360x640x6 events: 3 feed-forward residual blocks + 5 conv-LIF "
        "(T=12; --input-scale for quick runs)",
        _build_red_lif, 12, 0.5, 0.9, None, large=True, scalable=True,
    ),
    "spikformer-hff": ZooModel(
        "spikformer-hff", "LoAS T-HFF layer: spikes 4x784x3072 -> linear 3072x3072 (1x1 conv over 784x1 tokens) -> LIF (weights 96.8 % "
        "sparse, 86.8 % silent)",
        _build_spikformer_hff, 4, 0.968, 0.9, 0.868, large=True, scalable=True,
    ),
    "resnet18-imagenet": ZooModel(
        "resnet18-imagenet", "Spiking ResNet-18, ImageNet 224x224x3, dense-1000 (T=4): the scale test",
        _build_resnet18_imagenet, 4, 0.9, 0.8, 0.7, large=True, scalable=True,
    ),
    "digits": ZooModel(
        "digits", "spiking MLP 64-128-10 (IF) trained on scikit-learn's 8x8 digits, direct coding, logits output; "
        "--input-out writes the 360-image test split with labels (T=16)",
        _build_digits, 16, trained=True, dataset=_digits_dataset,
    ),
}


def build_network(
    name: str, *, timesteps: int | None = None, weight_sparsity: float | None = None,
    spike_sparsity: float | None = None, seed: int = 0, silent_ratio: float | None = None,
    input_scale: float = 1.0, residual: str | None = None, weight_profile: str | None = None,
    spike_profile: str | None = None, filter_spread: float | None = None,
    on_layer: Callable[[str], None] | None = None,
) -> tuple[Network, dict[str, np.ndarray]]:
    """The zoo model as a `Network` (before export) and its inputs.

    silent_ratio   target silent-neuron ratio (default: the model's, None = not calibrated)
    input_scale    spatial scale of the input, e.g. 0.25 (red-lif-gen4, sew-resnet18-dvs,
                   resnet18-imagenet; others accept only 1.0)
    residual       "add" or "or" (the SEW residual of sew-resnet18-dvs)
    weight_profile "layerwise", "uniform", "fan-in" or "fan-out" (WEIGHT_PROFILES; see the
                   module doc). Default: "layerwise" for a model with a per-layer table
                   (the LoAS Table II models) unless weight_sparsity is given, else "uniform".
                   fan-in / fan-out build the model twice: a dry run lists its weight layers.
    spike_profile  "layerwise" or "uniform" (SPIKE_PROFILES; see the module doc). Default:
                   "layerwise" for a model with a per-layer spike table (the LoAS Table II
                   models) unless spike_sparsity or silent_ratio is given, else "uniform".
    filter_spread  sigma of the log-normal per-filter weight scale seen by magnitude pruning
                   (0: zeros at random over each tensor). Default: the model's fitted value
                   (LOAS_FILTER_SPREAD) with weight_profile "layerwise", else 0.
    on_layer       called with each neuron layer's name as its calibration starts (the CLI's
                   progress display; the LoAS models take seconds).
    """
    if name not in ZOO:
        raise FrontendError(f"unknown zoo model '{name}' (known: {', '.join(sorted(ZOO))})")
    entry = ZOO[name]
    if entry.trained:
        given = [option for option, value in (
            ("weight_sparsity", weight_sparsity), ("spike_sparsity", spike_sparsity), ("silent_ratio", silent_ratio),
            ("residual", residual), ("weight_profile", weight_profile), ("spike_profile", spike_profile),
            ("filter_spread", filter_spread), ("seed", seed or None),
            ("input_scale", None if input_scale == 1.0 else input_scale),
        ) if value is not None]
        if given:
            raise FrontendError(f"zoo model '{name}' has trained weights: option {given[0]} does not apply")
    cfg = ZooConfig(
        timesteps=entry.timesteps if timesteps is None else int(timesteps),
        weight_sparsity=entry.weight_sparsity if weight_sparsity is None else float(weight_sparsity),
        spike_sparsity=entry.spike_sparsity if spike_sparsity is None else float(spike_sparsity),
        rng=np.random.default_rng(seed),
        silent_ratio=entry.silent_ratio if silent_ratio is None else float(silent_ratio),
        input_scale=float(input_scale),
        residual=entry.residual if residual is None else residual,
        on_layer=on_layer,
    )
    if cfg.timesteps < 1:
        raise FrontendError(f"zoo model '{name}': timesteps must be >= 1, got {cfg.timesteps}")
    for what in ("weight_sparsity", "spike_sparsity"):
        value = getattr(cfg, what)
        if not 0.0 <= value < 1.0:
            raise FrontendError(f"zoo model '{name}': {what} must be in [0, 1), got {value}")
    if cfg.silent_ratio is not None and not 0.0 <= cfg.silent_ratio <= cfg.spike_sparsity:
        raise FrontendError(
            f"zoo model '{name}': silent_ratio must be in [0, spike_sparsity={cfg.spike_sparsity}], "
            f"got {cfg.silent_ratio}")
    if not 0.0 < cfg.input_scale <= 1.0:
        raise FrontendError(f"zoo model '{name}': input_scale must be in (0, 1], got {cfg.input_scale}")
    if cfg.input_scale != 1.0 and not entry.scalable:
        raise FrontendError(f"zoo model '{name}' has a fixed input size (input_scale must be 1)")
    if cfg.residual not in ("add", "or"):
        raise FrontendError(f"zoo model '{name}': residual must be 'add' or 'or', got {cfg.residual!r}")
    if weight_profile is None:
        weight_profile = "layerwise" if entry.matched_work and weight_sparsity is None else "uniform"
    if weight_profile not in WEIGHT_PROFILES:
        raise FrontendError(f"zoo model '{name}': weight_profile must be one of {', '.join(WEIGHT_PROFILES)}, "
                            f"got {weight_profile!r}")
    if spike_profile is None:
        spike_profile = ("layerwise" if entry.sparten_spikes and spike_sparsity is None and silent_ratio is None
                         else "uniform")
    if spike_profile not in SPIKE_PROFILES:
        raise FrontendError(f"zoo model '{name}': spike_profile must be one of {', '.join(SPIKE_PROFILES)}, "
                            f"got {spike_profile!r}")
    if spike_profile == "layerwise":
        if not entry.sparten_spikes:
            raise FrontendError(f"zoo model '{name}' has no per-layer table for spike_profile 'layerwise' "
                                "(the LoAS Table II models have one)")
        cfg = replace(cfg, spike_log={layer: (*logged, entry.matched_work[layer])
                                      for layer, logged in entry.sparten_spikes.items()})
    if filter_spread is None:
        filter_spread = entry.filter_spread if weight_profile == "layerwise" else 0.0
    if not 0.0 <= filter_spread <= MAX_FILTER_SPREAD:
        raise FrontendError(f"zoo model '{name}': filter_spread must be in [0, {MAX_FILTER_SPREAD}], "
                            f"got {filter_spread}")
    cfg = replace(cfg, filter_spread=float(filter_spread))
    if weight_profile == "layerwise":
        if not entry.matched_work:
            raise FrontendError(f"zoo model '{name}' has no per-layer table for weight_profile 'layerwise' "
                                "(the LoAS Table II models have one)")
        cfg = replace(cfg, matched_work=entry.matched_work)
    elif weight_profile != "uniform":
        # the dry run draws from its own generator, so the real build draws the same numbers
        plan = LayerSparsities(cfg.weight_sparsity)
        entry.builder(replace(cfg, rng=np.random.default_rng(seed), layer_sparsities=plan))
        cfg = replace(cfg, layer_sparsities=LayerSparsities(
            cfg.weight_sparsity, profile_sparsities(plan.shapes, weight_profile, cfg.weight_sparsity)))
    return entry.builder(cfg)


def build(
    name: str, *, timesteps: int | None = None, weight_sparsity: float | None = None,
    spike_sparsity: float | None = None, seed: int = 0, form: str = "unrolled",
    silent_ratio: float | None = None, input_scale: float = 1.0, residual: str | None = None,
    weight_profile: str | None = None, spike_profile: str | None = None, filter_spread: float | None = None,
    on_layer: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The zoo model `name` as canonical ONNX (`form` "unrolled" or "scan") and its inputs."""
    net, inputs = build_network(
        name, timesteps=timesteps, weight_sparsity=weight_sparsity,
        spike_sparsity=spike_sparsity, seed=seed, silent_ratio=silent_ratio,
        input_scale=input_scale, residual=residual, weight_profile=weight_profile,
        spike_profile=spike_profile, filter_spread=filter_spread, on_layer=on_layer,
    )
    return net.to_onnx(form), inputs


def build_dataset(name: str, *, timesteps: int | None = None) -> dict[str, np.ndarray]:
    """The labelled data set of zoo model `name` (ZooModel.dataset): {graph input name:
    [T, N, ...] float32 with the samples along the batch axis, DATASET_LABELS: [N] int64}."""
    if name not in ZOO:
        raise FrontendError(f"unknown zoo model '{name}' (known: {', '.join(sorted(ZOO))})")
    entry = ZOO[name]
    if entry.dataset is None:
        raise FrontendError(f"zoo model '{name}' has no labelled data set (models with one: "
                            f"{', '.join(n for n, m in ZOO.items() if m.dataset is not None)})")
    steps = entry.timesteps if timesteps is None else int(timesteps)
    if steps < 1:
        raise FrontendError(f"zoo model '{name}': timesteps must be >= 1, got {steps}")
    return entry.dataset(ZooConfig(timesteps=steps, weight_sparsity=0.0, spike_sparsity=0.0,
                                   rng=np.random.default_rng(0)))


def save_inputs(path: str | Path, inputs: dict[str, np.ndarray]) -> Path:
    """Write the inputs as an .npz keyed by graph input name (what the runtime reads)."""
    path = Path(path)
    np.savez(path, **{name: np.asarray(array, np.float32) for name, array in inputs.items()})
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
