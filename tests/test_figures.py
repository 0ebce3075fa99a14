"""The docs' pictures: every one is drawn, and what it states comes from a real run.

Set ``LSTMKIT_FIGURES_DIR`` to keep the PNGs (to look at them).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import lstmkit  # noqa: E402
from lstmkit.learn import figures  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def texts(fig) -> str:
    """Every piece of text on the figure, joined (titles, labels, annotations)."""
    found = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return "\n".join(found)


@pytest.mark.parametrize("name", sorted(figures.FIGURES))
def test_every_figure_draws(name, tmp_path):
    fig = figures.FIGURES[name]()
    keep = os.environ.get("LSTMKIT_FIGURES_DIR")
    target = Path(keep) if keep else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.png"
    fig.savefig(path, dpi=60)
    assert path.stat().st_size > 5000  # a real picture, not an empty canvas


def test_weight_blocks_slices_follow_hidden_size():
    text = texts(figures.weight_blocks(input_size=2, hidden_size=5))
    assert "weight_ih_l0  (20, 2)" in text and "weight_hh_l0  (20, 5)" in text
    for k, letter in enumerate("ifgo"):
        assert f"{letter}: weight_ih_l0[{5 * k}:{5 * (k + 1)}]" in text


def test_unrolled_shapes_come_from_the_module():
    text = texts(figures.unrolled(seq_len=3, num_layers=2, batch=4, input_size=7, hidden_size=6))
    assert "out (3, 4, 6)" in text and "h_n, c_n (2, 4, 6)" in text and "input (3, 4, 7)" in text
    assert "h_n[1], c_n[1]" in text and "x[2]" in text and "x[3]" not in text


def test_h_n_grid_labels_every_index():
    text = texts(figures.h_n_grid(num_layers=2, batch=1, hidden_size=3))
    for layer in range(2):
        for d in range(2):
            assert f"h_n[{layer * 2 + d}] = h_n[{layer}*2+{d}]" in text
    assert "h_n (4, 1, 3)" in text


def test_backward_timeline_finds_the_final_states_in_out():
    text = texts(figures.backward_timeline(seq_len=4))
    assert "h_n[1] = out[0, :, H:]" in text  # the backward direction ends at t = 0
    assert "out[-1, :, :H]" in text


def test_batch_first_leaves_h_n_alone():
    text = texts(figures.batch_first(seq_len=6, batch=2, input_size=3, hidden_size=4, num_layers=1))
    assert "(6, 2, 3)" in text and "(2, 6, 3)" in text and "(2, 6, 4)" in text
    assert "h_n identical in both layouts: True" in text


def test_packing_order_is_pack_padded_sequence_order():
    text = texts(figures.packing(lengths=(3, 1, 2)))
    assert "batch_sizes = [3, 2, 1]" in text
    assert "packed.data (6,)" in text


def test_padding_backward_marks_which_sequences_are_polluted():
    fig = figures.padding_backward(lengths=(3, 3, 1))
    marks = [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text() in ("✓", "✗")]
    # padded: the two full-length sequences are fine, the short one is not; packed: all fine
    assert marks == ["✓", "✓", "✗", "✓", "✓", "✓"]


def test_truncated_bptt_stops_gradients_at_each_boundary():
    fig = figures.truncated_bptt(num_chunks=4, chunk_len=2)
    assert [t.get_text() for t in fig.findobj(matplotlib.text.Text)].count("✕") == 3


def test_gradient_norms_vanish_explode_and_persist():
    norms = figures.gradient_norms(seq_len=40, hidden_size=16).lstmkit_norms
    tanh_rnn, relu_rnn, lstm, lstm_open = norms.values()
    assert tanh_rnn[0] < 1e-6 * tanh_rnn[-1]  # 40 steps back: vanished
    assert relu_rnn[0] > 10 * relu_rnn[-1]  # exploded
    assert lstm_open[0] > 1e3 * lstm[0]  # f ≈ 0.95 keeps the gradient alive where f ≈ 0.5 does not


def test_training_curve_plots_every_loss():
    fig = figures.training_curve([1.0, 0.5, 0.25], baseline=1.0)
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_ydata()) == [1.0, 0.5, 0.25]
