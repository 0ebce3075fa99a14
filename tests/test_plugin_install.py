"""Real installs: ``pip install`` plugins/lstmkit-peephole, a deliberately broken plugin
(tests/data/broken_plugin, whose module raises ImportError) and a rogue one
(tests/data/rogue_plugin: ``sys.exit`` and ``KeyboardInterrupt`` at import, a hijacked
``run`` command, a backend whose factory fails) into a temporary virtual environment,
then use lstmkit there from the command line and from Python.

The environment is a ``python -m venv --without-pip`` that sees this interpreter's
packages (NumPy, SciPy, pluggy, click, pydantic, pip, setuptools) and this checkout's
``lstmkit`` through a ``.pth`` file, so nothing is compiled: only the two plugins are
installed, with ``pip install --no-deps --no-build-isolation --no-index`` (nothing
downloaded; where setuptools is missing, pip fetches it for an isolated build), from
copies (a build writes ``build/`` and ``*.egg-info`` beside the sources).  The
command line runs as ``python -m lstmkit``, the same ``lstmkit.cli:main`` the console
script calls.  Where a venv or pip cannot work here, the tests skip; an install that
fails for any other reason fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lstmkit

ROOT = Path(__file__).resolve().parent.parent
PEEPHOLE = ROOT / "plugins" / "lstmkit-peephole"
BROKEN = ROOT / "tests" / "data" / "broken_plugin"
ROGUE = ROOT / "tests" / "data" / "rogue_plugin"
NOT_ROGUE = {"LSTMKIT_DISABLE_PLUGINS": "lstmkit-rogue-plugin"}
LSTMKIT_HOME = Path(lstmkit.__file__).resolve().parent.parent  # the lstmkit under test
NETWORK_TROUBLE = ("Could not find a version that satisfies", "No matching distribution",
                   "Failed to establish a new connection", "Temporary failure in name resolution",
                   "Network is unreachable", "Read timed out", "ConnectionError", "ProxyError")
BROKEN_WARNING = "lstmkit plugin 'broken' (lstmkit-broken-plugin 0.0.1) failed to import: ImportError: "


class Env:
    def __init__(self, root: Path, python: Path, plugins: Path):
        self.root, self.python, self.plugins = root, python, plugins

    def run(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("LSTMKIT_", "PYTHON"))}
        environ.update(env or {})
        result = subprocess.run([str(self.python), *args], cwd=self.root, env=environ, capture_output=True,
                                text=True, timeout=120)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited with {result.returncode}\n--- stdout\n{result.stdout}\n"
                        f"--- stderr\n{result.stderr}", pytrace=False)
        return result

    def lstmkit(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("-m", "lstmkit", *args, **kwargs)

    def python_code(self, code: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("-c", textwrap.dedent(code), **kwargs)


def _site_packages() -> list[str]:
    return [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("plugin-install")
    target = root / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True,
                       capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot create a virtual environment here: {exc}")
    python = target / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # This checkout's lstmkit first, then this interpreter's packages (addsitedir also
    # processes their .pth files, e.g. an editable install's).
    lines = [str(LSTMKIT_HOME)] + [f"import site; site.addsitedir({p!r})" for p in _site_packages()]
    Path(purelib, "_lstmkit_test_parent.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")

    plugins = root / "src"
    for source in (PEEPHOLE, BROKEN, ROGUE):
        shutil.copytree(source, plugins / source.name,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    env = Env(root, python, plugins)

    def importable(module: str) -> bool:
        probe = f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)"
        return env.run("-c", probe, check=False).returncode == 0

    if not importable("pip"):
        pytest.skip("pip is not importable here")
    offline = importable("setuptools")  # build the plugins with it, nothing downloaded
    args = ["-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q"]
    args += ["--no-build-isolation", "--no-index"] if offline else []  # else pip fetches setuptools
    result = env.run(*args, *(str(plugins / p.name) for p in (PEEPHOLE, BROKEN, ROGUE)), check=False)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if not offline and any(hint in output for hint in NETWORK_TROUBLE):
            pytest.skip(f"pip needs the network to get setuptools and could not reach it:\n{output}")
        pytest.fail(f"pip install of the plugins failed:\n{output}", pytrace=False)
    return env


def broken_warnings(stderr: str) -> int:
    return stderr.count("lstmkit plugin 'broken'")


def test_plugins_lists_both_and_warns_once(venv):
    result = venv.lstmkit("plugins", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    peephole, broken = rows["peephole"], rows["broken"]
    assert (peephole["distribution"], peephole["version"], peephole["status"]) == ("lstmkit-peephole", "0.1.0", "ok")
    assert peephole["hooks"] == ["register_cells"] and peephole["provides"] == ["cell:peephole"]
    assert (broken["distribution"], broken["version"], broken["status"]) == ("lstmkit-broken-plugin", "0.0.1", "error")
    assert broken["error"].startswith("failed to import: ImportError: lstmkit_broken_plugin is broken on purpose")
    assert broken_warnings(result.stderr) == 1 and BROKEN_WARNING in result.stderr
    assert "LSTMKIT_DISABLE_PLUGINS=broken" in result.stderr

    text = venv.lstmkit("plugins").stdout
    assert "peephole  (lstmkit-peephole 0.1.0)  status: ok" in text and "provides: cell:peephole" in text
    assert "broken  (lstmkit-broken-plugin 0.0.1)  status: error" in text


def test_cells_and_backends(venv):
    result = venv.lstmkit("cells")
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("peephole ")]
    assert line.split()[:4] == ["peephole", "4", "h,c", "lstmkit-peephole"] and "lstmkit-peephole 0.1.0" in line
    assert broken_warnings(result.stderr) == 1
    rows = json.loads(venv.lstmkit("backends", "--json").stdout)
    assert {"numpy"} <= {row["name"] for row in rows if row["available"]}


def test_peephole_from_python_on_every_backend(venv):
    result = venv.python_code("""
        import numpy as np
        import lstmkit
        from lstmkit.registry import available_backends, get_registry

        registry = get_registry()
        registry.collect_all()
        assert registry.providers[("cell", "peephole")].label == "lstmkit-peephole 0.1.0"
        x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
        outs = []
        for backend in available_backends():
            m = lstmkit.Recurrent("peephole", 3, 4, num_layers=2, bidirectional=True, backend=backend, seed=0)
            out, (h_n, c_n), backward = m.forward_train(x)
            d_x, (d_h0, d_c0), d_params = backward(np.ones_like(out))
            assert out.shape == (5, 2, 8) and h_n.shape == c_n.shape == (4, 2, 4) and d_x.shape == x.shape
            assert "weight_co_l1_reverse" in d_params
            h, c = lstmkit.RecurrentCell("peephole", 3, 4, backend=backend, seed=0)(x[0])
            outs.append(out)
            print(backend, "ok")
        for out in outs[1:]:
            np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-6)
        clipped = lstmkit.Recurrent("peephole", 3, 4, cell_options={"cell_clip": 0.1}, seed=0)
        assert np.abs(clipped(x)[1][1]).max() <= 0.1
    """, env=NOT_ROGUE)
    assert "numpy ok" in result.stdout
    assert broken_warnings(result.stderr) == 1


def test_peephole_in_a_config(venv):
    if venv.lstmkit("config", "--help", check=False).returncode != 0:
        pytest.skip("this lstmkit has no `config` command")
    env = {"LSTMKIT_DISABLE_PLUGINS": "broken"}
    good = venv.root / "peephole.yaml"
    good.write_text("task:\n  type: sine\nmodel:\n  cell: peephole\n  cell_options: {cell_clip: 2.0}\n")
    result = venv.lstmkit("config", "validate", "--no-data", str(good), env=env)
    assert "peephole" in result.stdout
    bad = venv.root / "typo.yaml"
    bad.write_text("task:\n  type: sine\nmodel:\n  cell: peephole\n  cell_options: {cell_clp: 2.0}\n")
    result = venv.lstmkit("config", "validate", "--no-data", str(bad), env=env, check=False)
    assert result.returncode != 0
    assert "model.cell_options" in result.stdout + result.stderr and "cell_clp" in result.stdout + result.stderr


def test_disable_load_and_strict(venv):
    result = venv.lstmkit("plugins", "--json", env={"LSTMKIT_DISABLE_PLUGINS": "broken"})
    assert broken_warnings(result.stderr) == 0
    statuses = {row["name"]: row["status"] for row in json.loads(result.stdout)}
    assert statuses["broken"] == "disabled" and statuses["peephole"] == "ok"

    result = venv.lstmkit("cells", env={"LSTMKIT_LOAD_PLUGINS": ""})
    assert broken_warnings(result.stderr) == 0 and "peephole" not in result.stdout and "lstm " in result.stdout

    result = venv.python_code("""
        import lstmkit
        try:
            lstmkit.Recurrent("peephole", 3, 4)
        except ValueError as e:
            print(e)
    """, env={"LSTMKIT_LOAD_PLUGINS": ""})
    assert "unknown cell 'peephole'; valid cells: gru, lstm, rnn_relu, rnn_tanh" in result.stdout

    result = venv.lstmkit("cells", env={"LSTMKIT_LOAD_PLUGINS": "lstmkit-peephole"})
    assert broken_warnings(result.stderr) == 0 and "peephole" in result.stdout

    result = venv.lstmkit("cells", env={"LSTMKIT_STRICT_PLUGINS": "1"}, check=False)
    assert result.returncode == 4  # an error message, not a traceback
    assert "Error: " + BROKEN_WARNING in result.stderr and "Traceback" not in result.stderr


def test_plugins_check_for_plugin_authors_ci(venv):
    result = venv.lstmkit("plugins", "--check", env=NOT_ROGUE, check=False)
    assert result.returncode == 4
    assert "plugins --check: 1 plugin(s) with problems: broken (lstmkit-broken-plugin 0.0.1)" in result.stderr
    result = venv.lstmkit("plugins", "--check", env={"LSTMKIT_DISABLE_PLUGINS": "broken,lstmkit-rogue-plugin"})
    assert "every plugin loads and registers cleanly" in result.stderr
    version = venv.lstmkit("--version").stdout
    assert "lstmkit-peephole 0.1.0 [ok]" in version and "lstmkit-broken-plugin 0.0.1 [error]" in version


def test_the_plugins_own_tests_pass_against_the_installed_plugin(venv):
    """What a plugin author's CI runs: the plugin's tests, built on lstmkit.testing."""
    result = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(venv.plugins / PEEPHOLE.name / "tests"),
                      env={"LSTMKIT_DISABLE_PLUGINS": "broken,lstmkit-rogue-plugin", "LSTMKIT_STRICT_PLUGINS": "1"},
                      check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


def test_a_rogue_plugin_cannot_end_the_process_or_take_over(venv):
    result = venv.python_code("""
        import numpy as np
        import lstmkit

        model = lstmkit.LSTM(3, 4)
        print("backend", model.backend.name, model(np.zeros((2, 1, 3), np.float32))[0].shape)
    """, env={"LSTMKIT_DISABLE_PLUGINS": "broken"})
    assert result.stdout.split()[:2] in (["backend", "cython"], ["backend", "numpy"]), result.stdout + result.stderr
    err = result.stderr
    assert ("lstmkit plugin 'rogue_exit' (lstmkit-rogue-plugin 0.0.1) failed to import: SystemExit (it called "
            "sys.exit('lstmkit_rogue_plugin.exits ends the process on purpose'))") in err
    assert "lstmkit plugin 'rogue_interrupt' (lstmkit-rogue-plugin 0.0.1) failed to import: KeyboardInterrupt" in err
    assert ("lstmkit plugin 'rogue' (lstmkit-rogue-plugin 0.0.1) backend 'rogue_native': its factory raised "
            "ImportError: librogue.so: cannot open shared object file; backend='auto' falls back") in err

    result = venv.lstmkit("run", "--help", env={"LSTMKIT_DISABLE_PLUGINS": "broken"})
    assert "Train and evaluate the model" in result.stdout and "hijacked" not in result.stdout
    assert "command 'run' is registered twice: by lstmkit" in result.stderr
    assert "disable it with LSTMKIT_DISABLE_PLUGINS=rogue\n" in result.stderr

    rows = {r["name"]: r for r in json.loads(venv.lstmkit("plugins", "--json").stdout)}
    assert {rows[n]["status"] for n in ("rogue", "rogue_exit", "rogue_interrupt")} == {"error"}
    version = venv.lstmkit("--version").stdout
    assert version.count("lstmkit-rogue-plugin") == 1 and "lstmkit-rogue-plugin 0.0.1 [error]" in version
