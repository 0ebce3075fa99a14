"""Where trials run: a pool of local processes (the default) or a Ray cluster (``--address``).

Both take jobs (:func:`lstmkit.sweep.trial.run_trial`'s plain-data input) and give back
``(job, outcome)`` pairs as trials finish.  A worker that dies (``kill -9``, a lost node) is an
outcome with status ``lost`` and its reason; the sweep goes on and ``--resume`` runs it again.

- :class:`LocalPool`: one fresh process per trial (forked from a clean ``forkserver``, or
  ``spawn``: nothing is inherited from the sweep's own threads), at most ``parallel`` at once.  Each trial runs its core on
  ``resources.cpus`` threads (``runtime.threads``, :mod:`lstmkit._threads`), 1 by default, so
  trials side by side do not fight over the CPUs.
- :class:`RayExecutor`: ``ray.init(address=...)``; each trial is a task with the sweep's
  ``resources`` (``num_cpus``, ``num_gpus``) and no retries.  The run happens in a temporary
  folder on the node and its files come back to the sweep folder, unless ``storage`` names a
  folder every node can write (then the workers write there directly).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Iterator

from ..config.errors import LstmkitError, UnavailableError

__all__ = ["LocalPool", "RayExecutor", "default_parallel"]


def default_parallel(cpus_per_trial: float) -> int:
    """One trial per usable CPU (``resources.cpus`` CPUs each)."""
    from .._threads import usable_cpus

    return max(1, int(usable_cpus() // max(1, cpus_per_trial)))


def _child(job: dict, conn) -> None:
    from .trial import run_trial

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sweep decides: it sends SIGTERM (an interrupt for a run)
    _die_with_parent()
    try:
        conn.send(run_trial(job))
    finally:
        conn.close()


def _die_with_parent() -> None:
    """Linux: SIGTERM when the sweep dies (``kill -9``), so no orphan keeps writing a trial folder."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


class LocalPool:
    """At most ``parallel`` trials at once on this machine, each in its own process."""

    def __init__(self, parallel: int):
        self.parallel = parallel
        # forkserver: each trial is forked from a clean server (none of the sweep's threads) that has
        # lstmkit imported already, so a trial starts in milliseconds rather than seconds
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self._ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            self._ctx.set_forkserver_preload(["lstmkit.sweep.trial", "lstmkit.run.session", "lstmkit.run.trainer",
                                              "lstmkit.config.loader", "lstmkit.tasks", "matplotlib.pyplot"])
        self._running: dict = {}  # sentinel -> (process, reader, job)

    def describe(self) -> str:
        return f"this machine, {self.parallel} trial(s) at once"

    def free(self) -> int:
        return self.parallel - len(self._running)

    def submit(self, job: dict) -> None:
        reader, writer = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=_child, args=(job, writer), name=f"lstmkit-trial-{job['name']}",
                                    daemon=True)
        process.start()
        writer.close()
        self._running[process.sentinel] = (process, reader, job)

    def busy(self) -> bool:
        return bool(self._running)

    def wait(self, timeout: float | None = None) -> Iterator[tuple[dict, dict]]:
        """Finished trials (blocks up to ``timeout`` seconds for the first one)."""
        from multiprocessing.connection import wait

        ready = wait(list(self._running), timeout)
        for sentinel in ready:
            process, reader, job = self._running.pop(sentinel)
            outcome = None
            if reader.poll():
                try:
                    outcome = reader.recv()
                except (EOFError, OSError):
                    outcome = None
            reader.close()
            process.join(5)
            if outcome is None:
                code = process.exitcode
                why = (f"killed by signal {-code} ({signal.Signals(-code).name})" if code is not None and code < 0
                       else f"exited with code {code}")
                outcome = {"status": "lost", "reason": f"the trial's worker process {process.pid} {why} before it "
                                                       f"reported; --resume runs it again"}
            yield job, outcome

    def stop(self) -> None:
        """Interrupt the running trials (SIGTERM: each run saves its checkpoint) and wait for them."""
        for process, _, _ in self._running.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for process, reader, _ in self._running.values():
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()
            reader.close()
        self._running.clear()


def import_ray():
    try:
        import ray
    except ImportError:
        raise UnavailableError('--address needs Ray, which is not installed: pip install "lstmkit[ray]" '
                               '(or pip install "ray[default]>=2.9")') from None
    return ray


class RayExecutor:
    """Trials as Ray tasks on the cluster at ``address``; ``storage``: a folder every node writes to."""

    def __init__(self, address: str, resources: dict, parallel: int | None, storage: str | None):
        ray = self.ray = import_ray()
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": str(int(max(1, resources["cpus"])))}})
        except Exception as exc:  # a wrong address, no cluster there, a version mismatch
            raise LstmkitError(f"cannot connect to the Ray cluster at {address}: {type(exc).__name__}: {exc}") \
                from None
        self.address, self.storage = address, storage
        cpus = ray.cluster_resources().get("CPU", 1)
        self.parallel = parallel or max(1, int(cpus // max(resources["cpus"], 1e-9)))
        self._task = ray.remote(_ray_trial).options(num_cpus=resources["cpus"], num_gpus=resources["gpus"],
                                                    max_retries=0)
        self._running: dict = {}  # ObjectRef -> job

    def describe(self) -> str:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return f"the Ray cluster at {self.address} ({len(nodes)} node(s)), {self.parallel} trial(s) at once"

    def free(self) -> int:
        return self.parallel - len(self._running)

    def busy(self) -> bool:
        return bool(self._running)

    def submit(self, job: dict) -> None:
        job = dict(job, ship=self.storage is None)
        self._running[self._task.remote(job)] = job

    def wait(self, timeout: float | None = None) -> Iterator[tuple[dict, dict]]:
        ready, _ = self.ray.wait(list(self._running), num_returns=1, timeout=timeout)
        for ref in ready:
            job = self._running.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except Exception as exc:  # the worker or its node died: ray.exceptions.*
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                outcome = {"status": "lost", "reason": f"the Ray task failed ({type(exc).__name__}: {first}); "
                                                       f"--resume runs it again"}
            yield job, outcome

    def stop(self) -> None:
        for ref in list(self._running):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._running.clear()

    def close(self) -> None:
        self.ray.shutdown()


def _ray_trial(job: dict) -> dict:
    """Runs on a Ray worker: the trial, with the node that ran it."""
    import ray

    from .trial import run_trial

    return run_trial(dict(job, node=ray.get_runtime_context().get_node_id()))
