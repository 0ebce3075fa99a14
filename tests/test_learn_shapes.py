"""``lstmkit shapes`` / :func:`lstmkit.learn.shapes.describe_shapes`: shapes measured on a real run,
equal to PyTorch's for many configurations (live, skipped without torch), plugin cells, CLI errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import lstmkit
from lstmkit.cells import CellType
from lstmkit.cli import ExitCode, make_cli
from lstmkit.learn.shapes import describe_shapes
from lstmkit.specs import CellSpec
from lstmkit.testing import registered_plugin


def invoke(*args):
    return CliRunner().invoke(make_cli(), [str(a) for a in args])


def test_the_articles_example():
    r = describe_shapes("lstm", 10, 20, 3, bidirectional=True, batch=3, seq_len=5)
    assert r.module == "LSTM(10, 20, num_layers=3, bidirectional=True)"
    assert r["input"].shape == (5, 3, 10)
    assert r["out"].shape == (5, 3, 40)
    for name in ("h_0", "c_0", "h_n", "c_n"):
        assert r[name].shape == (6, 3, 20)
        assert r[name].dims == ["num_layers 3 × D 2", "batch", "hidden_size"]
    assert r["weight_ih_l0"].shape == (80, 10)
    assert r["weight_ih_l1_reverse"].shape == (80, 40)
    assert r["weight_ih_l1"].dims[0] == "4 gate blocks [i|f|g|o] × hidden_size 20"
    assert "layer 0's output" in r["weight_ih_l1"].dims[1]
    assert len([t for t in r.tensors if t.role == "parameter"]) == 3 * 2 * 4
    text = str(r)
    assert "h_n                   (6, 3, 20)  6 = num_layers 3 × D 2; 3 = batch; 20 = hidden_size" in text
    assert "40 = D 2 × hidden_size 20" in text


def test_layouts_and_projection():
    r = describe_shapes("lstm", 4, 6, 2, batch_first=True, proj_size=3, batch=2, seq_len=7)
    assert r["input"].shape == (2, 7, 4) and r["input"].dims == ["batch", "seq_len", "input_size"]
    assert r["out"].shape == (2, 7, 3)
    assert r["h_n"].shape == (2, 2, 3) and r["c_n"].shape == (2, 2, 6)
    assert r["weight_hr_l0"].shape == (3, 6) and r["weight_hh_l1"].shape == (24, 3)
    assert "batch_first never changes it" in r["h_0"].note
    u = describe_shapes("gru", 4, 6, 1, bidirectional=True, unbatched=True, seq_len=3)
    assert u["input"].shape == (3, 4) and u["out"].shape == (3, 12) and u["h_n"].shape == (2, 6)
    assert [t.name for t in u.tensors if t.role == "state"] == ["h_0", "h_n"]
    assert u.settings["batch"] is None
    n = describe_shapes("rnn_tanh", 4, 6, bias=False)
    assert [t.name for t in n.tensors if t.role == "parameter"] == ["weight_ih_l0", "weight_hh_l0"]


def test_bad_sizes_raise_pytorchs_errors():
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        describe_shapes("lstm", 4, 6, proj_size=6)
    with pytest.raises(ValueError, match="batch should be a positive integer, got 0"):
        describe_shapes("lstm", 4, 6, batch=0)


class TwoGateCell(CellType):
    """h' = tanh(a) ⊙ σ(b) · gain: two gate blocks and a parameter of its own."""

    name = "twogate"
    num_gates = 2
    description = "A test cell with two gate blocks and a gain vector."

    def parameter_shapes(self, input_size, hidden_size, proj_size=0, bias=True):
        return super().parameter_shapes(input_size, hidden_size, proj_size, bias) + [("gain", (hidden_size,))]

    def forward_step(self, xp, p, gi, state):
        (h_prev,) = state
        hidden = h_prev.shape[1]
        pre = gi + h_prev @ p["weight_hh"].T
        h = xp.tanh(pre[:, :hidden]) * (0.5 + 0.5 * xp.tanh(pre[:, hidden:] / 2)) * p["gain"]
        return (h,), None

    def backward_step(self, xp, p, cache, d_state, grads):  # pragma: no cover - shapes only
        raise NotImplementedError


class TwoGatePlugin:
    @lstmkit.hookimpl
    def register_cells(self, register):
        register(CellSpec("twogate", TwoGateCell, description=TwoGateCell.description))


def test_plugin_cells():
    with registered_plugin(TwoGatePlugin(), "twogate-plugin"):
        r = describe_shapes("twogate", 3, 5, 2)
        assert r["weight_ih_l0"].shape == (10, 3)
        assert r["weight_ih_l0"].dims[0] == "2 gate blocks [...] × hidden_size 5"
        assert r["gain_l1"].shape == (5,) and r["gain_l1"].dims == ["?"]
        assert "a parameter of the 'twogate' cell" in r["gain_l1"].note
        assert r.module.startswith("Recurrent('twogate', 3, 5")
        result = invoke("shapes", "--cell", "twogate", "--json")
        assert result.exit_code == 0, result.output
        names = [t["name"] for t in json.loads(result.output)["tensors"]]
        assert "gain_l0" in names and names[-1] == "out"


def test_cli_text_json_and_errors():
    result = invoke("shapes", "--input-size", 10, "--hidden-size", 20, "--num-layers", 3, "--bidirectional")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("LSTM(10, 20, num_layers=3, bidirectional=True)\n")
    assert "out                   (5, 3, 40)" in result.output
    data = json.loads(invoke("shapes", "--batch-first", "--batch", 2, "--json").output)
    assert {t["name"]: t["shape"] for t in data["tensors"]}["input"] == [2, 5, 10]
    assert data["settings"]["batch_first"] is True
    data = json.loads(invoke("shapes", "--unbatched", "--no-bias", "--cell", "rnn_relu", "--json").output)
    shapes = {t["name"]: t["shape"] for t in data["tensors"]}
    assert shapes == {"weight_ih_l0": [20, 10], "weight_hh_l0": [20, 20], "input": [5, 10], "h_0": [1, 20],
                      "h_n": [1, 20], "out": [5, 20]}
    assert data["module"] == "RNN(10, 20, bias=False, nonlinearity='relu')"
    bad = invoke("shapes", "--cell", "lsmt")
    assert bad.exit_code == ExitCode.UNAVAILABLE and "did you mean 'lstm'" in bad.output
    assert "Traceback" not in bad.output
    bad = invoke("shapes", "--cell", "gru", "--proj-size", 2)
    assert bad.exit_code == ExitCode.USAGE
    assert "proj_size argument is only supported for LSTM, not RNN or GRU" in bad.output
    bad = invoke("shapes", "--seq-len", 0)
    assert bad.exit_code == ExitCode.USAGE and "seq_len should be a positive integer, got 0" in bad.output


@pytest.mark.parametrize("sizes", [("--batch", 10**5, "--seq-len", 10**5), ("--hidden-size", 10**6)])
def test_cli_sizes_that_do_not_fit_are_a_message(sizes):
    bad = invoke("shapes", *sizes)  # NumPy refuses these allocations at once (hundreds of GiB)
    assert bad.exit_code == ExitCode.USAGE, bad.output
    assert "Traceback" not in bad.output and "do not fit in memory" in bad.output
    assert str(sizes[1]) in bad.output


# -- against PyTorch --------------------------------------------------------------------------
CONFIGS = [
    dict(cell="lstm", input_size=10, hidden_size=20, num_layers=3, bidirectional=True, batch=3, seq_len=5),
    dict(cell="lstm", input_size=10, hidden_size=20, num_layers=1, batch=3, seq_len=5),
    dict(cell="lstm", input_size=7, hidden_size=9, num_layers=2, bidirectional=True, proj_size=4, batch=2, seq_len=6),
    dict(cell="lstm", input_size=3, hidden_size=5, num_layers=2, batch_first=True, batch=4, seq_len=2),
    dict(cell="lstm", input_size=3, hidden_size=5, num_layers=2, bidirectional=True, unbatched=True, seq_len=4),
    dict(cell="lstm", input_size=3, hidden_size=5, bias=False, proj_size=2, batch=1, seq_len=1),
    dict(cell="gru", input_size=10, hidden_size=20, num_layers=3, bidirectional=True, batch=3, seq_len=5),
    dict(cell="gru", input_size=6, hidden_size=4, batch_first=True, unbatched=True, seq_len=3),
    dict(cell="rnn_tanh", input_size=6, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True, batch=2,
         seq_len=3),
    dict(cell="rnn_relu", input_size=2, hidden_size=8, num_layers=4, bias=False, batch=5, seq_len=2),
]


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_shapes_equal_pytorchs(cfg):
    torch = pytest.importorskip("torch")
    cfg = dict(cfg)
    cell, batch, seq_len, unbatched = cfg.pop("cell"), cfg.pop("batch", 3), cfg.pop("seq_len"), cfg.pop("unbatched", False)
    report = describe_shapes(cell, batch=batch, seq_len=seq_len, unbatched=unbatched, **cfg)
    kwargs = dict(cfg)
    if cell.startswith("rnn_"):
        kwargs["nonlinearity"] = cell[4:]
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell, torch.nn.RNN)(**kwargs)
    I = cfg["input_size"]
    if unbatched:
        x = torch.zeros(seq_len, I)
    else:
        x = torch.zeros((batch, seq_len, I) if cfg.get("batch_first") else (seq_len, batch, I))
    with torch.no_grad():
        out, state = module(x)
    states = state if isinstance(state, tuple) else (state,)
    want = {name: tuple(p.shape) for name, p in module.named_parameters()}
    want.update(input=tuple(x.shape), out=tuple(out.shape))
    for sname, s in zip(("h", "c"), states):
        want[f"{sname}_0"] = want[f"{sname}_n"] = tuple(s.shape)
    got = {t.name: t.shape for t in report.tensors}
    assert got == want
    assert [t.name for t in report.tensors if t.role == "parameter"] == list(dict(module.named_parameters()))
    # lstmkit names a relu nonlinearity, which torch's repr omits (docs/deviations.md).
    assert report.module.replace(", nonlinearity='relu'", "") == repr(module)
