"""Quick start: the shapes of nn.LSTM, and an LSTMCell loop that reproduces it.

Run:  python examples/quickstart.py
"""
import numpy as np

import lstmkit

rng = np.random.default_rng(0)

# The four arguments that matter most, plus batch_first (default False).
lstm = lstmkit.LSTM(input_size=10, hidden_size=20, num_layers=3, bidirectional=True, seed=0)
print(lstm)

seq_len, batch = 5, 3
x = rng.standard_normal((seq_len, batch, 10), dtype=np.float32)  # (seq_len, batch, input_size)
out, (h_n, c_n) = lstm(x)  # h_0, c_0 default to zeros

# out: the last layer's h at every step, both directions concatenated.
print("out", out.shape, "= (seq_len, batch, 2 * hidden_size)")
# h_n, c_n: every layer's (and direction's) state after the last step.
print("h_n", h_n.shape, "= (2 * num_layers, batch, hidden_size)")
print("c_n", c_n.shape, "= (2 * num_layers, batch, hidden_size)")
assert out.shape == (5, 3, 40) and h_n.shape == c_n.shape == (6, 3, 20)
# The last layer's forward state is out[-1]'s first half; its reverse state is out[0]'s second half.
assert np.array_equal(h_n[-2], out[-1, :, :20]) and np.array_equal(h_n[-1], out[0, :, 20:])

# An LSTMCell is one step of a one-layer LSTM; a loop over time reproduces LSTM.
one_layer = lstmkit.LSTM(10, 20, seed=1)
cell = lstmkit.LSTMCell(10, 20)
cell.load_state_dict({k.removesuffix("_l0"): v for k, v in one_layer.state_dict().items()})

h = rng.standard_normal((batch, 20), dtype=np.float32)
c = rng.standard_normal((batch, 20), dtype=np.float32)
expected, (h_last, c_last) = one_layer(x, (h[None], c[None]))
outputs = []
for t in range(seq_len):
    h, c = cell(x[t], (h, c))
    outputs.append(h)
loop_out = np.stack(outputs)
err = max(np.abs(loop_out - expected).max(), np.abs(h - h_last[0]).max(), np.abs(c - c_last[0]).max())
print(f"LSTMCell loop vs LSTM: max |difference| = {err:.1e}")
assert err < 1e-5
print("ok")
