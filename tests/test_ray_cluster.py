"""lstmkit sweep --address on a real two-node Ray cluster on the loopback (127.0.0.1 only).

A head node and a second node are started on this machine with one CPU each, so trials are
scheduled on both; a small sweep runs through ``--address`` and must give the same trial results as
the embedded default; a node killed mid-sweep loses no finished trial and ``--resume`` finishes the
rest.  Everything started here is stopped by the fixture's finalizer, also when a test fails.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("ray")

TINY = """\
name: tiny
seed: 0
model: {cell: lstm, hidden_size: 8}
task:
  type: sine
  options: {seq_len: 12, num_train: 64, num_valid: 32, num_test: 16}
training:
  epochs: 2
  batch_size: 32
  optimizer: {name: adam, lr: 1.0e-2}
"""
RAY = str(Path(sys.executable).with_name("ray"))
ENV = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # --block keeps each node's processes in one process group of ours: killing it stops exactly that node
    return subprocess.Popen([RAY, "start", *args, "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                             "--disable-usage-stats", "--block"], start_new_session=True, env=ENV,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Ray's workers start sessions of their own, outside the group)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _stop(proc: subprocess.Popen) -> None:
    """Stop one node: its process group, then any process it started that is still there."""
    below = _descendants(proc.pid)
    if proc.poll() is None:
        with _suppress():
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with _suppress():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for pid in below:
        with _suppress():
            os.kill(pid, signal.SIGKILL)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        return kind is not None and issubclass(kind, ProcessLookupError)


def _alive_nodes(address: str) -> int:
    code = ("import ray; ray.init(address=%r, log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))" % address)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``(address, worker node process)``: a head and a second node on 127.0.0.1."""
    where = tmp_path_factory.mktemp("ray")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    started = []
    try:
        started.append(_start(["--head", "--port", str(port), "--include-dashboard=false",
                               "--temp-dir", str(where / "t")], where / "head.log"))
        end = time.monotonic() + 180
        while subprocess.run([RAY, "status", "--address", address], capture_output=True, env=ENV).returncode:
            assert time.monotonic() < end and started[0].poll() is None, (where / "head.log").read_text()[-3000:]
            time.sleep(1)
        started.append(_start(["--address", address], where / "worker.log"))
        end = time.monotonic() + 180
        while _alive_nodes(address) < 2:
            assert time.monotonic() < end and started[1].poll() is None, (where / "worker.log").read_text()[-3000:]
            time.sleep(1)
        yield address, started[1]
    finally:
        for proc in reversed(started):
            _stop(proc)


def _sweep_file(tmp_path: Path, points: int) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY)
    sizes = ", ".join(str(3 + i) for i in range(points))
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: tiny.yaml\nparams: {{model.hidden_size: [{sizes}]}}\nmethod: grid\nparallel: 2\n"
                    f"resources: {{cpus: 1}}\n")
    return path


def _lstmkit(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstmkit", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=ENV, timeout=600)


def _rows(folder: Path) -> dict[str, dict]:
    if not (folder / "trials.jsonl").is_file():
        return {}
    return {r["trial"]: r for r in map(json.loads, (folder / "trials.jsonl").read_text().splitlines())}


def test_sweep_on_two_nodes_matches_the_embedded_pool(cluster, tmp_path):
    address, _ = cluster
    path = _sweep_file(tmp_path, 4)
    on_ray = _lstmkit("sweep", path, "--address", address, "-o", tmp_path / "ray", cwd=tmp_path)
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    rows = _rows(tmp_path / "ray")
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows.values()), rows
    assert len({r["node"] for r in rows.values()}) == 2  # scheduled on both nodes
    from lstmkit.run.folder import is_run_folder

    for r in rows.values():  # the run folders came back to the sweep folder
        folder = tmp_path / "ray" / "trials" / r["trial"]
        assert is_run_folder(folder) and (folder / "results.json").is_file()
        assert (tmp_path / "ray" / "logs" / f"{r['trial']}.log").is_file()
    local = _lstmkit("sweep", path, "-o", tmp_path / "local", cwd=tmp_path)
    assert local.returncode == 0, local.stdout + local.stderr
    same = _rows(tmp_path / "local")
    assert {k: (r["params"], r["value"]) for k, r in same.items()} == \
           {k: (r["params"], r["value"]) for k, r in rows.items()}


def test_storage_a_folder_every_node_writes(cluster, tmp_path):
    address, _ = cluster
    path = _sweep_file(tmp_path, 2)
    shared = tmp_path / "shared"
    result = _lstmkit("sweep", path, "--address", address, "-o", tmp_path / "sw", "--storage", shared, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(tmp_path / "sw")
    assert len(rows) == 2
    for r in rows.values():  # written there by the workers, not shipped back
        assert Path(r["run_dir"]) == shared / "sw" / "trials" / r["trial"]
        assert (Path(r["run_dir"]) / "results.json").is_file()
    assert not (tmp_path / "sw" / "trials").exists()
    compared = _lstmkit("compare", tmp_path / "sw", cwd=tmp_path)
    assert compared.returncode == 0 and compared.stdout.count("trial-") == 2, compared.stdout + compared.stderr


def test_a_node_killed_mid_sweep_loses_no_finished_trial(cluster, tmp_path):
    address, worker = cluster
    path = _sweep_file(tmp_path, 6)
    out = tmp_path / "sw"
    proc = subprocess.Popen([sys.executable, "-m", "lstmkit", "sweep", str(path), "--address", address, "-o",
                             str(out)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=ENV)
    try:
        end = time.monotonic() + 300
        while not any(r["status"] == "completed" for r in _rows(out).values()):
            assert time.monotonic() < end and proc.poll() is None, proc.stdout.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        before = {k: r for k, r in _rows(out).items() if r["status"] == "completed"}
        _stop(worker)  # the second node goes away with whatever runs on it
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = _rows(out)
    for name, row in before.items():
        assert after[name] == row  # nothing finished was lost
    lost = [r for r in after.values() if r["status"] == "lost"]
    assert proc.returncode == (1 if lost else 0), output
    for r in lost:
        assert "Ray task failed" in r["reason"]
    resumed = _lstmkit("sweep", "--resume", out, "--address", address, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = _rows(out)
    assert len(final) == 6 and all(r["status"] == "completed" for r in final.values())
    for name, row in before.items():
        assert final[name] == row
