"""Gate traces (lstmkit.learn.trace / lstmkit.viz / ``lstmkit trace``): recorded values equal the module's,
gradient norms equal an independent backward, nothing is modified, pictures are written."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import lstmkit
import lstmkit.viz as viz
from lstmkit.cli import ExitCode, make_cli
from lstmkit.learn.trace import trace_model


def sig(z):
    return 1 / (1 + np.exp(-z))


def test_states_and_gates_are_the_modules():
    lstm = lstmkit.LSTM(3, 5, num_layers=2, bidirectional=True, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((7, 3))
    trace = viz.trace(lstm, x)
    out, (h_n, c_n) = lstm(x)
    assert trace.keys() == [(0, 0), (0, 1), (1, 0), (1, 1)] and trace.steps == 7
    np.testing.assert_allclose(trace.states[(1, 0)]["h"], out[:, :5], atol=1e-12)
    np.testing.assert_allclose(trace.states[(1, 1)]["h"], out[:, 5:], atol=1e-12)
    for layer in range(2):
        np.testing.assert_allclose(trace.states[(layer, 0)]["c"][-1], c_n[2 * layer], atol=1e-12)
        np.testing.assert_allclose(trace.states[(layer, 1)]["c"][0], c_n[2 * layer + 1], atol=1e-12)  # ends at t=0
    g = trace.gates[(0, 0)]
    c = trace.states[(0, 0)]["c"]
    c_prev = np.vstack([np.zeros((1, 5)), c[:-1]])
    np.testing.assert_allclose(c, g["f"] * c_prev + g["i"] * g["g"], atol=1e-12)
    np.testing.assert_allclose(trace.states[(0, 0)]["h"], g["o"] * np.tanh(c), atol=1e-12)
    # The gates are those of the weights: i at t=0 of layer 0 = sigmoid(W_ii x_0 + b_ii + b_hi) (h_0 = 0).
    W, b = lstm.weight_ih_l0[:5], lstm.bias_ih_l0[:5] + lstm.bias_hh_l0[:5]
    np.testing.assert_allclose(g["i"][0], sig(W @ x[0] + b), atol=1e-12)
    gru = viz.trace(lstmkit.GRU(3, 4, seed=1), x)
    assert list(gru.gates[(0, 0)]) == ["r", "z", "n"] and list(gru.states[(0, 0)]) == ["h"]
    rnn = viz.trace(lstmkit.RNN(3, 4, seed=1), x)
    assert rnn.gates[(0, 0)] == {} and rnn.states[(0, 0)]["h"].shape == (7, 4)


def test_gradient_norms_equal_an_independent_backward():
    lstm = lstmkit.LSTM(2, 4, seed=3, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((6, 2))
    trace = viz.trace(lstm, x)  # L = sum(out[T-1])
    norms = trace.grad_norms[(0, 0)]
    assert norms[-1] == pytest.approx(2.0)  # dL/dh_{T-1} = ones(4)
    for t in range(5):
        # L depends on h_t only through the steps after t: restart the module there from (h_t, c_t).
        state = tuple(trace.states[(0, 0)][k][t][None, None] for k in ("h", "c"))
        out, _, backward = lstm.forward_train(x[t + 1:, None], state)
        d_out = np.zeros(out.shape)
        d_out[-1] = 1
        _, (d_h, _), _ = backward(d_out)
        assert norms[t] == pytest.approx(np.linalg.norm(d_h), rel=1e-9)
    rnn_trace = viz.trace(lstmkit.RNN(2, 4, seed=3), np.random.default_rng(1).standard_normal((40, 2)))
    assert rnn_trace.grad_norms[(0, 0)][0] < 1e-3 * rnn_trace.grad_norms[(0, 0)][-1]  # vanishing
    assert viz.trace(lstm, x, d_out=None).grad_norms is None


def test_nothing_is_modified():
    model = lstmkit.SequenceModel(input_size=2, hidden_size=4, num_layers=2, dropout=0.5, output_size=1, seed=0)
    before = model.state_dict()
    backend, cell, training = model.rnn.backend, model.rnn.cell, model.training
    x = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    x_copy = x.copy()
    trace = trace_model(model, None, x)
    assert trace.loss_text.startswith("L = sum of the model's output at the last step")
    assert model.rnn.backend is backend and model.rnn.cell is cell and model.training is training
    assert all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())
    assert np.array_equal(x, x_copy)
    with pytest.raises(ValueError, match=r"x should be one sequence \(seq_len, 3\), got \(2, 4, 3\)"):
        viz.trace(lstmkit.LSTM(3, 4), np.zeros((2, 4, 3)))


def test_a_classifier_with_the_tasks_loss():
    from types import SimpleNamespace

    model = lstmkit.SequenceModel(vocab_size=7, hidden_size=5, bidirectional=True, output_size=3, target="last",
                                  seed=0)
    trace = trace_model(model, SimpleNamespace(loss="cross_entropy"), np.array([1, 2, 3, 4]), np.int64(2))
    assert trace.loss_text.startswith("the task's cross_entropy loss on this sequence")
    forward, backward = trace.grad_norms[(0, 0)], trace.grad_norms[(0, 1)]
    # "last" reads the forward direction at the last step and the backward one at step 0.
    assert forward[-1] > forward[0] and backward[0] > backward[-1]


def test_pictures():
    pytest.importorskip("matplotlib")
    x = np.random.default_rng(0).standard_normal((9, 3))
    trace = viz.trace(lstmkit.LSTM(3, 4, bidirectional=True, seed=0), x)
    fig = viz.plot_trace(trace)
    titles = [ax.get_title() for ax in fig.axes]
    assert "layer 0 forward: i" in titles and "layer 0 backward: i" in titles and "c" in titles
    assert any(t.startswith("‖∂L/∂h_t‖ for one training step") for t in titles)
    wide = viz.plot_trace(viz.trace(lstmkit.GRU(3, 40, seed=0), x), max_units=16)
    assert wide.axes[0].get_ylabel() == "unit (first 16 of 40)" and wide.axes[0].get_images()[0].get_array().shape == (16, 9)
    other = viz.trace(lstmkit.RNN(3, 4, seed=0), x)
    fig2 = viz.plot_grad_norms({"RNN": other, "LSTM": trace})
    assert [line.get_label() for line in fig2.axes[0].get_lines()] == ["RNN", "LSTM"]
    _close(fig, wide, fig2)


def test_pictures_join_pyplot_when_it_is_in_use():
    plt = pytest.importorskip("matplotlib.pyplot")
    before = set(plt.get_fignums())
    fig = viz.plot_trace(viz.trace(lstmkit.GRU(2, 3, seed=0), np.zeros((4, 2))))
    try:
        assert fig.number in set(plt.get_fignums()) - before  # a notebook shows it inline
    finally:
        plt.close(fig)


def test_import_does_not_load_matplotlib():
    code = "import sys, lstmkit.viz, lstmkit.learn.cli; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# -- the command ---------------------------------------------------------------------------------
CONFIG = """\
name: tiny
seed: 4
model: {cell: gru, hidden_size: 6, num_layers: 2}
task: {type: sine, options: {seq_len: 8, num_train: 8, num_valid: 4, num_test: 4}}
training: {epochs: 1, batch_size: 4}
"""


def invoke(*args):
    return CliRunner().invoke(make_cli(), [str(a) for a in args])


def test_cli_config_run_folder_and_input(tmp_path):
    pytest.importorskip("matplotlib")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    result = invoke("trace", config, "-o", tmp_path / "untrained.png")
    assert result.exit_code == 0, result.output
    assert "an untrained model: the freshly initialised weights of tiny.yaml (seed 4)" in result.output
    assert "the task's mse loss on this sequence" in result.output and "layer 1" in result.output
    assert (tmp_path / "untrained.png").read_bytes()[:4] == b"\x89PNG"
    assert invoke("run", config, "-o", tmp_path / "run", "--no-progress").exit_code == 0
    result = invoke("trace", tmp_path / "run", "--split", "test", "--sequence", 2, "-o", tmp_path / "trained.png")
    assert result.exit_code == 0, result.output
    assert "trained weights from" in result.output and "input: test sequence 2" in result.output
    assert (tmp_path / "trained.png").is_file()
    (tmp_path / "seq.txt").write_text("0.1 0.5 0.9 0.4\n0.2 0.3\n")
    result = invoke("trace", tmp_path / "run", "--input", tmp_path / "seq.txt", "-o", tmp_path / "input.png")
    assert result.exit_code == 0, result.output
    assert "4 time steps" in result.output and "no targets" in result.output
    result = invoke("trace", config, "--gradient-of", "last", "-o", tmp_path / "last.png")
    assert result.exit_code == 0 and "sum of the model's output at the last step" in result.output, result.output


def test_cli_errors(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    result = invoke("trace", config, "--sequence", 99)
    assert result.exit_code == ExitCode.USAGE and "--sequence 99: the valid split has 4 sequences (0..3)" in result.output
    (tmp_path / "bad.txt").write_text("not a number\n")
    result = invoke("trace", config, "--input", tmp_path / "bad.txt")
    assert result.exit_code == ExitCode.RUN_FAILED and "cannot read" in result.output
    (tmp_path / "broken.yaml").write_text("model: {cell: nope}\n")
    result = invoke("trace", tmp_path / "broken.yaml")
    assert result.exit_code in (ExitCode.INVALID_CONFIG, ExitCode.UNAVAILABLE) and "Traceback" not in result.output
    result = invoke("trace", tmp_path / "missing")
    assert result.exit_code == ExitCode.USAGE
    (tmp_path / "file").write_text("")
    result = invoke("trace", config, "-o", tmp_path / "file" / "x.png")  # a file where a folder should be
    assert result.exit_code == ExitCode.RUN_FAILED and "cannot write" in result.output, result.output


def test_unit_axis_has_whole_units():
    pytest.importorskip("matplotlib")
    fig = viz.plot_trace(viz.trace(lstmkit.LSTM(3, 16, seed=0), np.zeros((9, 3))))
    ticks = fig.axes[0].get_yticks()
    _close(fig)
    assert len(ticks) and all(float(t).is_integer() for t in ticks), ticks  # no "unit 2.5"


def _close(*figures):
    """Figures join pyplot when another test loaded it: close them, or pyplot warns about too many."""
    if "matplotlib.pyplot" in sys.modules:
        for fig in figures:
            sys.modules["matplotlib.pyplot"].close(fig)


def test_cli_writes_the_format_its_extension_names(tmp_path):
    pytest.importorskip("matplotlib")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    for name, magic in (("t.png", b"\x89PNG"), ("t.pdf", b"%PDF"), ("t.svg", b"<?xml")):
        result = invoke("trace", config, "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).read_bytes().startswith(magic), name  # not PNG bytes in a .pdf
    result = invoke("trace", config, "-o", tmp_path / "t.docx")
    assert result.exit_code == ExitCode.USAGE and "t.docx" in result.output and "png" in result.output
    assert not (tmp_path / "t.docx").exists()


def test_what_trace_cannot_take_is_named():
    x = np.zeros((6, 3), np.float32)
    with pytest.raises(TypeError, match="expected a Recurrent module .*got LSTMCell"):
        viz.trace(lstmkit.LSTMCell(3, 4), x)  # was: "Expected input to be 1D or 2D, got 3D" about an internal array
    packed = lstmkit.utils.rnn.pack_sequence([x, x[:3]])
    with pytest.raises(ValueError, match=r"x should be one sequence \(seq_len, 3\), got a PackedSequence"):
        viz.trace(lstmkit.LSTM(3, 4), packed)
    with pytest.raises(ValueError, match=r"d_out should have out's shape \(6, 4\), got \(4, 6\)"):
        viz.trace(lstmkit.LSTM(3, 4), x, d_out=np.ones((4, 6)))  # a transposed gradient was reshaped silently


def test_cli_in_process_leaves_no_pyplot_figure(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    before = set(plt.get_fignums())
    assert invoke("trace", config, "-o", tmp_path / "t.png").exit_code == 0
    assert set(plt.get_fignums()) == before
