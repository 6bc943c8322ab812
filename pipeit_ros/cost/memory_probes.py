"""A profile's process-memory terms, fitted from the plan-shaped probes that :mod:`pipeit_ros.engine.footprint`
runs in fresh processes (docs/memory.md); :mod:`pipeit_ros.cost.profiler` measures the sessions' own memory and
calls this last."""
import numpy as np

from pipeit_ros.cost.table import DEFAULT_BASE_BYTES
from pipeit_ros.engine import footprint
from pipeit_ros.hw import memory as procmem
from pipeit_ros.plan import parse_spec

MEMORY_MARGIN = 0.10       # of a process's memory beyond the weights: the model's error on plans the probes did not
                           # run (AlexNet 0-1@little,2-7@big: 2.6 MiB over at 5 %) and PSS moving with the
                           # processes that share the libraries
PRIVATE_SCALE_LIMITS = (0.3, 1.5)


def process_memory(table, graph, topology, configs, log=print):
    """``table`` with its process memory measured (docs/memory.md) in fresh engine processes
    (:func:`pipeit_ros.engine.footprint.measure`, ~1-2 s each): the whole model as one stage on the first
    configuration and, where another cluster has a one-core configuration, as two data-parallel replicas and
    as two stages on the two. A session of several segments holds less than the sum of theirs (one graph, one arena), so the session
    and arena figures are scaled by the slope of the probes' memory against them (MobileNetV2: 0.7);
    ``base_bytes`` is what the one-stage probe then held beyond the model, plus ``MEMORY_MARGIN`` of the most
    a probe held beyond the weights; ``running_bytes_groups`` and ``running_bytes_stages`` what the
    two-replica and the two-stage probe held beyond the model more than that (YOLOv8n's two stages: 18 MiB, its
    replicas 3; every other zoo net 0-4: taking the most for every plan put YOLOv8n's data parallelism 16 %
    over); ``build_bytes``, ``build_bytes_groups`` and ``build_bytes_stages`` what the one-stage, the
    two-replica and the two-stage probe's peak rose above its running memory (a plan of that shape is sized
    with it: ``CostTable.plan_shape_bytes``; MobileNetV1 21, 7 and 18 MiB: every arena is allocated after the
    last build, and two replicas have two, large there). Defaults (and a log line) where a probe fails."""
    n, layers = table.n_segments, table.segments[-1][1] + 1
    (c0, k0), cpu0 = configs[0].key, configs[0].cpus[0]
    probes = [[(0, n - 1, f'{c0}:{k0}', [(c0, k0)])]]       # (first, last segment, where, [(cluster, threads)])
    other = next((c for c in configs if c.key[0] != c0 and c.key[1] == 1), None)
    if other is not None:
        c1 = other.key[0]
        probes.append([(0, n - 1, f'{c0}+{c1}[{cpu0}+{other.cpus[0]}]:1x2', [(c0, 1), (c1, 1)])])
        if n > 1:
            probes.append([(0, n // 2 - 1, f'{c0}:1', [(c0, 1)]), (n // 2, n - 1, f'{c1}:1', [(c1, 1)])])
    rows, builds = [], []                   # (memory beyond the weights, the table's session memory) per probe
    for stages in probes:
        spec = ','.join(f'{table.segments[a][0]}-{table.segments[b][1]}@{where}' for a, b, where, _ in stages)
        got = footprint.measure(graph, parse_spec(spec, topology, layers))
        if 'error' in got:
            log(f'profile: {got["error"]}; the memory model takes a base of {DEFAULT_BASE_BYTES / procmem.MIB:.0f} MiB')
            return table
        private = sum(table.private_bytes(a, b)[table.config_index(*key)] for a, b, _, keys in stages for key in keys)
        timed = table.for_groups(sum(len(keys) for *_, keys in stages))
        flight = sum(table.flight_bytes(b, table.frames_in_flight([timed.stage_ms(a, b, *key) for key in keys]),
                                        len(keys)) for a, b, _, keys in stages)
        rows.append((got['running_mb'] * procmem.MIB - sum(table.held_bytes) - flight, private))
        builds.append(max(got['memory_mb'] - got['running_mb'], 0.0) * procmem.MIB)
        table.meta.setdefault('memory_probes', {})[spec] = got
        log(f'profile: a fresh engine process running {spec} holds {got["running_mb"]:.1f} MiB, '
            f'{got["memory_mb"]:.1f} at its peak')
    beyond, private = np.array(rows).T
    scale = 1.0
    if len(rows) > 1 and np.ptp(private) > 0:   # what a session more adds, against the sum of its segments'
        scale = float(np.clip(np.polyfit(private, beyond, 1)[0], *PRIVATE_SCALE_LIMITS))
    table.session_bytes, table.arena_bytes = table.session_bytes * scale, table.arena_bytes * scale
    table.pair_arena_bytes, table.tail_arena_bytes = table.pair_arena_bytes * scale, table.tail_arena_bytes * scale
    residual = beyond - scale * private      # what each probe held beyond the model
    table.base_bytes = float(residual[0] + MEMORY_MARGIN * beyond.max())
    table.running_bytes_groups = float(max(residual[1] - residual[0], 0.0)) if len(rows) > 1 else 0.0
    table.running_bytes_stages = float(max(residual[2] - residual[0], 0.0)) if len(rows) > 2 else 0.0
    table.build_bytes = builds[0]
    table.build_bytes_groups = builds[1] if len(builds) > 1 else None
    table.build_bytes_stages = builds[2] if len(builds) > 2 else None
    table.meta['private_scale'] = scale
    log(f'profile: memory model: process base {table.base_bytes / procmem.MIB:.1f} MiB, session build '
        f'{" / ".join(f"{b / procmem.MIB:.1f}" for b in builds)} MiB (one core group / replicas / stages), running '
        f'beyond the model {table.running_bytes_groups / procmem.MIB:.1f} / {table.running_bytes_stages / procmem.MIB:.1f} '
        f'MiB more (replicas / stages), session memory x{scale:.2f} of the sum over its segments')
    return table
