"""Property tests (hypothesis): whatever a binary, an input file or a hardware config holds,
the reader, the validator and the simulator either work or raise the clean error class
(SnncError: one line, exit 1 in the CLI). Sized to run in seconds; bench/fuzz.py runs the
same mutators over >= 100k cases."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from passes_util import bench_module
from progbuild import Prog
from snnc.backend.binformat import read_program, write_program
from snnc.backend.errors import HwConfigError, SnncError
from snnc.backend.hwconfig import PRESET_DIR, HwConfig
from snnc.compiler.fileio import load_npz
from snnc.runtime import simulate
from test_runtime import SPIKES_IN, W_DENSE, dense_program

fc = bench_module("fuzz_cases")
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def bases():
    """Small programs: hand-assembled dense layers (spike and multi-bit inputs) and the zoo MLP."""
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.compiler.zoo import build

    images = [dense_program(W_DENSE, [1, 2], [4, 4], [0, 0], [0, 0]),
              dense_program(W_DENSE, [1, 2], [4, 4], [1, 1], [0, 0], in_format=fc.isa.Format.ACT_I16, in_frac=4,
                            leak_form=fc.isa.LeakForm.BETA, leak_frac=1, visits=[(0, 2), (2, 2)])]
    mlp, _ = build("mlp")
    for passes in (None, "spike-pack"):
        images.append(read_program(compile_model(mlp, CompileOptions(passes=passes)).binary))
    return [(write_program(image), image) for image in images]


def _run(data: bytes, rng, functional: bool) -> None:
    """read + validate + simulate; SnncError is the only acceptable failure."""
    try:
        image = read_program(data)
        simulate(image, fc.inputs_for(image, rng), functional=functional)
    except SnncError:
        pass


@SETTINGS
@given(seed=st.integers(0, 2**63 - 1), base=st.integers(0, 3), recompute=st.booleans(), functional=st.booleans())
def test_byte_mutants_raise_only_the_clean_error(bases, seed, base, recompute, functional):
    data, _ = bases[base]
    rng = np.random.default_rng(seed)
    mutant = fc.byte_mutation(data, rng)
    _run(fc.recompute_crcs(mutant) if recompute else mutant, rng, functional)


@SETTINGS
@given(seed=st.integers(0, 2**63 - 1), base=st.integers(0, 3), functional=st.booleans())
def test_field_mutants_raise_only_the_clean_error(bases, seed, base, functional):
    """Decoded fields changed and stored with correct CRCs: these reach the validator and the simulator."""
    data, image = bases[base]
    rng = np.random.default_rng(seed)
    _run(fc.field_mutation(image, rng), rng, functional)


@SETTINGS
@given(data=st.binary(max_size=512), functional=st.booleans())
def test_arbitrary_bytes_after_a_valid_header(bases, data, functional):
    head, _ = bases[0]
    _run(fc.recompute_crcs(head[:64] + data), np.random.default_rng(0), functional)


# ---------------------------------------------------------------------------------------
# input files
# ---------------------------------------------------------------------------------------

def _simulate_file(tmp_path, raw: bytes, image) -> None:
    path = tmp_path / "in.npz"
    path.write_bytes(raw)
    try:
        simulate(image, load_npz(path), functional=True)
    except SnncError:
        pass


@SETTINGS
@given(kind=st.sampled_from(fc.BAD_INPUT_KINDS), seed=st.integers(0, 2**63 - 1))
def test_bad_input_files_raise_only_the_clean_error(bases, tmp_path, kind, seed):
    _, image = bases[0]
    _simulate_file(tmp_path, fc.bad_input_file({"x": SPIKES_IN}, np.random.default_rng(seed), kind)[1], image)


@settings(SETTINGS, max_examples=60)
@given(array=hnp.arrays(hnp.scalar_dtypes() | hnp.array_dtypes(max_size=2), hnp.array_shapes(max_dims=5, max_side=4)),
       name=st.sampled_from(["x", "y", "x/y"]))
def test_any_saved_array_as_input(bases, tmp_path, array, name):
    _, image = bases[0]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "stored in format 3.0"
            np.savez(buffer, **{name: array})
    except (ValueError, TypeError):  # numpy itself cannot store it
        return
    _simulate_file(tmp_path, buffer.getvalue(), image)


# ---------------------------------------------------------------------------------------
# hardware configs
# ---------------------------------------------------------------------------------------

LOAS = (PRESET_DIR / "loas.toml").read_text()


def _small_program(hw: HwConfig):
    p = Prog(hw=hw)
    image = dense_program(W_DENSE, [1, 2], [4, 4], [0, 0], [0, 0])
    image.hw_toml = p.hw.to_toml()
    return image


@SETTINGS
@given(seed=st.integers(0, 2**63 - 1), functional=st.booleans())
def test_mutated_configs_parse_or_name_the_key_and_programs_run_on_them(seed, functional):
    text = fc.mutate_toml(LOAS, np.random.default_rng(seed))
    try:
        hw = HwConfig.from_toml(text, source="fuzz.toml")
    except HwConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ") and "\n" not in str(exc)
        return
    assert HwConfig.from_toml(hw.to_toml()) == hw
    try:
        simulate(read_program(write_program(_small_program(hw))), {"x": SPIKES_IN}, functional=functional)
    except SnncError:
        pass


@SETTINGS
@given(text=st.text(max_size=200))
def test_arbitrary_config_text(text):
    try:
        HwConfig.from_toml(text, source="fuzz.toml")
    except HwConfigError:
        pass
