"""``lstmkit.testing.gradcheck``: agrees for correct modules, catches a wrong gradient and says where."""
from __future__ import annotations

import numpy as np
import pytest

import lstmkit
from lstmkit.cells import LSTMCellType
from lstmkit.specs import CellSpec
from lstmkit.testing import gradcheck, registered_plugin
from lstmkit.utils.rnn import pack_sequence


@pytest.mark.parametrize("make", [
    lambda: lstmkit.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0),
    lambda: lstmkit.LSTM(3, 4, proj_size=2, batch_first=True, seed=1),
    lambda: lstmkit.GRU(2, 3, seed=2),
    lambda: lstmkit.RNN(2, 3, nonlinearity="relu", bias=False, seed=3),
    lambda: lstmkit.LSTMCell(3, 4, seed=4),
], ids=["lstm-2x-bidir", "lstm-proj", "gru", "rnn-relu", "lstmcell"])
def test_correct_modules_pass(make):
    report = gradcheck(make())
    assert report.ok, str(report)
    names = [e.name for e in report.entries]
    assert names[0] == "input" and "h_0" in names
    assert all(e.error < 1e-6 for e in report.entries)
    assert str(report).splitlines()[0].endswith("all gradients agree")


def test_given_input_and_state_are_used_and_not_modified():
    lstm = lstmkit.LSTM(3, 4, seed=0)
    before = lstm.state_dict()
    x = np.linspace(-1, 1, 2 * 3 * 3).reshape(2, 3, 3).astype(np.float32)
    hx = (np.full((1, 3, 4), 0.1, np.float32), np.full((1, 3, 4), -0.2, np.float32))
    copies = x.copy(), hx[0].copy(), hx[1].copy()
    report = gradcheck(lstm, x, hx)
    assert report.ok
    assert report["input"].shape == (2, 3, 3) and report["c_0"].shape == (1, 3, 4)
    assert np.array_equal(x, copies[0]) and np.array_equal(hx[0], copies[1]) and np.array_equal(hx[1], copies[2])
    assert lstm.dtype == np.float32
    assert all(np.array_equal(v, before[k]) for k, v in lstm.state_dict().items())


def test_packed_and_unbatched_inputs():
    packed = pack_sequence([np.ones((3, 2)), np.full((1, 2), 0.5)])
    assert gradcheck(lstmkit.GRU(2, 3, seed=0), packed).ok
    report = gradcheck(lstmkit.LSTM(2, 3, seed=0), np.ones((4, 2)))
    assert report.ok and report["h_0"].shape == (1, 3)


class ForgetfulLSTM(LSTMCellType):
    """LSTM whose backward drops the sigmoid derivative of the forget gate (a classic slip)."""

    name = "forgetful_lstm"

    def backward_step(self, xp, p, cache, d_state, grads):
        h_prev, c_prev, i, f, g, o, tanh_c, h_cell = cache
        d_h, d_c = d_state
        d_o = d_h * tanh_c
        d_c = d_c + d_h * o * (1 - tanh_c * tanh_c)
        d_gates = xp.concatenate([d_c * g * i * (1 - i), d_c * c_prev,  # should be d_c * c_prev * f * (1 - f)
                                  d_c * i * (1 - g * g), d_o * o * (1 - o)], axis=1)
        grads["weight_hh"] += d_gates.T @ h_prev
        grads["bias_hh"] += d_gates.sum(axis=0)
        return d_gates, (d_gates @ p["weight_hh"], d_c * f)


class Forgetful:
    @lstmkit.hookimpl
    def register_cells(self, register):
        register(CellSpec("forgetful_lstm", ForgetfulLSTM))


def test_a_wrong_gradient_is_caught_and_located():
    with registered_plugin(Forgetful(), "forgetful"):
        report = gradcheck(lstmkit.Recurrent("forgetful_lstm", 3, 4, backend="numpy", seed=0))
    assert not report.ok
    wrong = {e.name for e in report.failures}
    assert {"weight_hh_l0", "bias_hh_l0", "weight_ih_l0", "bias_ih_l0"} <= wrong
    assert "weight_hh_l0" in str(report).splitlines()[0]  # the headline names the wrong tensors
    entry = report["bias_hh_l0"]
    assert entry.where.startswith("gate f, unit ") and 4 <= entry.index[0] < 8
    assert entry.error > 1e-3
    line = next(l for l in str(report).splitlines()[2:] if "bias_hh_l0" in l)
    assert line.strip().startswith("FAIL") and "analytic" in line and "numeric" in line and "gate f" in line
    t, b, _ = report["input"].index
    assert report["input"].where == f"time step {t}, sequence {b}"  # input (seq_len, batch, input_size)
    assert report["c_0"].where == "layer 0"


def test_the_report_is_false_when_a_gradient_is_wrong():
    # torch.autograd.gradcheck returns a bool: a learner writes `assert gradcheck(m)`, which must fail here.
    with registered_plugin(Forgetful(), "forgetful"):
        report = gradcheck(lstmkit.Recurrent("forgetful_lstm", 3, 4, backend="numpy", seed=0))
    assert not bool(report)
    assert bool(gradcheck(lstmkit.GRU(2, 3, seed=0)))


def test_sequence_models():
    model = lstmkit.SequenceModel(vocab_size=5, hidden_size=3, num_layers=2, output_size=5, seed=0)
    before = model.state_dict()
    report = gradcheck(model)
    assert report.ok, str(report)
    assert [e.name for e in report.entries][:2] == ["embedding.weight", "rnn.weight_ih_l0"]
    assert report.module == "SequenceModel (parameters only)"
    assert model.dtype == np.float32 and all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())
    last = lstmkit.SequenceModel(input_size=2, hidden_size=3, bidirectional=True, output_size=1, target="last", seed=1)
    assert gradcheck(last, np.ones((2, 4, 2))).ok
    with registered_plugin(Forgetful(), "forgetful"):
        bad = gradcheck(lstmkit.SequenceModel(cell="forgetful_lstm", input_size=2, hidden_size=3, output_size=1,
                                              backend="numpy", seed=0))
    assert not bad.ok and bad["rnn.bias_hh_l0"].where.startswith("gate f")
    assert bad["head.weight"].ok  # the head's gradient does not go through the cell's backward


def test_rejects_what_it_cannot_check():
    with pytest.raises(TypeError, match="expected a Recurrent module .* got Linear"):
        gradcheck(lstmkit.Linear(2, 3))
