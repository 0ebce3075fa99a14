"""``lstmkit sweep`` and ``lstmkit compare`` (Click); the work is in :mod:`.driver` and :mod:`.report`."""
from __future__ import annotations

import sys

import click

__all__ = ["add_commands"]


def add_commands(cli: click.Group) -> None:
    @cli.command()
    @click.argument("sweep_file", required=False, type=click.Path(dir_okay=False))
    @click.option("-o", "--output", type=click.Path(file_okay=False), help="The sweep folder (default: "
                  "runs/<name>/<timestamp>, or output: in the sweep file).")
    @click.option("--overwrite", is_flag=True, help="Replace the sweep in a non-empty folder (only the sweep's "
                  "own files and folders are removed).")
    @click.option("--resume", "resume", type=click.Path(file_okay=False, exists=True), metavar="SWEEP_DIR",
                  help="Continue a sweep: run again only the trials that did not finish.")
    @click.option("--dry-run", is_flag=True, help="Validate the sweep file and list the trials; write nothing.")
    @click.option("--address", metavar="ADDRESS", help="Run the trials on the Ray cluster at ADDRESS "
                  "(e.g. 10.0.0.5:6379; needs pip install \"lstmkit[ray]\").")
    @click.option("--parallel", type=click.IntRange(min=1), help="Trials at once (default: one per usable CPU; "
                  "on Ray: the cluster's CPUs / resources.cpus).")
    @click.option("--storage", type=click.Path(file_okay=False), help="With --address: a folder every node can "
                  "write, where the trials' run folders go (default: shipped back to the sweep folder).")
    def sweep(sweep_file, output, overwrite, resume, dry_run, address, parallel, storage):
        """Run a config many times (a search over dotted config keys, several seeds); see docs/sweeps.md."""
        from .driver import run_sweep

        code = run_sweep(sweep_file, output=output, overwrite=overwrite, resume=resume, dry_run=dry_run,
                         address=address, parallel=parallel, storage=storage, echo=click.echo, argv=sys.argv)
        sys.exit(int(code))

    @cli.command()
    @click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
    @click.option("--plot", type=click.Path(dir_okay=False), help="Overlay the runs' curves of the metric in "
                  "this image (png, pdf, svg).")
    @click.option("--metric", help="The curve --plot draws (default: the monitored metric).")
    def compare(runs, plot, metric):
        """Runs side by side: RUN_DIR... or one SWEEP_DIR; the config keys that differ and the final metrics."""
        from .report import compare_runs

        sys.exit(int(compare_runs(list(runs), plot=plot, metric=metric, echo=click.echo)))
