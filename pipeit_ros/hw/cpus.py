"""CPU lists and thread pinning: the one place that parses the kernel's cpulist format and pins threads.

``os.sched_setaffinity(native_id, cpus)`` pins the calling thread only (measured; see
``docs/architecture.md``), so every pinned worker of the engine, the profiler and the benchmarks calls
:func:`pin_current_thread` from the thread that runs.
"""
import functools
import os
import re
import threading

# CPU ids are below the kernel's largest NR_CPUS (CONFIG_NR_CPUS <= 8192): a range such as "0-99999999" is refused
# before it is expanded (a topology of another board may name CPUs this machine lacks, so not this machine's count)
CPU_LIMIT = 8192


@functools.cache
def cpuinfo(*keys):
    """The value of the first ``/proc/cpuinfo`` line whose key is one of ``keys`` (lower case; x86 and ARM name
    things apart: 'model name' / 'hardware', 'flags' / 'features'), or '' (read once per process and key set)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                key, sep, value = line.partition(':')
                if sep and key.strip().lower() in keys:
                    return value.strip()
    except OSError:
        pass
    return ''


def parse_cpu_list(text):
    """'0-3,6' or '0 1 2' (sysfs related_cpus) -> sorted tuple of ints; ValueError on anything else.

    >>> parse_cpu_list('0-2,6')
    (0, 1, 2, 6)
    """
    cpus = set()
    for part in re.split(r'[,\s]+', str(text).strip()):
        if not part:
            continue
        lo, sep, hi = part.partition('-')
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f'bad CPU list {text!r}')
        lo_i, hi_i = int(lo), int(hi) if sep else int(lo)
        if hi_i < lo_i:
            raise ValueError(f'bad CPU range {part!r}')
        if hi_i >= CPU_LIMIT:
            raise ValueError(f'CPU {hi_i} in {part!r} is beyond any machine (CPU ids are below {CPU_LIMIT})')
        cpus.update(range(lo_i, hi_i + 1))
    return tuple(sorted(cpus))


def format_cpu_list(cpus):
    """(0, 1, 2, 3, 6) -> '0-3,6', the kernel's cpulist format.

    >>> format_cpu_list((0, 1, 2, 3, 6))
    '0-3,6'
    """
    runs, cpus = [], sorted(cpus)
    for cpu in cpus:
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ','.join(f'{a}-{b}' if b > a else str(a) for a, b in runs)


def allowed_cpus():
    """The CPUs this process may run on, sorted."""
    return tuple(sorted(os.sched_getaffinity(0)))


def pin_current_thread(cpus):
    """Pin the calling OS thread (not the process) to ``cpus``."""
    os.sched_setaffinity(threading.get_native_id(), set(cpus))


def task_cpus_allowed():
    """{native thread id: set of CPUs it may run on} for every thread of this process, from /proc."""
    out = {}
    for tid in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{tid}/status') as f:
                for line in f:
                    if line.startswith('Cpus_allowed_list:'):
                        out[int(tid)] = set(parse_cpu_list(line.split(':', 1)[1]))
        except OSError:
            continue
    return out
