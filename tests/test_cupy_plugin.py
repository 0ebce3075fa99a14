"""The lstmkit-cupy plugin (``plugins/lstmkit-cupy``), imported from the checkout, on the CPU.

Main CI has no GPU and no CuPy, so this runs the plugin's backend code with
``CupyBackend(xp=numpy)`` — and with the CUDA kernel source compiled for the
CPU when a C++ compiler is present — against the ``numpy`` reference and the
``cython`` backend, and checks that without CuPy the backend is registered,
listed unavailable with the reason, and changes nothing else.  The plugin's
own, fuller suite is ``plugins/lstmkit-cupy/tests``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import lstmkit
from lstmkit.backends.reference import ReferenceBackend
from lstmkit.registry import get_cell
from lstmkit.registry import LookupFailed, Registry
from lstmkit.utils.rnn import pack_padded_sequence

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "lstmkit-cupy"
CUPY_INSTALLED = importlib.util.find_spec("cupy") is not None
if str(PLUGIN) not in sys.path:
    sys.path.insert(0, str(PLUGIN))

import lstmkit_cupy  # noqa: E402
from lstmkit_cupy import CupyBackend  # noqa: E402
from lstmkit_cupy import plugin as cupy_plugin  # noqa: E402

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
CELLS = [("lstm", 0), ("lstm", 2), ("gru", 0), ("rnn_tanh", 0), ("rnn_relu", 0)]


def _load_emulation():
    """The plugin's CPU build of its CUDA kernel source (``tests/cuda_emulation.py``)."""
    spec = importlib.util.spec_from_file_location(
        "lstmkit_cupy_cuda_emulation", PLUGIN / "tests" / "cuda_emulation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _backends():
    out = {"array_ops": CupyBackend(xp=np)}
    emulation = _load_emulation()
    if emulation.compiler() is not None:
        emulated = CupyBackend(xp=np)
        emulated.gates = emulation.EmulatedGateKernels()
        out["emulated_cuda"] = emulated
    return out


BACKENDS = _backends()


def _references():
    refs = [ReferenceBackend()]
    try:
        from lstmkit.backends.cython import CythonBackend
    except ImportError:
        return refs
    return refs + [CythonBackend()]


def _run(backend, cell, params, x, bs, reverse, state0):
    y, state, cache = backend.layer_forward(cell, params, x, bs, reverse, state0, True)
    rng = np.random.default_rng(1)
    d_y = rng.standard_normal(y.shape).astype(y.dtype)
    d_state = tuple(rng.standard_normal(s.shape).astype(s.dtype) for s in state)
    d_x, d_state0, d_params = backend.layer_backward(cell, params, cache, d_y, d_state)
    y_inf, state_inf, _ = backend.layer_forward(cell, params, x, bs, reverse, state0, False)
    return [y, *state, y_inf, *state_inf, d_x, *d_state0, *(d_params[k] for k in params)]


def _err(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    return float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize("variant", sorted(BACKENDS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("batch_sizes", [[4, 4, 3, 1], [3, 3, 3]], ids=["packed", "dense"])
@pytest.mark.parametrize("cell_name,proj", CELLS, ids=[f"{c}-proj{p}" for c, p in CELLS])
def test_layer_parity_on_the_cpu_path(variant, cell_name, proj, batch_sizes, reverse, dtype):
    rng = np.random.default_rng(0)
    cell = get_cell(cell_name)
    params = {k: (0.6 * rng.standard_normal(s)).astype(dtype) for k, s in cell.parameter_shapes(5, 4, proj, True)}
    bs = np.asarray(batch_sizes, dtype=np.int64)
    x = rng.standard_normal((int(bs.sum()), 5)).astype(dtype)
    state0 = tuple((0.5 * rng.standard_normal((int(bs[0]), w))).astype(dtype) for w in cell.state_sizes(4, proj))
    got = _run(BACKENDS[variant], cell, params, x, bs, reverse, state0)
    for reference in _references():
        want = _run(reference, cell, params, x, bs, reverse, state0)
        for k, (a, b) in enumerate(zip(got, want)):
            assert _err(a, b) <= TOL[np.dtype(dtype)], f"vs {reference.name}: quantity {k}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("cls_name,cfg", [
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("RNN", dict(num_layers=2, bidirectional=True, nonlinearity="relu")),
])
def test_bidirectional_packed_modules(cls_name, cfg, dtype):
    cls = getattr(lstmkit, cls_name)
    x = np.random.default_rng(2).standard_normal((6, 3, 5)).astype(dtype)
    packed = pack_padded_sequence(x, [6, 2, 5], enforce_sorted=False)
    results = []
    for backend in (CupyBackend(xp=np), "numpy"):
        m = cls(5, 4, backend=backend, dtype=dtype, seed=0, **cfg)
        out, state, backward = m.forward_train(packed)
        w = np.random.default_rng(3).standard_normal(out.data.shape).astype(dtype)
        d_x, _, d_params = backward(w)
        results.append([out.data, d_x] + [d_params[k] for k in d_params])
    for a, b in zip(*results):
        assert _err(a, b) <= TOL[np.dtype(dtype)]


@pytest.mark.skipif(CUPY_INSTALLED, reason="CuPy is installed here")
def test_without_cupy_listed_unavailable_with_the_reason():
    assert "cupy" not in sys.modules  # importing the plugin did not import CuPy
    reason = "CuPy is not installed (pip install cupy-cuda12x)"
    assert lstmkit_cupy.is_available() == (False, reason)
    registry = Registry(entry_points=False)
    before = (registry.backend_spec("auto").name, registry.available_backends())
    registry.register(cupy_plugin, name="lstmkit-cupy")
    assert registry.specs["backend"]["cupy"].priority < registry.specs["backend"]["cython"].priority
    assert (registry.backend_spec("auto").name, registry.available_backends()) == before
    with pytest.raises(LookupFailed, match=r"backend 'cupy' is unavailable: CuPy is not installed"):
        registry.backend_spec("cupy")


# -- lstmkit's conformance kit on the backend's CPU path, including another plugin's cell ------------
class _CpuCupyBackends:
    """Registers the plugin's backend code on NumPy under a test name."""

    @staticmethod
    @lstmkit.hookimpl
    def register_backends(register):
        from lstmkit.specs import BackendSpec

        register(BackendSpec("cupy-on-numpy", lambda: CupyBackend(xp=np), priority=-100))


def test_conformance_kit_and_the_peephole_plugin_cell_on_the_backend():
    testing = pytest.importorskip("lstmkit.testing")
    peephole_dir = PLUGIN.parent / "lstmkit-peephole"
    if not (peephole_dir / "lstmkit_peephole" / "__init__.py").exists():
        pytest.skip("plugins/lstmkit-peephole is not in this checkout")
    spec = importlib.util.spec_from_file_location(
        "lstmkit_peephole", peephole_dir / "lstmkit_peephole" / "__init__.py")
    peephole = sys.modules.get("lstmkit_peephole")
    if peephole is None:
        peephole = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(peephole)
    from lstmkit.registry import available_cells

    with testing.registered_plugin(_CpuCupyBackends(), name="lstmkit-cupy-on-numpy"):
        testing.check_backends("gru", backends=["cupy-on-numpy"])
        testing.check_gradients("lstm", backends=["cupy-on-numpy"])
        if "peephole" in available_cells():  # installed: its entry point registered it
            testing.check_backends("peephole", backends=["cupy-on-numpy"])
        else:
            with testing.registered_plugin(peephole, "peephole"):
                testing.check_backends("peephole", backends=["cupy-on-numpy"])


# -- a real install into a temporary environment ------------------------------------------------------
def test_pip_install_registers_an_unavailable_cupy_backend(tmp_path):
    """``pip install plugins/lstmkit-cupy`` (no CuPy): ``lstmkit backends`` lists ``cupy`` as
    unavailable with the reason, ``auto`` is unchanged, and asking for it names the reason."""
    import json
    import os
    import shutil
    import subprocess

    if CUPY_INSTALLED:
        pytest.skip("CuPy is installed here")
    target = tmp_path / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True,
                       capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot create a virtual environment here: {exc}")
    python = target / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    home = Path(lstmkit.__file__).resolve().parent.parent
    sites = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
    lines = [str(home)] + [f"import site; site.addsitedir({p!r})" for p in sites]
    Path(purelib, "_lstmkit_cupy_test.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = tmp_path / "lstmkit-cupy"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__",
                                                                  ".pytest_cache"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LSTMKIT_", "PYTHON"))}

    def run(*args, check=True):
        result = subprocess.run([str(python), *args], cwd=tmp_path, env=environ, capture_output=True,
                                text=True, timeout=180)
        if check and result.returncode != 0:
            pytest.fail(f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}", pytrace=False)
        return result

    probe = "import importlib.util as u, sys; sys.exit(u.find_spec({!r}) is None)"
    if run("-c", probe.format("pip"), check=False).returncode != 0:
        pytest.skip("pip is not importable here")
    if run("-c", probe.format("setuptools"), check=False).returncode != 0:
        pytest.skip("setuptools is not importable here (an offline build needs it)")
    run("-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q", "--no-build-isolation",
        "--no-index", str(source))
    rows = {r["name"]: r for r in json.loads(run("-m", "lstmkit", "backends", "--json").stdout)}
    cupy = rows["cupy"]
    assert (cupy["available"], cupy["reason"]) == (False, "CuPy is not installed (pip install cupy-cuda12x)")
    assert cupy["provider"] == "lstmkit-cupy 0.1.0" and cupy["priority"] == 50 and not cupy["default"]
    assert rows[next(n for n in rows if rows[n]["default"])]["name"] in ("cython", "numpy")
    plugins = {p["name"]: p for p in json.loads(run("-m", "lstmkit", "plugins", "--json").stdout)}
    assert plugins["cupy"]["distribution"] == "lstmkit-cupy" and plugins["cupy"]["status"] == "ok"
    assert plugins["cupy"]["provides"] == ["backend:cupy"]
    code = ("import lstmkit\ntry:\n    lstmkit.LSTM(3, 4, backend='cupy')\nexcept ValueError as e:\n"
            "    print(e)\nimport sys; print('cupy' in sys.modules)")
    out = run("-c", code).stdout.splitlines()
    assert out == ["backend 'cupy' is unavailable: CuPy is not installed (pip install cupy-cuda12x)", "False"]
