"""lstmkit run keeps freed memory in the process (lstmkit/_malloc.py)."""

import os
import subprocess
import sys
import textwrap

import pytest

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc only",
)


def _run(code, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environ,
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


# A step's caches: freed blocks the next step asks for again.  Minor page faults
# count what the system had to hand back.
_FAULTS = """
    import resource, numpy as np
    from lstmkit._malloc import retain_freed_memory
    print(retain_freed_memory() if {retain} else False)
    def step():
        a = [np.empty(n) for n in (300_000, 40_000, 180_000, 300_000)]
        for x in a:
            x.fill(1.0)
    step(); step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@glibc
def test_retained_memory_is_not_faulted_in_again():
    kept, faults_kept = _run(_FAULTS.format(retain=True))
    plain, faults_plain = _run(_FAULTS.format(retain=False))
    assert kept == "True" and plain == "False"
    # 50 steps of ~6 MB: without retention glibc unmaps and faults every step
    assert int(faults_kept) < 50 < int(faults_plain)


@glibc
def test_users_environment_settings_are_left_alone():
    code = "from lstmkit._malloc import retain_freed_memory as r; print(r(), r())"
    assert _run(code) == ["True", "True"]
    assert _run(code, MALLOC_TRIM_THRESHOLD_="1000000") == ["False", "False"]


def test_the_cli_training_session_retains_memory(monkeypatch):
    import lstmkit._malloc as m
    from lstmkit.run.build import thread_limit

    calls = []
    monkeypatch.setattr(m, "retain_freed_memory", lambda: calls.append(1) or True)
    with thread_limit(1):
        pass
    assert calls == [1]
