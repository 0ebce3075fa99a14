"""``outputs.tensorboard: true``: the run's metrics as TensorBoard event files in ``RUN_DIR/tensorboard/``.

Events are written by tensorboardX (the optional extra ``lstmkit[tensorboard]``), from the same records
as ``metrics.jsonl``, each time that file is flushed.  Tags: ``train/loss``, ``train/lr``,
``train/grad_norm`` (logged steps), ``valid/<metric>`` and ``train/epoch_loss`` (evaluations),
``test/<metric>``; the x axis is the step.

An event file is an append-only stream that TensorBoard reads while it grows (a truncated last record
is skipped), so it is the one file of a run folder not written by temporary file and rename.  A resumed
run starts a new event file with ``purge_step``: TensorBoard drops what the killed session logged after
the checkpoint, exactly as ``metrics.jsonl`` does.
"""
from __future__ import annotations

import math

from ..config.errors import ExitCode, LstmkitError

__all__ = ["TensorBoardLog", "require_tensorboard", "scalars", "DIRECTORY"]

DIRECTORY = "tensorboard"
_INSTALL = 'outputs.tensorboard: true needs tensorboardX, which is not installed: pip install "lstmkit[tensorboard]"'


def require_tensorboard():
    """tensorboardX's ``SummaryWriter``, or an error naming the extra (exit 4)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise LstmkitError(_INSTALL, ExitCode.UNAVAILABLE) from None
    return SummaryWriter


def scalars(record: dict) -> list[tuple[str, float, int]]:
    """``(tag, value, step)`` for every finite number of one ``metrics.jsonl`` record."""
    event, step = record.get("event"), record.get("step")
    if not isinstance(step, int):
        return []
    out = []
    for key, value in record.items():
        if key in ("event", "step", "epoch", "best") or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if event == "train":
            tag = f"train/{key}"
        elif event == "eval" and key == "train.loss":
            tag = "train/epoch_loss"
        elif event == "eval" and key == "lr":
            continue  # the train records carry it
        else:
            tag = key.replace(".", "/", 1)
        out.append((tag, float(value), step))
    return out


class TensorBoardLog:
    """A :class:`~lstmkit.run.metrics.MetricsLog` listener writing new records to ``folder/tensorboard``.

    ``resume_step``: the step of the checkpoint a resumed run starts from (events after it are purged).
    """

    def __init__(self, folder, resume_step: int | None = None):
        SummaryWriter = require_tensorboard()
        path = folder.path / DIRECTORY
        self.writer = SummaryWriter(logdir=str(path), purge_step=None if resume_step is None else resume_step + 1,
                                    flush_secs=10**6)  # flushed with metrics.jsonl, not on a timer

    def __call__(self, records: list[dict]) -> None:
        for record in records:
            for tag, value, step in scalars(record):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
