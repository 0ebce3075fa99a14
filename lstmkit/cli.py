"""The ``lstmkit`` command line.

Exit codes are published as :class:`ExitCode` (0 ok, 1 run failed, 2 usage,
3 invalid config, 4 plugin or backend unavailable, 130 interrupted).  Plugins
add commands through the ``register_commands(cli)`` hook; the group is built
by :func:`make_cli`.  The commands are a thin layer: the work is done in
:mod:`lstmkit.config` and :mod:`lstmkit.run`, imported when a command runs,
so ``lstmkit --help`` stays fast.
"""
from __future__ import annotations

import json
import sys

import click

from .config.errors import ExitCode, LstmkitError

__all__ = ["ExitCode", "make_cli", "main"]


def _version_text() -> str:
    import numpy
    import scipy

    from . import __version__
    from .commands.plugins import plugin_summary
    from .registry import get_registry

    registry = get_registry()
    ok, reason = registry.availability(registry.specs["backend"]["cython"])
    core = "compiled core loaded" if ok else f"compiled core NOT loaded ({reason})"
    plugins = plugin_summary()  # statuses from every hook: a plugin that failed anywhere is not [ok]
    lines = [f"lstmkit {__version__} ({core})", f"numpy {numpy.__version__}, scipy {scipy.__version__}, Python {sys.version.split()[0]}"]
    if plugins:
        lines.append("plugins: " + ", ".join(plugins))
    return "\n".join(lines)


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


class _UserError(click.ClickException):
    """A :class:`LstmkitError` as Click shows it: its prefix and message on stderr, its exit code."""

    def __init__(self, error: LstmkitError):
        super().__init__(str(error))
        self.exit_code, self.prefix = int(error.exit_code), error.prefix

    def show(self, file=None) -> None:
        click.echo(f"{self.prefix}{self.format_message()}", err=True)


class _Group(click.Group):
    """The ``lstmkit`` group: library errors become messages with their exit code (the library never
    imports Click); Ctrl-C anywhere exits 130 (Click alone would say "Aborted!" and exit 1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            from .config.errors import RunInterrupted

            raise _UserError(RunInterrupted("Interrupted.")) from None
        except LstmkitError as exc:
            raise _UserError(exc) from None


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def make_cli() -> click.Group:
    """Build the command group, with every plugin's commands added."""

    @click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
                  help="Show versions (lstmkit, NumPy, SciPy, compiled core, plugins) and exit.")
    def cli():
        """lstmkit: PyTorch's LSTM, GRU and RNN on NumPy — train and evaluate them from YAML."""

    from .commands.plugins import add_commands as add_plugin_commands

    add_plugin_commands(cli)  # plugins, cells, backends, tasks

    @cli.command()
    def info():
        """Versions, compiled core, BLAS and threads, backends, plugins — paste this into bug reports."""
        from .registry import get_registry

        click.echo(_version_text())
        from ._threads import describe as _describe_threads

        click.echo("\n".join(_describe_threads()))
        registry = get_registry()
        for s in sorted(registry.specs["backend"].values(), key=lambda s: -s.priority):
            ok, reason = registry.availability(s)  # contained: a plugin's check that raises is a reason
            click.echo(f"backend {s.name}: {'available' if ok else 'unavailable: ' + reason}")
        click.echo("cells: " + ", ".join(sorted(registry.specs["cell"])))

    _add_run_commands(cli)

    from .learn.cli import add_commands as _add_learn_commands

    _add_learn_commands(cli)

    from .sweep.cli import add_commands as _add_sweep_commands

    _add_sweep_commands(cli)  # sweep, compare

    from .registry import get_registry

    get_registry().add_commands(cli)
    return cli


# -- run, config, evaluate, predict ---------------------------------------------------------
def _check_overrides(ctx, param, values):
    from .config.loader import parse_override

    for value in values:
        try:
            parse_override(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return values


def _complete_backend(ctx, param, incomplete):
    from .registry import get_registry

    names = ["auto"] + sorted(get_registry().specs["backend"])
    return [n for n in names if n.startswith(incomplete)]


def _complete_cell(ctx, param, incomplete):
    from .registry import get_registry

    return [n for n in sorted(get_registry().specs["cell"]) if n.startswith(incomplete)]


def _complete_task(ctx, param, incomplete):
    from .registry import get_registry

    return [n for n in sorted(get_registry().specs["task"]) if n.startswith(incomplete)]


_SET_HELP = ("Override a config value: KEY=VALUE with a dotted key, the value read as YAML "
             "(e.g. --set training.optimizer.lr=1e-3 --set model.cell=gru). Repeatable.")
_CONFIG_PATH = click.Path(exists=True, dir_okay=False, path_type=str)
_RUN_DIR = click.Path(exists=True, file_okay=False, path_type=str)


def _set_option(function):
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", callback=_check_overrides,
                        help=_SET_HELP)(function)


def _lookup_unavailable(kind: str, name: str):
    from .config.errors import UnavailableError
    from .registry import LookupFailed, get_registry

    try:
        return getattr(get_registry(), f"{kind}_spec")(name)
    except LookupFailed as exc:
        raise UnavailableError(str(exc)) from None


def _write_progress(text: str) -> None:
    """The run's progress bar (run/progress.py) is drawn on stdout, through Click like every other line."""
    click.echo(text, nl=False)


def _add_run_commands(cli: click.Group) -> None:
    @cli.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("config", required=False, type=_CONFIG_PATH)
    @_set_option
    @click.option("--seed", type=int, help="Seed of everything random (overrides the config's seed).")
    @click.option("--backend", metavar="NAME", shell_complete=_complete_backend,
                  help="Compute backend: auto, cython, numpy or a plugin's (overrides runtime.backend).")
    @click.option("-o", "--output", type=click.Path(file_okay=False, path_type=str), metavar="DIR",
                  help="Run folder (default: runs/<name>/<timestamp>). Must be empty or new.")
    @click.option("--overwrite", is_flag=True, help="Replace the run files in a non-empty output folder.")
    @click.option("--resume", type=_RUN_DIR, metavar="RUN_DIR",
                  help="Continue the run in RUN_DIR from checkpoints/last.npz, with its own config "
                       "(only training.epochs/max_steps may be raised with --set).")
    @click.option("--dry-run", is_flag=True, help="Validate, build the model, peek at the data, print the plan; "
                                                   "write nothing.")
    @click.option("--print-config", is_flag=True, help="Print the resolved config (defaults, overrides, "
                                                        "absolute paths, seed) and exit.")
    @click.option("--progress/--no-progress", default=None,
                  help="Progress of the whole run (epochs, steps, ETA, steps/s, running loss): a bar on a "
                       "terminal, a plain line every tenth of the run elsewhere (default: on).")
    @click.option("--seeds", metavar="N,N,...", help="Run the config once per seed (e.g. 0,1,2), each in "
                  "<output>/seed-N, and print the mean ± std of the results (also in <output>/seeds.json).")
    def run(config, overrides, seed, backend, output, overwrite, resume, dry_run, print_config, progress, seeds):
        """Train and evaluate the model described by CONFIG (a YAML file).

        Writes a run folder with the resolved config.yaml, meta.json,
        metrics.jsonl (and metrics.csv), results.json (with the task's naive
        baseline), checkpoints/{last,best}.npz and loss.png.
        The config reference is docs/config.md; `lstmkit config init` writes a
        starter config.

        \b
        Exit codes: 0 ok, 1 run failed (e.g. a non-finite loss), 2 usage,
        3 invalid config, 4 plugin or backend unavailable, 130 interrupted
        (Ctrl-C saves checkpoints/last.npz; continue with --resume RUN_DIR).
        """
        from .run.session import run as run_session

        if config is None and resume is None:
            raise click.UsageError("give a CONFIG file (or --resume RUN_DIR to continue a run)")
        if resume is not None and (output is not None or overwrite):
            raise click.UsageError("--resume continues the run in RUN_DIR: it cannot be combined with -o/--overwrite")
        from .run.progress import RunProgress

        bar = None if progress is False else RunProgress(_write_progress, sys.stdout.isatty(), echo=click.echo)
        if seeds is not None:
            if resume is not None or seed is not None or config is None:
                raise click.UsageError("--seeds runs CONFIG once per seed: it cannot be combined with --seed or "
                                       "--resume (resume one seed's run with --resume OUTPUT/seed-N)")
            from .run.seeds import parse_seeds, run_seeds

            code = run_seeds(config, parse_seeds(seeds), overrides, output=output, backend=backend,
                             overwrite=overwrite, dry_run=dry_run, print_config=print_config, progress=bar,
                             echo=bar.echo if bar else click.echo, argv=["lstmkit"] + sys.argv[1:])
        else:
            code = run_session(config, overrides, seed=seed, backend=backend, output=output, overwrite=overwrite,
                               resume=resume, dry_run=dry_run, print_config=print_config, progress=bar,
                               echo=bar.echo if bar else click.echo, argv=["lstmkit"] + sys.argv[1:])
        if code:
            sys.exit(int(code))

    @cli.group(context_settings={"help_option_names": ["-h", "--help"]})
    def config():
        """Write, show, validate config files; print the JSON Schema."""

    @config.command("init")
    @click.option("--cell", default="lstm", show_default=True, shell_complete=_complete_cell,
                  help="Recurrent cell (lstmkit cells lists them).")
    @click.option("--task", default="sine", show_default=True, shell_complete=_complete_task,
                  help="Task: sine, adding, copy, char_lm, csv, sequence_classification, or a plugin's.")
    @click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), metavar="FILE",
                  help="Write to FILE instead of printing.")
    @click.option("--force", is_flag=True, help="Replace FILE if it exists.")
    def config_init(cell, task, output, force):
        """Write an annotated starter config: every key with its default and meaning."""
        from .config.reference import starter_config

        _lookup_unavailable("cell", cell)
        _lookup_unavailable("task", task)
        text = starter_config(cell, task)
        if output is None:
            click.echo(text, nl=False)
            return
        from pathlib import Path

        from ._atomic import atomic_write_text

        if Path(output).exists() and not force:
            raise LstmkitError(f"{output} exists; add --force to replace it", ExitCode.USAGE)
        from .run.folder import writing

        with writing(output):  # a folder that cannot be made, a full disk: a message naming the file
            atomic_write_text(output, text)
        click.echo(f"wrote {output}; train with: lstmkit run {output}", err=True)

    @config.command("show")
    @click.argument("config_file", metavar="CONFIG", type=_CONFIG_PATH)
    @_set_option
    @click.option("--seed", type=int, help="As for lstmkit run.")
    @click.option("--backend", metavar="NAME", shell_complete=_complete_backend, help="As for lstmkit run.")
    def config_show(config_file, overrides, seed, backend):
        """Print the resolved config: defaults filled in, overrides applied, paths absolute."""
        from .config.loader import load_config

        loaded = load_config(config_file, overrides, seed=seed, backend=backend)
        click.echo(loaded.yaml, nl=False)

    @config.command("validate")
    @click.argument("config_file", metavar="CONFIG", type=_CONFIG_PATH)
    @_set_option
    @click.option("--no-data", is_flag=True, help="Check the config only; do not load the task's data.")
    def config_validate(config_file, overrides, no_data):
        """Check a config: the schema, names, plugin options, data files; exit 0 if it is valid.

        Every problem is reported at once (exit 3), or unknown/unavailable
        cells, backends, tasks or plugins (exit 4).
        """
        from .config.loader import load_config

        loaded = load_config(config_file, overrides)
        cfg = loaded.config
        detail = ""
        if not no_data:
            from .config.checks import run_warnings
            from .config.memory import estimate, format_bytes
            from .run.session import build_model, build_task, seed_generators

            task, data = build_task(loaded)
            model = build_model(loaded, task, seed_generators(cfg.seed)[0])  # refuses what memory cannot hold
            need = estimate(cfg, task, data)
            for warning in run_warnings(loaded, task):
                click.echo(f"warning: {warning}", err=True)
            sizes = "/".join(str(len(data[k])) for k in ("train", "valid", "test"))
            detail = (f"; {sizes} train/valid/test sequences; {model.num_parameters():,} parameters; "
                      f"needs about {format_bytes(need.total)} of memory")
        click.echo(f"{config_file}: ok (task {cfg.task.type}, cell {cfg.model.cell}{detail})")

    @config.command("schema")
    def config_schema():
        """Print the JSON Schema of config files (for editors' YAML language servers)."""
        from .config.schema import json_schema

        _echo_json(json_schema())

    @cli.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("run_dir", type=_RUN_DIR)
    @click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test", show_default=True)
    @click.option("--checkpoint", default="auto", show_default=True, metavar="best|last|auto",
                  type=click.Choice(["auto", "best", "last"]),
                  help="Weights to use; auto: best.npz if there is one, else last.npz.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.option("--save-predictions", metavar="FILE", type=click.Path(dir_okay=False, path_type=str),
                  help="Write every prediction with its target to FILE (.csv, .jsonl or .json).")
    def evaluate(run_dir, split, checkpoint, as_json, save_predictions):
        """Evaluate a trained run on one split of its task: loss and the task's metrics beside the naive
        baseline's; per-class metrics and a confusion matrix for classification, per-column metrics for csv."""
        from .run.evaluate import format_evaluation
        from .run.session import evaluate_run

        result = evaluate_run(run_dir, split, checkpoint, save_predictions=save_predictions)
        if as_json:
            _echo_json(result)
            return
        for line in format_evaluation(result):
            click.echo(line)

    @cli.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("run_dir", type=_RUN_DIR)
    @click.argument("input_file", metavar="INPUT", type=_CONFIG_PATH)
    @click.option("--checkpoint", default="auto", show_default=True,
                  type=click.Choice(["auto", "best", "last"]),
                  help="Weights to use; auto: best.npz if there is one, else last.npz.")
    @click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), metavar="FILE",
                  help="Write the predictions (JSON) to FILE instead of printing them.")
    def predict(run_dir, input_file, checkpoint, output):
        """Predictions of a trained run for the sequences in INPUT (in the task's input format), as JSON."""
        from .run.session import predict_run

        predictions = predict_run(run_dir, input_file, checkpoint)
        text = json.dumps(predictions, indent=2)
        if output is None:
            click.echo(text)
            return
        from ._atomic import atomic_write_text

        from .run.folder import writing

        with writing(output):
            atomic_write_text(output, text + "\n")
        click.echo(f"wrote {output}", err=True)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    # On the command line a warning is one plain line, not a pointer into lstmkit's source.
    return f"lstmkit: {category.__name__}: {message}\n"


def main(argv=None) -> int:
    """Console entry point."""
    import warnings

    from .registry import PluginError

    warnings.formatwarning = _format_warning
    try:
        cli = make_cli()
        return cli.main(args=argv, prog_name="lstmkit", standalone_mode=True) or 0
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return ExitCode.INTERRUPTED
    except PluginError as exc:  # LSTMKIT_STRICT_PLUGINS=1 turns a plugin's failure into this error
        click.echo(f"Error: {exc}", err=True)
        return ExitCode.UNAVAILABLE


if __name__ == "__main__":  # python -m lstmkit.cli
    sys.exit(main())
