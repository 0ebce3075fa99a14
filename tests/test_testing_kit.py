"""``lstmkit.testing``: the built-in cells and the peephole plugin pass the conformance kit,
and each check catches the class of bug it exists for, with a message naming the check,
the cell, the backend, the case and the quantity."""
from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

import lstmkit
import lstmkit.registry as registry_module
from lstmkit.backends.base import FUSED_CELLS
from lstmkit.backends.reference import ReferenceBackend
from lstmkit.cells import LSTMCellType, sigmoid
from lstmkit.registry import LookupFailed, available_cells, get_registry
from lstmkit.specs import BackendSpec, CellSpec
from lstmkit.testing import (
    CHECKS,
    ConformanceError,
    SampleCellType,
    check_backend,
    check_backends,
    check_cell,
    check_gradients,
    check_shapes,
    check_spec,
    check_state_dict,
    numeric_gradient,
    registered_plugin,
)

ROOT = Path(__file__).resolve().parent.parent
PEEPHOLE = ROOT / "plugins" / "lstmkit-peephole" / "lstmkit_peephole" / "__init__.py"


@pytest.fixture(scope="module")
def peephole():
    """The peephole plugin from this checkout (registered in-process unless it is installed)."""
    if "peephole" in available_cells():
        yield
        return
    spec = importlib.util.spec_from_file_location("lstmkit_peephole", PEEPHOLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["lstmkit_peephole"] = module
    try:
        spec.loader.exec_module(module)
        with registered_plugin(module, "lstmkit-peephole"):
            yield
    finally:
        del sys.modules["lstmkit_peephole"]


# -- what must pass ----------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_builtin_cells_conform(cell):
    assert check_cell(cell) == [c.__name__ for c in CHECKS]


@pytest.mark.parametrize("options", [None, {"cell_clip": 0.5}], ids=["plain", "cell_clip"])
def test_peephole_plugin_conforms(peephole, options):
    check_cell("peephole", cell_options=options)


def test_subjects_a_spec_a_class_or_an_instance():
    check_spec(CellSpec("lstm", LSTMCellType))
    check_shapes(LSTMCellType, backends=["numpy"])
    check_state_dict(LSTMCellType())
    with pytest.raises(LookupFailed, match="unknown cell 'nope'; valid cells: gru, lstm"):
        check_cell("nope")
    with pytest.raises(TypeError, match="a registered cell name, a CellSpec, or a CellType subclass"):
        check_cell(42)
    with pytest.raises(ValueError, match="takes no options"):
        check_spec("lstm", cell_options={"forget_bias": 1.0})


def test_explicit_backends_are_checked_for_availability():
    check_shapes("gru", backends=["numpy"])
    with pytest.raises(LookupFailed, match="unknown backend 'gpu'"):
        check_backends("gru", backends=["gpu"])


def test_checks_are_public_with_documented_keywords():
    for check in CHECKS:
        parameters = inspect.signature(check).parameters
        assert list(parameters)[0] == "cell" and "cell_options" in parameters, check.__name__
        assert check.__doc__, check.__name__


def test_numeric_gradient():
    a = np.array([1.0, -2.0, 3.0])
    grad = numeric_gradient(lambda: float((a ** 3).sum()), a)
    np.testing.assert_allclose(grad, 3 * a ** 2, rtol=1e-8)
    assert np.array_equal(a, [1.0, -2.0, 3.0])  # restored


def test_registered_plugin_registers_for_the_block_only():
    class Plugin:
        @lstmkit.hookimpl
        def register_cells(self, register):
            register(CellSpec("lstm_copy", type("LSTMCopy", (LSTMCellType,), {"name": "lstm_copy"})))

    with registered_plugin(Plugin(), "copy-plugin") as name:
        assert name == "copy-plugin" and "lstm_copy" in available_cells()
        assert get_registry().providers[("cell", "lstm_copy")].label == "copy-plugin local"
    assert "lstm_copy" not in available_cells() and "copy-plugin" not in get_registry().plugins


# -- mutants: each check must catch its bug ----------------------------------------------------------
class Mutant(LSTMCellType):
    """The LSTM under another name (so it runs on the reference path everywhere); mutants override."""

    name = "mutant"


def mutant(name, **methods):
    return type(name, (Mutant,), {"name": name, **methods})


def _drop_cell_grad(self, xp, p, cache, d_state, grads):
    d_gi, (d_h, d_c) = LSTMCellType.backward_step(self, xp, p, cache, d_state, grads)
    return d_gi, (d_h, d_c * 0.5)  # wrong gradient to c_{t-1}


def _skip_bias_grad(self, xp, p, cache, d_state, grads):
    saved = grads.get("bias_hh")
    saved = None if saved is None else saved.copy()
    result = LSTMCellType.backward_step(self, xp, p, cache, d_state, grads)
    if saved is not None:
        grads["bias_hh"][...] = saved  # forgets to accumulate bias_hh
    return result


def _spoils_cache(self, xp, p, cache, d_state, grads):
    result = LSTMCellType.backward_step(self, xp, p, cache, d_state, grads)
    cache[2][...] = cache[2] * 0.5  # modifies the cache in place: the next backward differs
    return result


def _ignores_hx(self, xp, p, gi, state):
    return LSTMCellType.forward_step(self, xp, p, gi, tuple(xp.zeros_like(s) for s in state))


def _upcasts(self, xp, p, gi, state):
    (h, c), cache = LSTMCellType.forward_step(self, xp, p, gi, state)
    return (h, c.astype(np.float64)), cache


def _writes_into_state(self, xp, p, gi, state):
    (h, c), cache = LSTMCellType.forward_step(self, xp, p, gi, tuple(s.copy() for s in state))
    state[1][...] = c  # writes into the caller's c_0
    return (h, c), cache


class _FixedBatch(Mutant):
    name = "fixed_batch"
    batch = None

    def forward_step(self, xp, p, gi, state):
        if self.batch is None:
            self.batch = gi.shape[0]
        if gi.shape[0] != self.batch:
            raise ValueError(f"expected {self.batch} rows, got {gi.shape[0]}")
        return LSTMCellType.forward_step(self, xp, p, gi, state)


class _BadLayout(Mutant):
    name = "bad_layout"

    def parameter_shapes(self, input_size, hidden_size, proj_size=0, bias=True):
        return list(reversed(super().parameter_shapes(input_size, hidden_size, proj_size, bias)))


class LooseOptions(BaseModel):  # no extra="forbid"
    forget_bias: float = 0.0


class _Loose(Mutant):
    name = "loose"

    def __init__(self, forget_bias=0.0):
        self.forget_bias = forget_bias


@pytest.mark.parametrize("cell, check, expected", [
    (mutant("wrong_dc", backward_step=_drop_cell_grad), check_gradients,
     r"^check_gradients: cell 'wrong_dc', backend 'numpy', float64, 2 layers bidirectional, hx given: "
     r"d_input differs from central differences: max error \S+ > allowed \S+ \(rtol 1e-06 x max\(1, max\|expected\|\)\)$"),
    (mutant("no_bias_grad", backward_step=_skip_bias_grad), check_gradients,
     r"^check_gradients: cell 'no_bias_grad', backend 'numpy', float64, 2 layers bidirectional, hx given: "
     r"d_params\['bias_hh_l0'\] differs from central differences"),
    (mutant("spoils_cache", backward_step=_spoils_cache), check_gradients,
     r"check_gradients: cell 'spoils_cache', .*: a second backward: d_input differs from the first backward"),
    (mutant("ignores_hx", forward_step=_ignores_hx), check_shapes,
     r"^check_shapes: cell 'ignores_hx', backend '\w+', float32, 2 layers bidirectional: "
     r"a non-zero hx did not change the output"),
    (mutant("upcasts", forward_step=_upcasts), check_shapes,
     r"check_shapes: cell 'upcasts', .*RecurrentCell: step state 1 has shape \(3, 4\) dtype float64, "
     r"expected \(3, 4\) float32"),
    (mutant("writes_state", forward_step=_writes_into_state), check_shapes, r"hx was modified"),
    (_FixedBatch, check_shapes,
     r"check_shapes: cell 'fixed_batch', backend '\w+', float32, 2 layers bidirectional, unbatched: "
     r"raised ValueError: expected 3 rows, got 1"),
    (_BadLayout, check_spec, r"the first parameter must be \('weight_ih', \(16, 3\)\)"),
    (CellSpec("loose", _Loose, options_model=LooseOptions), check_spec,
     r"check_spec: cell 'loose', options: an unknown option was accepted"),
])
def test_each_check_catches_its_bug(cell, check, expected):
    with pytest.raises(ConformanceError, match=expected):
        check(cell)


def test_a_no_proj_cell_must_refuse_proj_size(monkeypatch):
    cell = mutant("no_proj_flag", supports_proj=False)
    check_spec(cell)  # the module refuses proj_size for it
    monkeypatch.setattr(lstmkit.nn.rnn.Recurrent, "__init__", _accepting_init(lstmkit.nn.rnn.Recurrent.__init__))
    with pytest.raises(ConformanceError, match="supports_proj is False but the module accepted proj_size > 0"):
        check_spec(cell)


def _accepting_init(init):
    def __init__(self, cell, input_size, hidden_size, *args, proj_size=0, **kwargs):
        init(self, cell, input_size, hidden_size, *args, **kwargs)

    return __init__


class SloppyBackend(ReferenceBackend):
    """The reference, off by 1e-3 in every output."""

    def layer_forward(self, cell, params, x, batch_sizes, reverse, state0, training):
        y, state, cache = super().layer_forward(cell, params, x, batch_sizes, reverse, state0, training)
        return y + 1e-3, state, cache


def test_check_backends_catches_a_backend_that_disagrees(monkeypatch):
    class Plugin:
        @lstmkit.hookimpl
        def register_backends(self, register):
            register(BackendSpec("sloppy", lambda: SloppyBackend(name="sloppy"), priority=-1))

    with registered_plugin(Plugin(), "sloppy-plugin"):
        with pytest.raises(ConformanceError, match=r"^check_backends: cell 'gru', backend 'sloppy', float32, "
                                                   r"2 layers bidirectional, hx given: output differs from the "
                                                   r"'numpy' reference: max error \S+ > allowed 1.0e-04"):
            check_backends("gru", backends=["sloppy"])
        check_backends("gru", backends=["sloppy"], rtol32=1e-2, rtol64=1e-2)  # within a looser tolerance
    assert "sloppy" not in registry_module.get_registry()._instances


def test_failures_keep_the_original_exception():
    with pytest.raises(ConformanceError) as caught:
        check_shapes(_FixedBatch, backends=["numpy"])
    assert isinstance(caught.value.__cause__, ValueError)
    assert isinstance(caught.value, AssertionError)  # pytest shows it as a failed assertion


def test_sigmoid_is_exported_for_plugins():
    assert sigmoid(np, np.array([0.0]))[0] == 0.5


# -- check_backend: the built-in cells and the fallback path ------------------------------------------
class KernelsOnlyBackend(ReferenceBackend):
    """Runs the built-in cells (here: the reference) but forgets to fall back for any other cell."""

    def layer_forward(self, cell, params, x, batch_sizes, reverse, state0, training):
        if not isinstance(cell, FUSED_CELLS):
            raise NotImplementedError(f"no kernel for {type(cell).__name__}")
        return super().layer_forward(cell, params, x, batch_sizes, reverse, state0, training)


class SloppyFallbackBackend(ReferenceBackend):
    """Correct for the built-in cells, wrong (off by 1e-3) in the fallback for other cells."""

    def layer_forward(self, cell, params, x, batch_sizes, reverse, state0, training):
        y, state, cache = super().layer_forward(cell, params, x, batch_sizes, reverse, state0, training)
        return (y, state, cache) if isinstance(cell, FUSED_CELLS) else (y + 1e-3, state, cache)


def test_check_backend_runs_the_builtin_cells_and_a_cell_without_kernels():
    name = registry_module.available_backends()[0]
    assert check_backend(name) == ["lstm", "gru", "rnn_tanh", "rnn_relu",
                                   "lstmkit_sample (no kernel: the fallback path)"]
    assert "lstmkit_sample" not in available_cells()  # the sample cell is never registered


@pytest.mark.parametrize("backend_type, message", [
    (KernelsOnlyBackend, r"^check_shapes: cell 'lstmkit_sample', backend 'under_test', .*raised "
                         r"NotImplementedError: no kernel for SampleCellType"),
    (SloppyFallbackBackend, r"^check_shapes: cell 'lstmkit_sample', backend 'under_test', .* differs from "),
])
def test_check_backend_catches_a_broken_fallback(backend_type, message):
    class Plugin:
        @lstmkit.hookimpl
        def register_backends(self, register):
            register(BackendSpec("under_test", lambda: backend_type(name="under_test"), priority=-1))

    with registered_plugin(Plugin(), "under-test"):
        check_backends("lstm", backends=["under_test"])  # the built-in cells pass
        with pytest.raises(ConformanceError, match=message):
            check_backend("under_test")


def test_check_backend_of_an_unknown_or_unavailable_backend():
    with pytest.raises(LookupFailed, match=r"unknown backend 'cython2'; did you mean 'cython'\?"):
        check_backend("cython2")


def test_sample_cell_conforms():
    assert check_spec(SampleCellType) is None
    check_gradients(SampleCellType)
