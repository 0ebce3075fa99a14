"""The plugin as a plugin: availability and its reasons, lazy CuPy, registry, packaging, gpu_check."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import tomllib
import types
from pathlib import Path

import numpy as np
import pytest

import lstmkit_cupy
from lstmkit.registry import LookupFailed, Registry
from lstmkit_cupy import plugin

ROOT = Path(__file__).resolve().parents[1]
CUPY_INSTALLED = importlib.util.find_spec("cupy") is not None


def _fake_cupy(get_device_count):
    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return module


# -- is_available ------------------------------------------------------------------------------
@pytest.mark.skipif(CUPY_INSTALLED, reason="CuPy is installed here")
def test_without_cupy_the_reason_says_how_to_install_it():
    assert plugin.is_available() == (False, "CuPy is not installed (pip install cupy-cuda12x)")
    assert "cupy" not in sys.modules


def test_without_a_gpu_the_reason_says_so(monkeypatch):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(no_device))
    ok, reason = plugin.is_available()
    assert not ok
    assert reason == "no CUDA GPU found: RuntimeError: cudaErrorNoDevice: no CUDA-capable device is detected"


def test_zero_devices_and_one_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(lambda: 0))
    assert plugin.is_available() == (False, "no CUDA GPU found: the CUDA runtime reports 0 devices")
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(lambda: 1))
    assert plugin.is_available() == (True, "")


def test_a_cupy_that_does_not_import(tmp_path, monkeypatch):
    package = tmp_path / "cupy"
    package.mkdir()
    (package / "__init__.py").write_text('raise ImportError("libcudart.so.12: cannot open shared object file")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    importlib.invalidate_caches()
    ok, reason = plugin.is_available()
    assert not ok
    assert reason == ("CuPy is installed but does not import: "
                      "ImportError: libcudart.so.12: cannot open shared object file")


def test_is_available_never_raises(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)

    def broken(name, *args):
        raise ValueError("cupy.__spec__ is None")

    monkeypatch.setattr(importlib.util, "find_spec", broken)
    ok, reason = plugin.is_available()
    assert not ok and reason.startswith("CuPy is not installed (pip install cupy-cuda12x); looking for it failed")


def test_importing_the_plugin_does_not_import_cupy(tmp_path):
    """A ``cupy`` on the path that explodes on import: the plugin, its backend class on
    NumPy and the registry listing still work (only is_available imports CuPy)."""
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text('raise SystemExit("cupy was imported")\n')
    code = textwrap.dedent("""
        import sys, numpy
        import lstmkit_cupy, lstmkit_cupy.plugin, lstmkit_cupy.backend, lstmkit_cupy.kernels
        from lstmkit_cupy import CupyBackend
        CupyBackend(xp=numpy)
        assert "cupy" not in sys.modules, "cupy was imported"
        print("ok")
    """)
    paths = [str(tmp_path), str(ROOT), str(ROOT.parents[1])] + sys.path
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": ":".join(paths), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"


# -- the registry ------------------------------------------------------------------------------
@pytest.mark.skipif(CUPY_INSTALLED, reason="CuPy is installed here")
def test_registered_backend_is_listed_unavailable_with_the_reason():
    registry = Registry(entry_points=False)
    auto_before = registry.backend_spec("auto").name
    registry.register(plugin, name="lstmkit-cupy")
    spec = registry.specs["backend"]["cupy"]
    assert spec.priority == plugin.PRIORITY == 50
    assert 0 < spec.priority < registry.specs["backend"]["cython"].priority
    assert spec.is_available() == (False, "CuPy is not installed (pip install cupy-cuda12x)")
    assert "cupy" not in registry.available_backends()
    assert registry.backend_spec("auto").name == auto_before  # nothing else changes
    expected = r"backend 'cupy' is unavailable: CuPy is not installed \(pip install cupy-cuda12x\)"
    with pytest.raises(LookupFailed, match=expected):
        registry.backend_spec("cupy")
    assert registry.providers[("backend", "cupy")].name == "lstmkit-cupy"
    assert registry.plugins["lstmkit-cupy"].hooks == ["register_backends"]


def test_auto_prefers_cython_even_when_cupy_is_available(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(lambda: 1))
    registry = Registry(entry_points=False)
    registry.register(plugin, name="lstmkit-cupy")
    names = registry.available_backends()
    assert names[-1] == "numpy" and "cupy" in names
    if "cython" in names:
        assert registry.backend_spec("auto").name == "cython"
        assert names == ["cython", "cupy", "numpy"]
    else:  # without the compiled core, the GPU beats the pure-NumPy reference
        assert registry.backend_spec("auto").name == "cupy"


def test_the_factory_builds_a_cupy_backend_lazily(monkeypatch):
    """The factory imports ``cupy`` only when called (here a stand-in module)."""
    fake = types.ModuleType("cupy")
    fake.__dict__.update({k: getattr(np, k) for k in ("asarray", "ascontiguousarray", "array", "empty", "zeros")})
    monkeypatch.setitem(sys.modules, "cupy", fake)
    backend = plugin.SPEC.factory()
    assert isinstance(backend, lstmkit_cupy.CupyBackend) and backend.xp is fake


# -- packaging ----------------------------------------------------------------------------------
def test_pyproject_entry_point_and_optional_cupy():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["name"] == "lstmkit-cupy"
    assert project["entry-points"]["lstmkit"] == {"cupy": "lstmkit_cupy.plugin"}
    assert not any(dep.lower().startswith("cupy") for dep in project["dependencies"])
    assert any(dep.startswith("cupy-cuda12x") for dep in project["optional-dependencies"]["cuda12"])
    assert project["version"] == lstmkit_cupy.__version__
    assert (ROOT / "README.md").exists()


# -- gpu_check.py --------------------------------------------------------------------------------
def _gpu_check():
    spec = importlib.util.spec_from_file_location("lstmkit_cupy_gpu_check", ROOT / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_dry_run_on_the_cpu():
    pytest.importorskip("lstmkit._core", reason="gpu_check compares with the cython backend")
    result = subprocess.run(
        [sys.executable, str(ROOT / "gpu_check.py"), "--xp", "numpy", "--quick", "--configs", "8"],
        capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": ":".join([str(ROOT), str(ROOT.parents[1])] + sys.path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "DRY RUN on the CPU" in out and "PASSED: every parity check within tolerance" in out
    assert "cython fwd" in out and "lstm " in out and "gru " in out
    assert "cupy fused=False" in out


def test_gpu_check_finds_a_wrong_backend():
    pytest.importorskip("lstmkit._core")
    check = _gpu_check()
    from lstmkit.backends.cython import CythonBackend

    class Off(lstmkit_cupy.CupyBackend):
        def layer_backward(self, cell, params, cache, d_y, d_state_n):
            d_x, d_s, d_p = super().layer_backward(cell, params, cache, d_y, d_state_n)
            return d_x * (1 + 1e-3), d_s, d_p

    tally = check.Tally()
    check.layer_parity(check.Device("numpy"), [("off", Off(xp=np))], CythonBackend(), tally, 4, 0)
    assert tally.failures and all("d_x" in f for f in tally.failures)


def test_gpu_check_exit_status(monkeypatch, capsys):
    pytest.importorskip("lstmkit._core")
    check = _gpu_check()
    original = check.layer_parity

    def failing(dev, variants, reference, tally, count, seed):
        original(dev, variants, reference, tally, count, seed)
        tally.failures.append("injected failure")

    monkeypatch.setattr(check, "layer_parity", failing)
    assert check.main(["--xp", "numpy", "--configs", "2", "--no-timing"]) == 1
    assert "FAILED: 1 parity problem(s)" in capsys.readouterr().out
    if not CUPY_INSTALLED:
        assert check.main([]) == 2
        assert "the cupy backend is unavailable: CuPy is not installed" in capsys.readouterr().out
