"""tools/smaps_breakdown.py on this process: the kinds add up to the kernel's PSS, and memory this test maps
lands in its kind."""
import mmap

import numpy as np
import smaps_breakdown  # tools/

from pipeit_ros.hw import memory as procmem

MIB = 2**20


def _pss(kinds, kind):
    return kinds.get(kind, {}).get('pss', 0)


def test_kinds_add_up_and_place_what_is_mapped(tmp_path):
    before, _ = smaps_breakdown.breakdown()
    # an anonymous mapping of its own (a 24 MiB malloc came from a grown heap in the full suite)
    buffer = mmap.mmap(-1, 24 * MIB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buffer.write(b'\1' * (24 * MIB))
    path = tmp_path / 'weights.data'                             # the model's external-data file is named so
    path.write_bytes(b'\1' * (4 * MIB))
    weights = np.memmap(path, dtype=np.uint8, mode='r')
    assert int(weights.sum()) == 4 * MIB                         # every page touched
    # the kernel's PSS read on both sides: threads earlier tests left in this process may allocate meanwhile (9 MiB
    # between two reads once, in the full suite)
    first = procmem.usage().pss
    kinds, libs = smaps_breakdown.breakdown()
    last = procmem.usage().pss
    total = sum(row['pss'] for row in kinds.values())
    assert min(first, last) - 0.02 * total < total < max(first, last) + 0.02 * total, (first, total, last)
    # anonymous, by whichever rule its address falls under (one 64 MiB-aligned is taken for a thread arena)
    anonymous = ('other anonymous', 'thread arenas', 'thread stacks', 'heap')
    assert sum(_pss(kinds, k) - _pss(before, k) for k in anonymous) >= 23 * MIB
    assert _pss(kinds, 'weights') >= 4 * MIB - 4096
    assert any(name.startswith('_multiarray_umath') for name in libs) and _pss(kinds, 'libraries') > 0
    assert 'heap' in kinds and all(row['rss'] >= row['private'] for row in kinds.values())
    lines = smaps_breakdown.report('self')
    assert lines[0].startswith('pid self: PSS') and any('weights' in line for line in lines)
    buffer.close()
    del weights
