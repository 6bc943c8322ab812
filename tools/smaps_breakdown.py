"""Where a process's PSS goes, by kind of mapping (``/proc/PID/smaps``; docs/memory.md, "Where a container's
memory goes").

``python tools/smaps_breakdown.py PID [PID ...]`` prints, per process, the PSS of each kind with its RSS and its
private part, and the shared libraries with the most PSS. ``tools/ros_memory.py --breakdown`` prints it for the
containers of a layout. Kinds:

- ``heap``: the brk heap, glibc's main arena (the main thread's mallocs: Python's objects and its 512-byte-and-
  smaller allocator's pools, what C code allocates on that thread);
- ``thread arenas``: glibc's per-thread arenas (64 MiB-aligned mappings: onnxruntime's and Fast DDS' threads);
- ``thread stacks``: anonymous mappings behind a guard page, 1-16 MiB (only the touched pages are resident);
- ``other anonymous``: the rest of the anonymous mappings (Python's 1 MiB object arenas, large mallocs: numpy
  arrays, onnxruntime's buffers);
- ``libraries``: mappings of ``*.so*`` files (their COW-ed relocation pages are the private part);
- ``shm fastdds``: Fast DDS' shared-memory segments and port files (``/dev/shm``);
- ``weights``: the model's memory-mapped external-data file (``weights.data``);
- ``other files``, ``stack``, ``kernel`` ([vdso], [vvar], ...).
"""
import argparse
from collections import defaultdict
import os
import re
import sys

ARENA_ALIGN = 64 << 20    # glibc's HEAP_MAX_SIZE on 64-bit: a thread arena's heaps are aligned to it
_HEADER = re.compile(r'^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$')
_FIELDS = ('Rss', 'Pss', 'Private_Clean', 'Private_Dirty')


def mappings(pid='self'):
    """[{'start', 'end', 'perm', 'name', 'Rss', 'Pss', 'Private_Clean', 'Private_Dirty'}] in bytes, from smaps."""
    out = []
    with open(f'/proc/{pid}/smaps') as f:
        for line in f:
            m = _HEADER.match(line)
            if m:
                out.append({'start': int(m[1], 16), 'end': int(m[2], 16), 'perm': m[3], 'name': m[4].strip()})
                continue
            key, _, value = line.partition(':')
            if key in _FIELDS:
                out[-1][key] = int(value.split()[0]) * 1024
    return out


def kind(mapping, previous=None):
    """The kind of one mapping (the module docstring's list); ``previous``: the mapping just below it."""
    name = mapping['name']
    if name == '[heap]':
        return 'heap'
    if name == '[stack]':
        return 'stack'
    if name.startswith('/dev/shm/'):
        return 'shm fastdds' if 'fastdds' in name or 'fastrtps' in name else 'shm other'
    if name.startswith('['):
        return 'kernel' if not name.startswith('[anon') else 'other anonymous'
    if name:
        if '.so' in os.path.basename(name):
            return 'libraries'
        return 'weights' if os.path.basename(name).endswith('.data') else 'other files'
    size = mapping['end'] - mapping['start']
    if mapping['start'] % ARENA_ALIGN == 0 and size <= ARENA_ALIGN:
        return 'thread arenas'
    if (previous is not None and previous['perm'].startswith('---') and previous['end'] == mapping['start']
            and (1 << 20) - 4096 <= size <= 16 << 20):
        return 'thread stacks'
    return 'other anonymous'


def breakdown(pid='self'):
    """({kind: {'pss', 'rss', 'private'} bytes}, {library file name: pss bytes}) of process ``pid``."""
    kinds = defaultdict(lambda: dict.fromkeys(('pss', 'rss', 'private'), 0))
    libs = defaultdict(int)
    previous = None
    for m in mappings(pid):
        k = kind(m, previous)
        row = kinds[k]
        row['pss'] += m.get('Pss', 0)
        row['rss'] += m.get('Rss', 0)
        row['private'] += m.get('Private_Clean', 0) + m.get('Private_Dirty', 0)
        if k == 'libraries':
            libs[os.path.basename(m['name'])] += m.get('Pss', 0)
        previous = m
    return dict(kinds), dict(libs)


def report(pid, top=6):
    """Lines describing process ``pid``'s breakdown (MiB)."""
    kinds, libs = breakdown(pid)
    mib = 2 ** 20
    threads = len(os.listdir(f'/proc/{pid}/task'))
    lines = [f'pid {pid}: PSS {sum(r["pss"] for r in kinds.values()) / mib:.1f} MiB, {threads} threads']
    for k, r in sorted(kinds.items(), key=lambda kv: -kv[1]['pss']):
        if r['pss'] >= 0.05 * mib:
            lines.append(f'  {k:16s} PSS {r["pss"] / mib:6.1f}  RSS {r["rss"] / mib:6.1f}  '
                         f'private {r["private"] / mib:6.1f}')
    biggest = sorted(libs.items(), key=lambda kv: -kv[1])[:top]
    lines.append('  libraries by PSS: ' + ', '.join(f'{n} {p / mib:.1f}' for n, p in biggest))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('pids', nargs='+', type=int)
    args = ap.parse_args(argv)
    for pid in args.pids:
        try:
            print('\n'.join(report(pid)))
        except OSError as exc:
            print(f'pid {pid}: {exc}', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
