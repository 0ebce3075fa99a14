"""Plugins can never break lstmkit or take over a name silently (issue 8: Plugins, Security item 6).

Each failure mode is a plugin installed as a fake distribution (the registry
loads it through entry points, exactly as an installed one) or registered
in-process; the fixtures are shared with ``test_registry.py``.
"""
from __future__ import annotations

import json
import os
import signal
import textwrap
import warnings

import click
import numpy as np
import pytest
from click.testing import CliRunner

import lstmkit
from lstmkit.cli import make_cli
from lstmkit.registry import LookupFailed, PluginError, available_backends, get_backend, get_registry, reset_registry
from lstmkit.specs import BackendSpec
from lstmkit.testing import registered_plugin

from test_registry import fresh, installed, plugin_warnings  # noqa: F401  (fixtures)

BUILTIN_AUTO = available_backends()[0]  # cython where the compiled core is built, else numpy


def cli(*args, code=0):
    result = CliRunner().invoke(make_cli(), list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def load(**kwargs):
    """A fresh registry from the fake installed plugins, every warning recorded."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry = reset_registry()
        registry.collect_all()
    return registry, [str(w.message) for w in record]


BACKEND = """
    import lstmkit
    from lstmkit.backends.reference import ReferenceBackend
    from lstmkit.specs import BackendSpec

    def factory():
        {factory}

    def is_available():
        {available}

    @lstmkit.hookimpl
    def register_backends(register):
        register(BackendSpec("{name}", factory, is_available, priority=1000))
"""


def backend_plugin(installed, name, factory="return ReferenceBackend(name=%r)", available="return True, ''"):
    factory = factory % name if "%r" in factory else factory
    return installed(f"lstmkit-{name}", "1.0", name, BACKEND.format(name=name, factory=factory, available=available))


# -- backends: availability checks and factories run isolated ------------------------------------
def test_availability_check_that_raises_is_a_reason_not_a_traceback(installed):
    backend_plugin(installed, "flaky", available="raise RuntimeError('driver crashed')")
    registry, _ = load()
    with pytest.warns(RuntimeWarning, match=r"lstmkit plugin 'flaky' \(lstmkit-flaky 1.0\) backend 'flaky': "
                                            r"is_available\(\) raised RuntimeError: driver crashed"):
        model = lstmkit.LSTM(3, 4)
    assert model.backend.name == BUILTIN_AUTO
    assert "flaky" not in available_backends()
    with pytest.raises(LookupFailed, match=r"backend 'flaky' is unavailable: is_available\(\) raised RuntimeError: "
                                           r"driver crashed \(plugin 'flaky', lstmkit-flaky 1.0\)"):
        lstmkit.LSTM(3, 4, backend="flaky")
    rows = {r["name"]: r for r in json.loads(cli("backends", "--json").stdout)}
    assert rows["flaky"]["available"] is False and "driver crashed" in rows["flaky"]["reason"]
    assert rows[BUILTIN_AUTO]["default"]
    assert registry.plugins["flaky"].status == "error"


@pytest.mark.parametrize("answer", ["return True", "return None", "return (True, 'a', 'b')"])
def test_availability_check_with_a_wrong_answer(installed, answer):
    backend_plugin(installed, "odd", available=answer)
    load()
    with pytest.warns(RuntimeWarning, match=r"'odd'.*is_available\(\) returned .*not \(bool, reason\)"):
        assert "odd" not in available_backends()


def test_factory_that_fails_falls_back_for_auto_and_names_the_plugin(installed):
    backend_plugin(installed, "native", factory="raise ImportError('libnative.so: cannot open shared object file')")
    registry, _ = load()
    assert available_backends()[0] == "native"  # its cheap check says yes: only building it tells
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = lstmkit.LSTM(3, 4)
    assert model.backend.name == BUILTIN_AUTO
    out, _ = model(np.zeros((2, 1, 3), np.float32))
    assert out.shape == (2, 1, 4)
    messages = [str(w.message) for w in record]
    assert [m for m in messages if "native" in m] == [
        "lstmkit plugin 'native' (lstmkit-native 1.0) backend 'native': its factory raised ImportError: "
        "libnative.so: cannot open shared object file; backend='auto' falls back to the next available backend "
        "— it is skipped; disable it with LSTMKIT_DISABLE_PLUGINS=native"]
    # from now on it is unavailable, with the reason, and never chosen again
    assert "native" not in available_backends() and registry.backend_spec("auto").name == BUILTIN_AUTO
    with pytest.raises(LookupFailed, match=r"^backend 'native' is unavailable: its factory raised ImportError: "
                                           r"libnative.so: cannot open shared object file "
                                           r"\(plugin 'native', lstmkit-native 1.0\)$"):
        lstmkit.LSTM(3, 4, backend="native")
    assert registry.plugins["native"].status == "error"


def test_builtin_backend_whose_factory_fails_falls_back_to_numpy(fresh):
    registry = fresh()

    def broken_core():
        raise ImportError("_core.so: undefined symbol: dgemm_")

    registry.specs["backend"]["cython"] = BackendSpec("cython", broken_core, priority=100)
    with pytest.warns(RuntimeWarning, match=r"^backend 'cython': its factory raised ImportError: _core.so: undefined "
                                            r"symbol: dgemm_; backend='auto' falls back to the next available"):
        assert lstmkit.LSTM(3, 4).backend.name == "numpy"
    with pytest.raises(LookupFailed, match=r"^backend 'cython' is unavailable: its factory raised ImportError"):
        get_backend("cython")
    assert registry.plugins["lstmkit"].status == "ok"  # a reason, not a plugin failure


def test_explicit_backend_whose_factory_fails_is_a_clear_error(installed):
    backend_plugin(installed, "native", factory="raise OSError('no device')")
    load()
    with pytest.warns(RuntimeWarning, match="its factory raised OSError: no device"):
        with pytest.raises(LookupFailed, match=r"^backend 'native' is unavailable: its factory raised OSError: "
                                               r"no device \(plugin 'native', lstmkit-native 1.0\)$") as caught:
            get_backend("native")
    assert isinstance(caught.value.__cause__, OSError)
    assert isinstance(caught.value, ValueError)  # what the modules raise for a bad backend argument


def test_strict_mode_makes_a_failing_factory_an_error(installed, monkeypatch):
    backend_plugin(installed, "native", factory="raise ImportError('libnative.so')")
    load()
    monkeypatch.setenv("LSTMKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"'native' \(lstmkit-native 1.0\) backend 'native': its factory raised"):
        lstmkit.LSTM(3, 4)


def test_cli_backends_builds_available_backends_and_reports_failures(installed):
    backend_plugin(installed, "native", factory="raise ImportError('libnative.so')")
    load()
    with pytest.warns(RuntimeWarning, match="its factory raised"):
        text = cli("backends").output
    line = next(line for line in text.splitlines() if line.startswith("native"))
    assert "(auto)" not in line and "unavailable: its factory raised ImportError: libnative.so" in line
    assert any(line.startswith(f"{BUILTIN_AUTO} (auto)") for line in text.splitlines())
    assert "lstmkit-native 1.0 [error]" in cli("--version").output


def test_auto_warns_once_when_a_plugin_backend_takes_over(installed):
    backend_plugin(installed, "turbo")
    load()
    with pytest.warns(RuntimeWarning, match=rf"backend='auto' runs on 'turbo' from plugin 'turbo' \(lstmkit-turbo 1.0, "
                                            rf"priority 1000\), not the built-in '{BUILTIN_AUTO}'") as record:
        assert lstmkit.LSTM(3, 4).backend.name == "turbo"
        assert lstmkit.GRU(3, 4).backend.name == "turbo"
    assert len([w for w in record if "runs on 'turbo'" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lstmkit.LSTM(3, 4, backend="turbo").backend.name == "turbo"  # asked for by name: silent
        assert lstmkit.LSTM(3, 4, backend=BUILTIN_AUTO).backend.name == BUILTIN_AUTO


# -- SystemExit and KeyboardInterrupt are contained; a real Ctrl-C is not -----------------------------
@pytest.mark.parametrize("statement, shown", [
    ("import sys; sys.exit(3)", "SystemExit (it called sys.exit(3))"),
    ("raise SystemExit('bye')", "SystemExit (it called sys.exit('bye'))"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ("raise GeneratorExit('odd')", "GeneratorExit: odd"),
])
def test_plugin_that_exits_at_import_costs_one_warning(installed, statement, shown):
    installed("lstmkit-quitter", "0.1", "quitter", statement + "\n")
    registry, messages = load()
    assert plugin_warnings_in(messages, "quitter") == [
        f"lstmkit plugin 'quitter' (lstmkit-quitter 0.1) failed to import: {shown} — it is skipped; "
        f"disable it with LSTMKIT_DISABLE_PLUGINS=quitter"]
    assert lstmkit.LSTM(3, 4).backend.name == BUILTIN_AUTO
    assert registry.plugins["quitter"].status == "error"


@pytest.mark.parametrize("hook", ["register_cells", "register_backends", "register_tasks"])
def test_plugin_that_exits_in_a_hook_costs_one_warning(installed, hook):
    installed("lstmkit-quitter", "0.1", "quitter", f"""
        import sys
        import lstmkit

        @lstmkit.hookimpl
        def {hook}(register):
            sys.exit(1)
    """)
    registry, messages = load()
    assert plugin_warnings_in(messages, "quitter") == [
        "lstmkit plugin 'quitter' (lstmkit-quitter 0.1) failed while registering: SystemExit (it called "
        "sys.exit(1)) — it is skipped; disable it with LSTMKIT_DISABLE_PLUGINS=quitter"]
    assert lstmkit.LSTM(3, 4)(np.zeros((1, 1, 3), np.float32))[0].shape == (1, 1, 4)


def test_plugin_that_exits_in_register_commands(fresh):
    fresh()

    class Quitter:
        @lstmkit.hookimpl
        def register_commands(self, cli):
            raise KeyboardInterrupt

    with registered_plugin(Quitter(), "quitter"):
        with pytest.warns(RuntimeWarning, match=r"'quitter' .* failed in register_commands: KeyboardInterrupt"):
            result = CliRunner().invoke(make_cli(), ["cells"])
        assert result.exit_code == 0 and "lstm" in result.output


def test_backend_check_and_factory_that_exit_are_contained(installed):
    backend_plugin(installed, "exits", available="raise KeyboardInterrupt")
    backend_plugin(installed, "exits2", factory="import sys; sys.exit(0)")
    load()
    with pytest.warns(RuntimeWarning) as record:
        assert lstmkit.LSTM(3, 4).backend.name == BUILTIN_AUTO
    text = "\n".join(str(w.message) for w in record)
    assert "is_available() raised KeyboardInterrupt" in text
    assert "its factory raised SystemExit (it called sys.exit(0))" in text


def test_a_real_ctrl_c_while_a_plugin_imports_still_stops(installed):
    if os.name != "posix":
        pytest.skip("needs POSIX signals")
    installed("lstmkit-slow", "0.1", "slow", """
        import os, signal, time
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while this imports
        time.sleep(5)
    """)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        reset_registry()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the watch is gone


def test_a_real_sigterm_while_a_plugin_imports_still_stops(installed):
    # `lstmkit run` turns SIGTERM into KeyboardInterrupt until training starts (a sweep stops its trials
    # so): one arriving while a slow plugin imports must stop the run, not be blamed on the plugin.
    if os.name != "posix":
        pytest.skip("needs POSIX signals")
    installed("lstmkit-slow", "0.1", "slow", """
        import os, signal, time
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's timeout while this imports
        time.sleep(5)
    """)

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            reset_registry()
        assert signal.getsignal(signal.SIGTERM) is handler  # the watch is gone
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_in_process_plugin_that_exits_raises_a_plugin_error(fresh):
    fresh()

    class Quitter:
        @lstmkit.hookimpl
        def register_cells(self, register):
            raise SystemExit(2)

    with pytest.raises(PluginError, match=r"plugin 'quitter' failed while registering: SystemExit"):
        get_registry().register(Quitter(), "quitter")
    assert "quitter" not in get_registry().plugins


def plugin_warnings_in(messages, plugin):
    return [m for m in messages if f"lstmkit plugin {plugin!r}" in m]


# -- commands: built-ins protected, clashes reported like other clashes -------------------------------------
RUN_HIJACK = """
    import click
    import lstmkit

    @lstmkit.hookimpl
    def register_commands(cli):
        @cli.command("{command}")
        def impostor():
            click.echo("hijacked")

        @cli.command("{tag}-extra")
        def extra():
            click.echo("extra")
"""


@pytest.mark.parametrize("command, invoke", [("run", ["run", "--help"]), ("cells", ["cells"]),
                                             ("config", ["config", "--help"])])
def test_plugin_cannot_replace_a_builtin_command(installed, command, invoke):
    installed("lstmkit-evil", "6.6", "evil", RUN_HIJACK.format(command=command, tag="evil"))
    registry, _ = load()
    with pytest.warns(RuntimeWarning, match=rf"lstmkit plugin 'evil' \(lstmkit-evil 6.6\) command '{command}' is "
                                            rf"registered twice: by lstmkit \S+ and by lstmkit-evil 6.6 .*"
                                            rf"disable it with LSTMKIT_DISABLE_PLUGINS=evil"):
        group = make_cli()
    result = CliRunner().invoke(group, invoke)
    assert result.exit_code == 0 and "hijacked" not in result.output
    assert "evil-extra" not in group.commands  # a failing plugin's other commands go too
    assert registry.plugins["evil"].status == "error"
    assert not [p for p in registry.plugins["evil"].provides if p.startswith("command:")]


def test_plugin_cannot_replace_a_builtin_subcommand(fresh):
    fresh()

    class Sneaky:
        @lstmkit.hookimpl
        def register_commands(self, cli):
            @cli.commands["config"].command("validate")
            def validate():
                click.echo("everything is fine")

    with registered_plugin(Sneaky(), "sneaky"):
        with pytest.warns(RuntimeWarning, match="command 'config validate' is registered twice"):
            group = make_cli()
    assert group.commands["config"].commands["validate"].callback.__module__ == "lstmkit.cli"


def test_second_plugin_redefining_a_command_is_blamed_and_the_first_keeps_the_credit(installed):
    installed("lstmkit-first", "1.0", "first", RUN_HIJACK.format(command="hello", tag="first"))
    installed("lstmkit-second", "2.0", "second", RUN_HIJACK.format(command="hello", tag="second"))
    registry, _ = load()
    with pytest.warns(RuntimeWarning, match=r"'second' \(lstmkit-second 2.0\) command 'hello' is registered twice: "
                                            r"by lstmkit-first 1.0 and by lstmkit-second 2.0.*"
                                            r"LSTMKIT_DISABLE_PLUGINS=second"):
        group = make_cli()
    assert "first-extra" in group.commands and "second-extra" not in group.commands
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(group, ["plugins", "--json"]).stdout)}
    assert {"command:hello", "command:first-extra"} <= set(rows["first"]["provides"])
    assert not [p for p in rows["second"]["provides"] if p.startswith("command:")]
    assert rows["second"]["status"] == "error"


def test_command_clash_is_an_error_in_strict_mode(installed, monkeypatch):
    installed("lstmkit-evil", "6.6", "evil", RUN_HIJACK.format(command="run", tag="evil"))
    load()
    monkeypatch.setenv("LSTMKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="command 'run' is registered twice"):
        make_cli()
    from lstmkit.cli import main

    reset_registry()
    assert main(["cells"]) == 4  # the console script reports it, exit code 4, no traceback


# -- statuses from every hook; one entry per distribution -----------------------------------------------------
FAILURES = {
    "clash": """
        import lstmkit
        from lstmkit.cells import LSTMCellType
        from lstmkit.specs import CellSpec

        @lstmkit.hookimpl
        def register_cells(register):
            register(CellSpec("lstm", LSTMCellType))
    """,
    "raises": """
        import lstmkit

        @lstmkit.hookimpl
        def register_tasks(register):
            raise RuntimeError("no data here")
    """,
    "wrong_spec": """
        import lstmkit
        from lstmkit.cells import LSTMCellType
        from lstmkit.specs import CellSpec

        @lstmkit.hookimpl
        def register_backends(register):
            register(CellSpec("lstm2", type("L2", (LSTMCellType,), {"name": "lstm2"})))
    """,
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_version_info_and_plugins_never_show_ok_for_a_failed_plugin(installed, kind):
    installed(f"lstmkit-{kind.replace('_', '-')}", "0.2", kind, FAILURES[kind])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reset_registry()  # nothing collected yet: the commands must collect every kind themselves
        version = cli("--version").output
        reset_registry()
        info = cli("info").output
        reset_registry()
        (row,) = json.loads(cli("plugins", "--json").stdout)
    label = f"lstmkit-{kind.replace('_', '-')} 0.2"
    assert f"{label} [error]" in version and f"{label} [error]" in info and "[ok]" not in version + info
    assert row["status"] == "error" and row["problems"]


def test_one_entry_per_distribution_in_version(installed):
    source = FAILURES["raises"]
    for index in range(3):  # one package, three entry points
        installed("lstmkit-multi", "1.0", f"part{index}", source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reset_registry()
        version = cli("--version").output
    assert version.count("lstmkit-multi") == 1 and "lstmkit-multi 1.0 [error]" in version


# -- clash advice and entry-point names shared by two distributions ------------------------------------------
def test_same_entry_point_name_in_two_distributions(installed):
    twin = """
        import lstmkit
        from lstmkit.cells import GRUCellType
        from lstmkit.specs import CellSpec

        class Cell(GRUCellType):
            name = "layernorm"

        @lstmkit.hookimpl
        def register_cells(register):
            register(CellSpec("layernorm", Cell, description="{who}"))
    """
    installed("lstmkit-layernorm", "1.0", "layernorm", twin.format(who="the real one"))
    installed("lstmkit-layernorm-fork", "0.1", "layernorm", twin.format(who="the fork"))
    registry, messages = load()
    assert set(registry.plugins) == {"lstmkit", "layernorm", "lstmkit-layernorm-fork:layernorm"}
    (message,) = [m for m in messages if "registered twice" in m]
    # the advice disables the fork only: its entry-point name would disable the legitimate plugin too
    assert message.endswith("disable it with LSTMKIT_DISABLE_PLUGINS=lstmkit-layernorm-fork")
    assert registry.cell_spec("layernorm").description == "the real one"


# -- unmarked hook functions, wrong signatures -------------------------------------------------------------
def test_unmarked_hook_function_is_a_warning(installed):
    installed("lstmkit-forgetful", "0.1", "forgetful", """
        from lstmkit.specs import CellSpec

        def register_cells(register):  # no @lstmkit.hookimpl
            raise AssertionError("never called")
    """)
    registry, messages = load()
    assert plugin_warnings_in(messages, "forgetful") == [
        "lstmkit plugin 'forgetful' (lstmkit-forgetful 0.1): register_cells() is not marked with "
        "@lstmkit.hookimpl, so it is ignored; decorate it to use it"]
    assert registry.plugins["forgetful"].notes
    result = cli("plugins", "--check", code=4)
    assert "warning: register_cells() is not marked" in result.output


def test_registered_plugin_with_a_hook_missing_its_argument_is_a_clear_error(fresh):
    fresh()

    class NoArgument:
        @lstmkit.hookimpl
        def register_cells(self):
            pass

    with pytest.raises(PluginError, match=r"declares a hook wrongly: register_cells\(\) must take the spec's "
                                          r"arguments: register_cells\(register\)"):
        with registered_plugin(NoArgument(), "no-argument"):
            pass
    assert "no-argument" not in get_registry().plugins


# -- lstmkit plugins --check, indentation ---------------------------------------------------------------------
def test_plugins_check_exit_code(installed, fresh):
    installed("lstmkit-good", "1.0", "good", "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reset_registry()
        assert "every plugin loads and registers cleanly" in cli("plugins", "--check").output
    installed("lstmkit-raises", "0.2", "raises", FAILURES["raises"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reset_registry()
        result = cli("plugins", "--check", code=4)
    assert "1 plugin(s) with problems: raises (lstmkit-raises 0.2)" in result.output


def test_multi_line_errors_are_indented(fresh):
    registry = fresh()
    info = registry.plugins["lstmkit"]
    from lstmkit.registry import PluginInfo

    broken = PluginInfo("broken", "lstmkit-broken", "1.0", status="error",
                        problems=["first line\nsecond line\nthird line"])
    registry.plugins["broken"] = broken
    lines = cli("plugins").output.splitlines()
    at = lines.index("  error: first line")
    assert lines[at + 1:at + 3] == ["         second line", "         third line"]
    assert info.status == "ok"


def test_cells_columns_fit_long_names(fresh):
    fresh()
    from lstmkit.cells import GRUCellType
    from lstmkit.specs import CellSpec

    class Long(GRUCellType):
        name = "a_cell_with_a_really_long_name"

    class Plugin:
        @lstmkit.hookimpl
        def register_cells(self, register):
            register(CellSpec(Long.name, Long, description="long"))

    with registered_plugin(Plugin(), "a-plugin-with-a-long-distribution-name"):
        lines = cli("cells").output.splitlines()
    assert lines[0].split() == ["name", "gates", "states", "provider", "description"]
    for header in ("gates", "states", "provider", "description"):  # every row's column starts under its header
        column = lines[0].index(header)
        assert all(line[column - 2:column] == "  " and line[column] != " " for line in lines[1:]), lines


# -- plugins.require notices registration failures --------------------------------------------------------------
def test_problems_for(installed):
    installed("lstmkit-raises", "0.2", "raises", FAILURES["raises"])
    installed("lstmkit-good", "1.0", "good", "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry = reset_registry()  # nothing collected: problems_for collects every kind itself
        assert registry.problems_for("lstmkit_raises") == ["failed while registering: RuntimeError: no data here"]
        assert registry.problems_for("raises") == registry.problems_for("lstmkit-raises")
        assert registry.problems_for("good") == []
    with pytest.raises(LookupFailed, match=r"no lstmkit plugin named 'god'; did you mean 'good'\?"):
        registry.problems_for("god")


def test_config_require_notices_a_clash(installed, tmp_path):
    legit = """
        import lstmkit
        from lstmkit.cells import GRUCellType
        from lstmkit.specs import CellSpec

        class Cell(GRUCellType):
            name = "fancy"

        @lstmkit.hookimpl
        def register_cells(register):
            register(CellSpec("fancy", Cell, description="{who}"))
    """
    installed("aaa-impostor", "6.6", "impostor", legit.format(who="impostor"))  # sorts first: keeps the name
    installed("lstmkit-fancy", "1.0", "fancy", legit.format(who="legitimate"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reset_registry()
        config = tmp_path / "c.yaml"
        config.write_text(textwrap.dedent("""
            model: {cell: fancy, hidden_size: 4}
            task: {type: sine}
            plugins: {require: [lstmkit-fancy]}
        """))
        result = CliRunner().invoke(make_cli(), ["config", "validate", "--no-data", str(config)])
    assert result.exit_code == 4, result.output
    assert "required plugin 'lstmkit-fancy'" in result.output and "registered twice" in result.output


def test_config_naming_a_backend_whose_factory_fails_is_refused_at_validation(installed, tmp_path):
    backend_plugin(installed, "native", factory="raise ImportError('libnative.so')")
    load()
    config = tmp_path / "c.yaml"
    config.write_text("task: {type: sine}\nruntime: {backend: native}\n")
    with pytest.warns(RuntimeWarning, match="its factory raised ImportError"):
        result = CliRunner().invoke(make_cli(), ["config", "validate", "--no-data", str(config)])
    assert result.exit_code == 4, result.output
    assert ("runtime.backend: backend 'native' is unavailable: its factory raised ImportError: libnative.so "
            "(plugin 'native', lstmkit-native 1.0)") in result.output


def test_cell_constructor_that_exits_is_an_error_not_an_exit(fresh):
    fresh()
    from lstmkit.cells import RNNTanhCellType
    from lstmkit.specs import CellSpec

    class Exiting(RNNTanhCellType):
        name = "exiting"

        def __init__(self):
            raise SystemExit(1)

    class Failing(RNNTanhCellType):
        name = "failing"

        def __init__(self):
            raise ValueError("bad option")

    class Plugin:
        @lstmkit.hookimpl
        def register_cells(self, register):
            register(CellSpec("exiting", Exiting))
            register(CellSpec("failing", Failing))

    with registered_plugin(Plugin(), "cells-plugin"):
        with pytest.raises(RuntimeError, match=r"^cell 'exiting': its constructor raised SystemExit \(it called "
                                               r"sys.exit\(1\)\)$"):
            lstmkit.Recurrent("exiting", 3, 4)
        with pytest.raises(ValueError, match="^bad option$"):  # ordinary errors pass through unchanged
            lstmkit.Recurrent("failing", 3, 4)



HALF_BROKEN = """
    import lstmkit
    from lstmkit.cells import LSTMCellType
    from lstmkit.specs import CellSpec, TaskSpec
    from lstmkit.tasks.sine import SineTask

    @lstmkit.hookimpl
    def register_cells(register):
        register(CellSpec("{cell}", type("C", (LSTMCellType,), {{"name": "{cell}"}})))

    @lstmkit.hookimpl
    def register_tasks(register):
        register(TaskSpec("{task}", SineTask))
"""


@pytest.mark.parametrize("command", ["tasks", "cells"])
def test_listings_never_show_what_a_failed_plugin_registered(installed, command):
    # Each plugin has one hook that works and one that clashes with a built-in, so each is
    # skipped: the listings must not offer what it registered before failing (a config naming
    # it is refused as unknown), whichever kind was looked up first.
    installed("lstmkit-half-cell", "1.0", "half_cell", HALF_BROKEN.format(cell="half_cell", task="sine"))
    installed("lstmkit-half-task", "1.0", "half_task", HALF_BROKEN.format(cell="lstm", task="half_task"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reset_registry()  # nothing collected yet
        rows = json.loads(cli(command, "--json").stdout)
    assert not [row for row in rows if row["name"].startswith("half") or "half" in row["provider"]]
    assert {get_registry().plugins[name].status for name in ("half_cell", "half_task")} == {"error"}


def test_a_plugin_skipped_for_a_clash_adds_no_command(installed):
    # Its cell hook clashes with the built-in LSTM, so the plugin is skipped: its command must not
    # run either, although no cell was looked up before the CLI was built.
    installed("lstmkit-clashcmd", "1.0", "clashcmd", """
        import click
        import lstmkit
        from lstmkit.cells import LSTMCellType
        from lstmkit.specs import CellSpec

        @lstmkit.hookimpl
        def register_cells(register):
            register(CellSpec("lstm", LSTMCellType))

        @lstmkit.hookimpl
        def register_commands(cli):
            @cli.command()
            def clashcmd_hello():
                click.echo("hello from a skipped plugin")
    """)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reset_registry()
        result = CliRunner().invoke(make_cli(), ["clashcmd-hello"])
        (row,) = json.loads(cli("plugins", "--json").stdout)
    assert result.exit_code != 0 and "hello from a skipped plugin" not in result.output
    assert row["status"] == "error" and row["provides"] == []
