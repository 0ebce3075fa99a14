"""lstmkit against committed PyTorch fixtures (no torch needed).

The fixtures (``tests/fixtures/torch_*.npz``) were generated from torch 2.13.0 CPU by
``tests/fixtures/make_fixtures.py``: a pairwise covering of
{LSTM, GRU, RNN tanh, RNN relu} x num_layers x bidirectional x bias x batch_first x
proj_size x input {batched, unbatched, packed sorted, packed unsorted} x hx x dtype, edge
cases with L=1 and N=1, and every cell configuration.  Each case is run on every
available backend: forward (output, h_n, c_n), forward_train + backward (d_input,
d_hx, every parameter gradient), parameter names/shapes/order, packing.

Tolerance: max |ours - torch| <= rtol * (|torch| + max(1, max |torch|)), rtol 1e-5 for
float32 and 1e-10 for float64.
"""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

try:
    from _parity import (CELLS_FILE, MODULES_FILE, backends, build, check_case,
                         load_cases)
except ImportError:  # tests imported as a package
    from tests._parity import (CELLS_FILE, MODULES_FILE, backends, build, check_case,
                               load_cases)

MODULE_CASES = load_cases(MODULES_FILE)
CELL_CASES = load_cases(CELLS_FILE)
BACKENDS = backends()


def _gen_module():
    """tests/fixtures/make_fixtures.py (imports torch lazily, so this works without it)."""
    path = os.path.join(os.path.dirname(MODULES_FILE), "make_fixtures.py")
    spec = importlib.util.spec_from_file_location("_lstmkit_make_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _params(cases, backends_):
    return [pytest.param(cfg, arrays, b, id=f"{cfg['id']}-{b}")
            for cfg, arrays in cases for b in backends_]


# -- the fixtures themselves --------------------------------------------------------

def test_fixture_metadata():
    for path, cases in ((MODULES_FILE, MODULE_CASES), (CELLS_FILE, CELL_CASES)):
        with np.load(path) as z:
            version = str(z["torch_version"])
            meta = json.loads(str(z["__meta__"]))
        assert version.startswith("2.13.0") and meta["torch_version"] == version
        assert [c["id"] for c, _ in cases] == meta["cases"]
        assert all(c["torch_version"] == meta["torch_version"] for c, _ in cases)
    assert len(MODULE_CASES) >= 25 and len(CELL_CASES) == 64


def test_fixture_pair_coverage():
    """The committed module cases cover every pair of values of any two axes."""
    gen = _gen_module()
    rows = [{
        "mode": c["mode"], "num_layers": c["num_layers"], "bidirectional": c["bidirectional"],
        "bias": c["bias"], "batch_first": c["batch_first"], "proj": c["proj_size"] > 0,
        "input": c["input"], "hx": c["hx"], "dtype": c["dtype"],
    } for c, _ in MODULE_CASES]
    n_pairs = gen.assert_pair_coverage(rows)
    assert n_pairs == len(gen.required_pairs()) > 100
    # edge cases are present
    assert any(c["T"] == 1 for c, _ in MODULE_CASES)
    assert any(c["N"] == 1 for c, _ in MODULE_CASES)


def test_fixture_cell_product():
    seen = {(c["class"], c["nonlinearity"], c["bias"], c["input"], c["hx"], c["dtype"])
            for c, _ in CELL_CASES}
    assert len(seen) == 64


# -- parameters: names, shapes, order -------------------------------------------------

@pytest.mark.parametrize("cfg,arrays", [pytest.param(c, a, id=c["id"])
                                        for c, a in MODULE_CASES + CELL_CASES])
def test_parameter_layout(cfg, arrays):
    """Same parameter names, shapes and order as torch's state dict; strict loading."""
    m = build(cfg, "numpy")
    sd = m.state_dict()
    assert list(sd) == cfg["param_names"]
    for k in cfg["param_names"]:
        assert sd[k].shape == arrays["param/" + k].shape, k
        assert sd[k].dtype == np.dtype(cfg["dtype"]), k
    assert [n for n, _ in m.named_parameters()] == cfg["param_names"]
    m.load_state_dict({k: arrays["param/" + k] for k in cfg["param_names"]})
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, arrays["param/" + k])


# -- numerics ---------------------------------------------------------------------------

@pytest.mark.parametrize("cfg,arrays,backend", _params(MODULE_CASES, BACKENDS))
def test_module_parity(cfg, arrays, backend):
    check_case(cfg, arrays, backend)


@pytest.mark.parametrize("cfg,arrays,backend", _params(CELL_CASES, BACKENDS))
def test_cell_parity(cfg, arrays, backend):
    check_case(cfg, arrays, backend)
