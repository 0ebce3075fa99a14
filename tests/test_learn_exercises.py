"""The self-grading exercises: right solutions pass; typical slips get a precise diagnosis."""
from __future__ import annotations

import numpy as np
import pytest

from lstmkit.learn.exercises import (check_gru_step, check_lstm_backward, check_lstm_forward, check_lstm_step,
                                     check_lstm_step_backward, check_pack)


def sig(z):
    return 1 / (1 + np.exp(-z))


def lstm_step(x, h, c, W_ih, W_hh, b_ih, b_hh, order="ifgo", act_g=np.tanh, tanh_c=True):
    H = h.shape[1]
    z = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    blocks = {gate: z[:, k * H:(k + 1) * H] for k, gate in enumerate(order)}
    i, f, g, o = sig(blocks["i"]), sig(blocks["f"]), act_g(blocks["g"]), sig(blocks["o"])
    c_new = f * c + i * g
    return o * (np.tanh(c_new) if tanh_c else c_new), c_new


def lstm_forward(x, h0, c0, *params, carry_c=True):
    h, c, out = h0, c0, []
    for x_t in x:
        h, c_new = lstm_step(x_t, h, c, *params)
        c = c_new if carry_c else c0
        out.append(h)
    return np.stack(out), (h, c_new)


def lstm_step_backward(dh_new, dc_new, x, h, c, W_ih, W_hh, b_ih, b_hh, bug=None):
    H = h.shape[1]
    z = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
    tanh_c = np.tanh(f * c + i * g)
    dc = dc_new + (0 if bug == "no_h_path" else dh_new * o * (1 - tanh_c ** 2))
    d_f = dc * c * (1 if bug == "sigmoid_f" else f * (1 - f))
    dz = np.concatenate([dc * g * i * (1 - i), d_f, dc * i * (1 - g * g), dh_new * tanh_c * o * (1 - o)], axis=1)
    grads = {"dx": dz @ W_ih, "dh": dz @ W_hh, "dc": dc * f, "dW_ih": dz.T @ x, "dW_hh": dz.T @ h,
             "db_ih": dz.sum(0), "db_hh": dz.sum(0)}
    if bug == "transposed":
        grads["dW_hh"] = h.T @ dz
    if bug == "dh":
        grads["dh"] = dz @ W_hh[:, :H] * 0.5
    return grads


def lstm_backward(d_out, x, h0, c0, W_ih, W_hh, b_ih, b_hh, bug=None):
    hs, cs = [h0], [c0]
    for x_t in x:
        h, c = lstm_step(x_t, hs[-1], cs[-1], W_ih, W_hh, b_ih, b_hh)
        hs.append(h)
        cs.append(c)
    T = len(x)
    dh, dc, dx, sums = np.zeros_like(h0), np.zeros_like(c0), np.zeros_like(x), {}
    for t in reversed(range(T)):
        d_out_t = d_out[t] if bug != "last_only" or t == T - 1 else 0
        g = lstm_step_backward(d_out_t + (0 if bug == "no_dh" else dh), 0 * dc if bug == "no_dc" else dc,
                               x[t], hs[t], cs[t], W_ih, W_hh, b_ih, b_hh)
        dx[t], dh, dc = g["dx"], g["dh"] * (1.5 if bug == "step_1" and t == 1 else 1), g["dc"]
        for k in ("dW_ih", "dW_hh", "db_ih", "db_hh"):
            sums[k] = g[k] if bug == "overwrite" else sums.get(k, 0) + g[k]
    return {"dx": dx, "dh0": dh, "dc0": dc, **sums}


def gru_step(x, h, W_ih, W_hh, b_ih, b_hh):
    H = h.shape[1]
    gi, gh = x @ W_ih.T + b_ih, h @ W_hh.T + b_hh
    r, z = sig(gi[:, :H] + gh[:, :H]), sig(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h


def pack(padded, lengths, order_key=lambda n: -n, time_major=True):
    order = sorted(range(len(lengths)), key=lambda b: order_key(lengths[b]))
    T = padded.shape[0]
    batch_sizes = [sum(n > t for n in lengths) for t in range(T)]
    if time_major:
        rows = [padded[t, b] for t in range(T) for b in order if lengths[b] > t]
    else:
        rows = [padded[t, b] for b in order for t in range(lengths[b])]
    return np.array(rows), np.array(batch_sizes)


def test_right_solutions_pass():
    for result in (check_lstm_step(lstm_step), check_lstm_forward(lstm_forward),
                   check_lstm_step_backward(lstm_step_backward), check_lstm_backward(lstm_backward),
                   check_gru_step(gru_step), check_pack(pack)):
        assert result.ok, str(result)
        assert "correct" in str(result) and "cases agree with lstmkit" in str(result)


@pytest.mark.parametrize("slip, expected", [
    (dict(order="ifog"), "you read the rows as [i|f|o|g] (karpathy's IFOG order); PyTorch stacks the rows of W_ih, "
                         "W_hh, b_ih and b_hh as [i|f|g|o]"),
    (dict(order="figo"), "you read the rows as [f|i|g|o]"),
    (dict(act_g=sig), "gate g uses sigmoid: the candidate g = tanh(...)"),
    (dict(tanh_c=False), "the tanh is missing, h_new = o * tanh(c_new)"),
])
def test_lstm_step_slips(slip, expected):
    result = check_lstm_step(lambda *args: lstm_step(*args, **slip))
    assert not result.ok and expected in str(result), str(result)


def test_a_verdict_is_false_when_not_yet_correct():
    # A learner's own test writes `assert check_lstm_step(my_step)`: it must fail on a wrong answer.
    assert not bool(check_lstm_step(lambda *args: lstm_step(*args, order="ifog")))
    assert bool(check_lstm_step(lstm_step))


def test_lstm_step_missing_bias_transposed_weights_shapes_and_mutation():
    no_bias_hh = check_lstm_step(lambda x, h, c, W_ih, W_hh, b_ih, b_hh: lstm_step(x, h, c, W_ih, W_hh, b_ih, 0 * b_hh))
    assert "bias_hh is missing: PyTorch adds two bias vectors" in str(no_bias_hh)
    transposed = check_lstm_step(lambda x, h, c, W_ih, W_hh, b_ih, b_hh: (x @ W_ih, c))
    text = str(transposed)
    assert "your function raised ValueError" in text and "W_ih (16, 3)" in text
    assert "W_ih is (16, 3) = (gates x hidden_size, input_size), PyTorch's layout" in text
    wrong_shape = check_lstm_step(lambda *args: tuple(a.T for a in lstm_step(*args)))
    assert "h_new has shape (4, 2), expected (2, 4) = (batch, hidden_size); transposed?" in str(wrong_shape)
    swapped = check_lstm_step(lambda *args: lstm_step(*args)[::-1])
    assert "h_new and c_new are swapped" in str(swapped)

    def in_place(x, h, c, *params):
        h_new, c_new = lstm_step(x, h, c, *params)
        c[...] = c_new
        return h_new, c

    assert "changed its argument c in place" in str(check_lstm_step(in_place))

    def bad_o(x, h, c, *params):
        h_new, c_new = lstm_step(x, h, c, *params)
        return h_new * 0.9, c_new

    assert "c_new is right but h_new is wrong, so i, f and g are right: look at gate o" in str(check_lstm_step(bad_o))


def test_float32_answers_pass_and_lists_are_explained():
    def float32_step(*args):
        return tuple(a.astype(np.float32) for a in lstm_step(*(np.float32(a) for a in args)))

    assert check_lstm_step(float32_step).ok

    def as_list(x, h0, c0, *params):
        out, state = lstm_forward(x, h0, c0, *params)
        return list(out), state

    assert "out should be a numpy array of shape (5, 2, 4) = (seq_len, batch, hidden_size), got list; np.stack" in str(
        check_lstm_forward(as_list))


def test_lstm_forward_names_the_time_step():
    result = check_lstm_forward(lambda *a: lstm_forward(*a, carry_c=False))
    assert "out is right up to time step 0 and first wrong at time step 1" in str(result)

    def with_h0(x, h0, c0, *params):
        out, state = lstm_forward(x, h0, c0, *params)
        return np.concatenate([h0[None], out]), state

    assert "out has 6 steps for a sequence of 5" in str(check_lstm_forward(with_h0))

    def shifted(x, h0, c0, *params):
        out, state = lstm_forward(x, h0, c0, *params)
        return np.concatenate([h0[None], out[:-1]]), state

    assert "out[0] is h0" in str(check_lstm_forward(shifted))

    def first_h(x, h0, c0, *params):
        out, (h, c) = lstm_forward(x, h0, c0, *params)
        return out, (out[0], c)

    assert "h_n is the h after the last step, out[-1]" in str(check_lstm_forward(first_h))


@pytest.mark.parametrize("bug, expected", [
    ("sigmoid_f", ["dW_ih, dW_hh, db_ih, db_hh are wrong in the gate block f (rows 4:8); i, g, o are right",
                   "gate f: d f = dc * c (the previous c), and sigmoid'(z) = f * (1 - f)"]),
    ("transposed", ["dW_hh has shape (4, 16), expected (16, 4)", "transposed?"]),
    ("dh", ["the weight and bias gradients are right, so d_gates is right; wrong: dh",
            "dh (to the previous h) = d_gates @ W_hh"]),
])
def test_lstm_backward_slips(bug, expected):
    text = str(check_lstm_step_backward(lambda *a: lstm_step_backward(*a, bug=bug)))
    for part in expected:
        assert part in text, text


def test_lstm_backward_missing_path_through_h():
    text = str(check_lstm_step_backward(lambda *a: lstm_step_backward(*a, bug="no_h_path")))
    assert "gate blocks i (rows 0:4), f (rows 4:8), g (rows 8:12); o is right" in text
    assert "the total dc = dc_new + dh_new * o * (1 - tanh(c_new)**2)" in text
    missing = check_lstm_step_backward(lambda *a: {k: v for k, v in lstm_step_backward(*a).items() if k != "db_hh"})
    assert "the dict lacks db_hh" in str(missing)


@pytest.mark.parametrize("bug, expected", [
    ("last_only", "you used only d_out[3]: every step's output reaches the loss"),
    ("no_dc", "dc is not carried back"),
    ("no_dh", "dh is not carried back"),
    ("overwrite", "the weight and bias gradients are those of step 0 only"),
    ("step_1", "dx is right at steps 1..3 and first wrong at time step 0 (backpropagation runs from the last step "
               "back): look at what passes from step 1 back to step 0 (dh and dc)"),
])
def test_backpropagation_through_time_slips(bug, expected):
    result = check_lstm_backward(lambda *a: lstm_backward(*a, bug=bug))
    assert not result.ok and expected in str(result), str(result)
    assert str(result).startswith("check_lstm_backward: not yet - seq_len 4, batch 2")


def test_gru_paper_formula_and_gate_order():
    def paper(x, h, W_ih, W_hh, b_ih, b_hh):
        H = h.shape[1]
        gi, gh = x @ W_ih.T + b_ih, h @ W_hh.T + b_hh
        r, z = sig(gi[:, :H] + gh[:, :H]), sig(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + (r * h) @ W_hh[2 * H:].T + b_hh[2 * H:])
        return (1 - z) * n + z * h

    assert "you used the paper's n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)" in str(check_gru_step(paper))

    def zrn(x, h, W_ih, W_hh, b_ih, b_hh):
        perm = lambda a: np.concatenate([a[len(a) // 3:2 * len(a) // 3], a[:len(a) // 3], a[2 * len(a) // 3:]])  # noqa: E731
        return gru_step(x, h, perm(W_ih), perm(W_hh), perm(b_ih), perm(b_hh))

    assert "you read the rows as [z|r|n]; PyTorch stacks them as [r|z|n]" in str(check_gru_step(zrn))


@pytest.mark.parametrize("kwargs, expected", [
    (dict(time_major=False), "you stacked the sequences one after another; packed data is time-major"),
    (dict(order_key=lambda n: 0), "the steps are in the batch's order; within each time step the rows go longest "
                                  "sequence first (sorted_indices = [1, 2, 0])"),
    (dict(order_key=lambda n: n), "the rows of each time step go shortest first"),
])
def test_pack_slips(kwargs, expected):
    result = check_pack(lambda padded, lengths: pack(padded, lengths, **kwargs))
    assert not result.ok and expected in str(result), str(result)
    assert str(result).startswith("check_pack: not yet - lengths [2, 4, 3], 2 features:")


def test_pack_batch_sizes_padding_and_a_wrong_row():
    result = check_pack(lambda padded, lengths: (pack(padded, lengths)[0], np.array(sorted(lengths)[::-1])))
    assert "batch_sizes should be [3, 3, 2, 1]" in str(result) and "those are the lengths" in str(result)
    result = check_pack(lambda padded, lengths: (padded.reshape(-1, padded.shape[2]), pack(padded, lengths)[1]))
    assert "data has T * B = 12 rows: the padding is included" in str(result)

    def one_wrong(padded, lengths):
        data, sizes = pack(padded, lengths)
        data = data.copy()
        data[4] += 1
        return data, sizes

    assert "data[4] should be step 1 of sequence 2" in str(check_pack(one_wrong))

    def sorts_in_place(padded, lengths):
        lengths.sort()
        return pack(padded, lengths)

    assert "changed its argument lengths in place" in str(check_pack(sorts_in_place))
    def ties_last_first(padded, lengths):  # a stable sort of the reversed batch: equal lengths come out reversed
        return pack(padded[:, ::-1], lengths[::-1])

    ties_reversed = check_pack(ties_last_first)
    assert "sequences of equal length must keep their batch order" in str(ties_reversed), str(ties_reversed)
    assert "lengths [2, 3, 2, 1]" in str(ties_reversed)
