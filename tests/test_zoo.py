"""The model zoo: deterministic, representable numbers, calibrated spike sparsity."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from snnc.backend.errors import FrontendError
from snnc.compiler import zoo
from snnc.compiler.zoo import models
from snnc.compiler.zoo.models import zero_fraction


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _neuron_nodes(model: onnx.ModelProto):
    """Step-0 neuron calls (unrolled form): name -> attributes."""
    return {
        n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        for n in model.graph.node if n.domain == "snn" and ".t" not in n.name
    }


def test_registry_has_descriptions():
    assert {"mlp", "vgg-small"} <= set(zoo.ZOO)
    for name, entry in zoo.ZOO.items():
        assert entry.name == name
        assert entry.description and "\n" not in entry.description


@pytest.mark.parametrize("name", ["mlp", "vgg-small"])
def test_deterministic_per_seed(name):
    model_a, inputs_a = zoo.build(name, seed=3)
    model_b, inputs_b = zoo.build(name, seed=3)
    assert model_a.SerializeToString() == model_b.SerializeToString()
    assert inputs_a.keys() == inputs_b.keys()
    for key in inputs_a:
        assert np.array_equal(inputs_a[key], inputs_b[key])
    model_c, inputs_c = zoo.build(name, seed=4)
    assert model_c.SerializeToString() != model_a.SerializeToString()
    assert not all(np.array_equal(inputs_a[k], inputs_c[k]) for k in inputs_a)


@pytest.mark.parametrize("name", ["mlp", "vgg-small"])
def test_model_header_and_inputs(name):
    model, inputs = zoo.build(name, timesteps=3)
    assert model.ir_version <= 13
    assert {o.domain: o.version for o in model.opset_import}[""] >= 13
    onnx.checker.check_model(model, full_check=True)
    graph_inputs = [i.name for i in model.graph.input]
    assert list(inputs) == graph_inputs
    for value in model.graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims[0] == 3 and list(inputs[value.name].shape) == dims
        assert inputs[value.name].dtype == np.float32


@pytest.mark.parametrize("name,sparsity", [("mlp", 0.5), ("vgg-small", 0.7), ("mlp", 0.0)])
def test_weights_representable_and_pruned(name, sparsity):
    model, _ = zoo.build(name, weight_sparsity=sparsity)
    weights = {k: v for k, v in _initializers(model).items() if k.endswith(".weight")}
    assert len(weights) >= 3
    for key, w in weights.items():
        ints = w * 16
        assert np.array_equal(ints, np.round(ints)) and np.abs(ints).max() <= 7, key
        assert np.count_nonzero(w == 0) == round(sparsity * w.size), key
    for key, b in _initializers(model).items():
        if key.endswith(".bias"):
            assert np.array_equal(b * 16, np.round(b * 16)), key


def test_inputs_are_binary_or_representable():
    _, mlp_inputs = zoo.build("mlp")
    x = mlp_inputs["input"]
    assert set(np.unique(x)) <= {0.0, 1.0} and 0 < x.mean() < 1
    _, vgg_inputs = zoo.build("vgg-small")
    image = vgg_inputs["image"]
    assert np.array_equal(image * 256, np.round(image * 256))
    assert image.min() >= -4 and image.max() < 4 and image.std() > 0.5


@pytest.mark.parametrize("name", ["mlp", "vgg-small"])
@pytest.mark.parametrize("target", [0.8, 0.9])
def test_calibrated_spike_sparsity(name, target):
    net, inputs = zoo.build_network(name, spike_sparsity=target)
    values = net.evaluate(inputs)
    neurons = [layer for layer in net.layers if layer.kind in ("lif", "if")]
    assert len(neurons) >= 3
    for layer in neurons:
        measured = zero_fraction(values[layer.outputs[0]])
        assert abs(measured - target) <= 0.05, (layer.name, measured)
        threshold = layer.params["threshold"]
        assert threshold > 0 and threshold * 16 == round(threshold * 16), layer.name
        if layer.params["beta"] is not None:
            assert layer.params["beta"] in (0.5, 0.75, 0.875)


def test_thresholds_in_onnx_match_calibration():
    model, _ = zoo.build("mlp")
    net, _ = zoo.build_network("mlp")
    calibrated = {l.name: l.params["threshold"] for l in net.layers if l.kind == "lif"}
    exported = {name: attrs.get("threshold", 1.0) for name, attrs in _neuron_nodes(model).items()}
    assert exported == calibrated


def test_scan_form_available():
    model, _ = zoo.build("mlp", form="scan")
    assert [n.op_type for n in model.graph.node] == ["Scan"]


def test_save_inputs(tmp_path):
    model, inputs = zoo.build("mlp")
    path = zoo.save_inputs(tmp_path / "inputs.npz", inputs)
    with np.load(path) as loaded:
        assert list(loaded.keys()) == [i.name for i in model.graph.input]
        assert np.array_equal(loaded["input"], inputs["input"])


def test_unknown_model_and_bad_options():
    with pytest.raises(FrontendError, match="unknown zoo model 'resnet-9000'"):
        zoo.build("resnet-9000")
    with pytest.raises(FrontendError, match="weight_sparsity"):
        zoo.build("mlp", weight_sparsity=1.5)
    with pytest.raises(FrontendError, match="weight_profile must be one of layerwise, uniform, fan-in, fan-out, got 'lth'"):
        zoo.build("mlp", weight_profile="lth")
    with pytest.raises(FrontendError, match="zoo model 'mlp' has no per-layer table"):
        zoo.build("mlp", weight_profile="layerwise")
    with pytest.raises(FrontendError, match="zoo model 'mlp' has no per-layer table for spike_profile"):
        zoo.build("mlp", spike_profile="layerwise")
    with pytest.raises(FrontendError, match="spike_profile must be one of layerwise, uniform, got 'real'"):
        zoo.build("mlp", spike_profile="real")
    with pytest.raises(FrontendError, match=r"filter_spread must be in \[0, 3.0\], got -0.1"):
        zoo.build("mlp", filter_spread=-0.1)


def test_filter_kept_counts_by_hand():
    """Filters of scales 1 and 2, 10 weights each, 10 kept in all: the threshold tau = 0.92351
    of test_global_magnitude_sparsities_by_hand keeps 3.557 and 6.443, so 4 and 6 (largest
    remainder); an exact total, capped at the filter size, more kept where the scale is larger."""
    assert models.filter_kept_counts(np.array([1.0, 2.0]), 10, 10).tolist() == [4, 6]
    counts = models.filter_kept_counts(np.exp(np.linspace(-1, 1, 50)), 9, 100)
    assert counts.sum() == 100 and counts.max() <= 9 and np.all(np.diff(counts) >= 0)
    assert models.filter_kept_counts(np.array([0.1, 10.0]), 4, 6).tolist() == [2, 4]  # the big one is full


@pytest.mark.parametrize("shape,axis", [((64, 32, 3, 3), (1, 2, 3)), ((256, 48), (0,))])
def test_filter_spread_spreads_zeros_over_filters(shape, axis):
    """The same exact zero count; with a spread, the filters (conv: axis 0, dense: axis 1)
    are unevenly dense, the more so the larger the spread; without one, as dense as chance."""
    def filter_density(spread):
        cfg = models.ZooConfig(4, 0.9, 0.8, np.random.default_rng(0), filter_spread=spread)
        weights = models._weights(cfg, shape)
        assert np.count_nonzero(weights == 0) == round(0.9 * weights.size)
        return (weights != 0).mean(axis=axis)

    cv = [filter_density(spread).std() / filter_density(spread).mean() for spread in (0.0, 0.3, 1.0)]
    assert cv[0] < 0.25 < cv[1] < cv[2]


def test_layerwise_models_get_their_filter_spread(monkeypatch):
    """The LoAS models' default spread (LOAS_FILTER_SPREAD) comes with weight_profile layerwise;
    uniform keeps the zeros at random; an explicit spread wins (the builder's config)."""
    seen = []
    entry = zoo.ZOO["alexnet-cifar10"]
    monkeypatch.setitem(zoo.ZOO, "alexnet-cifar10",
                        dataclasses.replace(entry, builder=lambda cfg: seen.append(cfg) or (None, {})))
    zoo.build_network("alexnet-cifar10")
    zoo.build_network("alexnet-cifar10", weight_profile="uniform")
    zoo.build_network("alexnet-cifar10", weight_profile="uniform", filter_spread=0.5)
    zoo.build_network("alexnet-cifar10", spike_sparsity=0.9)
    assert [cfg.filter_spread for cfg in seen] == [models.LOAS_FILTER_SPREAD["alexnet-cifar10"], 0.0, 0.5,
                                                   models.LOAS_FILTER_SPREAD["alexnet-cifar10"]]
    assert models.LOAS_FILTER_SPREAD["alexnet-cifar10"] > 0
    # spike_profile: layerwise by default, uniform once a spike target is given
    assert [cfg.spike_log is not None for cfg in seen] == [True, True, True, False]
    assert seen[0].spike_log["conv4"] == (*models.LOAS_SPARTEN_SPIKES["alexnet-cifar10"]["conv4"],
                                          models.LOAS_MATCHED_WORK["alexnet-cifar10"]["conv4"])


def test_global_magnitude_sparsities_by_hand():
    # scales 1 and 2, 100 weights each, 50 % kept overall: tau solves
    # erfc(tau / sqrt(2)) + erfc(tau / (2 sqrt(2))) = 1, i.e. tau = 0.92351 (scipy brentq),
    # which keeps 35.57 % of the small layer and 64.43 % of the large one
    sparsity = models.global_magnitude_sparsities([1.0, 2.0], [100, 100], 0.5)
    assert sparsity == pytest.approx([0.6443, 0.3557], abs=1e-4)
    # the mean over sizes is the target; equal scales give the uniform profile
    sparsity = models.global_magnitude_sparsities([0.3, 0.1, 0.05], [10, 1000, 5000], 0.9)
    assert np.dot(sparsity, [10, 1000, 5000]) / 6010 == pytest.approx(0.9, abs=1e-9)
    assert sparsity[0] < sparsity[1] < sparsity[2]  # smaller weights are pruned harder
    assert models.global_magnitude_sparsities([0.2] * 3, [5, 50, 500], 0.8) == pytest.approx([0.8] * 3)


def test_weight_fans():
    assert models.weight_fans((128, 64, 3, 3)) == (576, 1152)  # conv [out, in, kh, kw]
    assert models.weight_fans((512, 10)) == (512, 10)  # dense [in, out]


def _weight_layers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """name -> weight in `_weights`' layout (a dense Gemm stores [out, in]; the zoo draws [in, out])."""
    return {k: (v if v.ndim == 4 else v.T) for k, v in _initializers(model).items() if k.endswith(".weight")}


@pytest.mark.parametrize("profile,fan", [("fan-in", 0), ("fan-out", 1)])
def test_weight_profile_spreads_the_sparsity(profile, fan):
    """Each layer gets exactly its planned zero count; a layer with a larger fan is sparser;
    the size-weighted mean is the requested sparsity; the same call gives the same model."""
    model, _ = zoo.build("vgg-small", weight_sparsity=0.7, weight_profile=profile)
    weights = _weight_layers(model)
    shapes = [w.shape for w in weights.values()]
    planned = models.profile_sparsities(shapes, profile, 0.7)
    zeros = [np.count_nonzero(w == 0) for w in weights.values()]
    sizes = [w.size for w in weights.values()]
    assert zeros == [round(p * size) for p, size in zip(planned, sizes)]
    assert sum(zeros) / sum(sizes) == pytest.approx(0.7, abs=len(sizes) / sum(sizes))
    fans = [models.weight_fans(shape)[fan] for shape in shapes]
    order = np.argsort(fans, kind="stable")
    assert all(zeros[a] / sizes[a] <= zeros[b] / sizes[b] for a, b in itertools.pairwise(order))
    assert len({round(z / size, 2) for z, size in zip(zeros, sizes)}) > 1  # not uniform
    again, _ = zoo.build("vgg-small", weight_sparsity=0.7, weight_profile=profile)
    assert all(np.array_equal(v, _initializers(again)[k]) for k, v in _initializers(model).items())


def test_weight_profile_leaves_the_input_layer_alone():
    """The deep models give their input layer its own sparsity (FIRST_LAYER_MAX_SPARSITY):
    it is not profiled, and the profiled layers' mean is Table II's weight sparsity."""
    uniform = _weight_layers(zoo.build("alexnet-cifar10", weight_profile="uniform")[0])
    profiled = _weight_layers(zoo.build("alexnet-cifar10", weight_profile="fan-out")[0])
    first, *rest = uniform
    assert np.array_equal(uniform[first], profiled[first])
    zeros = sum(np.count_nonzero(profiled[k] == 0) for k in rest)
    size = sum(profiled[k].size for k in rest)
    assert zeros / size == pytest.approx(zoo.ZOO["alexnet-cifar10"].weight_sparsity, abs=len(rest) / size)
    assert np.count_nonzero(profiled["conv4.weight"] == 0) != np.count_nonzero(uniform["conv4.weight"] == 0)
