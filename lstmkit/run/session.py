"""What ``lstmkit run``, ``evaluate`` and ``predict`` do, below the Click layer.

The run folder (``runs/<name>/<timestamp>/`` or ``-o DIR``)::

    config.yaml          the resolved config: actual seed, absolute paths
    meta.json            versions, platform, backend, threads, plugins, command lines, times, status
    metrics.jsonl        one JSON object per logged step and per evaluation
    results.json         final metrics and status
    checkpoints/last.npz the latest state (resume from it); best.npz: the best weights
    loss.png             train/valid loss curves (needs matplotlib)
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..config.errors import ConfigError, ConfigIssue, ExitCode, LstmkitError, RunFailed, RunInterrupted
from .._atomic import atomic_copy, atomic_write_json, atomic_write_text
from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import MetricsLog

__all__ = ["RunFolder", "build_task", "build_model", "seed_generators", "run", "evaluate_run", "predict_run",
           "thread_limit"]

CONFIG, META, METRICS, RESULTS, PLOT = "config.yaml", "meta.json", "metrics.jsonl", "results.json", "loss.png"
CHECKPOINTS = "checkpoints"
_OWN_FILES = (CONFIG, META, METRICS, RESULTS, PLOT)
_RESUMABLE = ("training.epochs", "training.max_steps")

Echo = Callable[[str], None]


# -- building ----------------------------------------------------------------------------
def seed_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """``(model generator, shuffling generator)``: independent streams from the run's seed.

    The task gets the seed itself (its data streams are ``default_rng([seed, split])``).
    """
    model_seq, shuffle_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(model_seq), np.random.default_rng(shuffle_seq)


def build_task(loaded):
    """The task object of a loaded config and its data splits; data problems raise ConfigError."""
    from ..registry import get_registry

    cfg = loaded.config
    spec = get_registry().task_spec(cfg.task.type)
    splits = {k: getattr(cfg.task, k) for k in ("train", "valid", "test")}
    try:
        task = spec.factory(dict(cfg.task.options), base_dir=loaded.base_dir, seed=cfg.seed,
                            splits=splits if any(v is not None for v in splits.values()) else None)
        data = task.data()
    except (ValueError, OSError, KeyError) as exc:  # TaskError is a ValueError naming the config key
        raise ConfigError([_task_issue(loaded, exc)], str(loaded.path or "")) from None
    except Exception as exc:
        raise RunFailed(f"task {cfg.task.type!r} failed while loading its data: {type(exc).__name__}: {exc}") from exc
    missing = [k for k in ("train", "valid", "test") if k not in data]
    if missing:
        raise RunFailed(f"task {cfg.task.type!r} returned no {', '.join(missing)} split")
    if len(data["train"]) == 0:
        raise ConfigError([ConfigIssue("task", "the training split is empty")], str(loaded.path or ""))
    return task, data


def _task_issue(loaded, exc: Exception) -> ConfigIssue:
    """A task's data error, placed at the config key its message names (``task.train``, ...)."""
    import re

    from ..config.yamlio import load_yaml_file

    message = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    m = re.search(r"\btask\.(train|valid|test|options\.\w+)\b", message)
    key = ("task",) + tuple(m.group(1).split(".")) if m else ("task",)
    if m and message.startswith(m.group(0) + ": "):  # the key is shown by the report already
        message = message[len(m.group(0)) + 2:]
    where = None
    if loaded.path is not None and loaded.path.is_file():
        try:
            positions = load_yaml_file(loaded.path)[1]
        except Exception:  # pragma: no cover - the file was valid a moment ago
            positions = {}
        for n in range(len(key), 0, -1):
            if key[:n] in positions:
                where = str(positions[key[:n]])
                break
    return ConfigIssue(".".join(key), message, where)


def build_model(loaded, task, generator: np.random.Generator | None = None):
    """The :class:`~lstmkit.model.SequenceModel` a config describes, sized for ``task``."""
    from ..model import SequenceModel

    m, cfg = loaded.config.model, loaded.config
    tokens = task.input_kind == "tokens"
    if m.embedding_size is not None and not tokens:
        raise ConfigError([ConfigIssue("model.embedding_size", f"only token tasks use an embedding; task "
                                       f"{task.name!r} has feature inputs (set it to null)")],
                          str(loaded.path or ""))
    try:
        return SequenceModel(
            cell=m.cell, cell_options=dict(m.cell_options) or None,
            input_size=None if tokens else task.input_size, vocab_size=task.vocab_size if tokens else None,
            embedding_size=m.embedding_size if tokens else None, hidden_size=m.hidden_size,
            num_layers=m.num_layers, bidirectional=m.bidirectional, dropout=m.dropout, proj_size=m.proj_size,
            output_size=task.output_size, target=task.target, dtype=cfg.runtime.dtype,
            backend=cfg.runtime.backend, seed=generator if generator is not None else cfg.seed,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError([ConfigIssue("model", str(exc))], str(loaded.path or "")) from None


@contextlib.contextmanager
def thread_limit(threads: int | None):
    """Limit BLAS/OpenMP threads (threadpoolctl) inside the block; ``None``: leave them alone."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield


def _warnings_to(echo: Echo):
    import warnings

    @contextlib.contextmanager
    def manager():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            yield
        for w in caught:
            echo(f"warning: {w.message}")

    return manager()


# -- the run folder ---------------------------------------------------------------------
@dataclass
class RunFolder:
    """Paths inside a run folder."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def meta(self) -> Path:
        return self.path / META

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def plot(self) -> Path:
        return self.path / PLOT

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.npz"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.npz"

    def checkpoint(self, which: str = "auto") -> Path:
        """``best``, ``last`` or ``auto`` (best if there is one, else last)."""
        if which == "auto":
            which = "best" if self.best.is_file() else "last"
        path = self.best if which == "best" else self.last if which == "last" else self.checkpoints / which
        if not path.is_file():
            raise LstmkitError(f"no checkpoint {path}", ExitCode.RUN_FAILED)
        return path

    def clear(self) -> None:
        """Remove what an earlier run wrote here (only lstmkit's own files)."""
        for name in _OWN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        if self.checkpoints.is_dir():
            for item in self.checkpoints.glob("*.npz"):
                item.unlink()
            with contextlib.suppress(OSError):
                self.checkpoints.rmdir()


def default_run_dir(name: str) -> Path:
    """``runs/<name>/<timestamp>`` under the working directory (``-2``, ``-3``... if taken)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path.cwd() / "runs" / name / stamp
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{stamp}-{n}")
    return path


def is_run_folder(path: Path) -> bool:
    """A folder ``lstmkit run`` wrote: it has ``checkpoints/last.npz``, or ``config.yaml`` and ``meta.json``."""
    folder = RunFolder(Path(path))
    return folder.last.is_file() or (folder.config.is_file() and folder.meta.is_file())


def _non_empty_output(path: Path) -> str | None:
    """Why ``-o path`` is refused without --overwrite (``None``: it is new or empty)."""
    if not (path.is_dir() and any(path.iterdir())):
        return None
    lines = [f"output folder {path} is not empty. Either"]
    if is_run_folder(path):
        lines += ["  - add --overwrite to replace the run in it,",
                  f"  - continue that run with: lstmkit run --resume {path}"]
    else:
        lines += [f"  - add --overwrite to write the run there (it is not a run folder: only lstmkit's own files "
                  f"would be replaced, your other files are kept),"]
    lines.append("  - or choose another folder with -o DIR (or leave outputs.dir null for runs/<name>/<timestamp>)")
    return "\n".join(lines)


def choose_run_dir(loaded, overwrite: bool) -> Path:
    out = loaded.config.outputs.dir
    if out is None:
        return default_run_dir(loaded.config.name)
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise LstmkitError(f"output folder {path} is a file", ExitCode.USAGE)
    refusal = _non_empty_output(path)
    if refusal is not None:
        if not overwrite:
            raise LstmkitError(refusal, ExitCode.USAGE)
        RunFolder(path).clear()
    return path


# -- meta.json and results.json ------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _versions() -> dict:
    from importlib import metadata

    import scipy

    from .. import __version__

    out = {"lstmkit": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
           "scipy": scipy.__version__}
    for dist in ("pydantic", "click", "pluggy", "pyyaml", "threadpoolctl", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _threads(limit) -> dict:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"limit": limit, "pools": "threadpoolctl not installed"}
    return {"limit": limit, "pools": [{k: p.get(k) for k in ("user_api", "internal_api", "version", "num_threads")}
                                      for p in threadpool_info()]}


def _plugins() -> list[dict]:
    from ..registry import get_registry

    return [{"name": p.name, "distribution": p.distribution, "version": p.version, "status": p.status,
             "provides": p.provides} for p in get_registry().plugins.values() if not p.builtin]


def _backend_name(loaded) -> str:
    from ..registry import get_registry

    return get_registry().backend_spec(loaded.config.runtime.backend).name


def write_meta(folder: RunFolder, meta: dict) -> None:
    atomic_write_json(folder.meta, meta)


# -- lstmkit run ----------------------------------------------------------------------------
def load_for_resume(run_dir: Path, config_path: str | None, overrides: Sequence[str], seed, backend):
    """The run's own config, extended by the allowed overrides; anything else is refused (exit 3)."""
    from ..config.loader import diff_configs, load_config

    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        raise LstmkitError(f"--resume {run_dir}: not a run folder (no {CONFIG})", ExitCode.USAGE)
    if not folder.last.is_file():
        raise LstmkitError(f"--resume {run_dir}: there is no checkpoint to resume from ({folder.last} is missing; "
                           f"the run stopped before its first checkpoint - start it again instead)", ExitCode.RUN_FAILED)
    saved = load_config(folder.config)
    ckpt = read_checkpoint(folder.last, f"To continue, copy an older snapshot over it (e.g. {folder.checkpoints}/"
                                        f"epoch-NNNN.npz, if outputs.checkpoint.keep_last kept one), or start the "
                                        f"run again: lstmkit run {folder.config} -o {run_dir} --overwrite")
    edited = checkpoint_config_changes(folder, ckpt["config"], saved.data)
    if edited:
        lines = [ConfigIssue(k, f"{json.dumps(a)} in {folder.last.name}, {json.dumps(b)} in {CONFIG}")
                 for k, a, b in edited]
        err = ConfigError(lines, f"{folder.config} (for --resume {run_dir})")
        err.message = (err.message + f"\n{CONFIG} was edited after {folder.last} was written: --resume continues the "
                       f"run with the config it was trained with. Undo the edit (only training.epochs and "
                       f"training.max_steps may be raised, with --set), or start a new run from the edited file: "
                       f"lstmkit run {folder.config}")
        raise err
    new = load_config(config_path or folder.config, overrides, seed=seed, backend=backend)
    changed = []
    for key, old, value in diff_configs(saved.data, new.data):
        if key in ("outputs.dir", "name"):
            continue
        if key == "seed" and new.seed_was_random:
            continue
        if key in _RESUMABLE and old is not None and value is not None and value >= old:
            continue
        changed.append((key, old, value))
    if changed:
        lines = [ConfigIssue(k, f"{json.dumps(a)} in the run, {json.dumps(b)} now") for k, a, b in changed]
        err = ConfigError(lines, f"for --resume {run_dir}")
        err.message = (err.message + "\n--resume continues the run with its own config: only training.epochs and "
                       "training.max_steps may change, and only upwards (to train longer).")
        raise err
    data = json.loads(json.dumps(saved.data))
    for key in _RESUMABLE:
        section, name = key.split(".")
        data[section][name] = new.data[section][name]
    from ..config.loader import load_config_data

    return load_config_data(data, {}, saved.base_dir, source=str(folder.config), path=folder.config), ckpt


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
    progress: bool = False,
    echo: Echo = print,
    argv: Sequence[str] | None = None,
    trainer_class=None,
) -> int:
    """``lstmkit run``; returns the exit code (errors raise :class:`LstmkitError` subclasses)."""
    from ..config.loader import load_config

    started = time.monotonic()
    if resume is not None:
        run_dir = Path(resume).resolve()
        loaded, ckpt = load_for_resume(run_dir, config_path, overrides, seed, backend)
    else:
        loaded = load_config(config_path, overrides, seed=seed, backend=backend, output_dir=output)
    cfg = loaded.config
    if print_config:
        echo(loaded.yaml.rstrip("\n"))
        return ExitCode.OK

    with thread_limit(cfg.runtime.threads), _warnings_to(echo):
        task, data = build_task(loaded)
        model_rng, shuffle = seed_generators(cfg.seed)
        model = build_model(loaded, task, model_rng)
        from .trainer import Trainer

        cls = trainer_class or Trainer
        if dry_run:
            _print_plan(echo, loaded, task, data, model, cls, shuffle)
            out = cfg.outputs.dir
            if resume is None and out is not None and not overwrite:
                if Path(out).exists() and not Path(out).is_dir():
                    echo(f"warning: the real run will be refused: output folder {out} is a file")
                elif _non_empty_output(Path(out)) is not None:
                    echo(f"warning: the real run will be refused: "
                         + _non_empty_output(Path(out)).replace("\n", "\n  "))
            echo("dry run: nothing was written")
            return ExitCode.OK

        if resume is None:
            run_dir = choose_run_dir(loaded, overwrite)
        folder = RunFolder(run_dir)
        config_text = _config_text(loaded)
        checkpointer = _Checkpointer(folder, cfg, config_text)
        metrics = MetricsLog(folder.metrics)
        trainer = cls(model, task, data, cfg, shuffle=shuffle, metrics=metrics, checkpoint=checkpointer,
                      echo=echo, progress=progress)
        if resume is not None:
            try:
                trainer.load_state_dict(ckpt)
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                raise LstmkitError(f"{folder.last} does not fit the run's config {folder.config}: {exc}",
                                   ExitCode.RUN_FAILED) from None
            if trainer.done():  # nothing to train, test or write: the folder is left as it is
                s, t = trainer.state, cfg.training
                why = ("it stopped early" if s.stopped_early else
                       f"{s.epoch} of training.epochs={t.epochs} epoch(s) done" if t.epochs is not None
                       and s.epoch >= t.epochs else f"{s.step} of training.max_steps={t.max_steps} step(s) done")
                longer = ("" if s.stopped_early else
                          f" To train it longer: lstmkit run --resume {folder.path} --set training.epochs=N "
                          f"(or training.max_steps=N) larger than now.")
                echo(f"the run in {folder.path} has already finished ({why}); nothing was done.{longer}")
                return ExitCode.OK
            trainer.metrics = metrics = MetricsLog.resume(folder.metrics, trainer.state.step)
            echo(f"resuming {folder.path} from step {trainer.state.step} (epoch {trainer.state.epoch}"
                 f"{', batch ' + str(trainer.state.batch) if trainer.state.batch else ''})")
        folder.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder.config, config_text)
        meta = _start_meta(folder, loaded, argv, resume is not None)
        write_meta(folder, meta)
        if resume is None:
            echo(f"run folder: {folder.path}")
        echo(f"task: {task.describe()}")
        echo(f"model: {cfg.model.cell} x{cfg.model.num_layers}, hidden {cfg.model.hidden_size}, "
             f"{model.num_parameters():,} parameters; backend {_backend_name(loaded)}, {cfg.runtime.dtype}"
             f"; seed {cfg.seed}{' (random)' if loaded.seed_was_random else ''}")

        status, message, code, failed_at = "completed", None, ExitCode.OK, None
        try:
            status = trainer.fit()
        except _interrupted() as exc:
            status, code = "interrupted", ExitCode.INTERRUPTED
            if exc.consistent:
                checkpointer("last", trainer)
                message = f"interrupted at step {trainer.state.step}; {folder.last} saved"
            else:
                message = (f"interrupted in the middle of an update at step {trainer.state.step + 1}; the state "
                           f"was not saved (the last checkpoint is kept)")
        except _nonfinite() as exc:
            status, code = "failed", ExitCode.RUN_FAILED
            failed_at = {"step": exc.step, "epoch": exc.epoch, "batch": exc.batch}
            kept = (f"the last good checkpoint {folder.last} (step {_checkpoint_step(folder.last)}) is kept"
                    if folder.last.is_file() else "no checkpoint had been written yet")
            t = cfg.training
            clip = ("set training.grad_clip (e.g. 1.0)" if t.grad_clip is None
                    else f"lower training.grad_clip (now {t.grad_clip:g})")
            message = (f"{exc}; the run is stopped after step {trainer.state.step} (the last completed step), "
                       f"{kept}. Lower training.optimizer.lr (now {t.optimizer.lr:g}) or {clip}")
        except Exception as exc:  # a bug or an unexpected error: record it, then let it propagate
            results = _results(trainer, task, data, folder, "failed", f"{type(exc).__name__}: {exc}", started)
            atomic_write_json(folder.results, results)
            meta["sessions"][-1].update(end=_now(), status="failed", step=trainer.state.step)
            meta.update(status="failed", end=_now())
            write_meta(folder, meta)
            raise
        finally:
            metrics.flush()
        results = _results(trainer, task, data, folder, status, message, started)
        if failed_at is not None:
            results["failed_at"] = failed_at
        if status in ("completed", "stopped_early"):
            results["test"], results["test_checkpoint"] = _test(trainer, folder, data, echo)
        atomic_write_json(folder.results, results)
        metrics.flush()
        note = plot_losses(metrics.records, folder.plot)
        meta["sessions"][-1].update(end=_now(), status=status, step=trainer.state.step)
        meta.update(status=status, end=_now())
        write_meta(folder, meta)
        if note:
            echo(note)
        if code == ExitCode.INTERRUPTED:
            raise RunInterrupted(f"{message}. Continue with: lstmkit run --resume {folder.path}")
        if code == ExitCode.RUN_FAILED:
            raise RunFailed(message)
        best = results.get("best") or {}
        summary = f"{status.replace('_', ' ')} after {_progress_text(trainer)}"
        if best.get("value") is not None:
            summary += f"; best {best['metric']} {best['value']:.6g} at epoch {best['epoch']}"
        if results.get("test"):
            summary += "; test " + ", ".join(f"{k} {v:.5g}" for k, v in results["test"].items()
                                              if isinstance(v, float))
        echo(summary)
        echo(f"results: {folder.results}")
        return ExitCode.OK


def _interrupted():
    from .trainer import TrainingInterrupted

    return TrainingInterrupted


def _nonfinite():
    from .trainer import NonFiniteLoss

    return NonFiniteLoss


def _checkpoint_step(path: Path):
    try:
        return load_checkpoint(path)["trainer"]["step"]
    except Exception:  # pragma: no cover - a report detail only
        return "?"


def _unreadable(path: Path, exc: Exception, advice: str) -> LstmkitError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "pickled" in reason:  # np.load's guess for a file that is not a zip archive; its advice does not apply
        reason = "it is not an .npz (zip) archive"
    else:
        reason = f"{type(exc).__name__}: {reason[:200]}"
    return LstmkitError(f"{path} is damaged or not an lstmkit checkpoint (an .npz file written by lstmkit run): "
                        f"{reason}\n{advice}", ExitCode.RUN_FAILED)


def read_checkpoint(path: Path, advice: str):
    """:func:`load_checkpoint`, with an unreadable file reported as a clean error (exit 1) naming it."""
    try:
        ckpt = load_checkpoint(path)
        if ckpt["trainer"] is None:
            raise ValueError("it has no trainer state (trainer/state)")
        return ckpt
    except Exception as exc:
        raise _unreadable(path, exc, advice) from None


def read_weights(path: Path, advice: str):
    """:func:`~lstmkit.run.checkpoint.load_weights`, with an unreadable file reported as a clean error (exit 1)."""
    from .checkpoint import load_weights

    try:
        return load_weights(path)
    except Exception as exc:
        raise _unreadable(path, exc, advice) from None


def checkpoint_config_changes(folder: "RunFolder", ckpt_config: str | None, saved_data: dict) -> list[tuple]:
    """``[(key, value in the checkpoint, value in config.yaml)]``: what config.yaml changed since ``ckpt_config``.

    ``name``, ``outputs.dir`` and raised ``training.epochs``/``max_steps`` (a run extended with
    ``--resume --set``) do not count.  A checkpoint without a readable config compares equal.
    """
    from ..config.loader import diff_configs, load_config_data
    from ..config.yamlio import load_yaml

    if not ckpt_config:
        return []
    try:
        raw, positions = load_yaml(ckpt_config, source=f"{folder.last.name} (lstmkit/config)")
        data = load_config_data(raw, positions, folder.path, source=str(folder.config), check_files=False).data
    except Exception:  # an older or foreign checkpoint: nothing to compare with
        return []
    out = []
    for key, old, value in diff_configs(data, saved_data):
        if key in ("outputs.dir", "name"):
            continue
        if key in _RESUMABLE and old is not None and value is not None and value >= old:
            continue
        out.append((key, old, value))
    return out


def _config_text(loaded) -> str:
    from .. import __version__
    from ..config.loader import resolved_yaml

    data = json.loads(json.dumps(loaded.data))
    data["outputs"]["dir"] = None  # `lstmkit run RUN_DIR/config.yaml` reproduces the run in a new folder
    header = (f"Resolved config written by lstmkit {__version__} on {_now()}"
              + (f" from {loaded.path.resolve()}" if loaded.path else "") + ".\n"
              "Defaults filled in, the seed actually used, absolute paths: `lstmkit run <this file>` reproduces\n"
              "the run (in a new folder); `lstmkit run --resume <run folder>` continues it.")
    return resolved_yaml(data, header)


def _start_meta(folder: RunFolder, loaded, argv, resumed: bool) -> dict:
    session = {"command": list(argv) if argv is not None else sys.argv, "cwd": os.getcwd(), "start": _now(),
               "end": None, "status": "running", "resumed": resumed}
    meta = {}
    if resumed and folder.meta.is_file():
        with contextlib.suppress(ValueError):
            meta = json.loads(folder.meta.read_text(encoding="utf-8"))
    cfg = loaded.config
    meta.update({
        "versions": _versions(),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "backend": {"requested": cfg.runtime.backend, "used": _backend_name(loaded)},
        "dtype": cfg.runtime.dtype,
        "threads": _threads(cfg.runtime.threads),
        "plugins": _plugins(),
        "seed": cfg.seed, "seed_was_random": loaded.seed_was_random or meta.get("seed_was_random", False),
        "config_file": str(loaded.path.resolve()) if loaded.path and not resumed else meta.get("config_file"),
        "run_dir": str(folder.path),
        "status": "running",
        "start": meta.get("start", session["start"]), "end": None,
    })
    meta.setdefault("sessions", []).append(session)
    return meta


class _Checkpointer:
    """Writes checkpoints/last.npz, epoch-NNNN.npz (keep_last) and best.npz.

    Each call serialises ``trainer.state_dict()`` once: an epoch snapshot is a
    copy of the last.npz just written.  best.npz is written when the monitored
    metric improves, in the middle of the epoch's end (before the scheduler
    steps), so it is a state of its own.
    """

    def __init__(self, folder: RunFolder, cfg, config_text: str):
        self.folder, self.policy, self.config_text = folder, cfg.outputs.checkpoint, config_text

    def __call__(self, kind: str, trainer) -> None:
        state = trainer.state_dict()
        if kind == "best":
            save_checkpoint(self.folder.best, config=self.config_text, **state)
            return
        save_checkpoint(self.folder.last, config=self.config_text, **state)
        if kind == "epoch" and self.policy.keep_last > 1:
            epoch = trainer.state.epoch
            atomic_copy(self.folder.last, self.folder.checkpoints / f"epoch-{epoch:04d}.npz")
            snapshots = sorted(self.folder.checkpoints.glob("epoch-*.npz"))
            for old in snapshots[: max(0, len(snapshots) - (self.policy.keep_last - 1))]:
                old.unlink()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _progress_text(trainer) -> str:
    """``30 steps (1 epoch)``, ``7 steps (1 epoch and 2 of 5 batches of epoch 2)``."""
    s = trainer.state
    text = f"{_plural(s.step, 'step')} ({_plural(s.epoch, 'epoch')}"
    if s.batch:
        text += f" and {s.batch} of {trainer.steps_per_epoch} batches of epoch {s.epoch + 1}"
    return text + ")"


def _results(trainer, task, data, folder: RunFolder, status: str, message, started: float) -> dict:
    s = trainer.state
    return {
        "status": status,
        "message": message,
        # step: steps completed (= the number of the last one); epoch: the epoch that step belongs to,
        # numbered as in metrics.jsonl and last_eval (1-based); epochs_completed: whole epochs done.
        "step": s.step, "epoch": s.epoch + 1 if s.batch else s.epoch, "epochs_completed": s.epoch,
        "best": {"metric": trainer.monitor, "mode": trainer.mode, "value": s.best_value, "step": s.best_step,
                 "epoch": s.best_epoch},
        "last_eval": s.last_eval,
        "test": None,
        "test_checkpoint": None,
        "checkpoints": {"last": str(folder.last) if folder.last.is_file() else None,
                        "best": str(folder.best) if folder.best.is_file() else None},
        "duration_s": round(time.monotonic() - started, 3),
    }


def _test(trainer, folder: RunFolder, data, echo: Echo):
    """Test-split metrics with the best weights (or the final ones when there is no best.npz)."""
    if len(data.get("test", ())) == 0:
        return None, None
    which = "last"
    if folder.best.is_file():
        from .checkpoint import load_weights

        trainer.model.load_state_dict(load_weights(folder.best))
        which = "best"
    metrics = trainer.evaluate("test")
    if trainer.metrics is not None:
        trainer.metrics.append({"event": "test", "step": trainer.state.step, "checkpoint": which,
                                **{f"test.{k}": v for k, v in metrics.items()}})
    echo("test (" + which + " weights): " + "  ".join(f"{k} {v:.5g}" for k, v in metrics.items()))
    return metrics, which


def _print_plan(echo: Echo, loaded, task, data, model, cls, shuffle) -> None:
    cfg = loaded.config
    t = cfg.training
    echo(f"config: ok ({loaded.path.resolve() if loaded.path else 'command line'})")
    echo(f"task: {task.describe()}")
    for name, split in data.items():
        lengths = "" if split.lengths is None else f", lengths {int(split.lengths.min())}..{int(split.lengths.max())}"
        echo(f"  {name}: inputs {split.inputs.shape} {split.inputs.dtype} -> targets {split.targets.shape} "
             f"{split.targets.dtype}{lengths}")
    echo(f"model: {model.num_parameters():,} parameters ({task.input_kind} in, {task.output_size} out, "
         f"target {task.target}, loss {task.loss})")
    for name, shape in model.describe():
        echo(f"  {name:<28} {shape}")
    trainer = cls(model, task, data, cfg, shuffle=shuffle, echo=lambda _: None)
    opt = t.optimizer
    echo(f"plan: {trainer.planned_epochs()} epoch(s) x {trainer.steps_per_epoch} step(s) = "
         f"{trainer.planned_steps()} steps of batch {t.batch_size}; {opt.name} lr {opt.lr:g}, scheduler "
         f"{t.scheduler.name}, grad_clip {t.grad_clip}, tbptt {t.tbptt}; evaluate every {t.eval_every} epoch(s), "
         f"monitor {trainer.monitor} ({trainer.mode})")
    threads = cfg.runtime.threads or "default"
    echo(f"runtime: backend {_backend_name(loaded)}, {cfg.runtime.dtype}, threads {threads}, seed {cfg.seed}"
         f"{' (random)' if loaded.seed_was_random else ''}")
    where = cfg.outputs.dir or f"runs/{cfg.name}/<timestamp>"
    echo(f"run folder: {where}")


# -- loss.png --------------------------------------------------------------------------------
def plot_losses(records: list[dict], path: Path) -> str | None:
    """Write ``loss.png`` (train and valid loss by step); returns a note if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "loss.png not written: matplotlib is not installed (pip install matplotlib, or lstmkit[plot])"
    train = [(r["step"], r["loss"]) for r in records if r.get("event") == "train" and _number(r.get("loss"))]
    valid = [(r["step"], r["valid.loss"]) for r in records if r.get("event") == "eval"
             and _number(r.get("valid.loss"))]
    epoch_train = [(r["step"], r["train.loss"]) for r in records if r.get("event") == "eval"
                   and _number(r.get("train.loss"))]
    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for points, label, style in ((train, "train (logged steps)", "-"), (epoch_train, "train (per evaluation)", "o-"),
                                 (valid, "valid", "s-")):
        if points:
            ax.plot(*zip(*points), style, label=label, markersize=3, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(v > 0 for _, v in train + valid + epoch_train) and (train or valid):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from .._atomic import atomic_open

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# -- evaluate / predict ----------------------------------------------------------------------
def open_run(run_dir: str | Path, checkpoint: str = "auto"):
    """``(loaded config, task, data, model with the checkpoint's weights, checkpoint path)``."""
    from ..config.loader import load_config

    folder = RunFolder(Path(run_dir).resolve())
    if not folder.config.is_file():
        raise LstmkitError(f"{run_dir} is not a run folder (no {CONFIG})", ExitCode.USAGE)
    loaded = load_config(folder.config)
    path = folder.checkpoint(checkpoint)
    advice = (f"Use the other checkpoint (--checkpoint {'last' if path == folder.best else 'best'}) if there is one, "
              f"or train the run again.")
    try:
        ckpt_config = load_checkpoint(path)["config"]
    except Exception as exc:
        raise _unreadable(path, exc, advice) from None
    edited = checkpoint_config_changes(folder, ckpt_config, loaded.data)
    edited = [k for k, _, _ in edited if k.split(".")[0] in ("model", "task", "seed")]
    if edited:
        raise LstmkitError(f"{folder.config} no longer matches the checkpoint {path} (changed since it was "
                           f"written: {', '.join(edited)}); undo the edit to use this run", ExitCode.INVALID_CONFIG)
    with _warnings_to(lambda m: None):
        task, data = build_task(loaded)
        model = build_model(loaded, task, seed_generators(loaded.config.seed)[0])
    try:
        model.load_state_dict(read_weights(path, advice))
    except RuntimeError as exc:
        raise LstmkitError(f"{path}: {exc}", ExitCode.RUN_FAILED) from None
    model.eval()
    return loaded, task, data, model, path


def evaluate_run(run_dir, split: str = "test", checkpoint: str = "auto") -> dict:
    """``lstmkit evaluate``: loss and metrics of a trained run on one split."""
    from .trainer import evaluate_split

    loaded, task, data, model, path = open_run(run_dir, checkpoint)
    with thread_limit(loaded.config.runtime.threads):
        if len(data.get(split, ())) == 0:
            raise LstmkitError(f"the {split} split of this run's task is empty", ExitCode.RUN_FAILED)
        metrics = evaluate_split(model, task, data[split], batch_size=max(loaded.config.training.batch_size, 256))
    return {"split": split, "checkpoint": str(path), "size": len(data[split]), "metrics": metrics}


def predict_run(run_dir, input_path, checkpoint: str = "auto"):
    """``lstmkit predict``: the task's predictions for the sequences in ``input_path``."""
    loaded, task, data, model, path = open_run(run_dir, checkpoint)
    try:
        inputs, lengths = task.read_inputs(Path(input_path))
    except UnicodeDecodeError:
        expected = getattr(task, "predict_input", "") or "its input format"
        raise LstmkitError(f"cannot read {input_path}: it is not a text file, and task {task.name!r} reads "
                           f"{expected} (see 'Inputs for lstmkit predict' in docs/config.md)",
                           ExitCode.RUN_FAILED) from None
    except (ValueError, OSError) as exc:
        raise LstmkitError(f"cannot read {input_path}: {exc}", ExitCode.RUN_FAILED) from None
    with thread_limit(loaded.config.runtime.threads):
        if np.issubdtype(np.asarray(inputs).dtype, np.floating):
            inputs = np.asarray(inputs, dtype=model.dtype)
        try:
            outputs = model.forward(inputs, lengths)
        except (ValueError, RuntimeError) as exc:
            raise LstmkitError(f"{input_path}: {exc}", ExitCode.RUN_FAILED) from None
    return task.format_predictions(outputs, lengths)
