"""``metrics.jsonl``: one JSON object per logged step and per evaluation.

Records are kept in memory and the file is rewritten whole (atomically) at
every evaluation, checkpoint and at the end, so it is never half-written and
a resumed run continues it exactly: records after the checkpoint's step are
dropped (they are produced again).  No wall-clock times go in, so the same
config and seed give the same file byte for byte.

Record kinds (``"event"``): ``"train"`` (``step``, ``epoch``, ``loss`` = mean
over the steps since the last one, ``lr``, ``grad_norm``), ``"eval"``
(``split``, ``step``, ``epoch``, ``loss`` and the task's metrics),
``"test"`` (the final test-split evaluation).

``metrics.csv`` beside it holds the same records as a table for spreadsheets and
pandas: one row per record, one column per key (in order of first appearance),
empty cells where a record has no such key.  It is written (atomically) right
after ``metrics.jsonl``, from the same records, so it never says more than it.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .._atomic import atomic_write_text

__all__ = ["MetricsLog", "read_metrics", "csv_text"]


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": JSON has no such numbers
    return value


class MetricsLog:
    """Buffered ``metrics.jsonl`` writer (``path=None``: in memory only, e.g. for tests)."""

    def __init__(self, path: Path | None, records: list[dict] | None = None):
        self.path = path
        self.records: list[dict] = list(records or [])
        self._written = -1
        # called with the records added since the last flush, after the files are written (TensorBoard)
        self.listeners: list = []
        self._notified = len(self.records)  # an earlier session's records were already passed on

    @classmethod
    def resume(cls, path: Path, step: int) -> "MetricsLog":
        """The records of an earlier session up to and including ``step`` (the test record is made again)."""
        records = [r for r in read_metrics(path) if isinstance(r, dict) and _step(r) <= step
                   and r.get("event") != "test"] if path.exists() else []
        log = cls(path, records)
        return log

    def append(self, record: dict) -> None:
        self.records.append({k: _clean(v) for k, v in record.items()})

    def flush(self) -> None:
        if self.path is None or self._written == len(self.records):
            return
        from .folder import writing

        with writing(self.path):  # a full disk: a message naming the file, the previous version kept
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        table = self.path.with_suffix(".csv")
        with writing(table):
            atomic_write_text(table, csv_text(self.records))
        self._written = len(self.records)
        fresh, self._notified = self.records[self._notified:], len(self.records)
        for listener in self.listeners:
            listener(fresh)


def csv_text(records: list[dict]) -> str:
    """``metrics.csv``: the records as one table (columns: every key, in order of first appearance)."""
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow(["" if record.get(c) is None else _cell(record[c]) for c in columns])
    return out.getvalue()


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _step(record: dict) -> float:
    step = record.get("step", 0)
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else math.inf


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (a truncated last line is ignored)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out
