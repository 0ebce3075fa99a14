"""What a run reports: the printed plan, progress wording, ``results.json``, the test evaluation, ``loss.png``."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

from .._atomic import atomic_open, atomic_write_json
from .folder import RunFolder, writing
from .meta import backend_name, now

__all__ = ["print_plan", "progress_text", "position_text", "results", "write_results", "run_test", "plot_losses",
           "config_text"]

Echo = Callable[[str], None]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def progress_text(state, steps_per_epoch: int) -> str:
    """``30 steps (1 epoch)``, ``7 steps (1 epoch and 2 of 5 batches of epoch 2)``."""
    text = f"{_plural(state.step, 'step')} ({_plural(state.epoch, 'epoch')}"
    if state.batch:
        text += f" and {state.batch} of {steps_per_epoch} batches of epoch {state.epoch + 1}"
    return text + ")"


def epoch_number(state) -> int:
    """The epoch the last step belongs to, numbered as in results.json and metrics.jsonl (1-based)."""
    return state.epoch + 1 if state.batch else state.epoch


def position_text(state, steps_per_epoch: int) -> str:
    """``step 7 (epoch 2, batch 2 of 5)`` / ``step 10 (end of epoch 2)``, epochs numbered as in results.json."""
    if state.batch:
        return f"step {state.step} (epoch {epoch_number(state)}, batch {state.batch} of {steps_per_epoch})"
    return f"step {state.step} (end of epoch {state.epoch})" if state.epoch else f"step {state.step} (the start)"


def results(trainer, folder: RunFolder, status: str, message, started: float) -> dict:
    from ..config.checks import run_warnings

    s = trainer.state
    return {
        "status": status,
        "message": message,
        "warnings": run_warnings(trainer.config, trainer.task),  # as printed when the run started
        # step: steps completed (= the number of the last one); epoch: the epoch that step belongs to,
        # numbered as in metrics.jsonl and last_eval (1-based); epochs_completed: whole epochs done.
        "step": s.step, "epoch": epoch_number(s), "epochs_completed": s.epoch,
        "best": {"metric": trainer.monitor, "mode": trainer.mode, "value": s.best_value, "step": s.best_step,
                 "epoch": s.best_epoch},
        "last_eval": s.last_eval,
        "test": None,
        "test_checkpoint": None,
        "checkpoints": {"last": str(folder.last) if folder.last.is_file() else None,
                        "best": str(folder.best) if folder.best.is_file() else None},
        "duration_s": round(time.monotonic() - started, 3),
    }


def write_results(folder: RunFolder, data: dict) -> None:
    with writing(folder.results):
        atomic_write_json(folder.results, data)


def run_test(trainer, folder: RunFolder, data, echo: Echo):
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


def config_text(loaded) -> str:
    """The resolved config.yaml of a run (``outputs.dir`` null: running it again makes a new folder)."""
    from .. import __version__
    from ..config.loader import resolved_yaml

    data = json.loads(json.dumps(loaded.data))
    data["outputs"]["dir"] = None  # `lstmkit run RUN_DIR/config.yaml` reproduces the run in a new folder
    header = (f"Resolved config written by lstmkit {__version__} on {now()}"
              + (f" from {loaded.path.resolve()}" if loaded.path else "") + ".\n"
              "Defaults filled in, the seed actually used, absolute paths: `lstmkit run <this file>` reproduces\n"
              "the run (in a new folder); `lstmkit run --resume <run folder>` continues it.")
    return resolved_yaml(data, header)


def print_plan(echo: Echo, loaded, task, data, model, trainer) -> None:
    """``--dry-run``: the config, the data, the model, the schedule, the runtime and the folder."""
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
    from ..config.checks import run_warnings
    from ..config.memory import estimate

    echo(f"memory: {estimate(cfg, task, data).describe()}")
    for warning in run_warnings(loaded, task):
        echo(f"warning: {warning}")
    opt = t.optimizer
    echo(f"plan: {trainer.planned_epochs()} epoch(s) x {trainer.steps_per_epoch} step(s) = "
         f"{trainer.planned_steps()} steps of batch {t.batch_size}; {opt.name} lr {opt.lr:g}, scheduler "
         f"{t.scheduler.name}, grad_clip {t.grad_clip}, tbptt {t.tbptt}; evaluate every {t.eval_every} epoch(s), "
         f"monitor {trainer.monitor} ({trainer.mode})")
    threads = cfg.runtime.threads or "default"
    echo(f"runtime: backend {backend_name(loaded)}, {cfg.runtime.dtype}, threads {threads}, seed {cfg.seed}"
         f"{' (random)' if loaded.seed_was_random else ''}")
    where = cfg.outputs.dir or f"runs/{cfg.name}/<timestamp>"
    echo(f"run folder: {where}")


def plot_losses(records: list[dict], path: Path, *, title: str | None = None, monitor: str | None = None,
                best: dict | None = None, baseline: dict | None = None) -> str | None:
    """Write ``loss.png``: train and valid loss by step, the monitored metric (on its own axis when it is not
    a loss) and the best evaluation marked; returns a note if matplotlib is missing.

    ``best``: ``results.json``'s ``best`` (``metric``, ``value``, ``step``, ``epoch``); ``None`` or a null
    value: nothing is marked.  ``baseline``: ``results.json``'s ``baseline``; its valid loss is drawn as a
    horizontal line (the loss a naive predictor gets).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "loss.png not written: matplotlib is not installed (pip install matplotlib, or lstmkit[plot])"
    evals = [r for r in records if r.get("event") == "eval"]
    train = [(r["step"], r["loss"]) for r in records if r.get("event") == "train" and _number(r.get("loss"))]
    valid = [(r["step"], r["valid.loss"]) for r in evals if _number(r.get("valid.loss"))]
    epoch_train = [(r["step"], r["train.loss"]) for r in evals if _number(r.get("train.loss"))]
    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for points, label, style in ((train, "train (logged steps)", "-"), (epoch_train, "train (per evaluation)", "o-"),
                                 (valid, "valid", "s-")):
        if points:
            ax.plot(*zip(*points), style, label=label, markersize=3, linewidth=1)
    naive = ((baseline or {}).get("valid") or {}).get("loss")
    if _number(naive) and (train or valid):
        ax.axhline(naive, color="gray", linestyle="--", linewidth=1,
                   label=f"baseline ({baseline.get('method')}) valid loss {naive:.4g}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(v > 0 for _, v in train + valid + epoch_train) and (train or valid):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    handles = []
    if monitor and monitor not in ("valid.loss", "train.loss"):  # another scale: its own axis on the right
        points = [(r["step"], r[monitor]) for r in evals if _number(r.get(monitor))]
        if points:
            right = ax.twinx()
            handles += right.plot(*zip(*points), "d--", color="tab:red", label=f"{monitor} (monitored)",
                                  markersize=3, linewidth=1)
            right.set_ylabel(monitor)
    if best and _number(best.get("value")) and best.get("step") is not None:
        handles.append(ax.axvline(best["step"], color="tab:green", linestyle=":", linewidth=1.5,
                                  label=f"best {best.get('metric')} {best['value']:.4g} (epoch {best.get('epoch')})"))
    own, labels = ax.get_legend_handles_labels()
    ax.legend(own + [h for h in handles if h not in own], labels + [h.get_label() for h in handles if h not in own],
              fontsize=8)
    heading = title or "loss"
    if monitor:
        heading += f" (monitor: {monitor})"
    ax.set_title(heading)
    fig.tight_layout()
    with writing(path), atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
