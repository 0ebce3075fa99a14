"""The run folder is safe: kill -9 anywhere loses nothing, one writer at a time, --overwrite touches only
lstmkit's files, SIGTERM and a full disk end cleanly, a tampered checkpoint is refused (never a hang).

kill -9 is simulated in a subprocess that SIGKILLs itself just before its N-th ``os.replace`` (every
file lstmkit writes ends with one), so each test lands between two writes, with a complete temporary
file left behind; a timed kill lands anywhere.  ``LSTMKIT_ALL_KILL_POINTS=1`` runs every write point.
"""
from __future__ import annotations

import errno
import filecmp
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstmkit.cli import ExitCode, make_cli
from lstmkit.run import trainer as trainer_module
from lstmkit.run.checkpoint import load_checkpoint, load_weights
from lstmkit.run.folder import RunFolder
from lstmkit.run.lock import RunLock

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and flock")

TINY = """\
name: tiny
seed: 3
model: {cell: lstm, hidden_size: 8, num_layers: 2, dropout: 0.2}
task: {type: sine, options: {seq_len: 12, num_train: 40, num_valid: 16, num_test: 16}}
training: {epochs: 3, batch_size: 8, optimizer: {name: adam, lr: 1e-2}, tbptt: 5}
outputs: {log_every: 2}
"""
WRITES = 18  # os.replace calls of one TINY run (metrics.csv follows each of the 4 metrics.jsonl writes), +1 for loss.png with matplotlib (see test_the_kill_points_...)

KILLER = """\
import atexit, os, signal, sys
at, real, count = sys.argv[1], os.replace, [0]
def replace(a, b):
    count[0] += 1
    if str(count[0]) == at or str(b).endswith(os.sep + at):  # the N-th write, or the write of a file name
        os.kill(os.getpid(), signal.SIGKILL)
    return real(a, b)
os.replace = replace
atexit.register(lambda: sys.stderr.write(f"writes: {count[0]}\\n"))
from lstmkit.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def cli():
    return make_cli()


def invoke(cli, *args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def clean(result) -> bool:
    """Ended with a message and an exit code, not an exception."""
    return (result.exception is None or isinstance(result.exception, SystemExit)) and "Traceback" not in result.output


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cli):
    """An uninterrupted TINY run."""
    base = tmp_path_factory.mktemp("reference")
    (base / "tiny.yaml").write_text(TINY)
    result = invoke(cli, "run", base / "tiny.yaml", "-o", base / "run")
    assert result.exit_code == 0, result.output
    return base / "run"


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_weights(a), load_weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def lstmkit(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstmkit", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def killed_at(n, config: Path, out: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILLER, str(n), "run", str(config), "-o", str(out), *args],
                          capture_output=True, text=True, timeout=120)


def finish(config: Path, out: Path) -> None:
    """What a user does after a kill: resume, or start again if there was nothing to resume."""
    resumed = lstmkit("run", "--resume", out)
    if any(why in resumed.stderr for why in ("no checkpoint to resume from", "nothing to resume", "not a run folder")):
        resumed = lstmkit("run", config, "-o", out, "--overwrite")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stderr


def assert_as_if_never_killed(out: Path, reference: Path) -> None:
    assert filecmp.cmp(reference / "metrics.jsonl", out / "metrics.jsonl", shallow=False), \
        (out / "metrics.jsonl").read_text()
    assert same_weights(reference / "checkpoints/last.npz", out / "checkpoints/last.npz")
    assert same_weights(reference / "checkpoints/best.npz", out / "checkpoints/best.npz")
    results = json.loads((out / "results.json").read_text())
    expected = json.loads((reference / "results.json").read_text())
    assert results["status"] == "completed" and results["test"] == expected["test"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # orphans removed
    assert not (out / ".lstmkit.lock").exists()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["end"]
    assert all(s["status"] in ("killed", "completed") for s in meta["sessions"])


# -- kill -9 ---------------------------------------------------------------------------------------------
def _kill_points() -> list[int]:
    if os.environ.get("LSTMKIT_ALL_KILL_POINTS"):
        return list(range(1, WRITES + 1))
    seed = int(os.environ.get("LSTMKIT_KILL_SEED", "8"))
    return sorted(random.Random(seed).sample(range(1, WRITES + 1), 3))


@POSIX
def test_the_kill_points_cover_every_write(tmp_path, tiny, reference):
    done = killed_at(0, tiny, tmp_path / "run")  # 0: never killed; counts the writes
    assert done.returncode == 0, done.stderr
    try:
        import matplotlib  # noqa: F401
        plot = 1
    except ImportError:
        plot = 0
    assert f"writes: {WRITES + plot}" in done.stderr  # loss.png, the last write, is not a kill point
    assert filecmp.cmp(reference / "metrics.jsonl", tmp_path / "run/metrics.jsonl", shallow=False)


@POSIX
@pytest.mark.parametrize("n", _kill_points())
def test_kill_9_between_any_two_writes_loses_nothing(tmp_path, tiny, reference, n):
    out = tmp_path / "run"
    killed = killed_at(n, tiny, out)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [p for p in out.rglob("*.tmp")], "the kill left its temporary file"
    finish(tiny, out)
    assert_as_if_never_killed(out, reference)


@POSIX
def test_kill_9_at_a_random_moment_loses_nothing(tmp_path, tiny, reference):
    out = tmp_path / "run"
    delay = random.Random().uniform(0.3, 2.0)
    process = subprocess.Popen([sys.executable, "-m", "lstmkit", "run", str(tiny), "-o", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.kill()
    process.wait(timeout=60)
    if out.exists():
        finish(tiny, out)
    else:
        assert lstmkit("run", tiny, "-o", out).returncode == 0
    assert_as_if_never_killed(out, reference)


@POSIX
def test_an_epoch_snapshot_lost_to_kill_9_is_written_on_resume(tmp_path, tiny, reference):
    out = tmp_path / "run"
    killed = killed_at("epoch-0002.npz", tiny, out, "--set", "outputs.checkpoint.keep_last=3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "checkpoints/epoch-0002.npz").exists()
    assert load_checkpoint(out / "checkpoints/last.npz")["trainer"]["epoch"] == 2
    finish(tiny, out)
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch-*")) == ["epoch-0002.npz", "epoch-0003.npz"]
    assert same_weights(out / "checkpoints/epoch-0003.npz", reference / "checkpoints/last.npz")
    with np.load(out / "checkpoints/epoch-0002.npz") as z:
        assert json.loads(str(z["trainer/state"]))["epoch"] == 2


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    import datetime

    from lstmkit.run import folder as folder_module

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(folder_module._dt, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    made = [folder_module.default_run_dir("x", create=True) for _ in range(3)]
    assert [p.name for p in made] == ["20260102-030405", "20260102-030405-2", "20260102-030405-3"]
    assert all(p.is_dir() for p in made)


def _fake_killed_session(run: Path) -> None:
    """What kill -9 leaves: meta.json 'running', a lock file of a dead process, a temporary file."""
    meta = json.loads((run / "meta.json").read_text())
    meta["status"], meta["end"] = "running", None
    meta["sessions"][-1].update(status="running", end=None)
    (run / "meta.json").write_text(json.dumps(meta))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / ".lstmkit.lock").write_text(json.dumps({"pid": int(dead.stdout), "command": ["lstmkit", "run"]}))
    (run / "checkpoints/.last.npz.abc123.tmp").write_bytes(b"half")
    (run / ".metrics.jsonl.xyz_9.tmp").write_text("{}")


def test_killed_session_is_marked_and_its_leftovers_removed(cli, tiny, tmp_path):
    run = tmp_path / "run"
    assert invoke(cli, "run", tiny, "-o", run, "--set", "training.epochs=2").exit_code == 0
    (run / "notes.tmp").write_text("mine")  # not one of lstmkit's temporary names: kept
    _fake_killed_session(run)
    result = invoke(cli, "run", "--resume", run, "--set", "training.epochs=3")
    assert result.exit_code == 0, result.output
    assert "which no longer holds it (it was killed); taken over" in result.output
    assert "removed 2 temporary file(s)" in result.output and "marked \"killed\"" in result.output
    meta = json.loads((run / "meta.json").read_text())
    assert [s["status"] for s in meta["sessions"]] == ["killed", "completed"]
    assert meta["sessions"][0]["noticed"] and meta["sessions"][0]["end"] is None
    assert sorted(p.name for p in run.rglob("*tmp")) == ["notes.tmp"]


def test_a_run_killed_after_its_last_checkpoint_gets_its_reports(cli, tiny, tmp_path, reference):
    run = tmp_path / "run"
    assert invoke(cli, "run", tiny, "-o", run).exit_code == 0
    (run / "results.json").unlink()
    records = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(records[:-1]) + "\n")  # the test record was not written
    _fake_killed_session(run)
    result = invoke(cli, "run", "--resume", run)
    assert result.exit_code == 0, result.output
    assert "already finished" not in result.output and "test (best weights)" in result.output
    assert_as_if_never_killed(run, reference)


# -- one writer per folder ----------------------------------------------------------------------------------
@POSIX
def test_a_second_run_into_a_busy_folder_is_refused_naming_the_first(cli, tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = RunLock(RunFolder(out), ["lstmkit", "run", "first.yaml"]).acquire()
    try:
        for args in (["run", tiny, "-o", out], ["run", tiny, "-o", out, "--overwrite"]):
            result = invoke(cli, *args)
            assert result.exit_code == ExitCode.USAGE, result.output
            assert f"is in use by another lstmkit run (process {os.getpid()}" in result.output
            assert "first.yaml" in result.output and clean(result)
        assert sorted(p.name for p in out.iterdir()) == [".lstmkit.lock"]
    finally:
        holder.release()
    assert invoke(cli, "run", tiny, "-o", out, "--set", "training.max_steps=2").exit_code == 0
    holder = RunLock(RunFolder(out)).acquire()
    try:
        result = invoke(cli, "run", "--resume", out, "--set", "training.max_steps=4")
        assert result.exit_code == ExitCode.USAGE and "in use by another lstmkit run" in result.output
    finally:
        holder.release()
    assert not (out / ".lstmkit.lock").exists()


@POSIX
def test_two_processes_racing_for_one_folder(tmp_path, tiny):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "lstmkit", "run", str(tiny), "-o", str(out), "--seed", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen([sys.executable, "-m", "lstmkit", "run", str(tiny), "-o", str(out), "--seed", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in (first, second)]
    first.stdout.close(), second.stdout.close(), first.stderr.close(), second.stderr.close()
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes  # one wins; the other is refused (busy, or the folder is no longer empty)
    loser = next(err for code, err in outcomes if code == 2)
    assert "in use by another lstmkit run" in loser or "is not empty" in loser
    from lstmkit.config import load_yaml

    seed = json.loads((out / "meta.json").read_text())["seed"]
    assert load_yaml(load_checkpoint(out / "checkpoints/last.npz")["config"])[0]["seed"] == seed
    assert load_yaml((out / "config.yaml").read_text())[0]["seed"] == seed  # one run's files, not a mix


# -- --overwrite -----------------------------------------------------------------------------------------
@POSIX
def test_overwrite_never_follows_a_checkpoints_symlink(cli, tiny, tmp_path):
    run = tmp_path / "run"
    assert invoke(cli, "run", tiny, "-o", run, "--set", "training.max_steps=2").exit_code == 0
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "model.npz").write_bytes(b"mine")
    (elsewhere / "last.npz").write_bytes(b"mine too")
    import shutil

    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(elsewhere)
    result = invoke(cli, "run", tiny, "-o", run, "--overwrite")
    assert result.exit_code == ExitCode.USAGE and "symbolic link" in result.output and clean(result)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["last.npz", "model.npz"]
    result = invoke(cli, "run", "--resume", run)
    assert result.exit_code != 0 and clean(result)
    assert (elsewhere / "last.npz").read_bytes() == b"mine too"


def test_overwrite_keeps_a_users_files(cli, tiny, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my own config\n")
    result = invoke(cli, "run", tiny, "-o", out, "--overwrite")
    assert result.exit_code == ExitCode.USAGE and "not a run folder and holds config.yaml" in result.output
    assert (out / "config.yaml").read_text() == "my own config\n"
    result = invoke(cli, "run", tiny, "-o", out, "--dry-run", "--overwrite")
    assert result.exit_code == 0 and "the real run will be refused" in result.output

    run = tmp_path / "run"
    assert invoke(cli, "run", tiny, "-o", run, "--set", "outputs.checkpoint.keep_last=3").exit_code == 0
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints/mine.npz").write_bytes(b"mine")
    (run / "checkpoints/epoch-0001.npz.bak").write_bytes(b"mine")
    assert (run / "checkpoints/epoch-0003.npz").exists()
    result = invoke(cli, "run", tiny, "-o", run, "--overwrite", "--set", "training.max_steps=2")
    assert result.exit_code == 0, result.output
    files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()} - {"loss.png"}
    assert files == {"checkpoints/epoch-0001.npz.bak", "checkpoints/mine.npz", "notes.txt",  # the user's
                     "checkpoints/last.npz", "checkpoints/best.npz", "config.yaml", "meta.json", "metrics.jsonl",
                     "metrics.csv", "results.json"}  # the new run's; epoch-0002/0003.npz of the old one are gone
    assert load_checkpoint(run / "checkpoints/last.npz")["trainer"]["step"] == 2


@POSIX
def test_an_output_folder_that_cannot_be_created(cli, tiny, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker / "run", "/proc/lstmkit-cannot-be-here"):
        result = invoke(cli, "run", tiny, "-o", out)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert f"output folder {out} cannot be created" in result.output and clean(result)


# -- SIGTERM, disk full --------------------------------------------------------------------------------------
@POSIX
def test_sigterm_is_handled_like_ctrl_c(cli, tiny, tmp_path, monkeypatch):
    def after_step(self, step):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer_module.Trainer, "after_step", after_step)
    previous = signal.getsignal(signal.SIGTERM)
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run")
    assert result.exit_code == ExitCode.INTERRUPTED, result.output
    assert "SIGTERM: stopping after this step" in result.output and "--resume" in result.output
    assert load_checkpoint(tmp_path / "run/checkpoints/last.npz")["trainer"]["step"] == 4
    assert json.loads((tmp_path / "run/meta.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) == previous  # restored


@POSIX
def test_sigterm_to_a_real_process(tmp_path, tiny):
    out = tmp_path / "run"
    slow = tmp_path / "slow.yaml"
    slow.write_text(TINY.replace("epochs: 3", "epochs: 400"))
    process = subprocess.Popen([sys.executable, "-m", "lstmkit", "run", str(slow), "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "checkpoints/last.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    assert json.loads((out / "meta.json").read_text())["status"] == "interrupted"
    step = json.loads((out / "results.json").read_text())["step"]
    assert load_checkpoint(out / "checkpoints/last.npz")["trainer"]["step"] == step


def _disk_full_at(monkeypatch, suffix: str, code: int = errno.ENOSPC):
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(f".{suffix}."):
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
@pytest.mark.parametrize("name,every", [("last.npz", 1), ("metrics.jsonl", 1), ("metrics.jsonl", 2),
                                        ("best.npz", 1), ("results.json", 1), ("meta.json", 1), ("config.yaml", 1)])
def test_disk_full_is_a_message_naming_the_file(cli, tiny, tmp_path, monkeypatch, name, every):
    run = tmp_path / "run"
    _disk_full_at(monkeypatch, name)
    result = invoke(cli, "run", tiny, "-o", run, "--set", f"outputs.checkpoint.every={every}")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert clean(result), result.exception
    assert f"cannot write {run}" in result.output and name in result.output
    assert "No space left on device" in result.output and "nothing was half-written" in result.output
    assert not [p for p in run.rglob("*.tmp")]
    for npz in run.rglob("*.npz"):
        load_checkpoint(npz)  # whatever exists is whole


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_an_io_error_on_resume_keeps_the_checkpoint(cli, tiny, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert invoke(cli, "run", tiny, "-o", run, "--set", "training.epochs=1").exit_code == 0
    before = (run / "checkpoints/last.npz").read_bytes()
    _disk_full_at(monkeypatch, "last.npz", errno.EIO)
    result = invoke(cli, "run", "--resume", run, "--set", "training.epochs=2")
    assert result.exit_code == ExitCode.RUN_FAILED and clean(result), result.output
    assert f"cannot write {run / 'checkpoints/last.npz'}: Input/output error" in result.output
    assert (run / "checkpoints/last.npz").read_bytes() == before
    assert json.loads((run / "meta.json").read_text())["sessions"][-1]["status"] == "failed"
    monkeypatch.undo()
    result = invoke(cli, "run", "--resume", run, "--set", "training.epochs=2")
    assert result.exit_code == 0, result.output


# -- tampered checkpoints ---------------------------------------------------------------------------------
def _tamper(path: Path, change) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _state(**changes):
    def change(arrays):
        state = json.loads(str(arrays["trainer/state"]))
        state.update(changes)
        arrays["trainer/state"] = np.array(json.dumps(state))
    return change


def _entry(key, value):
    def change(arrays):
        arrays[key] = np.asarray(value)
    return change


def _drop(key):
    return lambda arrays: arrays.pop(key)


TAMPERED = {
    "batch past the epoch": (_state(batch=50, step=57), "batch 50 is not a position"),
    "negative step": (_state(step=-3), "step must be a whole number >= 0, got -3"),
    "negative batch": (_state(batch=-1), "batch must be a whole number >= 0"),
    "epoch as text": (_state(epoch="2"), "epoch must be a whole number >= 0, got '2'"),
    "step off the epoch grid": (_state(step=9), "step 9 does not match epoch"),
    "unknown state key": (_state(surprise=1), "unexpected entry 'surprise'"),
    "bad epoch rng": (_state(epoch_rng={"bit_generator": "PCG64", "state": "nope"}), "epoch_rng: not a PCG64 state"),
    "bad dropout rng": (_entry("rng/model", json.dumps({"bit_generator": "MT19937"})), "rng/model: not a PCG64"),
    "short betas": (_entry("optimizer/betas", [0.9]), "optimizer/betas: expected"),
    "nan lr": (_entry("optimizer/lr", float("nan")), "optimizer/lr: not a finite number"),
    "string weight": (_entry("rnn.weight_hh_l0", "oops"), "params/rnn.weight_hh_l0: expected float32"),
    "float64 weight": (lambda a: a.__setitem__("head.bias", a["head.bias"].astype(np.float64)), "head.bias"),
    "missing weight": (_drop("head.weight"), "params/head.weight: missing"),
    "trainer state not an object": (_entry("trainer/state", json.dumps([1, 2])), "expected a JSON object"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_checkpoint_is_refused_quickly(cli, tiny, tmp_path, case):
    change, expected = TAMPERED[case]
    run = tmp_path / "run"
    assert invoke(cli, "run", tiny, "-o", run, "--set", "training.epochs=1").exit_code == 0
    _tamper(run / "checkpoints/last.npz", change)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    if hasattr(signal, "SIGALRM"):
        def hang(*_):
            raise AssertionError("--resume hangs on a tampered checkpoint")
        signal.signal(signal.SIGALRM, hang)
        signal.alarm(60)
    try:
        result = invoke(cli, "run", "--resume", run, "--set", "training.epochs=3")
    finally:
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert clean(result), result.exception
    assert "does not fit the run's config" in result.output and expected in result.output, result.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing written


def test_tampered_weights_are_refused_by_evaluate_and_predict(cli, tiny, tmp_path):
    run = tmp_path / "run"
    assert invoke(cli, "run", tiny, "-o", run, "--set", "training.max_steps=2").exit_code == 0
    _tamper(run / "checkpoints/best.npz", _entry("rnn.weight_hh_l0", "oops"))
    root = Path(__file__).resolve().parent.parent
    for args in (["evaluate", run], ["predict", run, root / "examples/data/sine_inputs.txt"]):
        result = invoke(cli, *args)
        assert result.exit_code == ExitCode.RUN_FAILED and clean(result), result.output
        assert "does not fit the run's model" in result.output and "rnn.weight_hh_l0" in result.output


# -- predict, resume wording ---------------------------------------------------------------------------------
@pytest.fixture
def token_run(cli, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "tokens.npz"
    np.savez(data, inputs=rng.integers(0, 7, (40, 6)), labels=rng.integers(0, 2, 40))
    config = tmp_path / "tokens.yaml"
    config.write_text(f"task: {{type: sequence_classification, train: {data}}}\n"
                      "model: {hidden_size: 4, embedding_size: 3}\ntraining: {max_steps: 2, batch_size: 8}\n")
    result = invoke(cli, "run", config, "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def test_predict_token_ids_outside_the_vocabulary(cli, token_run, tmp_path):
    ok = tmp_path / "ok.npz"
    np.savez(ok, inputs=np.array([[1, 2, 3, 6, 0, 1]]))
    result = invoke(cli, "predict", token_run, ok)
    assert result.exit_code == 0, result.output
    for ids, expected in (([[1, 2, 3, 7, 0, 1]], "token id 7 (sequence 1, position 4)"),
                          ([[0, 0, 0, 0, 0, 0], [1, -2, 9, 0, 0, 0]], "token id -2 (sequence 2, position 2)")):
        bad = tmp_path / "bad.npz"
        np.savez(bad, inputs=np.array(ids))
        result = invoke(cli, "predict", token_run, bad)
        assert result.exit_code == ExitCode.RUN_FAILED and clean(result), result.output
        assert expected in result.output and "vocabulary of this run: size 7, ids 0..6" in result.output


def test_check_token_ids():
    from lstmkit.run.evaluate import check_token_ids

    check_token_ids(np.array([[0, 6]]), 7, "x")
    check_token_ids(np.zeros((0, 3), dtype=np.int64), 7, "x")
    with pytest.raises(Exception, match="token ids must be whole numbers, got float64"):
        check_token_ids(np.array([[1.5]]), 7, "x")
    with pytest.raises(Exception, match=r"token id 9 \(sequence 1, position 2\).*size 7.*\(2 ids are outside\)"):
        check_token_ids(np.array([[0, 9, 8]]), 7, "x")


@pytest.mark.parametrize("step", [7, 10])
def test_resume_message_numbers_the_epoch_like_results_json(cli, tiny, tmp_path, monkeypatch, step):
    def after_step(self, current):
        if current == step:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(trainer_module.Trainer, "after_step", after_step)
        assert invoke(cli, "run", tiny, "-o", tmp_path / "run").exit_code == 130
    results = json.loads((tmp_path / "run/results.json").read_text())
    result = invoke(cli, "run", "--resume", tmp_path / "run")
    assert result.exit_code == 0, result.output
    batch = step - 5 * (results["epoch"] - 1)  # 5 steps per epoch
    assert f"from step {step} (epoch {results['epoch']}, batch {batch} of 5)" in result.output


def test_the_trainer_draws_no_click_progress_bar():
    source = Path(trainer_module.__file__).read_text()
    assert "import click" not in source
    seen = []

    class Bar:
        def __init__(self, length, label):
            seen.append((length, label))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            seen.append(n)

    from lstmkit.config.loader import load_config
    from lstmkit.run.build import build_model, build_task, seed_generators

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "tiny.yaml"
        config.write_text(TINY)
        loaded = load_config(config, ["training.epochs=1"])
    task, data = build_task(loaded)
    model_rng, shuffle = seed_generators(3)
    trainer = trainer_module.Trainer(build_model(loaded, task, model_rng), task, data, loaded.config,
                                     shuffle=shuffle, echo=lambda _: None, progress=Bar)
    trainer.fit()
    assert seen == [(5, "epoch 1/1"), 1, 1, 1, 1, 1]


def test_an_alias_bomb_in_the_checkpoints_config_does_not_stop_resume(cli, tiny, tmp_path):
    run = tmp_path / "run"
    assert invoke(cli, "run", tiny, "-o", run, "--set", "training.epochs=1").exit_code == 0
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9) + "]" for i in range(1, 9)]
    _tamper(run / "checkpoints/last.npz", _entry("lstmkit/config", "\n".join(lines) + "\n"))  # 9^9 "lol"s
    result = invoke(cli, "run", "--resume", run, "--set", "training.epochs=2")  # expanded, it would never end
    assert result.exit_code == 0 and clean(result), result.output
    assert json.loads((run / "results.json").read_text())["epochs_completed"] == 2


@POSIX
def test_sigterm_before_training_is_an_interrupt_too(cli, tiny, tmp_path, monkeypatch):
    from lstmkit.run import session

    real = session.build_task

    def build_task(loaded):
        os.kill(os.getpid(), signal.SIGTERM)  # while the data loads: no training loop to defer it yet
        return real(loaded)

    monkeypatch.setattr(session, "build_task", build_task)
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run")
    assert result.exit_code == ExitCode.INTERRUPTED and "Interrupted." in result.stderr, result.output
    assert not (tmp_path / "run").exists()  # nothing was started


def test_the_split_keeps_the_old_import_paths():
    from lstmkit.run import session

    for name in ("run", "thread_limit", "build_task", "build_model", "seed_generators", "open_run", "evaluate_run",
                 "predict_run", "plot_losses", "RunFolder"):
        assert callable(getattr(session, name)), name


def test_resume_dry_run_and_print_config_write_nothing(cli, tiny, tmp_path):
    run = tmp_path / "run"
    assert invoke(cli, "run", tiny, "-o", run, "--set", "training.epochs=1").exit_code == 0
    _fake_killed_session(run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for flag in ("--dry-run", "--print-config"):
        result = invoke(cli, "run", "--resume", run, "--set", "training.epochs=2", flag)
        assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
