"""A process's memory as the kernel counts it (``/proc/PID/smaps_rollup`` and ``status``).

RSS counts every resident page a process maps, once per mapping; PSS divides each page by the number of
processes that map it, so the PSS of the processes that share read-only weight pages (one memory-mapped
external-data file, docs/memory.md) sums to the memory they use together. ``anonymous`` is what the process
holds alone (heap, onnxruntime's arenas and transformed weights); ``hwm`` the peak RSS.
"""
import ctypes
import ctypes.util
from dataclasses import asdict, dataclass
import os

MIB = 2**20
_FIELDS = {'Rss:': 'rss', 'Pss:': 'pss', 'Anonymous:': 'anonymous'}


@dataclass(frozen=True)
class MemoryUsage:
    """Bytes: ``rss``, ``pss``, ``anonymous`` now, ``hwm`` the peak RSS so far (0 where unreadable)."""

    rss: int = 0
    pss: int = 0
    anonymous: int = 0
    hwm: int = 0

    def mib(self):
        return {k: round(v / MIB, 1) for k, v in asdict(self).items()}


def usage(pid='self'):
    """MemoryUsage of process ``pid`` (default this one); zeros for a process that is gone or unreadable."""
    values = dict.fromkeys(_FIELDS.values(), 0)
    hwm = 0
    try:
        with open(f'/proc/{pid}/smaps_rollup') as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in _FIELDS:
                    values[_FIELDS[parts[0]]] = int(parts[1]) * 1024
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    hwm = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return MemoryUsage(hwm=hwm, **values)


def reset_peak():
    """Reset this process's peak RSS (``VmHWM``) to its RSS now (``/proc/self/clear_refs``, Linux >= 4.0), so
    that the next :func:`usage` reports the peak since; False where the kernel does not allow it."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


_libc = None


def _c():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library('c')
        _libc = ctypes.CDLL(name) if name else False
    return _libc


def trim():
    """Give freed heap pages back to the kernel (glibc ``malloc_trim``), so that the anonymous memory measured
    next grows by what is allocated, not by less because freed pages were reused; a no-op elsewhere."""
    if _c() and hasattr(_libc, 'malloc_trim'):
        _libc.malloc_trim(0)


M_MMAP_THRESHOLD = -3           # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 128 << 10   # glibc's default, kept fixed


_threshold_fixed = False


def fix_mmap_threshold():
    """Keep glibc's mmap threshold at its default: an allocation of 128 KiB or more gets a mapping of its own,
    unmapped when freed. By default glibc raises the threshold after such a free, and what a process then
    holds depended on when it did: the same YOLOv8n plan measured 132.6 or 138.4 MiB by run, and 132.6-132.8
    in 6 of 6 with it fixed, as fast (frames/s fixed / default 0.99-1.00, docs/memory.md). Once per process;
    a no-op off glibc."""
    global _threshold_fixed
    if not _threshold_fixed and _c() and hasattr(_libc, 'mallopt'):
        _libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    _threshold_fixed = True


def mapped_bytes(path, pid='self', field='Rss', under=False):
    """Resident bytes (``field`` 'Rss', or 'Pss' for this process's share) of ``path``'s mappings in process
    ``pid`` (/proc/PID/smaps), with ``under`` of every file below the folder ``path``; 0 where none."""
    total, inside, key = 0, False, field + ':'
    prefix = path.rstrip(os.sep) + os.sep
    try:
        with open(f'/proc/{pid}/smaps') as f:
            for line in f:
                head = line.split(None, 5)
                if len(head) >= 5 and '-' in head[0] and not head[0].endswith(':'):
                    name = head[5].strip() if len(head) == 6 else ''
                    inside = name.startswith(prefix) if under else name == path
                elif inside and head[0] == key:
                    total += int(head[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return total


def available_bytes():
    """The machine's memory available to new allocations (``MemAvailable`` in /proc/meminfo), None where
    unreadable."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def anonymous_now():
    """Anonymous bytes of this process after :func:`trim` (the profiler's per-session measure)."""
    trim()
    return usage().anonymous
