"""Recomputation for memory (``forward_train(..., recompute=k)``, ``training.recompute``, issue 7):
the backward reruns the forward one segment of ``k`` time steps at a time from saved states.

Results agree with the plain path to rounding, which is what these tests hold them to: parameter
gradients are sums over segments instead of over the whole sequence, and a segment's matrix products
(fewer rows) may round differently in BLAS, so outputs and input/state gradients are equal bit for
bit in most cases but not all (float64: ~1e-15 relative at most)."""
import importlib.util
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import lstmkit
from lstmkit import _threads, engine
from lstmkit._recompute import Segments, segment_length
from lstmkit.model import SequenceModel
from lstmkit.utils.rnn import PackedSequence, pack_padded_sequence

ROOT = Path(__file__).resolve().parent.parent
RTOL, ATOL = 1e-12, 1e-14  # float64, many orders above rounding, far below any real mistake


def _flat(value):
    """Every array in nested tuples/lists/dicts/PackedSequences, in order."""
    if isinstance(value, PackedSequence):
        return [value.data]
    if isinstance(value, dict):
        return [a for k in sorted(value) for a in _flat(value[k])]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _flat(v)]
    return [value]


def _train(module, inp, hx, recompute, seed=5):
    """Outputs, states, gradients (all arrays) and the generator state after a forward_train/backward
    with fixed random upstream gradients for the output and the final state."""
    module.generator = np.random.default_rng(seed)  # the same dropout masks for each call
    out, state, backward = module.forward_train(inp, hx, recompute=recompute)
    rng = np.random.default_rng(seed + 1)
    dtype = _flat(out)[0].dtype
    d_out = rng.standard_normal(_flat(out)[0].shape).astype(dtype)
    if isinstance(out, PackedSequence):
        d_out = out._replace(data=d_out)
    d_state = tuple(rng.standard_normal(s.shape).astype(dtype) for s in _flat(state))
    d_state = d_state if isinstance(state, tuple) else d_state[0]
    grads = backward(d_out, d_state)
    return _flat((out, state, grads)), module.generator.bit_generator.state


def _assert_same(plain, segmented):
    (a, gen_a), (b, gen_b) = plain, segmented
    assert gen_a == gen_b  # as many dropout draws, in the same order
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(y, x, rtol=RTOL, atol=ATOL)


CELLS = {
    "lstm": {},
    "lstm_proj": {"proj_size": 3},
    "gru": {},
    "rnn_tanh": {},
    "rnn_relu": {},
}


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", list(CELLS))
def test_every_cell_layers_dropout_directions_dense(backend, cell, bidirectional):
    m = lstmkit.Recurrent(cell.removesuffix("_proj"), 5, 7, num_layers=2, dropout=0.4,
                          bidirectional=bidirectional, dtype=np.float64, backend=backend, seed=1, **CELLS[cell])
    x = np.random.default_rng(2).standard_normal((23, 4, 5))
    plain = _train(m, x, None, None)
    for k in (1, 4, "auto", 22):
        _assert_same(plain, _train(m, x, None, k))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", list(CELLS))
def test_packed_sequences_with_shrinking_batches(backend, cell, bidirectional):
    """Segment boundaries fall inside runs of equal batch size and on changes of it; one sequence
    is a single step long; the batch is not sorted (hx given: it is permuted to the sorted order)."""
    m = lstmkit.Recurrent(cell.removesuffix("_proj"), 5, 7, num_layers=2, dropout=0.3,
                          bidirectional=bidirectional, dtype=np.float64, backend=backend, seed=1, **CELLS[cell])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((19, 5, 5))
    lengths = np.array([9, 19, 1, 13, 12])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    widths = m.cell.state_sizes(m.hidden_size, m.proj_size)
    hx = tuple(rng.standard_normal((2 * m.num_directions, 5, w)) for w in widths)
    hx = hx if len(hx) > 1 else hx[0]
    for given in (None, hx):
        plain = _train(m, packed, given, None)
        for k in (1, 3, 4, "auto", 12):
            _assert_same(plain, _train(m, packed, given, k))


def test_batch_first_unbatched_and_hx(backend):
    m = lstmkit.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True, proj_size=2,
                     dtype=np.float64, backend=backend, seed=0)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 11, 4))  # (B, T, I)
    hx = (rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 6)))
    _assert_same(_train(m, x, hx, None), _train(m, x, hx, 3))
    unbatched = rng.standard_normal((11, 4))
    hx = (rng.standard_normal((4, 2)), rng.standard_normal((4, 6)))
    _assert_same(_train(m, unbatched, hx, None), _train(m, unbatched, hx, 2))
    _assert_same(_train(m, unbatched, None, None), _train(m, unbatched, None, "auto"))


def test_float32(backend):
    m = lstmkit.GRU(5, 8, num_layers=2, dropout=0.5, bidirectional=True, backend=backend, seed=0)
    x = np.random.default_rng(0).standard_normal((30, 3, 5)).astype(np.float32)
    (a, _), (b, _) = _train(m, x, None, None), _train(m, x, None, 5)
    for u, v in zip(a, b):
        assert v.dtype == np.float32
        np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def peephole_cell():
    """The peephole plugin's cell (extra parameters, no fused kernel) from this checkout."""
    path = ROOT / "plugins" / "lstmkit-peephole" / "lstmkit_peephole" / "__init__.py"
    spec = importlib.util.spec_from_file_location("lstmkit_peephole_recompute", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module.PeepholeLSTMCellType()
    finally:
        del sys.modules[spec.name]


def test_plugin_cell_through_the_generic_path(backend, peephole_cell):
    m = lstmkit.Recurrent(peephole_cell, 4, 5, num_layers=2, dropout=0.2, bidirectional=True,
                          dtype=np.float64, backend=backend, seed=2)
    assert "weight_ci_l1_reverse" in m.state_dict()  # its own parameters get summed gradients too
    rng = np.random.default_rng(5)
    x = rng.standard_normal((14, 3, 4))
    _assert_same(_train(m, x, None, None), _train(m, x, None, 4))
    packed = pack_padded_sequence(x, np.array([14, 3, 9]), enforce_sorted=False)
    _assert_same(_train(m, packed, None, None), _train(m, packed, None, 4))


def test_concurrent_directions(monkeypatch):
    """The two directions' segment loops may run in two Python threads (cython, large layers)."""
    pytest.importorskip("lstmkit.backends.cython")
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 4)
    monkeypatch.setattr(_threads, "_other_load", lambda: 0.0)
    monkeypatch.setattr(engine, "CONCURRENT_WORK", 1)
    seen = []
    original = engine.run_directions

    def spy(calls, concurrent):
        seen.append(concurrent)
        return original(calls, concurrent)

    monkeypatch.setattr(engine, "run_directions", spy)
    m = lstmkit.LSTM(5, 6, num_layers=2, bidirectional=True, dtype=np.float64, backend="cython", seed=0)
    x = np.random.default_rng(0).standard_normal((17, 3, 5))
    plain = _train(m, x, None, None)
    seen.clear()
    _assert_same(plain, _train(m, x, None, 4))
    assert seen and all(seen)


def test_the_cache_keeps_segment_states_not_steps():
    m = lstmkit.LSTM(3, 4, num_layers=2, dropout=0.5, dtype=np.float64, backend="numpy", seed=0)
    x = np.random.default_rng(0).standard_normal((10, 2, 3))
    _, _, backward = m.forward_train(x, recompute=4)
    cache = next(c.cell_contents for c in backward.__closure__ if isinstance(c.cell_contents, engine.StackCache))
    for per_dir in cache.layer_caches:
        (segments,) = per_dir
        assert isinstance(segments, Segments) and segments.starts == [0, 4, 8]
        assert [segments.entry[a][1].shape for a in segments.starts] == [(2, 4)] * 3
    assert isinstance(cache.masks[0], engine.PackedMask) and cache.masks[0].bits.nbytes == 10  # 80 bits
    _, _, backward = m.forward_train(x, recompute=10)  # one segment: the plain path
    cache = next(c.cell_contents for c in backward.__closure__ if isinstance(c.cell_contents, engine.StackCache))
    assert not isinstance(cache.layer_caches[0][0], Segments)


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("backend_name", ["numpy", "cython"])
def test_peak_memory_is_lower(backend_name):
    """Bytes NumPy allocates (tracemalloc sees them) during a training step, not a timing."""
    if backend_name not in lstmkit.registry.available_backends():
        pytest.skip("the compiled core is not built")
    m = lstmkit.LSTM(16, 64, num_layers=2, backend=backend_name, seed=0)
    x = np.random.default_rng(0).standard_normal((256, 8, 16)).astype(np.float32)
    d_out = np.ones((256, 8, 64), np.float32)

    def step(recompute):
        def run():
            _, _, backward = m.forward_train(x, recompute=recompute)
            backward(d_out)
        return run

    plain, auto = _peak(step(None)), _peak(step("auto"))
    assert auto < 0.4 * plain, (plain, auto)


def test_segment_length():
    assert segment_length(None, 100) is None and segment_length(False, 100) is None
    assert segment_length("auto", 400) == 20 and segment_length("auto", 10) == 4
    assert segment_length("auto", 2) is None and segment_length("auto", 1) is None  # one segment: plain
    assert segment_length(7, 100) == 7 and segment_length(np.int64(7), 100) == 7
    assert segment_length(100, 100) is None


@pytest.mark.parametrize("value, error, match", [
    (True, TypeError, "recompute should be 'auto', a positive int or None, got True"),
    (2.5, TypeError, "got float"),
    ("sqrt", ValueError, "got 'sqrt'"),
    (0, ValueError, "positive number of time steps per segment, got 0"),
])
def test_bad_recompute_values(value, error, match):
    m = lstmkit.GRU(2, 3, backend="numpy")
    with pytest.raises(error, match=match):
        m.forward_train(np.zeros((4, 1, 2), np.float32), recompute=value)


def test_sequence_model_forward_train():
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 9, size=(4, 15))
    lengths = np.array([15, 4, 9, 15])
    results = []
    for recompute in (None, 4):
        m = SequenceModel(cell="lstm", vocab_size=9, hidden_size=6, num_layers=2, dropout=0.3, output_size=9,
                          dtype=np.float64, backend="numpy", seed=3)
        m.train()
        y, state, backward = m.forward_train(inputs, lengths, recompute=recompute)
        grads = backward(np.random.default_rng(1).standard_normal(y.shape))
        results.append((y, state, grads))
    for a, b in zip(_flat(results[0]), _flat(results[1])):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)


# -- the config key and the trainer -------------------------------------------------------------------------
def _config(tmp_path, extra):
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ntask: {type: sine, options: {seq_len: 24, num_train: 32, num_valid: 8, "
                    "num_test: 8}}\nmodel: {hidden_size: 6, num_layers: 2, dropout: 0.2}\n"
                    "runtime: {dtype: float64, backend: numpy}\n"
                    f"training: {{max_steps: 3, batch_size: 16, tbptt: 10{extra}}}\n")
    return path


@pytest.mark.parametrize("value", ["true", "0", "-3", "null", "sqrt", "2.5"])
def test_config_key_refuses_other_values(tmp_path, value):
    from lstmkit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"training\.recompute: should be false, auto or a number of time "
                                          r"steps >= 1, got "):
        load_config(_config(tmp_path, f", recompute: {value}"))


def test_trainer_plumbs_recompute_with_tbptt(tmp_path, monkeypatch):
    from lstmkit.config import load_config
    from lstmkit.config.memory import estimate
    from lstmkit.run.build import build_model, build_task
    from lstmkit.run.trainer import Trainer

    seen = []
    original = lstmkit.Recurrent.forward_train

    def spy(self, input, hx=None, *, recompute=None):
        seen.append(recompute)
        return original(self, input, hx, recompute=recompute)

    monkeypatch.setattr(lstmkit.Recurrent, "forward_train", spy)
    params, memory = {}, {}
    for value in ("false", "3", "auto"):
        loaded = load_config(_config(tmp_path, f", recompute: {value}"))
        task, data = build_task(loaded)
        model = build_model(loaded, task)
        trainer = Trainer(model, task, data, loaded.config, shuffle=np.random.default_rng(0), echo=lambda s: None)
        trainer.fit()
        params[value] = model.state_dict()
        memory[value] = estimate(loaded.config, task, data).training_bytes
    assert seen == [None] * 9 + [3] * 9 + ["auto"] * 9  # 3 steps of 3 tbptt chunks (24 steps)
    for value in ("3", "auto"):
        for name, array in params["false"].items():
            np.testing.assert_allclose(params[value][name], array, rtol=1e-10, atol=1e-12)
        assert memory[value] < memory["false"]


def test_memory_refusal_suggests_recompute(tmp_path):
    from lstmkit.config import ConfigError, check_memory, load_config
    from lstmkit.run.build import build_task

    path = tmp_path / "big.yaml"
    for value, suggested in (("false", True), ("auto", False)):
        path.write_text("version: 1\ntask: {type: sine, options: {seq_len: 200, num_train: 512}}\n"
                        f"training: {{batch_size: 512, recompute: {value}}}\n")
        loaded = load_config(path)
        task, data = build_task(loaded)
        with pytest.raises(ConfigError, match="the run needs") as info:
            check_memory(loaded, task, data, available=1)
        assert ("training.batch_size: the run needs" in str(info.value)) is suggested  # activations dominate
        assert ("or set training.recompute: auto" in str(info.value)) is suggested
