"""What ``lstmkit run`` does, below the Click layer: one session, from the config to the summary.

The parts live beside it: :mod:`.folder` (the run folder, its names, overwrite rules, the lock),
:mod:`.build` (task, model, generators, threads), :mod:`.resume` (``--resume`` and checkpoint
reading), :mod:`.meta` (``meta.json``), :mod:`.report` (plan, ``results.json``, ``loss.png``),
:mod:`.checkpoint` (the ``.npz`` format and the checkpoint policy), :mod:`.evaluate`
(``evaluate``/``predict``).  Names are re-exported here for compatibility.

Order of writes, so that ``kill -9`` at any moment loses nothing: the folder is locked, orphaned
temporary files are removed, ``meta.json`` (status ``running``: the folder is now a run folder) and
``config.yaml`` are written; during
training ``metrics.jsonl`` is flushed before every ``last.npz`` that covers it; at the end come
``results.json``, ``metrics.jsonl``, ``loss.png``, then ``meta.json`` with the final status.  A session
found ``running`` by a later one was killed and is marked so.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Callable, ContextManager, Sequence

from ..config.errors import ExitCode, LstmkitError, RunFailed, RunInterrupted
from .._atomic import atomic_write_text
from .build import build_model, build_task, seed_generators, thread_limit, warnings_to
from .baseline import baseline_metrics, baseline_text
from .checkpoint import Checkpointer
from .evaluate import evaluate_run, open_run, predict_run
from .folder import (RunFolder, WriteFailed, choose_run_dir, default_run_dir, is_run_folder, make_dir,
                     non_empty_output, overwrite_refusal, writing)
from .lock import RunLock
from .meta import finish_meta, mark_killed, read_meta, start_meta, write_meta
from .metrics import MetricsLog
from .report import (config_text, plot_losses, position_text, print_plan, progress_text, results, run_test,
                     write_results)
from .tensorboard import TensorBoardLog, require_tensorboard
from .resume import checkpoint_config_changes, load_for_resume, read_checkpoint, read_weights

__all__ = ["RunFolder", "build_task", "build_model", "seed_generators", "run", "evaluate_run", "predict_run",
           "open_run", "thread_limit", "plot_losses", "default_run_dir", "is_run_folder", "load_for_resume",
           "checkpoint_config_changes", "read_checkpoint", "read_weights", "write_meta", "WriteFailed"]

Echo = Callable[[str], None]
_FINISHED = ("completed", "stopped_early")


def run(
    config_path: str | None,
    overrides: Sequence[str] = (),
    *,
    seed: int | None = None,
    backend: str | None = None,
    output: str | None = None,
    overwrite: bool = False,
    resume: str | None = None,
    dry_run: bool = False,
    print_config: bool = False,
    progress: Callable[[int, str], ContextManager] | None = None,
    echo: Echo = print,
    argv: Sequence[str] | None = None,
    trainer_class=None,
) -> int:
    """``lstmkit run``; returns the exit code (errors raise :class:`LstmkitError` subclasses).

    ``progress(length, label)``: a progress display for each epoch (see :class:`~lstmkit.run.trainer.Trainer`);
    :class:`~lstmkit.run.progress.RunProgress` is one for the whole run (pass its ``echo`` too).
    """
    from ..config.loader import load_config

    started = time.monotonic()
    with _sigterm_as_interrupt():
        if resume is not None:  # the lock first: the checkpoint is read and the folder written by one process
            folder = RunFolder(Path(resume).resolve())
            reading_only = dry_run or print_config  # they write nothing, so they neither lock nor tidy up
            with contextlib.nullcontext() if reading_only else _locked(folder, argv, echo):
                loaded, ckpt = load_for_resume(folder.path, config_path, overrides, seed, backend)
                if print_config:
                    echo(loaded.yaml.rstrip("\n"))
                    return ExitCode.OK
                return _session(loaded, contextlib.nullcontext(folder), ckpt, started, dry_run, progress, echo,
                                argv, trainer_class)
        loaded = load_config(config_path, overrides, seed=seed, backend=backend, output_dir=output)
        if print_config:
            echo(loaded.yaml.rstrip("\n"))
            return ExitCode.OK
        if not dry_run:
            choose_run_dir(loaded, overwrite)  # refuse early, before the data is loaded
        return _session(loaded, _new_folder(loaded, overwrite, argv, echo), None, started, dry_run, progress, echo,
                        argv, trainer_class, overwrite)


@contextlib.contextmanager
def _new_folder(loaded, overwrite: bool, argv, echo: Echo):
    """The folder of a new run: created, locked, checked again under the lock, cleared for --overwrite."""
    if loaded.config.outputs.dir is None:  # a fresh runs/<name>/<timestamp>, made atomically
        folder = RunFolder(default_run_dir(loaded.config.name, create=True))
    else:
        folder = RunFolder(choose_run_dir(loaded, overwrite))
        make_dir(folder.path)
    with _locked(folder, argv, echo):
        if loaded.config.outputs.dir is not None:
            choose_run_dir(loaded, overwrite)  # again, holding the lock: another run may have finished here
        if overwrite:
            folder.clear()
        yield folder


@contextlib.contextmanager
def _locked(folder: RunFolder, argv, echo: Echo):
    """Hold the folder's lock; temporary files of a killed writer are removed (nobody else can own them)."""
    lock = RunLock(folder, list(argv) if argv is not None else None)
    with lock:
        if lock.took_over:
            echo(f"note: {folder.lock} was left by process {lock.took_over.get('pid')}, which no longer holds it "
                 f"(it was killed); taken over")
        removed = folder.remove_orphans()
        if removed:
            echo(f"note: removed {len(removed)} temporary file(s) left by a killed session: "
                 + ", ".join(p.name for p in removed))
        meta = read_meta(folder)
        if mark_killed(meta):  # holding the lock: a session still "running" is dead (kill -9, a power cut)
            write_meta(folder, meta)
            echo(f"note: the last session in {folder.path} was killed before it ended; marked \"killed\" in "
                 f"{folder.meta.name}")
        yield lock


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Outside the training loop (which defers it to the end of a step), SIGTERM is Ctrl-C."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _session(loaded, open_folder: ContextManager[RunFolder], ckpt, started: float, dry_run: bool, progress,
             echo: Echo, argv, trainer_class, overwrite: bool = False) -> int:
    """Build the task and model (config and data errors come before any folder is made), then run in the
    folder ``open_folder`` gives (locked while the session writes)."""
    from .trainer import Trainer

    cfg = loaded.config
    if cfg.outputs.tensorboard:
        require_tensorboard()  # before any data is read or folder made
    with thread_limit(cfg.runtime.threads), warnings_to(echo):
        task, data = build_task(loaded)
        model_rng, shuffle = seed_generators(cfg.seed)
        model = build_model(loaded, task, model_rng)
        cls = trainer_class or Trainer
        if dry_run:
            print_plan(echo, loaded, task, data, model, cls(model, task, data, cfg, shuffle=shuffle,
                                                           echo=lambda _: None))
            if ckpt is None:
                _warn_refusal(echo, cfg.outputs.dir, overwrite)
            echo("dry run: nothing was written")
            return ExitCode.OK

        with open_folder as folder:
            return _in_folder(loaded, folder, ckpt, task, data, model, shuffle, cls, started, progress, echo, argv)


def _in_folder(loaded, folder: RunFolder, ckpt, task, data, model, shuffle, cls, started: float, progress,
               echo: Echo, argv) -> int:
    cfg = loaded.config
    text = config_text(loaded)
    checkpointer = Checkpointer(folder, cfg.outputs.checkpoint, text)
    metrics = MetricsLog(folder.metrics)
    trainer = cls(model, task, data, cfg, shuffle=shuffle, metrics=metrics, checkpoint=checkpointer,
                  echo=echo, progress=progress)
    refusal = folder.linked_checkpoints()
    if refusal:
        raise LstmkitError(f"cannot write the run: {refusal}; remove it, or choose another folder",
                           ExitCode.USAGE)
    if ckpt is not None:
        _restore(trainer, ckpt, folder)
        if trainer.done() and _finished(folder, trainer):
            _already_finished(echo, trainer, folder, cfg)
            return ExitCode.OK
        trainer.metrics = metrics = MetricsLog.resume(folder.metrics, trainer.state.step)
        echo(f"resuming {folder.path} from {position_text(trainer.state, trainer.steps_per_epoch)}")
    meta = start_meta(folder, loaded, argv, ckpt is not None)
    write_meta(folder, meta)  # first: from now on the folder is a run folder (--overwrite may clear it)
    with writing(folder.config):
        atomic_write_text(folder.config, text)
    if ckpt is None:
        echo(f"run folder: {folder.path}")
    echo(f"task: {task.describe()}")
    echo(f"model: {cfg.model.cell} x{cfg.model.num_layers}, hidden {cfg.model.hidden_size}, "
         f"{model.num_parameters():,} parameters; backend {meta['backend']['used']}, {cfg.runtime.dtype}"
         f"; seed {cfg.seed}{' (random)' if loaded.seed_was_random else ''}")
    from ..config.checks import run_warnings

    for warning in run_warnings(loaded, task):  # results.json records them too (report.results)
        echo(f"warning: {warning}")
    baseline = baseline_metrics(task, trainer.data)
    line = baseline_text(baseline)
    if line:
        echo(line)
    if ckpt is not None:
        checkpointer.resumed(trainer)
    board = TensorBoardLog(folder, trainer.state.step if ckpt is not None else None) if cfg.outputs.tensorboard \
        else None
    if board is not None:
        trainer.metrics.listeners.append(board)
    try:
        return _train(trainer, folder, data, meta, checkpointer, started, echo, baseline)
    finally:
        if board is not None:
            board.close()


def _restore(trainer, ckpt, folder: RunFolder) -> None:
    """Load the checkpoint into the trainer; anything that does not fit is refused, nothing is written."""
    try:
        trainer.load_state_dict(ckpt)
    except Exception as exc:  # the checkpoint is outside input: whatever it holds, a message
        raise LstmkitError(f"{folder.last} does not fit the run's config {folder.config}: {exc}\nTo continue, "
                           f"copy an older snapshot over it (e.g. {folder.checkpoints}/epoch-NNNN.npz, if "
                           f"outputs.checkpoint.keep_last kept one), or start the run again: lstmkit run "
                           f"{folder.config} -o {folder.path} --overwrite", ExitCode.RUN_FAILED) from None


def _finished(folder: RunFolder, trainer) -> bool:
    """The session that reached the end also wrote its results (it was not killed before)."""
    import json

    try:
        done = json.loads(folder.results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(done, dict) and done.get("status") in _FINISHED and done.get("step") == trainer.state.step
            and read_meta(folder).get("status") in _FINISHED)


def _already_finished(echo: Echo, trainer, folder: RunFolder, cfg) -> None:
    s, t = trainer.state, cfg.training
    why = ("it stopped early" if s.stopped_early else
           f"{s.epoch} of training.epochs={t.epochs} epoch(s) done" if t.epochs is not None
           and s.epoch >= t.epochs else f"{s.step} of training.max_steps={t.max_steps} step(s) done")
    longer = ("" if s.stopped_early else
              f" To train it longer: lstmkit run --resume {folder.path} --set training.epochs=N "
              f"(or training.max_steps=N) larger than now.")
    echo(f"the run in {folder.path} has already finished ({why}); nothing was done.{longer}")


def _warn_refusal(echo: Echo, out, overwrite: bool) -> None:
    """``--dry-run``: say if the real run would be refused because of its output folder."""
    if out is None:
        return
    path = Path(out)
    why = None
    if path.exists() and not path.is_dir():
        why = f"output folder {out} is a file"
    elif not overwrite:
        why = non_empty_output(path)
    elif non_empty_output(path) is not None:
        why = overwrite_refusal(path)
    if why:
        echo("warning: the real run will be refused: " + why.replace("\n", "\n  "))


def _train(trainer, folder: RunFolder, data, meta: dict, checkpointer, started: float, echo: Echo,
           baseline: dict | None = None) -> int:
    from .trainer import NonFiniteLoss, TrainingInterrupted

    cfg = trainer.config
    status, message, code, failed_at = "completed", None, ExitCode.OK, None
    try:
        status = "stopped_early" if trainer.state.stopped_early else "completed"
        if not trainer.done():  # done already: a session killed after its last checkpoint; finish its reports
            status = trainer.fit()
    except TrainingInterrupted as exc:
        status, code = "interrupted", ExitCode.INTERRUPTED
        if exc.consistent:
            checkpointer("last", trainer)
            message = f"interrupted at step {trainer.state.step}; {folder.last} saved"
        else:
            message = (f"interrupted in the middle of an update at step {trainer.state.step + 1}; the state "
                       f"was not saved (the last checkpoint is kept)")
    except NonFiniteLoss as exc:
        status, code = "failed", ExitCode.RUN_FAILED
        failed_at = {"step": exc.step, "epoch": exc.epoch, "batch": exc.batch}
        from .resume import checkpoint_step

        kept = (f"the last good checkpoint {folder.last} (step {checkpoint_step(folder.last)}) is kept"
                if folder.last.is_file() else "no checkpoint had been written yet")
        t = cfg.training
        clip = ("set training.grad_clip (e.g. 1.0)" if t.grad_clip is None
                else f"lower training.grad_clip (now {t.grad_clip:g})")
        message = (f"{exc}; the run is stopped after step {trainer.state.step} (the last completed step), "
                   f"{kept}. Lower training.optimizer.lr (now {t.optimizer.lr:g}) or {clip}")
    except BaseException as exc:  # disk full, a bug: record it (as far as the disk allows), then let it propagate
        if isinstance(exc, Exception):
            with contextlib.suppress(Exception):
                write_results(folder, results(trainer, folder, "failed", f"{type(exc).__name__}: {exc}", started))
                finish_meta(folder, meta, "failed", trainer.state.step)
        raise
    record = results(trainer, folder, status, message, started)
    record["baseline"] = baseline  # the naive predictor's metrics on valid/test (see run/baseline.py)
    if failed_at is not None:
        record["failed_at"] = failed_at
    if status in _FINISHED:
        record["test"], record["test_checkpoint"] = run_test(trainer, folder, data, echo)
    trainer.metrics.flush()
    write_results(folder, record)
    note = plot_losses(trainer.metrics.records, folder.plot, title=f"{cfg.name}: {cfg.task.type}",
                       monitor=trainer.monitor, best=record.get("best"), baseline=baseline)
    finish_meta(folder, meta, status, trainer.state.step)
    if note:
        echo(note)
    if code == ExitCode.INTERRUPTED:
        raise RunInterrupted(f"{message}. Continue with: lstmkit run --resume {folder.path}")
    if code == ExitCode.RUN_FAILED:
        raise RunFailed(message)
    best = record.get("best") or {}
    summary = f"{status.replace('_', ' ')} after {progress_text(trainer.state, trainer.steps_per_epoch)}"
    if best.get("value") is not None:
        summary += f"; best {best['metric']} {best['value']:.6g} at epoch {best['epoch']}"
    if record.get("test"):
        naive = (baseline or {}).get("test", {})
        summary += "; test " + ", ".join(f"{k} {v:.5g}" + (f" (baseline {naive[k]:.5g})" if k in naive else "")
                                         for k, v in record["test"].items() if isinstance(v, float))
    echo(summary)
    echo(f"results: {folder.results}")
    return ExitCode.OK

