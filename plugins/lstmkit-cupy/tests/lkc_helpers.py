"""Shared helpers of the lstmkit-cupy tests: problems, runs, errors, backend variants."""
from __future__ import annotations

import numpy as np
import pytest

from lstmkit.backends.reference import ReferenceBackend
from lstmkit.cells import LSTMCellType
from lstmkit.registry import get_cell
from lstmkit_cupy import CupyBackend

import cuda_emulation
import fake_device

#: float64 agreement with the reference is rounding-level; float32 a little looser.
TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}

# (cell name, proj_size)
CELLS = [("lstm", 0), ("lstm", 3), ("gru", 0), ("rnn_tanh", 0), ("rnn_relu", 0)]
LAYOUTS = {
    "packed": [4, 4, 3, 1],
    "packed_steps": [3, 2, 2, 1, 1],
    "dense": [3, 3, 3],
    "batch1": [1, 1, 1, 1],
    "one_step": [5],
}


class FallbackLSTM(LSTMCellType):
    """A plugin-style cell: an LSTM subclass, so no fused kernel claims it."""

    name = "lstm_fallback"


def cupy_array_ops():
    """``CupyBackend(xp=numpy)``: the backend's code with the array-op gate math."""
    return CupyBackend(xp=np)


def cupy_emulated_kernels():
    """``CupyBackend(xp=numpy)`` whose gate functions are the CUDA kernel *source*,
    compiled for the CPU (see :mod:`cuda_emulation`)."""
    if cuda_emulation.compiler() is None:
        pytest.skip("no C++ compiler to compile the CUDA kernel source for the CPU")
    backend = CupyBackend(xp=np)
    backend.gates = cuda_emulation.EmulatedGateKernels()
    return backend


def cupy_fake_device():
    """``CupyBackend(xp=fakecupy)``: a strict device stand-in (see :mod:`fake_device`)."""
    return CupyBackend(xp=fake_device.make())


def cupy_step_loop(graphs=False):
    """``CupyBackend(xp=numpy)`` with the LSTM step loop of :mod:`lstmkit_cupy.steps` on
    :class:`~lstmkit_cupy.steps.HostOps` (column-major GEMMs on views); ``graphs`` replays
    a recorded loop on its own buffers, as a CUDA graph would."""
    from lstmkit_cupy.steps import HostOps

    return CupyBackend(xp=np, steps=HostOps(), graphs=graphs)


def cupy_emulated_steps(graphs=False):
    """The step loop with the CUDA source of its kernels compiled for the CPU (see :mod:`cuda_emulation`)."""
    if cuda_emulation.compiler() is None:
        pytest.skip("no C++ compiler to compile the CUDA kernel source for the CPU")
    return CupyBackend(xp=np, steps=cuda_emulation.EmulatedStepOps(), graphs=graphs)


VARIANTS = {
    "array_ops": cupy_array_ops,
    "emulated_cuda": cupy_emulated_kernels,
    "fake_device": cupy_fake_device,
    "step_loop": cupy_step_loop,
    "emulated_steps": cupy_emulated_steps,
    "step_graphs": lambda graphs=True: cupy_step_loop(graphs),
}


def references():
    """``[(name, backend)]``: the NumPy reference, and the compiled ``cython`` one when built."""
    out = [("numpy", ReferenceBackend())]
    try:
        from lstmkit.backends.cython import CythonBackend
    except ImportError:
        return out
    return out + [("cython", CythonBackend())]


def make_problem(cell, proj, bias, batch_sizes, dtype, seed=0, input_size=5, hidden=4):
    """Random parameters, packed input and initial state for one layer-direction."""
    rng = np.random.default_rng(seed)
    cell = get_cell(cell) if isinstance(cell, str) else cell
    params = {
        k: (rng.standard_normal(shape) * 0.6).astype(dtype)
        for k, shape in cell.parameter_shapes(input_size, hidden, proj, bias)
    }
    bs = np.asarray(batch_sizes, dtype=np.int64)
    n, b = int(bs.sum()), int(bs[0])
    x = rng.standard_normal((n, input_size)).astype(dtype)
    state0 = tuple(
        (rng.standard_normal((b, w)) * 0.5).astype(dtype) for w in cell.state_sizes(hidden, proj)
    )
    return cell, params, x, bs, state0


def host(a):
    """A plain NumPy array of a NumPy or fake-device array."""
    return np.array(a, copy=True).view(np.ndarray)


def run_layer(backend, cell, params, x, bs, reverse, state0, seed=1):
    """Forward (training and inference) and backward with random upstream gradients.

    Returns a dict of host arrays: ``y``, ``state<k>``, ``y_inf``, ``state<k>_inf``,
    ``d_x``, ``d_state<k>``, ``d_<param>``.
    """
    y, state, cache = backend.layer_forward(cell, params, x, bs, reverse, state0, True)
    rng = np.random.default_rng(seed)
    d_y = rng.standard_normal(y.shape).astype(y.dtype)
    d_state = tuple(rng.standard_normal(s.shape).astype(s.dtype) for s in state)
    d_x, d_state0, d_params = backend.layer_backward(cell, params, cache, d_y, d_state)
    y_inf, state_inf, cache_inf = backend.layer_forward(cell, params, x, bs, reverse, state0, False)
    assert cache_inf is None
    assert list(d_params) == list(params), (list(d_params), list(params))
    out = {"y": y, "y_inf": y_inf, "d_x": d_x}
    for k, s in enumerate(state):
        out[f"state{k}"] = s
    for k, s in enumerate(state_inf):
        out[f"state{k}_inf"] = s
    for k, s in enumerate(d_state0):
        out[f"d_state{k}"] = s
    for name, g in d_params.items():
        out[f"d_{name}"] = g
    return {k: host(v) for k, v in out.items()}


def rel_err(actual, expected) -> float:
    """max |actual - expected| scaled by max(1, max |expected|); shapes and dtypes must agree."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - expected)) / max(1.0, float(np.max(np.abs(expected)))))


def assert_results_close(got: dict, want: dict, dtype, what: str) -> float:
    """Every quantity of ``want`` matches ``got`` within :data:`TOL`; returns the worst error."""
    assert set(got) == set(want), (sorted(got), sorted(want))
    worst = 0.0
    for key in want:
        err = rel_err(got[key], want[key])
        worst = max(worst, err)
        assert err <= TOL[np.dtype(dtype)], f"{what}: {key} differs by {err:.2e}"
    return worst
