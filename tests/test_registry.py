"""The plugin registry, in-process: hooks, safe loading, name clashes, lookups, the CLI listings.

Plugins are registered as objects (``registered_plugin``) or as fake installed
distributions: a ``*.dist-info`` folder with an ``entry_points.txt`` and a
module, written to a temporary folder, and ``importlib.metadata.entry_points``
limited to that folder, so the registry loads them exactly as it loads
installed plugins (distribution name and version included).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
import textwrap
import types
import warnings
from importlib import metadata

import click
import numpy as np
import pluggy
import pytest
from click.testing import CliRunner

import lstmkit
import lstmkit.registry as registry_module
from lstmkit.backends.reference import ReferenceBackend
from lstmkit.cells import CellType
from lstmkit.cli import make_cli
from lstmkit.registry import (
    LookupFailed,
    PluginError,
    available_backends,
    available_cells,
    get_backend,
    get_registry,
    reset_registry,
)
from lstmkit.specs import BackendSpec, CellSpec, TaskSpec
from lstmkit.testing import check_backends, check_shapes, registered_plugin

ENV = ("LSTMKIT_LOAD_PLUGINS", "LSTMKIT_DISABLE_PLUGINS", "LSTMKIT_STRICT_PLUGINS")
BUILTIN_CELLS = ["gru", "lstm", "rnn_relu", "rnn_tanh"]


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def fresh(monkeypatch):
    """A fresh process-wide registry for one test (``fresh()`` builds it); the previous one
    and its backend instances come back afterwards."""
    for variable in ENV:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(registry_module, "_REGISTRY", None)  # restored at teardown, backend instances included
    yield lambda: reset_registry(entry_points=False)


_counter = itertools.count()


@pytest.fixture
def installed(tmp_path, monkeypatch, fresh):
    """``installed(dist, version, entry_name, source)`` fakes an installed plugin distribution.

    Only these fake distributions are seen by the registry (whatever is really
    installed in this environment).  Returns the module name.
    """
    site = tmp_path / "site"
    site.mkdir()
    modules = []

    def install(dist: str, version: str, entry_name: str, source: str) -> str:
        module = f"lstmkit_fake_{entry_name}_{next(_counter)}"
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        if not info.exists():  # installing the same distribution again adds an entry point to it
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
            (info / "entry_points.txt").write_text("[lstmkit]\n", encoding="utf-8")
        with open(info / "entry_points.txt", "a", encoding="utf-8") as file:
            file.write(f"{entry_name} = {module}\n")
        modules.append(module)
        return module

    def entry_points(**params):
        found = [ep for dist in metadata.distributions(path=[str(site)]) for ep in dist.entry_points]
        found.sort(key=lambda ep: ep.dist.name)  # installation order is not defined; make it stable
        return metadata.EntryPoints(found).select(**params)

    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry_module.metadata, "entry_points", entry_points)
    yield install
    for module in modules:
        sys.modules.pop(module, None)


def plugin_warnings(record, plugin: str) -> list[str]:
    return [str(w.message) for w in record if f"lstmkit plugin {plugin!r}" in str(w.message)]


# -- a plugin object providing one of everything -------------------------------------------
class ToyCellType(CellType):
    """h' = tanh(gi + h W_hhᵀ + b_hh): an Elman cell under another name (no fused kernel)."""

    name = "toy"
    num_gates = 1
    state_names = ("h",)
    description = "A toy Elman cell."

    def forward_step(self, xp, p, gi, state):
        (h_prev,) = state
        pre = gi + h_prev @ p["weight_hh"].T
        h = xp.tanh(pre + p["bias_hh"] if "bias_hh" in p else pre)
        return (h,), (h_prev, h)

    def backward_step(self, xp, p, cache, d_state, grads):
        h_prev, h = cache
        d_pre = d_state[0] * (1 - h * h)
        grads["weight_hh"] += d_pre.T @ h_prev
        if "bias_hh" in grads:
            grads["bias_hh"] += d_pre.sum(axis=0)
        return d_pre, (d_pre @ p["weight_hh"],)


def toy_task_factory(options, **kwargs):
    return ("toy task", options)


class ToyPlugin:
    @lstmkit.hookimpl
    def register_cells(self, register):
        register(CellSpec("toy", ToyCellType, description=ToyCellType.description))

    @lstmkit.hookimpl
    def register_backends(self, register):
        register(BackendSpec("toybe", lambda: ReferenceBackend(name="toybe"), priority=-5,
                             description="The reference, renamed."))
        register(BackendSpec("gpu_only", _never_built, lambda: (False, "no CUDA device was found"),
                             priority=1000, description="Needs a GPU."))

    @lstmkit.hookimpl
    def register_tasks(self, register):
        register(TaskSpec("toy_task", toy_task_factory, description="A toy task."))

    @lstmkit.hookimpl
    def register_commands(self, cli):
        @cli.command()
        def toy():
            """Say hello from the toy plugin."""
            click.echo("hello from the toy plugin")


def _never_built():
    raise AssertionError("the factory of an unavailable backend must not be called")


# -- built-ins ------------------------------------------------------------------------------
def test_builtins_are_registered_through_the_hooks(fresh):
    registry = fresh()
    registry.collect_all()
    info = registry.plugins["lstmkit"]
    assert info.builtin and info.status == "ok"
    assert {"register_cells", "register_backends"} <= set(info.hooks)
    assert {f"cell:{c}" for c in BUILTIN_CELLS} | {"backend:numpy", "backend:cython"} <= set(info.provides)
    assert available_cells() == BUILTIN_CELLS
    assert registry.cell_spec("lstm").cell_type is lstmkit.cells.LSTMCellType


# -- registering a plugin object in one test ----------------------------------------------------
def test_plugin_object_registers_cells_backends_tasks_and_commands(fresh):
    registry = fresh()
    with registered_plugin(ToyPlugin(), "toy-plugin") as name:
        assert name == "toy-plugin"
        info = registry.plugins["toy-plugin"]
        assert info.hooks == ["register_backends", "register_cells", "register_commands", "register_tasks"]
        assert registry.cell_spec("toy").cell_type is ToyCellType
        assert registry.providers[("cell", "toy")].label == "toy-plugin local"
        assert registry.backend_spec("toybe").priority == -5
        assert registry.task_spec("toy_task").factory is toy_task_factory
        assert {"cell:toy", "backend:toybe", "backend:gpu_only", "task:toy_task"} <= set(info.provides)
        assert "toy" in available_cells()
        out, h_n = lstmkit.Recurrent("toy", 3, 4, backend="toybe", seed=0)(np.ones((2, 1, 3), np.float32))
        assert out.shape == (2, 1, 4) and h_n.shape == (1, 1, 4)
        assert get_backend("toybe").name == "toybe"
    # gone afterwards, backend instance included
    assert "toy-plugin" not in registry.plugins
    assert "toy" not in available_cells()
    assert "toybe" not in registry._instances
    with pytest.raises(LookupFailed, match="unknown cell 'toy'"):
        registry.cell_spec("toy")
    with pytest.raises(LookupFailed, match="unknown backend 'toybe'"):
        get_backend("toybe")


def test_module_plugin_and_unregister_on_error(fresh):
    fresh()
    module = types.ModuleType("toy_module_plugin")

    @lstmkit.hookimpl
    def register_cells(register):
        register(CellSpec("toy", ToyCellType))

    module.register_cells = register_cells
    with pytest.raises(RuntimeError, match="inside"):
        with registered_plugin(module):
            assert "toy" in available_cells()
            raise RuntimeError("inside")
    assert "toy" not in available_cells() and "toy_module_plugin" not in get_registry().plugins


def test_plugin_name_taken(fresh):
    fresh()
    with registered_plugin(types.SimpleNamespace(), "some-plugin"):
        with pytest.raises(PluginError, match="a plugin named 'some-plugin' is already registered"):
            get_registry().register(types.SimpleNamespace(), "some-plugin")


# -- lookups ---------------------------------------------------------------------------------
def test_lookups_list_the_valid_names(fresh):
    registry = fresh()
    with registered_plugin(ToyPlugin(), "toy-plugin"):
        with pytest.raises(LookupFailed, match=r"unknown cell 'lstn'; did you mean 'lstm'\?; valid cells: gru, lstm, rnn_relu, rnn_tanh, toy$"):
            registry.cell_spec("lstn")
        with pytest.raises(ValueError, match=r"unknown cell 'lstn'; did you mean 'lstm'\?; valid cells: gru, lstm, rnn_relu, rnn_tanh, toy"):
            lstmkit.Recurrent("lstn", 3, 4)
        with pytest.raises(ValueError, match=r"unknown cell 'lstn'.*valid cells: gru, lstm"):
            lstmkit.RecurrentCell("lstn", 3, 4)
        with pytest.raises(LookupFailed, match=r"unknown backend 'gpu'; valid backends: auto, cython, gpu_only, numpy, toybe"):
            lstmkit.LSTM(3, 4, backend="gpu")
        with pytest.raises(LookupFailed, match=r"unknown task 'toy_tsk'; did you mean 'toy_task'\?; valid tasks: .*toy_task"):
            registry.task_spec("toy_tsk")
    with pytest.raises(ValueError, match=r"cell 'lstm' takes no options, got: forget_bias"):
        lstmkit.Recurrent("lstm", 3, 4, cell_options={"forget_bias": 1.0})


def test_unavailable_backend_names_the_reason(fresh):
    registry = fresh()
    with registered_plugin(ToyPlugin(), "toy-plugin"):
        with pytest.raises(LookupFailed, match=r"^backend 'gpu_only' is unavailable: no CUDA device was found$"):
            get_backend("gpu_only")
        with pytest.raises(ValueError, match="backend 'gpu_only' is unavailable: no CUDA device was found"):
            lstmkit.LSTM(3, 4, backend="gpu_only")
        # "auto" skips it although its priority is the highest
        assert "gpu_only" not in available_backends()
        assert registry.backend_spec("auto").name == available_backends()[0] != "gpu_only"


def test_auto_picks_the_available_backend_with_the_highest_priority(fresh):
    fresh()

    class Fast:
        @lstmkit.hookimpl
        def register_backends(self, register):
            register(BackendSpec("fastest", lambda: ReferenceBackend(name="fastest"), priority=1000))
            register(BackendSpec("slowest", lambda: ReferenceBackend(name="slowest"), priority=-1000))

    before = available_backends()
    with registered_plugin(Fast(), "fast"):
        assert available_backends() == ["fastest", *before, "slowest"]
        with pytest.warns(RuntimeWarning, match="backend='auto' runs on 'fastest' from plugin 'fast'"):
            assert get_backend("auto").name == "fastest" and get_backend(None).name == "fastest"
            assert lstmkit.LSTM(3, 4).backend.name == "fastest"
    assert get_backend("auto").name == before[0]
    assert lstmkit.LSTM(3, 4).backend.name == before[0]


# -- name clashes -------------------------------------------------------------------------------
def test_name_registered_twice_in_process_names_both(fresh):
    fresh()

    class Dup:
        @lstmkit.hookimpl
        def register_cells(self, register):
            register(CellSpec("toy", ToyCellType))
            register(CellSpec("lstm", type("LSTM2", (lstmkit.cells.LSTMCellType,), {})))

    version = get_registry().plugins["lstmkit"].version
    with pytest.raises(PluginError, match=rf"cell 'lstm' is registered twice: by lstmkit {version} and by dup local"):
        get_registry().register(Dup(), "dup")
    assert "dup" not in get_registry().plugins  # nothing of it stays
    assert "toy" not in available_cells()
    assert get_registry().cell_spec("lstm").cell_type is lstmkit.cells.LSTMCellType


TWIN = """
    import lstmkit
    from lstmkit.cells import LSTMCellType
    from lstmkit.specs import CellSpec

    class Twin(LSTMCellType):
        name = "twin"

    class Only(LSTMCellType):
        name = "only_{tag}"

    @lstmkit.hookimpl
    def register_cells(register):
        register(CellSpec("only_{tag}", Only))
        register(CellSpec("twin", Twin, description="from {tag}"))
"""


def test_name_registered_twice_by_two_distributions(installed):
    installed("dist-a", "1.0", "a", TWIN.format(tag="a"))
    installed("dist-b", "2.5", "b", TWIN.format(tag="b"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry = reset_registry()
        cells = available_cells()
        lstmkit.Recurrent("twin", 3, 4)
    messages = plugin_warnings(record, "b")
    assert len(messages) == 1, messages
    assert "cell 'twin' is registered twice: by dist-a 1.0 and by dist-b 2.5" in messages[0]
    assert "(dist-b 2.5)" in messages[0]
    assert registry.cell_spec("twin").description == "from a"
    assert "only_a" in cells and "only_b" not in cells  # a failing plugin's other registrations are dropped
    assert registry.plugins["b"].status == "error" and registry.plugins["a"].status == "ok"


def test_name_clash_with_a_builtin_backend(installed):
    installed("lstmkit-numpy2", "0.3", "numpy2", """
        import lstmkit
        from lstmkit.backends.reference import ReferenceBackend
        from lstmkit.specs import BackendSpec

        @lstmkit.hookimpl
        def register_backends(register):
            register(BackendSpec("numpy", ReferenceBackend))
    """)
    with pytest.warns(RuntimeWarning, match=r"backend 'numpy' is registered twice: by lstmkit \S+ and by lstmkit-numpy2 0.3"):
        reset_registry()
        available_backends()
    assert get_registry().providers[("backend", "numpy")].builtin


# -- broken plugins -------------------------------------------------------------------------------
def test_plugin_failing_to_import_warns_once_and_the_rest_works(installed):
    installed("lstmkit-broken", "0.3", "broken", "raise ImportError('needs libfoo')\n")
    installed("lstmkit-good", "1.0", "good", TWIN.format(tag="good"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry = reset_registry()
        out, (h, c) = lstmkit.Recurrent("twin", 3, 4)(np.zeros((2, 3), np.float32))
        lstmkit.LSTM(3, 4)
        available_cells()
    messages = plugin_warnings(record, "broken")
    assert messages == [
        "lstmkit plugin 'broken' (lstmkit-broken 0.3) failed to import: ImportError: needs libfoo — it is "
        "skipped; disable it with LSTMKIT_DISABLE_PLUGINS=broken"
    ]
    assert all(issubclass(w.category, RuntimeWarning) for w in record if "broken" in str(w.message))
    info = registry.plugins["broken"]
    assert (info.status, info.distribution, info.version) == ("error", "lstmkit-broken", "0.3")
    with pytest.raises(LookupFailed, match=r"unknown cell 'needs_foo'; .*plugins that failed to load: broken: failed to import"):
        registry.cell_spec("needs_foo")


def test_unknown_hook_name_is_reported(installed, fresh):
    installed("lstmkit-typo", "0.1", "typo", """
        import lstmkit

        @lstmkit.hookimpl
        def register_cels(register):
            pass
    """)
    with pytest.warns(RuntimeWarning, match=r"lstmkit plugin 'typo' \(lstmkit-typo 0.1\) unknown hook\(s\) register_cels; "
                                            r"valid hooks: register_cells, register_backends, register_tasks, register_commands"):
        registry = reset_registry()
    assert registry.plugins["typo"].status == "error"
    assert available_cells() == BUILTIN_CELLS

    class Typo:
        @lstmkit.hookimpl
        def register_backend(self, register):
            pass

    with pytest.raises(PluginError, match=r"unknown hook\(s\) register_backend; valid hooks"):
        get_registry().register(Typo(), "typo-object")
    assert "typo-object" not in get_registry().plugins


def test_hook_with_a_wrong_argument_is_a_warning_naming_plugin_and_version(installed):
    installed("lstmkit-old", "0.0.7", "old", """
        import lstmkit

        @lstmkit.hookimpl
        def register_cells(registrar):
            pass
    """)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry = reset_registry()
    (message,) = plugin_warnings(record, "old")
    assert message.startswith("lstmkit plugin 'old' (lstmkit-old 0.0.7) declares a hook wrongly: ")
    assert "register_cells(register)" in message
    assert "registrar" in message
    assert registry.plugins["old"].status == "error"
    assert available_cells() == BUILTIN_CELLS

    class Wrong:
        @lstmkit.hookimpl
        def register_cells(self, registrar):
            pass

    with pytest.raises(PluginError, match=r"^declares a hook wrongly: .*register_cells\(registrar\).*"
                                          r"register_cells\(register\)") as caught:
        get_registry().register(Wrong(), "wrong-object")
    assert isinstance(caught.value.__cause__, pluggy.PluginValidationError)


def test_plugin_raising_inside_register_warns_and_the_rest_works(installed):
    installed("lstmkit-boom", "1.2", "boom", """
        import lstmkit
        from lstmkit.backends.reference import ReferenceBackend
        from lstmkit.specs import BackendSpec

        @lstmkit.hookimpl
        def register_backends(register):
            register(BackendSpec("boom_backend", ReferenceBackend))

        @lstmkit.hookimpl
        def register_cells(register):
            raise RuntimeError("boom")
    """)
    installed("lstmkit-good", "1.0", "good", TWIN.format(tag="good"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry = reset_registry()
        assert "boom_backend" in available_backends()  # backends are collected before cells here
        cells = available_cells()
        lstmkit.Recurrent("twin", 3, 4)
        available_cells()
    messages = plugin_warnings(record, "boom")
    assert messages == ["lstmkit plugin 'boom' (lstmkit-boom 1.2) failed while registering: RuntimeError: boom — "
                        "it is skipped; disable it with LSTMKIT_DISABLE_PLUGINS=boom"]
    assert "twin" in cells and "lstm" in cells
    assert "boom_backend" not in available_backends()  # what it registered before failing is dropped
    assert registry.plugins["boom"].status == "error"


def test_register_rejects_objects_that_are_not_specs(fresh):
    fresh()

    class Bad:
        @lstmkit.hookimpl
        def register_cells(self, register):
            register(ToyCellType)

    with pytest.raises(TypeError, match="register_cells expects CellSpec objects, got type"):
        get_registry().register(Bad(), "bad")


# -- strict mode ---------------------------------------------------------------------------------
def test_strict_mode_reraises(installed, monkeypatch):
    monkeypatch.setenv("LSTMKIT_STRICT_PLUGINS", "1")
    module = installed("lstmkit-broken", "0.3", "broken", "raise ImportError('needs libfoo')\n")
    with pytest.raises(PluginError, match=r"lstmkit plugin 'broken' \(lstmkit-broken 0.3\) failed to import: "
                                          r"ImportError: needs libfoo") as caught:
        reset_registry()
    assert isinstance(caught.value.__cause__, ImportError)
    monkeypatch.setenv("LSTMKIT_STRICT_PLUGINS", "0")  # "0" is off
    with pytest.warns(RuntimeWarning, match="needs libfoo"):
        reset_registry()
    assert module not in sys.modules


def test_strict_mode_reraises_errors_in_register_and_wrong_hooks(installed, monkeypatch):
    installed("lstmkit-boom", "1.2", "boom", """
        import lstmkit

        @lstmkit.hookimpl
        def register_cells(register):
            raise RuntimeError("boom")
    """)
    monkeypatch.setenv("LSTMKIT_STRICT_PLUGINS", "1")
    reset_registry()  # imports fine; the hook runs at the first lookup
    with pytest.raises(PluginError, match=r"'boom' \(lstmkit-boom 1.2\) failed while registering: RuntimeError: boom"):
        available_cells()
    installed("lstmkit-old", "0.0.7", "old", """
        import lstmkit

        @lstmkit.hookimpl
        def register_cells(registrar):
            pass
    """)
    with pytest.raises(PluginError, match=r"'old' \(lstmkit-old 0.0.7\) declares a hook wrongly") as caught:
        reset_registry()
    assert isinstance(caught.value.__cause__, pluggy.PluginValidationError)


# -- choosing plugins with the environment -------------------------------------------------------------
@pytest.fixture
def alpha_and_broken(installed):
    alpha = installed("lstmkit-alpha", "1.0", "alpha", """
        import lstmkit
        from lstmkit.cells import GRUCellType
        from lstmkit.specs import CellSpec

        class Alpha(GRUCellType):
            name = "alpha"

        @lstmkit.hookimpl
        def register_cells(register):
            register(CellSpec("alpha", Alpha))
    """)
    broken = installed("lstmkit-broken", "0.3", "broken", "raise ImportError('needs libfoo')\n")
    return alpha, broken


@pytest.mark.parametrize("load, disable, expected", [
    (None, None, {"alpha": "ok", "broken": "error"}),
    ("", None, {"alpha": "disabled", "broken": "disabled"}),
    (" alpha , ", None, {"alpha": "ok", "broken": "disabled"}),
    ("lstmkit-alpha", None, {"alpha": "ok", "broken": "disabled"}),  # distribution names work too
    (None, "broken", {"alpha": "ok", "broken": "disabled"}),
    (None, "lstmkit-broken,alpha", {"alpha": "disabled", "broken": "disabled"}),
    ("alpha,broken", "broken", {"alpha": "ok", "broken": "disabled"}),  # disabling wins
])
def test_load_and_disable_plugins(alpha_and_broken, monkeypatch, load, disable, expected):
    alpha, broken = alpha_and_broken
    if load is not None:
        monkeypatch.setenv("LSTMKIT_LOAD_PLUGINS", load)
    if disable is not None:
        monkeypatch.setenv("LSTMKIT_DISABLE_PLUGINS", disable)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry = reset_registry()
        cells = available_cells()
    assert {name: registry.plugins[name].status for name in ("alpha", "broken")} == expected
    assert ("alpha" in cells) == (expected["alpha"] == "ok")
    assert len(plugin_warnings(record, "broken")) == (expected["broken"] == "error")
    assert not plugin_warnings(record, "alpha")
    # a disabled plugin is never imported
    assert (alpha in sys.modules) == (expected["alpha"] == "ok")
    assert broken not in sys.modules
    assert set(BUILTIN_CELLS) <= set(cells)


# -- a plugin cell everywhere -------------------------------------------------------------------------------
def test_plugin_cell_runs_on_every_backend(fresh):
    fresh()
    with registered_plugin(ToyPlugin(), "toy-plugin"):
        check_shapes("toy")
        check_backends("toy")  # cython and numpy agree, forward and backward
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 2, 3)).astype(np.float32)
        results = []
        for backend in available_backends():
            m = lstmkit.Recurrent("toy", 3, 4, num_layers=2, bidirectional=True, backend=backend, seed=0)
            cell = lstmkit.RecurrentCell("toy", 3, 4, backend=backend, seed=0)
            out, h_n, backward = m.forward_train(x)
            d_x, d_h0, d_params = backward(np.ones_like(out))
            assert out.shape == (4, 2, 8) and h_n.shape == (4, 2, 4) and d_x.shape == x.shape
            assert list(d_params) == list(m.state_dict())
            results.append((out, cell(x[0])))
        for out, step in results[1:]:
            np.testing.assert_allclose(out, results[0][0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(step, results[0][1], rtol=1e-5, atol=1e-6)


# -- the CLI ---------------------------------------------------------------------------------------------
def invoke(*args):
    result = CliRunner().invoke(make_cli(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_cli_plugins(fresh):
    fresh()
    assert "No plugins installed" in invoke("plugins").output
    assert json.loads(invoke("plugins", "--json").stdout) == []
    with registered_plugin(ToyPlugin(), "toy-plugin"):
        (row,) = json.loads(invoke("plugins", "--json").stdout)
        assert row["name"] == "toy-plugin" and row["version"] == "local" and row["status"] == "ok"
        assert row["builtin"] is False and "register_commands" in row["hooks"]
        assert {"cell:toy", "backend:toybe", "task:toy_task", "command:toy"} <= set(row["provides"])
        rows = {r["name"]: r for r in json.loads(invoke("plugins", "--all", "--json").stdout)}
        assert set(rows) == {"lstmkit", "toy-plugin"}
        assert rows["lstmkit"]["builtin"] is True and "cell:lstm" in rows["lstmkit"]["provides"]
        text = invoke("plugins").output
        assert "toy-plugin  (toy-plugin local)  status: ok" in text and "provides: " in text
        assert "[built-in]" in invoke("plugins", "--all").output


def test_cli_plugins_shows_failures(installed):
    installed("lstmkit-broken", "0.3", "broken", "raise ImportError('needs libfoo')\n")
    with pytest.warns(RuntimeWarning):
        reset_registry()
    (row,) = json.loads(invoke("plugins", "--json").stdout)
    assert (row["name"], row["distribution"], row["version"], row["status"]) == ("broken", "lstmkit-broken", "0.3", "error")
    assert row["error"] == "failed to import: ImportError: needs libfoo"
    assert "error: failed to import: ImportError: needs libfoo" in invoke("plugins").output
    assert "lstmkit-broken 0.3 [error]" in invoke("--version").output


def test_cli_cells_and_backends(fresh):
    fresh()
    with registered_plugin(ToyPlugin(), "toy-plugin"):
        rows = {r["name"]: r for r in json.loads(invoke("cells", "--json").stdout)}
        assert set(rows) == {*BUILTIN_CELLS, "toy"}
        assert rows["toy"] == {"name": "toy", "gates": 1, "states": ["h"], "provider": "toy-plugin local",
                               "description": "A toy Elman cell."}
        assert rows["lstm"]["states"] == ["h", "c"]
        text = invoke("cells").output
        assert any(line.startswith("toy ") and "toy-plugin local" in line for line in text.splitlines())

        rows = {r["name"]: r for r in json.loads(invoke("backends", "--json").stdout)}
        assert rows["gpu_only"]["available"] is False and rows["gpu_only"]["reason"] == "no CUDA device was found"
        assert rows["toybe"]["available"] is True and rows["toybe"]["provider"] == "toy-plugin local"
        assert [name for name, r in rows.items() if r["default"]] == [available_backends()[0]]
        text = invoke("backends").output
        assert "unavailable: no CUDA device was found" in text and "(auto)" in text


def test_cli_commands_from_plugins(fresh):
    fresh()
    assert "toy" not in invoke("--help").output.split("Commands:")[1]
    with registered_plugin(ToyPlugin(), "toy-plugin"):
        assert "Say hello from the toy plugin." in invoke("--help").output
        assert invoke("toy").output == "hello from the toy plugin\n"

    class BrokenCommands:
        @lstmkit.hookimpl
        def register_commands(self, cli):
            raise RuntimeError("no commands today")

    with registered_plugin(BrokenCommands(), "broken-commands"):
        with pytest.warns(RuntimeWarning, match=r"'broken-commands' \(broken-commands local\) failed in "
                                                r"register_commands: RuntimeError: no commands today"):
            cli = make_cli()
        result = CliRunner().invoke(cli, ["cells"])
        assert result.exit_code == 0 and "lstm" in result.output


def test_registering_an_already_loaded_plugin_says_how(installed):
    module = installed("lstmkit-toy", "1.0", "toy", """
        import lstmkit

        @lstmkit.hookimpl
        def register_cells(register):
            pass
    """)
    reset_registry()  # loads the installed plugin through its entry point
    with pytest.raises(PluginError, match=r"already registered as 'toy'.*LSTMKIT_DISABLE_PLUGINS=toy"):
        get_registry().register(sys.modules[module], "another-name")


def test_plugin_cell_options_errors_are_readable():
    import pydantic

    from lstmkit.specs import CellSpec

    class Options(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        scale: float = 1.0

    class Scaled(lstmkit.cells.RNNTanhCellType):
        name = "scaled"

        def __init__(self, scale=1.0):
            self.scale = scale

    spec = CellSpec("scaled", Scaled, Options)
    with pytest.raises(ValueError, match=r"invalid options for cell 'scaled': unknown option 'scal' \(valid options: scale\)"):
        spec.create({"scal": 2})
    with pytest.raises(ValueError, match=r"invalid options for cell 'scaled': scale: Input should be a valid number"):
        spec.create({"scale": "big"})
    assert spec.create({"scale": 2}).scale == 2.0


def test_proj_size_message_for_a_plugin_cell(fresh):
    fresh()
    with registered_plugin(ToyPlugin(), "toy-plugin"):
        with pytest.raises(ValueError, match=r"^proj_size argument is not supported by the 'toy' cell$"):
            lstmkit.Recurrent("toy", 3, 4, proj_size=2)


# -- specs refuse what the registry could not use (a plugin that passes one is skipped, not lstmkit broken) --
class _Named(CellType):
    name = ""


@dataclasses.dataclass
class _DataclassOptions:
    n: int = 3


@pytest.mark.parametrize("make, message", [
    (lambda: CellSpec("", _Named), "name should be a non-empty string without spaces, got ''"),
    (lambda: CellSpec("my cell", type("C", (CellType,), {"name": "my cell"})), "got 'my cell'"),
    (lambda: TaskSpec(7, object), "name should be a non-empty string without spaces, got 7"),
    (lambda: BackendSpec("auto", ReferenceBackend), "'auto' is reserved"),
    (lambda: BackendSpec("b", None), "factory should be callable, got None"),
    (lambda: BackendSpec("b", ReferenceBackend, None), "is_available should be callable, got None"),
    (lambda: BackendSpec("b", ReferenceBackend, priority="high"), "priority should be a finite number, got 'high'"),
    (lambda: BackendSpec("b", ReferenceBackend, priority=float("nan")), "priority should be a finite number, got nan"),
    (lambda: TaskSpec("t", None), "factory should be callable, got None"),
    # A dataclass broke `lstmkit tasks` (no model_fields) and every Recurrent of the cell (no model_dump).
    (lambda: TaskSpec("t", object, options_model=_DataclassOptions),
     "options_model should be a pydantic model class or None, got _DataclassOptions"),
    (lambda: CellSpec("c", type("C", (CellType,), {"name": "c"}), options_model=dict),
     "options_model should be a pydantic model class or None, got dict"),
    # Declarations that registered and then failed in every module with NumPy's broadcasting errors:
    (lambda: CellSpec("c", type("C", (CellType,), {"name": "c", "num_gates": 0})),
     "CellSpec 'c': num_gates must be a positive int, got 0"),
    (lambda: CellSpec("c", type("C", (CellType,), {"name": "c", "num_gates": "4"})),
     "num_gates must be a positive int, got '4'"),
    (lambda: CellSpec("c", type("C", (CellType,), {"name": "c", "state_names": ()})),
     "state_names must be a non-empty tuple of str, got ()"),
    (lambda: CellSpec("c", type("C", (CellType,), {"name": "c", "state_names": ("c", "h")})),
     "state_names must start with 'h' (the output) and be unique, got ('c', 'h')"),
])
def test_specs_refuse_what_the_registry_cannot_use(make, message):
    with pytest.raises((TypeError, ValueError), match=re.escape(message)):
        make()


def test_a_factory_that_returns_no_backend_is_unavailable_not_a_crash(fresh):
    plugin = types.SimpleNamespace(register_backends=lstmkit.hookimpl(
        lambda register: register(BackendSpec("notone", lambda: "a string", priority=-1))))
    with registered_plugin(plugin, "notone"):
        with pytest.raises(LookupFailed, match=r"backend 'notone' is unavailable: its factory returned 'a string', "
                                               r"not a backend \(it lacks layer_forward, layer_backward, xp\)"), \
                pytest.warns(RuntimeWarning, match="plugin 'notone'.* not a backend"):
            lstmkit.LSTM(2, 3, backend="notone")
        assert "notone" not in available_backends()


def test_registering_an_in_process_plugin_twice_gives_in_process_advice(fresh):
    plugin = types.SimpleNamespace(register_cells=lstmkit.hookimpl(lambda register: None))
    with registered_plugin(plugin, "first"):
        with pytest.raises(PluginError, match="already registered in-process as 'first'") as info:
            get_registry().register(plugin, "second")
    assert "LSTMKIT_DISABLE_PLUGINS" not in str(info.value)  # that advice is for an installed plugin
