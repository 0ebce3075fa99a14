"""``lstmkit evaluate`` and ``lstmkit predict``: a trained run's model on a split or on new inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config.errors import ExitCode, LstmkitError
from .build import build_model, build_task, seed_generators, thread_limit, warnings_to
from .checkpoint import compare_section, load_checkpoint
from .folder import CONFIG, RunFolder
from .resume import checkpoint_config_changes, read_weights, unreadable

__all__ = ["open_run", "evaluate_run", "predict_run", "check_token_ids"]


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
