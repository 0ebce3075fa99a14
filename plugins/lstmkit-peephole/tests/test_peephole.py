"""The peephole cell: the conformance kit, its equations, its options."""
import numpy as np
import pytest

import lstmkit
from lstmkit.registry import available_backends
from lstmkit.registry import get_registry
from lstmkit.testing import CHECKS, check_cell


@pytest.mark.parametrize("options", [None, {"cell_clip": 0.5}], ids=["plain", "cell_clip"])
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, options):
    check("peephole", cell_options=options)


def test_check_cell_runs_every_check():
    assert check_cell("peephole") == [c.__name__ for c in CHECKS]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def peephole_loop(x, params, h0, c0, clip=None):
    """The paper's equations, one step at a time, written independently of the plugin."""
    w_ih, w_hh, b_ih, b_hh, w_ci, w_cf, w_co = params
    hidden = h0.shape[-1]
    h, c, outputs = h0, c0, []
    for x_t in x:
        a = x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        a_i, a_f, a_g, a_o = (a[:, k * hidden : (k + 1) * hidden] for k in range(4))
        i = sigmoid(a_i + w_ci * c)
        f = sigmoid(a_f + w_cf * c)
        c = f * c + i * np.tanh(a_g)
        if clip is not None:
            c = np.clip(c, -clip, clip)
        o = sigmoid(a_o + w_co * c)
        h = o * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs), h, c


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("clip", [None, 0.3])
def test_equations(backend, clip):
    rng = np.random.default_rng(0)
    options = None if clip is None else {"cell_clip": clip}
    m = lstmkit.Recurrent("peephole", 3, 5, dtype=np.float64, backend=backend, seed=1, cell_options=options)
    x = rng.standard_normal((7, 2, 3))
    h0, c0 = rng.standard_normal((1, 2, 5)), rng.standard_normal((1, 2, 5))
    out, (h_n, c_n) = m(x, (h0, c0))
    params = [getattr(m, n + "_l0") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                               "weight_ci", "weight_cf", "weight_co")]
    ref_out, ref_h, ref_c = peephole_loop(x, params, h0[0], c0[0], clip)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_n[0], ref_h, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c_n[0], ref_c, rtol=1e-12, atol=1e-13)
    if clip is not None:
        assert np.abs(c_n).max() <= clip


def test_zero_peepholes_is_lstm():
    rng = np.random.default_rng(1)
    peephole = lstmkit.Recurrent("peephole", 3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    lstm = lstmkit.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    state = peephole.state_dict()
    for name in list(state):
        if name.startswith(("weight_ci", "weight_cf", "weight_co")):
            state[name][...] = 0.0
    peephole.load_state_dict(state)
    lstm.load_state_dict({k: v for k, v in state.items() if not k.startswith(("weight_ci", "weight_cf", "weight_co"))})
    x = rng.standard_normal((5, 2, 3))
    out_p, (h_p, c_p) = peephole(x)
    out_l, (h_l, c_l) = lstm(x)
    np.testing.assert_allclose(out_p, out_l, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c_p, c_l, rtol=1e-12, atol=1e-14)


def test_parameters_and_repr():
    m = lstmkit.Recurrent("peephole", 3, 4, num_layers=2, bidirectional=True)
    names = list(m.state_dict())
    assert names[:7] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                         "weight_ci_l0", "weight_cf_l0", "weight_co_l0"]
    assert m.weight_ci_l1_reverse.shape == (4,)
    assert repr(m) == "Recurrent('peephole', 3, 4, num_layers=2, bidirectional=True)"
    bound = 1 / np.sqrt(4)
    assert all(np.abs(v).max() <= bound for v in m.parameters())  # U(-1/sqrt(H), 1/sqrt(H))
    cell = lstmkit.RecurrentCell("peephole", 3, 4)
    assert list(cell.state_dict()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                       "weight_ci", "weight_cf", "weight_co"]


def test_options_are_validated():
    m = lstmkit.Recurrent("peephole", 3, 4, cell_options={"cell_clip": 2.0})
    assert m.cell.cell_clip == 2.0
    with pytest.raises(ValueError, match="cell_clip"):
        lstmkit.Recurrent("peephole", 3, 4, cell_options={"cell_clip": -1.0})
    with pytest.raises(ValueError, match="peephole_init"):
        lstmkit.Recurrent("peephole", 3, 4, cell_options={"peephole_init": "zeros"})
    with pytest.raises(ValueError, match="proj_size"):
        lstmkit.Recurrent("peephole", 3, 4, proj_size=2)


def test_registered_under_its_name():
    spec = get_registry().cell_spec("peephole")
    assert spec.num_gates == 4 and spec.state_names == ("h", "c")
    assert "peephole" in lstmkit.registry.available_cells()
