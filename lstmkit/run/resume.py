"""``lstmkit run --resume``: the run's own config, its checkpoint read and checked, edits refused.

Also the shared readers of checkpoints for ``evaluate``/``predict``: an unreadable or
foreign file is a clean error naming it (exit 1), never a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..config.errors import ConfigError, ConfigIssue, ExitCode, LstmkitError
from .checkpoint import load_checkpoint
from .folder import CONFIG, RunFolder, is_run_folder

__all__ = ["load_for_resume", "checkpoint_config_changes", "read_checkpoint", "read_weights", "unreadable",
           "checkpoint_step", "RESUMABLE"]

RESUMABLE = ("training.epochs", "training.max_steps")


def load_for_resume(run_dir: Path, config_path: str | None, overrides: Sequence[str], seed, backend):
    """The run's own config, extended by the allowed overrides; anything else is refused (exit 3)."""
    from ..config.loader import diff_configs, load_config

    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        if is_run_folder(folder.path):  # meta.json is written first: killed before config.yaml
            raise LstmkitError(f"--resume {run_dir}: the run stopped before it wrote {CONFIG}: there is nothing to "
                               f"resume; start it again (with -o {run_dir} --overwrite)", ExitCode.RUN_FAILED)
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
        if key in RESUMABLE and old is not None and value is not None and value >= old:
            continue
        changed.append((key, old, value))
    if changed:
        lines = [ConfigIssue(k, f"{json.dumps(a)} in the run, {json.dumps(b)} now") for k, a, b in changed]
        err = ConfigError(lines, f"for --resume {run_dir}")
        err.message = (err.message + "\n--resume continues the run with its own config: only training.epochs and "
                       "training.max_steps may change, and only upwards (to train longer).")
        raise err
    data = json.loads(json.dumps(saved.data))
    for key in RESUMABLE:
        section, name = key.split(".")
        data[section][name] = new.data[section][name]
    from ..config.loader import load_config_data

    return load_config_data(data, {}, saved.base_dir, source=str(folder.config), path=folder.config), ckpt


def checkpoint_step(path: Path):
    """The step a checkpoint was written at (``"?"`` if it cannot be read): a detail of a report."""
    try:
        return load_checkpoint(path)["trainer"]["step"]
    except Exception:  # pragma: no cover - a report detail only
        return "?"


def unreadable(path: Path, exc: Exception, advice: str) -> LstmkitError:
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
        raise unreadable(path, exc, advice) from None


def read_weights(path: Path, advice: str):
    """:func:`~lstmkit.run.checkpoint.load_weights`, with an unreadable file reported as a clean error (exit 1)."""
    from .checkpoint import load_weights

    try:
        return load_weights(path)
    except Exception as exc:
        raise unreadable(path, exc, advice) from None


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
        if key in RESUMABLE and old is not None and value is not None and value >= old:
            continue
        out.append((key, old, value))
    return out
