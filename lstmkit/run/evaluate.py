"""``lstmkit evaluate`` and ``lstmkit predict``: a trained run's model on a split or on new inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config.errors import ExitCode, LstmkitError
from .build import build_model, build_task, seed_generators, thread_limit, warnings_to
from .checkpoint import compare_section, load_checkpoint
from .folder import CONFIG, RunFolder
from .resume import checkpoint_config_changes, read_weights, unreadable

__all__ = ["open_run", "evaluate_run", "format_evaluation", "predict_run", "check_token_ids"]


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
        raise unreadable(path, exc, advice) from None
    edited = checkpoint_config_changes(folder, ckpt_config, loaded.data)
    edited = [k for k, _, _ in edited if k.split(".")[0] in ("model", "task", "seed")]
    if edited:
        raise LstmkitError(f"{folder.config} no longer matches the checkpoint {path} (changed since it was "
                           f"written: {', '.join(edited)}); undo the edit to use this run", ExitCode.INVALID_CONFIG)
    with warnings_to(lambda m: None):
        task, data = build_task(loaded)
        model = build_model(loaded, task, seed_generators(loaded.config.seed)[0])
    weights, problems = read_weights(path, advice), []
    compare_section("params", model.state_dict(), weights, problems, exact_dtype=True)
    if problems:
        raise LstmkitError(f"{path} does not fit the run's model ({folder.config}): " + "; ".join(problems[:5])
                           + f"\n{advice}", ExitCode.RUN_FAILED)
    model.load_state_dict(weights)
    model.eval()
    return loaded, task, data, model, path


def evaluate_run(run_dir, split: str = "test", checkpoint: str = "auto", save_predictions=None) -> dict:
    """``lstmkit evaluate``: loss and metrics of a trained run on one split.

    The result also holds ``baseline`` (the task's naive predictor on the split, see :mod:`.baseline`),
    ``per_class`` and ``confusion`` (classification of whole sequences), ``per_column`` (``csv``), each
    ``None`` where it does not apply.  ``save_predictions``: write every prediction with its target there
    (``.csv``, ``.jsonl`` or ``.json``; see :func:`.outputs.prediction_rows`).
    """
    from .baseline import baseline_metrics
    from .outputs import PREDICTION_FORMATS, column_metrics, confusion_report, prediction_rows, write_predictions
    from .trainer import predict_split, score_outputs

    if save_predictions is not None and Path(save_predictions).suffix.lower() not in PREDICTION_FORMATS:
        raise LstmkitError(f"--save-predictions {save_predictions}: expected a file name ending in "
                           f"{', '.join(PREDICTION_FORMATS)}", ExitCode.USAGE)
    loaded, task, data, model, path = open_run(run_dir, checkpoint)
    with thread_limit(loaded.config.runtime.threads):
        if len(data.get(split, ())) == 0:
            raise LstmkitError(f"the {split} split of this run's task is empty", ExitCode.RUN_FAILED)
        part = data[split]
        outputs = predict_split(model, task, part, batch_size=max(loaded.config.training.batch_size, 256))
        metrics = score_outputs(task, part, outputs)
    report = confusion_report(task, outputs, part.targets) or {}
    naive = baseline_metrics(task, {split: part}) if split != "train" else None
    result = {"split": split, "checkpoint": str(path), "size": len(part), "metrics": metrics,
              "baseline": None if not naive or split not in naive else {"method": naive["method"], **naive[split]},
              "per_class": report.get("per_class"), "confusion": report.get("confusion"),
              "labels": report.get("labels"), "per_column": column_metrics(task, outputs, part.targets),
              "predictions": None}
    if save_predictions is not None:
        rows = prediction_rows(task, part, outputs)
        write_predictions(save_predictions, rows)
        result["predictions"] = {"file": str(save_predictions), "rows": len(rows)}
    return result


def format_evaluation(result: dict) -> list[str]:
    """:func:`evaluate_run`'s result as the lines ``lstmkit evaluate`` prints."""
    naive = result.get("baseline") or {}
    lines = [f"{result['split']} ({result['size']} sequences, {result['checkpoint']}):"]
    if naive:
        lines[0] += f"  (baseline: {naive['method']})"
    for key, value in result["metrics"].items():
        base = naive.get(key)
        lines.append(f"  {key:<20} {value:.6g}" + (f"   baseline {base:.6g}" if isinstance(base, float) else ""))
    if result.get("per_class"):
        lines.append("per class:")
        lines.append(f"  {'class':<16} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
        for label, m in result["per_class"].items():
            cells = " ".join(f"{'-' if m[k] is None else format(m[k], '.4f'):>9}" for k in ("precision", "recall", "f1"))
            lines.append(f"  {label[:16]:<16} {cells} {m['support']:>8}")
    if result.get("confusion"):
        labels = [label[:8] for label in result["labels"]]
        width = max(8, *(len(str(v)) for row in result["confusion"] for v in row))
        lines.append("confusion matrix (rows: target, columns: predicted):")
        lines.append("  " + " " * 16 + " ".join(f"{label:>{width}}" for label in labels))
        for label, row in zip(result["labels"], result["confusion"]):
            lines.append(f"  {label[:16]:<16}" + " ".join(f"{v:>{width}}" for v in row))
    if result.get("per_column"):
        lines.append("per column:")
        for column, m in result["per_column"].items():
            lines.append(f"  {column[:20]:<20} " + "  ".join(f"{k} {v:.6g}" for k, v in m.items()))
    if result.get("predictions"):
        p = result["predictions"]
        lines.append(f"predictions: {p['rows']} rows written to {p['file']}")
    return lines


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
    if task.input_kind == "tokens":
        check_token_ids(inputs, task.vocab_size, input_path)
    with thread_limit(loaded.config.runtime.threads):
        if np.issubdtype(np.asarray(inputs).dtype, np.floating):
            inputs = np.asarray(inputs, dtype=model.dtype)
        try:
            outputs = model.forward(inputs, lengths)
        except (ValueError, RuntimeError) as exc:
            raise LstmkitError(f"{input_path}: {exc}", ExitCode.RUN_FAILED) from None
    return task.format_predictions(outputs, lengths)


def check_token_ids(inputs, vocab_size: int, source) -> None:
    """Token ids must be whole numbers in ``0..vocab_size-1``: the first one that is not is named (exit 1)."""
    ids = np.asarray(inputs)
    if ids.size == 0:
        return
    if not (np.issubdtype(ids.dtype, np.integer) or np.issubdtype(ids.dtype, np.bool_)):
        raise LstmkitError(f"{source}: token ids must be whole numbers, got {ids.dtype} values", ExitCode.RUN_FAILED)
    bad = np.argwhere((ids < 0) | (ids >= vocab_size))
    if len(bad):
        where = tuple(int(i) for i in bad[0])
        raise LstmkitError(f"{source}: token id {int(ids[where])} (sequence {where[0] + 1}"
                           + (f", position {where[1] + 1}" if len(where) > 1 else "")
                           + f") is outside the vocabulary of this run: size {vocab_size}, ids 0..{vocab_size - 1}"
                           + (f" ({len(bad)} ids are outside)" if len(bad) > 1 else ""), ExitCode.RUN_FAILED)
