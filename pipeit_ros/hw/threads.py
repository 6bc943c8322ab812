"""Per-thread CPU time of a process, and OS names for our Python threads so that it can be told apart.

Python 3.11 does not give its threads OS names: every thread of a container shows as ``python`` in ``top -H``
and ``/proc/<pid>/task/<tid>/comm``. :func:`name_threads` writes a short name (at most 15 bytes, the kernel's
limit) for each live Python thread of this process: ``stage_3.0`` and ``output``, ``feeder`` of the engine
and of a run, ``spin.<node>`` and ``pump.<node>`` of the executors and pumps. Fast DDS names its own threads
(``dds.*``). :func:`thread_cpu` reads each thread's CPU time in nanoseconds (``schedstat``), which counts only
the time the thread ran, so a per-frame figure holds while other processes share the machine.

:func:`pinned_run_wait` reads the other half of ``schedstat``: how long each thread waited on a run queue while
it was runnable. For the threads pinned to one CPU, run / (run + wait) is the share of that CPU they got while
they wanted it (:func:`held_shares`): the speed that CPU gave us, whatever else ran there.
"""
import os
import re
import threading

_RUN_PREFIX = re.compile(r'^.*\.g\d+\.')        # '<container>.g<generation>.' of engine and run threads


def short_name(name):
    """The OS name for a Python thread name: ``pipeit_container_c0.g2.stage_3.0`` -> ``stage_3.0``,
    ``spin.pipeit_container_c0`` -> ``spin.control_c0``, ``spin.pipeit_camera`` -> ``spin.camera``."""
    name = _RUN_PREFIX.sub('', name).replace('pipeit_container', 'control')
    return name.replace('pipeit_', '').encode()[:15].decode(errors='ignore')


def name_threads():
    """Give every live Python thread of this process its :func:`short_name` (best effort: returns how many)."""
    named = 0
    for t in threading.enumerate():
        if t.native_id is None or t is threading.main_thread():
            continue
        try:
            with open(f'/proc/self/task/{t.native_id}/comm', 'w') as f:
                f.write(short_name(t.name))
            named += 1
        except OSError:
            continue
    return named


def _tids(pid):
    """The thread ids of process ``pid`` ([] when it is gone)."""
    try:
        return os.listdir(f'/proc/{pid}/task')
    except OSError:
        return []


def thread_cpu(pid='self', names=None):
    """{tid: (name, cpu ns)} of every thread of process ``pid`` ({} when it is gone); ``names`` ({tid: name})
    overrides the OS names (e.g. this process' Python thread names)."""
    out = {}
    for tid in _tids(pid):
        try:
            with open(f'/proc/{pid}/task/{tid}/schedstat') as f:
                ns = int(f.read().split()[0])
            with open(f'/proc/{pid}/task/{tid}/comm') as f:
                name = f.read().strip()
        except (OSError, ValueError, IndexError):
            continue
        out[int(tid)] = ((names or {}).get(int(tid), name), ns)
    return out


def group_of(name):
    """The group a thread name counts in: ``dds.shm.7000`` -> ``dds``; ``stage_3.0`` -> ``stage_3``."""
    if name.startswith('dds.'):
        return 'dds'
    if name.startswith('stage_'):
        return name.split('.')[0]
    return name


def per_frame_ms(before, after, frames):
    """{group: CPU ms per frame} between two :func:`thread_cpu` readings, largest first."""
    groups = {}
    for tid, (name, ns) in after.items():
        used = ns - before.get(tid, (name, 0))[1]
        key = group_of(name)
        groups[key] = groups.get(key, 0.0) + used / 1e6 / max(1, frames)
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def pinned_run_wait(pid='self'):
    """{cpu: (run ns, run-queue wait ns)} summed over the threads of ``pid`` pinned to exactly that one CPU
    (``/proc/<pid>/task/<tid>/schedstat`` fields 1 and 2; threads free to move are left out)."""
    out = {}
    for tid in _tids(pid):
        try:
            cpus = os.sched_getaffinity(int(tid))
            if len(cpus) != 1:
                continue
            with open(f'/proc/{pid}/task/{tid}/schedstat') as f:
                run, wait = (int(v) for v in f.read().split()[:2])
        except (OSError, ValueError):
            continue
        cpu = next(iter(cpus))
        r, w = out.get(cpu, (0, 0))
        out[cpu] = (r + run, w + wait)
    return out


def run_wait_delta(before, after):
    """{cpu: (run ns, wait ns)} between two :func:`pinned_run_wait` readings (a thread that ended in between
    takes its time with it, so a CPU never goes negative)."""
    out = {}
    for cpu, (run, wait) in after.items():
        r0, w0 = before.get(cpu, (0, 0))
        out[cpu] = (max(run - r0, 0), max(wait - w0, 0))
    return out


def held_shares(run_wait, min_run_ns=1_000_000):
    """{cpu: run / (run + wait)} of :func:`pinned_run_wait` figures (or their :func:`run_wait_delta`): the share
    of each CPU our pinned threads got while runnable; CPUs where they ran less than ``min_run_ns`` are left out."""
    return {cpu: run / (run + wait) for cpu, (run, wait) in run_wait.items() if run >= min_run_ns}
