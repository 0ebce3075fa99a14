"""The core's workspace pool (lstmkit/_core.pyx, ``workspace``): a layer's caches and
workspaces keep their memory for the next call of the same shape."""
import numpy as np
import pytest

import lstmkit

_core = pytest.importorskip("lstmkit._core")

BIG = (600, 512)  # 1.2 MB in float32: above the pool's smallest block


@pytest.fixture
def pool():
    """A fresh pool of 64 MiB; the previous limit (and nothing idle) afterwards."""
    limit = _core.workspace_pool()[2]
    _core.workspace_pool(0)
    _core.workspace_pool(64 << 20)
    yield
    _core.workspace_pool(0)
    _core.workspace_pool(limit)


def test_workspace_is_a_writable_aligned_c_array(pool):
    for dtype in (np.float32, np.float64):
        a = _core.workspace(BIG, dtype)
        assert a.shape == BIG and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % 64 == 0
        a[...] = 3
        assert float(a.sum()) == 3 * a.size
    assert _core.workspace(1000, np.float64).shape == (1000,)


def test_a_freed_block_is_handed_out_again_and_a_live_one_never(pool):
    a = _core.workspace(BIG, np.float32)
    address = a.ctypes.data
    b = _core.workspace(BIG, np.float32)
    assert b.ctypes.data != address  # a is alive
    view = a[1:]
    del a
    assert _core.workspace_pool()[1] == 0  # the view keeps the block
    del view
    assert _core.workspace_pool()[:2] == (BIG[0] * BIG[1] * 4, 1)
    c = _core.workspace((BIG[0] - 100, BIG[1]), np.float32)  # up to a quarter smaller fits
    assert c.ctypes.data == address and _core.workspace_pool()[1] == 0
    del b, c
    d = _core.workspace((BIG[0] // 2, BIG[1]), np.float32)  # half: a new block
    assert d.ctypes.data not in (address,) and _core.workspace_pool()[1] == 2


def test_the_limit_bounds_what_stays_idle(pool):
    nbytes = BIG[0] * BIG[1] * 4
    _core.workspace_pool(3 * nbytes)
    blocks = [_core.workspace(BIG, np.float32) for _ in range(5)]
    del blocks
    idle, count, limit = _core.workspace_pool()
    assert count == 3 and idle == 3 * nbytes <= limit
    assert _core.workspace_pool(nbytes)[:2] == (nbytes, 1)  # lowering it frees now
    assert _core.workspace_pool(0)[:2] == (0, 0)
    plain = _core.workspace(BIG, np.float32)  # limit 0: NumPy's memory
    assert plain.flags.owndata
    small = _core.workspace(10, np.float32)
    assert small.flags.owndata
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="non-negative integer of bytes"):
            _core.workspace_pool(bad)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_training_on_the_pool_gives_the_same_bits(kind, pool):
    """Three training steps with the pool (the later ones on the first's memory) against
    the same steps without it."""
    rng = np.random.default_rng(0)
    m = getattr(lstmkit, kind)(16, 256, num_layers=2, bidirectional=True, seed=1)
    x = rng.standard_normal((40, 8, 16)).astype(np.float32)
    d_out = rng.standard_normal((40, 8, 512)).astype(np.float32)

    def steps():
        results = []
        for _ in range(3):
            out, _, backward = m.forward_train(x)
            d_x, _, d_params = backward(d_out)
            results.append([out, d_x, *d_params.values()])
        return results

    pooled = steps()
    assert _core.workspace_pool()[1] > 0  # the caches came back to it
    _core.workspace_pool(0)
    plain = steps()
    for a, b in zip(pooled, plain):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


def test_a_bidirectional_stack_keeps_its_own_temporaries_on_the_pool(pool, monkeypatch):
    """The engine's joined outputs between layers, the gradient halves and the summed input
    gradient between layers come from the backend's scratch memory; what the caller gets does
    not."""
    from lstmkit.backends.cython import CythonBackend

    asked = []
    real = CythonBackend.scratch
    monkeypatch.setattr(CythonBackend, "scratch",
                        lambda self, shape, dtype: asked.append(tuple(shape)) or real(self, shape, dtype))
    m = lstmkit.LSTM(16, 256, num_layers=2, bidirectional=True, seed=1)
    x = np.random.default_rng(0).standard_normal((40, 8, 16)).astype(np.float32)
    out, _, backward = m.forward_train(x)
    assert asked == [(320, 512)]  # layer 0's joined output, the input of layer 1
    d_x, _, _ = backward(np.ones_like(out))
    # two halves per layer, the input gradient of layer 1 (layer 0's output gradient)
    assert asked[1:] == [(320, 256), (320, 256), (320, 512), (320, 256), (320, 256)]
    for a in (out, d_x):  # NumPy's own memory (views of it), not a pool block's
        while isinstance(a.base, np.ndarray):
            a = a.base
        assert a.base is None and a.flags.owndata


def test_tracemalloc_sees_a_block_while_it_is_in_use(pool):
    """As it sees NumPy's own arrays: memory measurements (test_recompute's peak) stay honest."""
    import tracemalloc

    nbytes = BIG[0] * BIG[1] * 8
    _core.workspace(BIG, np.float64)  # comes back to the pool at once: the next one reuses it
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        a = _core.workspace(BIG, np.float64)
        assert tracemalloc.get_traced_memory()[0] - before >= nbytes
        del a
        assert tracemalloc.get_traced_memory()[0] - before < nbytes
    finally:
        tracemalloc.stop()
