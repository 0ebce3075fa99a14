"""lstmkit against live PyTorch (skipped when torch is not importable).

Random configurations drawn with a seeded RNG -- different from the committed
fixtures' -- are run through torch by the fixture generator's own runners
(``tests/fixtures/make_fixtures.py``) and compared with lstmkit on every available
backend by the same checks as ``test_parity_fixtures.py``.  Also: lstmkit's
``state_dict()`` loads into torch and reproduces lstmkit's outputs, ``repr`` equals
torch's, and parameters are initialised from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)).
"""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lstmkit  # noqa: E402
from lstmkit.utils.rnn import pack_padded_sequence  # noqa: E402

try:
    from _parity import FIXTURE_DIR, backends, check_case, assert_close  # noqa: E402
except ImportError:  # tests imported as a package
    from tests._parity import FIXTURE_DIR, backends, check_case, assert_close  # noqa: E402

BACKENDS = backends()
LIVE_SEED = 2_013_000


def _generator():
    path = os.path.join(FIXTURE_DIR, "make_fixtures.py")
    spec = importlib.util.spec_from_file_location("_lstmkit_make_fixtures_live", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _generator()

# -- random configurations ----------------------------------------------------------

# Each entry pins some axes; the rest are drawn.  Together they guarantee every
# feature appears at least once, alone and combined.
_PINNED = [
    {"input": "batched"},
    {"input": "unbatched"},
    {"input": "packed_sorted"},
    {"input": "packed_unsorted"},
    {"mode": "LSTM", "proj": True},
    {"mode": "LSTM", "proj": True, "bidirectional": True, "num_layers": 3,
     "input": "packed_unsorted", "hx": True},
    {"mode": "LSTM", "proj": True, "input": "unbatched", "bias": False},
    {"bidirectional": True},
    {"num_layers": 3},
    {"bias": False},
    {"batch_first": True},
    {"mode": "GRU", "bidirectional": True, "num_layers": 2, "batch_first": True,
     "input": "packed_sorted", "hx": True},
    {"mode": "RNN_RELU", "bidirectional": True, "num_layers": 3, "input": "batched"},
    {"mode": "RNN_TANH", "bias": False, "input": "packed_unsorted", "batch_first": True},
    {"mode": "GRU", "input": "unbatched", "bidirectional": True, "hx": True},
    {"mode": "LSTM", "input": "batched", "batch_first": True, "bidirectional": True, "hx": True},
] + [{}] * 8

_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
_INPUTS = ("batched", "unbatched", "packed_sorted", "packed_unsorted")


def _module_configs() -> list[dict]:
    rng = np.random.default_rng(LIVE_SEED)
    cfgs = []
    for i, pin in enumerate(_PINNED):
        mode = pin.get("mode", _MODES[int(rng.integers(4))])
        hidden = int(rng.integers(3, 9))
        proj = pin.get("proj", mode == "LSTM" and bool(rng.integers(2)))
        cfg = {
            "kind": "module",
            "class": "LSTM" if mode == "LSTM" else "GRU" if mode == "GRU" else "RNN",
            "mode": mode,
            "nonlinearity": {"RNN_TANH": "tanh", "RNN_RELU": "relu"}.get(mode),
            "input_size": int(rng.integers(2, 8)),
            "hidden_size": hidden,
            "num_layers": pin.get("num_layers", int(rng.integers(1, 4))),
            "bias": pin.get("bias", bool(rng.integers(2))),
            "batch_first": pin.get("batch_first", bool(rng.integers(2))),
            "bidirectional": pin.get("bidirectional", bool(rng.integers(2))),
            "proj_size": int(rng.integers(1, hidden)) if proj else 0,
            "input": pin.get("input", _INPUTS[int(rng.integers(4))]),
            "hx": pin.get("hx", bool(rng.integers(2))),
            "dtype": ("float32", "float64")[int(rng.integers(2))],
            "T": int(rng.integers(1, 8)),
            "N": int(rng.integers(1, 6)),
            "seed": LIVE_SEED + i,
        }
        if cfg["input"] == "unbatched":
            cfg["N"] = None
        cfg["id"] = "-".join(str(p) for p in [
            f"live{i:02d}", mode.lower(), f"l{cfg['num_layers']}",
            "bi" if cfg["bidirectional"] else "", "nobias" if not cfg["bias"] else "",
            "bf" if cfg["batch_first"] else "",
            f"proj{cfg['proj_size']}" if cfg["proj_size"] else "",
            cfg["input"], "hx" if cfg["hx"] else "nohx", cfg["dtype"],
            f"T{cfg['T']}", f"N{cfg['N']}" if cfg["N"] else ""] if p)
        cfgs.append(cfg)
    return cfgs


def _cell_configs() -> list[dict]:
    rng = np.random.default_rng(LIVE_SEED + 1)
    cfgs = []
    for i in range(12):
        cls, nl = [("LSTMCell", None), ("GRUCell", None), ("RNNCell", "tanh"),
                   ("RNNCell", "relu")][i % 4]
        batched = bool(rng.integers(2))
        cfg = {
            "kind": "cell", "class": cls, "nonlinearity": nl,
            "input_size": int(rng.integers(2, 8)), "hidden_size": int(rng.integers(3, 9)),
            "bias": bool(rng.integers(2)), "input": "batched" if batched else "unbatched",
            "hx": bool(rng.integers(2)), "dtype": ("float32", "float64")[int(rng.integers(2))],
            "N": int(rng.integers(1, 6)) if batched else None, "seed": LIVE_SEED + 100 + i,
        }
        cfg["id"] = "-".join(p for p in [
            f"live{i:02d}", cls.lower() + (f"_{nl}" if nl else ""),
            "bias" if cfg["bias"] else "nobias", cfg["input"], "hx" if cfg["hx"] else "nohx",
            cfg["dtype"]] if p)
        cfgs.append(cfg)
    return cfgs


MODULE_CFGS = _module_configs()
CELL_CFGS = _cell_configs()


@functools.lru_cache(maxsize=None)
def _torch_case(kind: str, index: int):
    """Run torch once per configuration (shared by the backends)."""
    cfg = dict((MODULE_CFGS if kind == "module" else CELL_CFGS)[index])
    arrays = GEN.run_module_case(cfg) if kind == "module" else GEN.run_cell_case(cfg)
    return cfg, arrays


def test_live_configs_cover_the_features():
    seen = {(c["input"]) for c in MODULE_CFGS}
    assert seen == set(_INPUTS)
    assert any(c["proj_size"] for c in MODULE_CFGS)
    assert any(c["bidirectional"] for c in MODULE_CFGS)
    assert any(c["num_layers"] == 3 for c in MODULE_CFGS)
    assert any(not c["bias"] for c in MODULE_CFGS)
    assert any(c["batch_first"] and c["input"] != "unbatched" for c in MODULE_CFGS)
    assert {c["mode"] for c in MODULE_CFGS} == set(_MODES)
    assert {c["dtype"] for c in MODULE_CFGS} == {"float32", "float64"}
    # not the committed fixtures' configurations
    fixture_ids = {(c["mode"], c["input_size"], c["hidden_size"], c["num_layers"], c["seed"])
                   for c, _ in _fixture_cases()}
    assert not fixture_ids & {(c["mode"], c["input_size"], c["hidden_size"], c["num_layers"],
                               c["seed"]) for c in MODULE_CFGS}


def _fixture_cases():
    try:
        from _parity import MODULES_FILE, load_cases
    except ImportError:
        from tests._parity import MODULES_FILE, load_cases
    return load_cases(MODULES_FILE)


@pytest.mark.parametrize("index,backend", [
    pytest.param(i, b, id=f"{c['id']}-{b}") for i, c in enumerate(MODULE_CFGS) for b in BACKENDS])
def test_live_module_parity(index, backend):
    cfg, arrays = _torch_case("module", index)
    check_case(cfg, arrays, backend)


@pytest.mark.parametrize("index,backend", [
    pytest.param(i, b, id=f"{c['id']}-{b}") for i, c in enumerate(CELL_CFGS) for b in BACKENDS])
def test_live_cell_parity(index, backend):
    cfg, arrays = _torch_case("cell", index)
    check_case(cfg, arrays, backend)


# -- lstmkit's state_dict in torch ----------------------------------------------------

_ROUND_TRIP = [
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=3), "batched"),
    ("LSTM", dict(bias=False, batch_first=True), "packed_unsorted"),
    ("GRU", dict(num_layers=3, bidirectional=True), "packed_sorted"),
    ("RNN", dict(nonlinearity="relu", num_layers=2, batch_first=True), "batched"),
    ("RNN", dict(bias=False, bidirectional=True), "unbatched"),
    ("LSTMCell", dict(), "batched"),
    ("GRUCell", dict(bias=False), "unbatched"),
    ("RNNCell", dict(nonlinearity="relu"), "batched"),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,kwargs,inp", [
    pytest.param(n, k, i, id=f"{n}-{'-'.join(f'{a}={b}' for a, b in k.items()) or 'default'}-{i}")
    for n, k, i in _ROUND_TRIP])
def test_state_dict_loads_into_torch(name, kwargs, inp, dtype):
    """Our randomly initialised parameters, loaded into torch, give our outputs."""
    I, H, T, N = 4, 5, 4, 3
    npdt = np.dtype(dtype)
    ours = getattr(lstmkit, name)(I, H, dtype=npdt.type, seed=7, **kwargs)
    theirs = getattr(torch.nn, name)(I, H, **kwargs).to(
        torch.float32 if dtype == "float32" else torch.float64)
    sd = ours.state_dict()
    result = theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()},
                                    strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    rng = np.random.default_rng(3)
    cell = name.endswith("Cell")
    if cell:
        x = rng.standard_normal((N, I) if inp == "batched" else (I,)).astype(npdt)
        got = ours(x)
        want = theirs(torch.from_numpy(x))
        got = got if isinstance(got, tuple) else (got,)
        want = want if isinstance(want, tuple) else (want,)
        for g, w in zip(got, want, strict=True):
            assert_close(g, w.detach().numpy(), f"{name} state")
        return
    bf = kwargs.get("batch_first", False)
    if inp == "unbatched":
        x = rng.standard_normal((T, I)).astype(npdt)
    else:
        x = rng.standard_normal((N, T, I) if bf else (T, N, I)).astype(npdt)
    if inp.startswith("packed"):
        lengths = [2, 4, 1] if inp == "packed_unsorted" else [4, 2, 1]
        sorted_ = inp == "packed_sorted"
        x_ours = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=sorted_)
        x_theirs = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(x), torch.tensor(lengths), batch_first=bf, enforce_sorted=sorted_)
    else:
        x_ours, x_theirs = x, torch.from_numpy(x)
    out, state = ours(x_ours)
    t_out, t_state = theirs(x_theirs)
    if inp.startswith("packed"):
        out, t_out = out.data, t_out.data
    assert_close(out, t_out.detach().numpy(), f"{name} output")
    state = state if isinstance(state, tuple) else (state,)
    t_state = t_state if isinstance(t_state, tuple) else (t_state,)
    for g, w in zip(state, t_state, strict=True):
        assert_close(g, w.detach().numpy(), f"{name} state")


# -- repr -------------------------------------------------------------------------------

_REPRS = [
    ("LSTM", (10, 20), {}),
    ("LSTM", (10, 20), dict(proj_size=5, num_layers=2, bidirectional=True)),
    ("LSTM", (3, 4), dict(num_layers=2, bias=False, batch_first=True, dropout=0.25)),
    ("LSTM", (3, 4), dict(num_layers=1, bias=True, batch_first=False, dropout=0.0,
                          bidirectional=False, proj_size=0)),
    ("GRU", (3, 4), dict(num_layers=3, bidirectional=True)),
    ("GRU", (3, 4), dict(bias=False, batch_first=True)),
    ("RNN", (3, 4), {}),
    ("RNN", (3, 4), dict(nonlinearity="relu")),
    ("RNN", (3, 4), dict(num_layers=2, nonlinearity="relu", dropout=0.5, bias=False)),
    ("LSTMCell", (3, 4), {}),
    ("LSTMCell", (3, 4), dict(bias=False)),
    ("GRUCell", (3, 4), dict(bias=False)),
    ("RNNCell", (3, 4), {}),
    ("RNNCell", (3, 4), dict(nonlinearity="relu", bias=False)),
]


@pytest.mark.parametrize("name,args,kwargs", [
    pytest.param(n, a, k, id=f"{n}{a}-{'-'.join(f'{x}={y}' for x, y in k.items()) or 'default'}")
    for n, a, k in _REPRS])
def test_repr_matches_torch(name, args, kwargs):
    expected = repr(getattr(torch.nn, name)(*args, **kwargs))
    if name == "RNN" and kwargs.get("nonlinearity") == "relu":
        # Deliberate deviation (reference section 1.3 quirk, not copied by lstmkit):
        # torch's RNN repr omits nonlinearity; lstmkit appends it when not the default.
        assert expected.endswith(")")
        expected = expected[:-1] + ", nonlinearity='relu')"
    assert repr(getattr(lstmkit, name)(*args, seed=0, **kwargs)) == expected


# -- initialisation ---------------------------------------------------------------------

@pytest.mark.parametrize("name,args,kwargs", [
    ("LSTM", (10, 20), dict(proj_size=5, num_layers=2, bidirectional=True)),
    ("GRU", (7, 16), dict(num_layers=2)),
    ("RNN", (6, 25), dict(nonlinearity="relu", bidirectional=True)),
    ("LSTMCell", (9, 12), {}),
    ("GRUCell", (9, 30), {}),
    ("RNNCell", (40, 33), {}),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_uniform_bounds(name, args, kwargs, dtype):
    """Every parameter (biases and weight_hr included) ~ U(-1/sqrt(H), 1/sqrt(H)),
    H = hidden_size, like torch's reset_parameters; same names/shapes as torch."""
    H = args[1]
    k = 1.0 / np.sqrt(H)
    ours = getattr(lstmkit, name)(*args, dtype=dtype, seed=11, **kwargs)
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    sd = ours.state_dict()
    assert [(n, tuple(v.shape)) for n, v in sd.items()] == \
        [(n, tuple(v.shape)) for n, v in theirs.state_dict().items()]
    for n, v in sd.items():
        assert v.dtype == np.dtype(dtype), n
        assert np.all(np.abs(v) <= k), f"{n}: max |w| = {np.abs(v).max()} > 1/sqrt(H) = {k}"
        assert np.unique(v).size > 0.9 * v.size, f"{n}: values not drawn independently"
    flat = np.concatenate([v.ravel().astype(np.float64) for v in sd.values()])
    assert flat.min() < -0.95 * k and flat.max() > 0.95 * k
    # moments of U(-k, k): mean 0, variance k^2/3 (n >= 1500 values here)
    assert abs(flat.mean()) < 4 * k / np.sqrt(3 * flat.size)
    assert abs(flat.var() / (k * k / 3) - 1) < 0.1
    # each quarter of [-k, k] holds about a quarter of the values
    hist, _ = np.histogram(flat, bins=4, range=(-k, k))
    assert np.all(np.abs(hist / flat.size - 0.25) < 0.05), hist
    # weight_hr uses the hidden_size bound too (not proj_size's)
    for n, v in sd.items():
        if n.startswith("weight_hr"):
            assert np.abs(v).max() > 0.5 * k
