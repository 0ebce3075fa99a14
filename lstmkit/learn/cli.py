"""The learners' commands: ``lstmkit shapes``, ``lstmkit trace``, ``lstmkit sample``.

Registered by :func:`add_commands` from ``lstmkit.cli.make_cli``; the work is
done in :mod:`lstmkit.learn.shapes`, :mod:`~lstmkit.learn.trace` and
:mod:`~lstmkit.learn.sample`, imported when a command runs.  Errors are
:class:`~lstmkit.config.errors.LstmkitError` with an :class:`ExitCode`.
"""
from __future__ import annotations

import json
import sys

import click

from ..config.errors import ExitCode, LstmkitError, UnavailableError

_HELP = {"help_option_names": ["-h", "--help"]}


def _cell_choices(ctx, param, incomplete):
    from ..registry import get_registry

    return [n for n in sorted(get_registry().specs["cell"]) if n.startswith(incomplete)]


def _check_cell(name: str) -> None:
    from ..registry import LookupFailed, get_registry

    try:
        get_registry().cell_spec(name)
    except LookupFailed as exc:
        raise UnavailableError(str(exc)) from None


def add_commands(cli: click.Group) -> None:
    """Add ``shapes``, ``trace`` and ``sample`` to the ``lstmkit`` group."""

    @cli.command(context_settings=_HELP)
    @click.option("--cell", default="lstm", show_default=True, shell_complete=_cell_choices,
                  help="Any registered cell: lstm, gru, rnn_tanh, rnn_relu or a plugin's (lstmkit cells).")
    @click.option("--input-size", type=int, default=10, show_default=True)
    @click.option("--hidden-size", type=int, default=20, show_default=True)
    @click.option("--num-layers", type=int, default=1, show_default=True)
    @click.option("--bidirectional", is_flag=True)
    @click.option("--batch-first", is_flag=True)
    @click.option("--proj-size", type=int, default=0, show_default=True, help="LSTM only.")
    @click.option("--no-bias", is_flag=True, help="bias=False.")
    @click.option("--batch", type=int, default=3, show_default=True, help="Batch size of the example input.")
    @click.option("--seq-len", type=int, default=5, show_default=True, help="Time steps of the example input.")
    @click.option("--unbatched", is_flag=True, help="An unbatched (seq_len, input_size) input.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def shapes(cell, input_size, hidden_size, num_layers, bidirectional, batch_first, proj_size, no_bias, batch,
               seq_len, unbatched, as_json):
        """Every tensor of a recurrent module — each parameter, the input, h_0/c_0, out, h_n/c_n — with its
        shape and what each dimension means, measured on a real run of the module.

        \b
        Example (the article's): lstmkit shapes --input-size 10 --hidden-size 20 --num-layers 3 --bidirectional
        """
        from .shapes import describe_shapes

        _check_cell(cell)
        try:
            report = describe_shapes(cell, input_size, hidden_size, num_layers, bidirectional=bidirectional,
                                     batch_first=batch_first, proj_size=proj_size, bias=not no_bias, batch=batch,
                                     seq_len=seq_len, unbatched=unbatched)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise LstmkitError(str(exc), ExitCode.USAGE) from None
        except MemoryError as exc:  # NumPy refuses an allocation that cannot succeed at once
            raise LstmkitError(f"the module or its example input do not fit in memory with input_size {input_size}, "
                               f"hidden_size {hidden_size}, num_layers {num_layers}, batch {batch}, seq_len "
                               f"{seq_len}: {exc}", ExitCode.USAGE) from None
        click.echo(json.dumps(report.to_json(), indent=2) if as_json else str(report))

    @cli.command(context_settings=_HELP)
    @click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
    @click.option("--prime", default="", help="Text the model reads first (default: a newline, if the "
                                              "vocabulary has one).")
    @click.option("--length", type=int, default=200, show_default=True, help="Characters to generate.")
    @click.option("--temperature", type=float, default=1.0, show_default=True,
                  help="> 0: below 1 safer, above 1 wilder.")
    @click.option("--greedy", is_flag=True, help="Always the most likely next character (no randomness).")
    @click.option("--seed", type=int, help="Seed of the draw (default: different every time).")
    @click.option("--checkpoint", default="auto", show_default=True, type=click.Choice(["auto", "best", "last"]),
                  help="Weights to use; auto: best.npz if there is one, else last.npz.")
    def sample(run_dir, prime, length, temperature, greedy, seed, checkpoint):
        """Generate text from a trained char_lm run: PRIME, then LENGTH sampled characters.

        \b
        Example: lstmkit sample runs/char_lm/<timestamp> --prime "The " --length 300 --temperature 0.8
        """
        from .sample import sample_run

        click.echo(sample_run(run_dir, prime, length, temperature, greedy=greedy, seed=seed, checkpoint=checkpoint))

    @cli.command(context_settings=_HELP)
    @click.argument("source", metavar="RUN_DIR_OR_CONFIG", type=click.Path(exists=True, path_type=str))
    @click.option("--input", "input_file", type=click.Path(exists=True, dir_okay=False, path_type=str),
                  metavar="FILE", help="Trace the first sequence of FILE (the task's lstmkit predict format) "
                                       "instead of one of the task's own.")
    @click.option("--split", type=click.Choice(["train", "valid", "test"]), default="valid", show_default=True,
                  help="Split the sequence comes from (without --input).")
    @click.option("--sequence", "index", type=int, default=0, show_default=True, help="Which sequence of the split.")
    @click.option("--checkpoint", default="auto", show_default=True, type=click.Choice(["auto", "best", "last"]),
                  help="Weights of a run folder; auto: best.npz if there is one, else last.npz.")
    @click.option("--gradient-of", type=click.Choice(["loss", "last"]), default="loss", show_default=True,
                  help="Gradient norms of the task's loss on the sequence, or of the last step's output alone "
                       "(shows how far back it reaches: vanishing gradients).")
    @click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), default="trace.png",
                  show_default=True, metavar="FILE", help="Where to write the picture: PNG, or PDF, SVG, ... "
                                                               "as its extension says.")
    def trace(source, input_file, split, index, checkpoint, gradient_of, output):
        """Draw what the model does on one sequence: its gates, c and h at every time step (heatmaps), and
        the gradient norm of each layer over time for one training step.

        RUN_DIR_OR_CONFIG is a run folder (trained weights) or a config file
        (the freshly initialised model the run would start from).
        """
        from .trace import plot_trace, save_figure, trace_run

        result = trace_run(source, input_file, checkpoint=checkpoint, split=split, index=index,
                           gradient_of=gradient_of)
        try:
            figure = plot_trace(result)
        except ImportError as exc:
            raise UnavailableError(str(exc)) from None
        try:
            save_figure(figure, output)
        except ValueError as exc:
            raise LstmkitError(str(exc), ExitCode.USAGE) from None
        except OSError as exc:
            raise LstmkitError(f"cannot write {output}: {exc}", ExitCode.RUN_FAILED) from None
        finally:  # called in-process where pyplot is loaded, the figure joined pyplot: let it go
            if "matplotlib.pyplot" in sys.modules:
                sys.modules["matplotlib.pyplot"].close(figure)
        click.echo(result.summary())
        click.echo(f"wrote {output}")
