"""The cupy backend's layer-direction contract, on the CPU.

Three variants of the same backend code run here (see ``lkc_helpers``):

* ``array_ops``: ``CupyBackend(xp=numpy)``, gate math as array operations;
* ``emulated_cuda``: the same, with the CUDA ``ElementwiseKernel`` source
  compiled for the CPU and called element by element (``cuda_emulation``);
* ``fake_device``: ``CupyBackend(xp=fakecupy)``, a strict stand-in for CuPy
  that refuses to mix host and device arrays (``fake_device``).

Each is compared with lstmkit's ``numpy`` reference and ``cython`` backends —
every built-in cell, with and without bias, packed and dense, forward and
reverse, float32 and float64: outputs, final states, inference forward and
every gradient — and checked by float64 central differences on its own.
"""
from __future__ import annotations

import ctypes
import sys
import time

import numpy as np
import pytest

import fake_device
from lkc_helpers import (
    CELLS, LAYOUTS, TOL, VARIANTS, FallbackLSTM, assert_results_close, host, make_problem,
    references, rel_err, run_layer,
)
from lstmkit.backends.reference import ReferenceBackend
from lstmkit.testing import numeric_gradient
from lstmkit_cupy import CupyBackend
from lstmkit_cupy.kernels import ArrayGateMath, gate_math

DTYPES = [np.float64, np.float32]


@pytest.fixture(params=sorted(VARIANTS))
def variant(request):
    return VARIANTS[request.param]()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell,proj", CELLS, ids=[f"{c}-proj{p}" for c, p in CELLS])
def test_layer_matches_reference_and_cython(variant, cell, proj, bias, layout, reverse, dtype):
    cell, params, x, bs, state0 = make_problem(cell, proj, bias, LAYOUTS[layout], dtype)
    got = run_layer(variant, cell, params, x, bs, reverse, state0)
    for name, reference in references():
        want = run_layer(reference, cell, params, x, bs, reverse, state0)
        assert_results_close(got, want, dtype, f"vs {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_larger_random_shapes_match_reference(variant, dtype):
    rng = np.random.default_rng(11)
    for _ in range(6):
        name, proj = CELLS[rng.integers(len(CELLS))]
        steps, batch = int(rng.integers(1, 12)), int(rng.integers(1, 7))
        lengths = np.sort(rng.integers(1, steps + 1, size=batch))[::-1]
        lengths[0] = steps
        bs = [(lengths > t).sum() for t in range(steps)]
        hidden = int(rng.integers(4, 20))
        proj = int(rng.integers(1, hidden)) if proj else 0
        cell, params, x, bs, state0 = make_problem(
            name, proj, bool(rng.integers(2)), bs, dtype, seed=int(rng.integers(1000)),
            input_size=int(rng.integers(1, 9)), hidden=hidden,
        )
        reverse = bool(rng.integers(2))
        got = run_layer(variant, cell, params, x, bs, reverse, state0)
        want = run_layer(ReferenceBackend(), cell, params, x, bs, reverse, state0)
        assert_results_close(got, want, dtype, f"{name} proj={proj} bs={list(bs)}")


# -- gradients on its own: float64 central differences -------------------------------------
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell,proj", CELLS + [("fallback", 0)],
                         ids=[f"{c}-proj{p}" for c, p in CELLS] + ["fallback"])
def test_gradients_match_central_differences(variant, cell, proj, reverse):
    if cell == "fallback":
        cell = FallbackLSTM()
    cell, params, x, bs, state0 = make_problem(cell, proj, True, [3, 2, 2, 1], np.float64, seed=3)
    state0 = tuple(s.copy() for s in state0)
    rng = np.random.default_rng(4)
    y, state, cache = variant.layer_forward(cell, params, x, bs, reverse, state0, True)
    w_y = rng.standard_normal(y.shape)
    w_s = [rng.standard_normal(s.shape) for s in state]

    def loss():
        yy, ss, _ = variant.layer_forward(cell, params, x, bs, reverse, state0, False)
        return float((host(yy) * w_y).sum() + sum((host(s) * w).sum() for s, w in zip(ss, w_s)))

    d_x, d_state0, d_params = variant.layer_backward(cell, params, cache, w_y, tuple(w_s))
    checks = [("x", d_x, x)] + [(f"state0[{k}]", d, s) for k, (d, s) in enumerate(zip(d_state0, state0))]
    checks += [(name, d_params[name], params[name]) for name in params]
    for what, analytic, array in checks:
        numeric = numeric_gradient(loss, array)
        err = np.abs(host(analytic) - numeric).max() / max(1.0, np.abs(numeric).max())
        assert err < 1e-7, f"d_{what}: max error {err:.2e}"


# -- contract details ------------------------------------------------------------------------
@pytest.mark.parametrize("cell,proj", CELLS + [("fallback", 0)],
                         ids=[f"{c}-proj{p}" for c, p in CELLS] + ["fallback"])
def test_nothing_the_caller_passes_is_modified(variant, cell, proj):
    if cell == "fallback":
        cell = FallbackLSTM()
    cell, params, x, bs, state0 = make_problem(cell, proj, True, [3, 3, 1], np.float64)
    xp = variant.xp
    params_d = {k: xp.asarray(v) for k, v in params.items()}
    x_d, state_d = xp.asarray(x), tuple(xp.asarray(s) for s in state0)
    y, state, cache = variant.layer_forward(cell, params_d, x_d, bs, True, state_d, True)
    d_y = xp.asarray(np.ones(y.shape))
    d_state = tuple(xp.asarray(np.ones(s.shape)) for s in state)
    saved = [host(a) for a in (x_d, *state_d, *params_d.values(), d_y, *d_state)]
    variant.layer_backward(cell, params_d, cache, d_y, d_state)
    variant.layer_forward(cell, params_d, x_d, bs, False, state_d, False)
    after = [host(a) for a in (x_d, *state_d, *params_d.values(), d_y, *d_state)]
    for before, now in zip(saved, after):
        np.testing.assert_array_equal(before, now)
    assert list(bs) == [3, 3, 1]


@pytest.mark.parametrize("cell,proj", CELLS, ids=[f"{c}-proj{p}" for c, p in CELLS])
def test_backward_is_repeatable_and_caches_are_not_shared(variant, cell, proj):
    cell, params, x, bs, state0 = make_problem(cell, proj, True, [2, 2, 1], np.float64)
    y, state, cache = variant.layer_forward(cell, params, x, bs, False, state0, True)
    d_y, d_state = np.ones(y.shape), tuple(np.ones(s.shape) for s in state)
    first = variant.layer_backward(cell, params, cache, d_y, d_state)
    y[...] = 123.0  # the caller owns y: changing it must not change the gradients
    for s in state:
        s[...] = -7.0
    other = make_problem(cell, proj, True, [2, 2, 1], np.float64, seed=9)
    variant.layer_forward(cell, other[1], other[2], bs, False, other[4], True)
    second = variant.layer_backward(cell, params, cache, d_y, d_state)
    np.testing.assert_array_equal(host(first[0]), host(second[0]))
    for name in first[2]:
        np.testing.assert_array_equal(host(first[2][name]), host(second[2][name]))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cell,proj", CELLS + [("fallback", 0)],
                         ids=[f"{c}-proj{p}" for c, p in CELLS] + ["fallback"])
def test_cell_step_is_one_step_of_the_reference(variant, cell, proj, dtype):
    if cell == "fallback":
        cell = FallbackLSTM()
    cell, params, x, bs, state0 = make_problem(cell, proj, True, [4], dtype)
    got = variant.cell_step(cell, params, x, state0)
    want = ReferenceBackend().cell_step(cell, params, x, state0)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert rel_err(host(a), b) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_plugin_cells_run_the_reference_step_on_the_backend(dtype):
    backend = CupyBackend(xp=fake_device.make())
    cell, params, x, bs, state0 = make_problem(FallbackLSTM(), 0, True, [3, 2, 1], dtype)
    got = run_layer(backend, cell, params, x, bs, False, state0)
    want = run_layer(ReferenceBackend(), cell, params, x, bs, False, state0)
    assert_results_close(got, want, dtype, "fallback cell")
    _, _, cache = backend.layer_forward(cell, params, x, bs, False, state0, True)
    assert type(cache).__name__ != "_Cache"  # the reference's own cache: no fused path took it


def test_only_float32_and_float64():
    cell, params, x, bs, state0 = make_problem("lstm", 0, True, [2], np.float64)
    to16 = lambda a: a.astype(np.float16)  # noqa: E731
    with pytest.raises(TypeError, match="float32 or float64"):
        CupyBackend(xp=np).layer_forward(
            cell, {k: to16(v) for k, v in params.items()}, to16(x), bs, False, tuple(map(to16, state0)), False
        )


def test_backward_refuses_a_foreign_cache():
    cell, params, x, bs, state0 = make_problem("gru", 0, True, [2, 1], np.float64)
    _, _, ref_cache = ReferenceBackend().layer_forward(cell, params, x, bs, False, state0, True)
    with pytest.raises(TypeError, match="training-mode layer_forward of the cupy backend"):
        CupyBackend(xp=np).layer_backward(cell, params, ref_cache, np.ones((3, 4)), (np.ones((2, 4)),))


def test_device_arrays_are_used_without_copies():
    """Arrays already on the device, C-contiguous, in the right dtype: no host->device copy."""
    fx = fake_device.make()
    backend = CupyBackend(xp=fx)
    for name, proj in CELLS + [(FallbackLSTM(), 0)]:
        cell, params, x, bs, state0 = make_problem(name, proj, True, [3, 3, 2], np.float32)
        params_d = {k: fx.asarray(v) for k, v in params.items()}
        x_d, state_d = fx.asarray(x), tuple(fx.asarray(s) for s in state0)
        assert backend._dev(x_d, np.float32) is x_d
        before = fx.host_to_device
        y, state, cache = backend.layer_forward(cell, params_d, x_d, bs, False, state_d, True)
        d_y = fx.zeros(y.shape, np.float32)
        d_state = tuple(fx.zeros(s.shape, np.float32) for s in state)
        d_x, d_state0, d_params = backend.layer_backward(cell, params_d, cache, d_y, d_state)
        assert fx.host_to_device == before, "device inputs were copied from the host"
        assert fx.device_to_host == 0
        for a in (y, *state, d_x, *d_state0, *d_params.values()):
            assert isinstance(a, fake_device.DeviceArray)


def test_host_arrays_are_copied_in_once():
    fx = fake_device.make()
    backend = CupyBackend(xp=fx)
    cell, params, x, bs, state0 = make_problem("lstm", 0, True, [3, 3, 2], np.float32)
    y, state, _ = backend.layer_forward(cell, params, x, bs, False, state0, False)
    assert fx.host_to_device == 1 + len(params) + len(state0)  # x, each parameter, each state
    assert isinstance(y, fake_device.DeviceArray)
    assert type(backend.to_host(y)) is np.ndarray and fx.device_to_host == 1


def test_gate_math_choice_and_repr():
    assert isinstance(gate_math(np), ArrayGateMath)
    assert isinstance(gate_math(fake_device.make()), ArrayGateMath)  # no ElementwiseKernel: array ops
    backend = CupyBackend(xp=np)
    assert backend.fused is False and backend.name == "cupy" and backend.xp is np
    assert repr(backend) == "<CupyBackend xp=numpy fused=False steps=None graphs=None>"
    a = np.ones(3)
    assert backend.to_host(a) is a


def test_emulated_kernels_are_the_cuda_source():
    """The emulation compiles exactly the kernel strings CupyBackend hands to CuPy."""
    import cuda_emulation
    from lstmkit_cupy import kernels

    if cuda_emulation.compiler() is None:
        pytest.skip("no C++ compiler")
    src = cuda_emulation.source()
    for spec in kernels.KERNELS.values():
        assert spec["operation"] in src
    assert kernels.PREAMBLE in src
    cuda_emulation.library()  # compiles with -Wall -Werror


def test_cuda_kernels_are_built_from_the_same_specs():
    """With a stand-in ``ElementwiseKernel``, CudaGateKernels passes each spec through unchanged."""
    from lstmkit_cupy import kernels

    made = []

    class FakeKernel:
        def __init__(self, in_params, out_params, operation, name, preamble="", no_return=False):
            made.append((in_params, out_params, operation, name, preamble, no_return))

    class FakeCupy:
        ElementwiseKernel = FakeKernel
        __name__ = "fakecupy"

    gates = gate_math(FakeCupy())
    assert isinstance(gates, kernels.CudaGateKernels) and gates.fused
    assert len(made) == 4
    for spec in kernels.KERNELS.values():
        assert (spec["in_params"], spec["out_params"], spec["operation"], spec["name"],
                kernels.PREAMBLE, True) in made
        names = [p.split()[-1] for p in (spec["in_params"] + "," + spec["out_params"]).split(",")]
        assert "i" not in names  # CuPy reserves "i" for the loop index
        assert len(set(names)) == len(names)
    assert isinstance(gate_math(FakeCupy(), fused=False), ArrayGateMath)


# -- the LSTM step loop (lstmkit_cupy.steps) and its captured replays ------------------------------
@pytest.mark.parametrize("make", ["step_loop", "emulated_steps"])
@pytest.mark.parametrize("layout", ["dense", "packed_steps"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_replayed_loops_give_every_call_its_own_results(make, layout, reverse):
    """A captured loop owns its buffers: each call copies its inputs in and its results out, so
    new inputs give new results, and results already returned never change."""
    backend = VARIANTS[make](graphs=True)
    runs = []
    for seed in range(4):  # 1st call direct, 2nd captures, 3rd and 4th replay
        cell, params, x, bs, state0 = make_problem("lstm", 0, seed % 2 == 0, LAYOUTS[layout], np.float64, seed=seed)
        got = run_layer(backend, cell, params, x, bs, reverse, state0)
        runs.append((got, run_layer(ReferenceBackend(), cell, params, x, bs, reverse, state0)))
    for got, want in runs:  # compared after every call has been made
        assert_results_close(got, want, np.float64, f"{make} {layout}")
    assert backend.graphs.disabled is None and backend.graphs.launches >= 4
    assert len(backend.graphs.entries) == 2  # training and inference: one captured forward loop each


def test_a_loop_that_cannot_be_captured_runs_directly():
    from lstmkit_cupy.steps import HostOps

    class NoGraphs(HostOps):
        def capture(self, issue):
            raise RuntimeError("operation not permitted when stream is capturing")

    backend = CupyBackend(xp=np, steps=NoGraphs(), graphs=True)
    cell, params, x, bs, state0 = make_problem("lstm", 0, True, LAYOUTS["dense"], np.float64)
    want = run_layer(ReferenceBackend(), cell, params, x, bs, False, state0)
    for _ in range(3):
        assert_results_close(run_layer(backend, cell, params, x, bs, False, state0), want, np.float64, "direct")
    assert backend.graphs.disabled == "RuntimeError: operation not permitted when stream is capturing"
    assert "graphs='RuntimeError" in repr(backend)


def test_graph_cache_keeps_the_most_recent_shapes():
    from lstmkit_cupy.steps import GraphCache, HostOps

    cache = GraphCache(HostOps(), capacity=2)
    made = []
    for key in ["a", "b", "a", "b", "c", "c", "a", "a"]:
        cache.lookup(key, lambda: (made.append(1), lambda: None))
    assert list(cache.entries) == ["c", "a"] and len(made) == 4  # a, b captured; c, a (again) after eviction


def test_step_kernels_compile_from_the_cuda_source():
    import cuda_emulation
    from lstmkit_cupy import steps

    if cuda_emulation.compiler() is None:
        pytest.skip("no C++ compiler")
    assert steps.SOURCE in cuda_emulation.step_source()
    lib = cuda_emulation.step_library()  # compiles with -Wall -Werror
    for name in steps.KERNELS:
        assert hasattr(lib, f"{name}_float") and hasattr(lib, f"{name}_double")


class PoolingNumpy:
    """NumPy whose new arrays reuse arrays nobody holds any more, as CuPy's memory pool hands
    freed blocks back: in a training loop the same addresses come round again."""

    __name__ = "numpy"

    def __init__(self):
        self.arrays = []

    def __getattr__(self, name):
        return getattr(np, name)

    def _take(self, shape, dtype):
        for a in self.arrays:
            if a.shape == shape and a.dtype == dtype and sys.getrefcount(a) == 3:  # the list, `a`, the call
                return a
        a = np.empty(shape, dtype)
        self.arrays.append(a)
        return a

    def empty(self, shape, dtype=np.float64):
        return self._take(tuple(np.atleast_1d(shape).tolist()), np.dtype(dtype))

    def array(self, a, dtype=None, order="C", copy=True):
        source = np.asarray(a, dtype=dtype)
        out = self._take(source.shape, source.dtype)
        out[...] = source
        return out


@pytest.mark.parametrize("make", ["step_loop", "emulated_steps"])
def test_a_captured_backward_replays_on_the_arrays_at_its_addresses(make):
    """The backward's graph holds raw addresses (HostOps records them as a CUDA graph does):
    it replays only when this call's arrays are at those addresses, and computes on them."""
    from lstmkit_cupy.steps import HostOps

    backend = VARIANTS[make](graphs=True)
    pool = PoolingNumpy()
    backend.xp = pool
    backend.steps.xp = pool
    cell, params, x, bs, state0 = make_problem("lstm", 0, True, LAYOUTS["packed"], np.float64)
    reference = ReferenceBackend()
    _, _, ref_cache = reference.layer_forward(cell, params, x, bs, False, state0, True)
    y, state, cache = backend.layer_forward(cell, params, x, bs, False, state0, True)
    rng = np.random.default_rng(5)
    held = None
    for call in range(6):  # new upstream gradients each time, in the same arrays but for call 5
        d_y = pool.array(rng.standard_normal(y.shape))  # as the layer above would hand it down
        d_state = tuple(rng.standard_normal(s.shape) for s in state)
        got = backend.layer_backward(cell, params, cache, d_y, d_state)
        want = reference.layer_backward(cell, params, ref_cache, d_y, d_state)
        assert rel_err(host(got[0]), want[0]) <= 1e-12, f"d_x, call {call + 1}"
        for a, b in zip(got[1], want[1]):
            assert rel_err(host(a), b) <= 1e-12, f"d_state0, call {call + 1}"
        for name in want[2]:
            assert rel_err(host(got[2][name]), want[2][name]) <= 1e-12, f"d_{name}, call {call + 1}"
        if call == 3:
            held = got  # so call 5's arrays come from new memory: its key differs, no replay
        del got, a, b, d_y  # back to the pool (unless held)
    graphs = backend.backward_graphs
    assert held is not None and graphs.disabled is None and len(graphs.entries) == 2
    assert graphs.launches == 4  # calls 2 (captured, then launched), 3, 4; call 6 (5's memory again)
    assert isinstance(backend.steps, HostOps)


@pytest.mark.parametrize("make", ["step_loop", "emulated_steps"])
@pytest.mark.parametrize("graphs", [False, True], ids=["direct", "graphs"])
def test_a_batch_of_zero_launches_nothing(make, graphs):
    """CUDA refuses a launch of 0 blocks (HostOps asserts it): a batch of 0 skips its steps."""
    backend = VARIANTS[make](graphs=graphs)
    for _ in range(3):
        cell, params, x, bs, state0 = make_problem("lstm", 0, True, [0, 0, 0], np.float32)
        got = run_layer(backend, cell, params, x, bs, False, state0)
        want = run_layer(ReferenceBackend(), cell, params, x, bs, False, state0)
        assert_results_close(got, want, np.float32, "batch 0")
        assert got["y"].shape == (0, 4) and np.all(got["d_weight_ih"] == 0)


def test_tf32_needs_the_cuda_step_loop():
    from lstmkit_cupy.steps import HostOps

    for kwargs in (dict(xp=np), dict(xp=np, steps=HostOps()), dict(xp=fake_device.make())):
        with pytest.raises(ValueError, match="tf32=True needs the CUDA step loop"):
            CupyBackend(tf32=True, **kwargs)


def test_a_buffer_that_cannot_be_allocated_does_not_turn_graphs_off():
    from lstmkit_cupy.steps import GraphCache, HostOps

    cache = GraphCache(HostOps())

    def no_memory():
        raise MemoryError("out of memory allocating 840 MB")

    for _ in range(3):  # that key runs directly from then on, without trying to allocate again
        assert cache.lookup("big", no_memory) is None
    assert cache.disabled is None and cache.refused == {"big"}
    for _ in range(2):
        entry = cache.lookup("small", lambda: (None, lambda: None))
    assert entry is not None


def test_results_of_replays_are_the_callers_own():
    """A replay's results are copies: the next replay, on the same buffers, does not change them."""
    backend = VARIANTS["step_loop"](graphs=True)
    kept = []
    for seed in range(4):
        cell, params, x, bs, state0 = make_problem("lstm", 0, True, LAYOUTS["dense"], np.float64, seed=seed)
        y, (h, c), _ = backend.layer_forward(cell, params, x, bs, False, state0, False)
        want, _, _ = ReferenceBackend().layer_forward(cell, params, x, bs, False, state0, False)
        kept.append((y, h, want))
    assert backend.graphs.launches == 3
    for y, h, want in kept:
        assert rel_err(y, want) <= 1e-12
        np.testing.assert_array_equal(h, y[-h.shape[0]:])


class FakeCublasLib:
    """Records every cuBLAS call made through ctypes (``calls``: name, then argument values)."""

    def __init__(self, pause=0.0):
        self.calls = []
        self.pause = pause

    def __getattr__(self, name):
        calls, pause = self.calls, self.pause

        def function(*args):
            if name == "cublasCreate_v2":
                args[0]._obj.value = 1000 + sum(c[0] == name for c in calls)
            calls.append((name, *[(a.value or 0) if isinstance(a, ctypes.c_void_p) else getattr(a, "value", a)
                                  for a in args]))
            if pause:
                time.sleep(pause)  # let another thread in, if the lock allows it
            return 0

        setattr(self, name, function)
        return function


class FakeStream:
    """A CUDA stream of a device: a context manager that makes itself current, and can capture."""

    current = None
    device = 0
    log = []
    made = 0

    def __init__(self, ptr=None, non_blocking=False):
        FakeStream.made += 1
        self.ptr = ptr if ptr is not None else 100 + FakeStream.made
        self.device = FakeStream.device

    def __enter__(self):
        assert self.device == FakeStream.device, "CuPy: the stream's device is not the current device"
        self.previous, FakeStream.current = FakeStream.current, self
        return self

    def __exit__(self, *exc):
        FakeStream.current = self.previous

    def begin_capture(self):
        FakeStream.log.append(("begin_capture", self.ptr))

    def end_capture(self):
        FakeStream.log.append(("end_capture", self.ptr))
        return type("Graph", (), {"launch": lambda graph, stream=None: FakeStream.log.append(("launch", stream.ptr))})()


def fake_cupy():
    """Just enough of CuPy for CudaOps: streams, devices, RawModule, empty."""
    FakeStream.current, FakeStream.log, FakeStream.device = FakeStream(0), [], 0

    class Memory:
        def __init__(self, ptr):
            self.data = type("Data", (), {"ptr": ptr})()

    class Cupy:
        allocated = []

        class cuda:
            Stream = FakeStream
            get_current_stream = staticmethod(lambda: FakeStream.current)
            Device = staticmethod(lambda: type("D", (), {"id": FakeStream.device})())

        class RawModule:
            def __init__(self, code, options, name_expressions):
                self.names = name_expressions

            def get_function(self, name):
                return lambda grid, block, args: FakeStream.log.append(("kernel", name, FakeStream.current.ptr))

        @classmethod
        def empty(cls, size, dtype):
            capturing = [e[0] for e in FakeStream.log if e[0] in ("begin_capture", "end_capture")]
            cls.allocated.append((size, FakeStream.current.ptr, bool(capturing) and capturing[-1] == "begin_capture"))
            return Memory(5000 + len(cls.allocated))

    return Cupy


def _cuda_ops(monkeypatch, **kwargs):
    from lstmkit_cupy import steps

    lib = FakeCublasLib(**kwargs)
    monkeypatch.setattr(steps, "_load_cublas", lambda: lib)
    cupy = fake_cupy()
    return steps.CudaOps(cupy), lib, cupy


def test_cuda_ops_capture_on_a_stream_per_device_with_the_callers_workspace(monkeypatch):
    ops, lib, cupy = _cuda_ops(monkeypatch)
    assert ops.graphs is True and len(ops._kernels) == 4
    g = np.zeros((2, 12), np.float32)
    a = type("DeviceArray", (), {"data": type("Data", (), {"ptr": 64})(), "dtype": np.dtype(np.float32)})()

    def issue():  # as lstm_forward_steps: a GEMM, then a launch
        ops.gemm(ops.handle(), np.dtype(np.float32), 1, 0, 8, 2, 3, a, 0, 3, a, 0, 3, 1, a, 0, 8)
        ops.lstm_step(2, 3, 0, g, 0, g, g, g, 0, g, 0, g, 0, g, 0)

    replay = ops.capture(issue)
    assert replay() is not None  # the graph holds its workspace
    ops.capture(issue)
    log = FakeStream.log
    side = log[0][1]
    assert side not in (0, None)
    assert log[:3] == [("begin_capture", side), ("kernel", "lstmkit_lstm_step<float>", side), ("end_capture", side)]
    assert ("launch", 0) in log  # replayed on the caller's stream
    assert [e for e in log if e[0] == "begin_capture"] == [("begin_capture", side)] * 2  # one stream per device
    assert all(not during for _, _, during in cupy.allocated)  # no workspace allocated inside a capture
    # inside the capture, the GEMM went on the capture stream with the caller's (stream 0's) workspace
    binds = [(c[0], c[2]) for c in lib.calls if c[0] in ("cublasSetStream_v2", "cublasSetWorkspace_v2")]
    assert binds[:2] == [("cublasSetStream_v2", side), ("cublasSetWorkspace_v2", 5001)]
    ops.gemm(ops.handle(), np.dtype(np.float32), 1, 0, 8, 2, 3, a, 0, 3, a, 0, 3, 1, a, 0, 8)  # directly
    assert [(c[0], c[2]) for c in lib.calls[-3:-1]] == [("cublasSetStream_v2", 0), ("cublasSetWorkspace_v2", 5001)]
    FakeStream.device = 1  # another GPU: its own capture stream, and graphs stay on
    FakeStream.current = FakeStream(0)
    ops.capture(issue)
    assert FakeStream.log[-1][1] not in (0, side)


def test_cuda_ops_without_ctypes_cublas_say_why_graphs_are_off(monkeypatch):
    from lstmkit_cupy import steps

    def missing():
        raise OSError("libcublas not found")

    monkeypatch.setattr(steps, "_load_cublas", missing)
    fake_backends = type(sys)("cupy_backends.cuda.libs")
    fake_backends.cublas = type("cublas", (), {"sgemm": None, "dgemm": None})
    for name in ("cupy_backends", "cupy_backends.cuda", "cupy_backends.cuda.libs"):
        monkeypatch.setitem(sys.modules, name, fake_backends)
    ops = steps.CudaOps(fake_cupy())
    assert ops.graphs == "cuBLAS through ctypes: OSError: libcublas not found"
    assert steps.GraphCache(ops).disabled == ops.graphs
    with pytest.raises(OSError):
        steps.CudaOps(fake_cupy(), tf32=True)  # TF32 needs the handle of its own


def test_cublas_binds_stream_and_workspace_with_each_gemm_under_one_lock():
    """One handle per device, shared by threads: each GEMM sets its stream, then that stream's
    workspace (cublasSetStream resets it), then runs — no other thread's call in between."""
    import threading

    from lstmkit_cupy.steps import Where, _Cublas

    lib = FakeCublasLib(pause=0.0005)
    cupy = fake_cupy()
    blas = _Cublas(cupy, tf32=True, lib=lib)
    f32 = np.dtype(np.float32)

    def work(stream, device):
        for _ in range(20):
            blas.gemm(Where(device, stream, (stream,)), f32, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1)

    threads = [threading.Thread(target=work, args=(stream, device)) for stream, device in [(7, 0), (9, 0), (7, 1)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = [c for c in lib.calls if c[0] in ("cublasSetStream_v2", "cublasSetWorkspace_v2", "cublasSgemm_v2")]
    assert len(calls) == 3 * 60
    spaces = {}
    for k in range(0, len(calls), 3):
        bind, space, gemm = calls[k:k + 3]
        assert (bind[0], space[0], gemm[0]) == ("cublasSetStream_v2", "cublasSetWorkspace_v2", "cublasSgemm_v2")
        assert bind[1] == space[1] == gemm[1]  # the same handle throughout
        spaces.setdefault((bind[1], bind[2]), set()).add(space[2])
    assert all(len(v) == 1 for v in spaces.values()) and len(spaces) == 3  # (handle, stream): one workspace
    names = [c[0] for c in lib.calls]
    assert names.count("cublasCreate_v2") == 2 and names.count("cublasSetMathMode") == 2  # one per device


def test_cublas_keeps_a_bounded_number_of_workspaces():
    from lstmkit_cupy.steps import _Cublas

    blas = _Cublas(fake_cupy(), tf32=False, lib=FakeCublasLib())
    first = blas.workspace(0, (1,))
    assert blas.workspace(0, (1,)) is first
    for stream in range(2, 2 + blas.SPACES):
        blas.workspace(0, (stream,))
    assert len(blas._spaces) == blas.SPACES and blas.workspace(0, (1,)) is not first  # dropped, then new


def test_graph_keys_name_device_and_stream_and_the_thread_only_for_per_thread_streams():
    import threading

    from lstmkit_cupy.steps import PER_THREAD_STREAM, CudaOps

    ops = CudaOps.__new__(CudaOps)
    ops.xp = fake_cupy()
    here = ops.where()
    assert (here.device, here.stream, here.space) == (0, 0, (0,))
    FakeStream.current = FakeStream(PER_THREAD_STREAM)
    box = []
    worker = threading.Thread(target=lambda: box.append(ops.where()))
    worker.start()
    worker.join()
    assert ops.where().space != box[0].space  # one pointer, two streams: two workspaces, two keys
    FakeStream.device = 1
    assert ops.where().device == 1
