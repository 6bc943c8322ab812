"""Helpers of the DSE tests: topologies, random cost tables, and a brute force over every plan."""
import itertools
import math
from types import SimpleNamespace

import numpy as np

from pipeit_ros.cost.table import QUEUED_OUTPUTS, CostTable
from pipeit_ros.engine.parts import REORDER_SLACK
from pipeit_ros.hw.topology import Cluster, Topology

TIE = 1e-9
QUEUE = 2       # frames before each stage: the engine's default (pipeit_ros.engine.parts.QUEUE_SIZE)
HOP_INTEGER = {'hop_send_fixed_ms': 1.0, 'hop_send_ms_per_mb': 0.0, 'hop_recv_fixed_ms': 2.0,
               'hop_recv_ms_per_mb': 0.0}


def topology(sizes, name='test'):
    """Clusters c0 (fastest), c1, ... of the given sizes on consecutive CPUs."""
    clusters, cpu = [], 0
    for n, size in enumerate(sizes):
        clusters.append(Cluster(f'c{n}', tuple(range(cpu, cpu + size)), 'host', 1.0 / (1 + n)))
        cpu += size
    return Topology(tuple(clusters), name=name)


def random_table(rng, topo, n_segments, integer=False, handover=True, segments=None, in_bytes=None,
                 containers='one'):
    """A cost table with slower clusters, sub-linear speed-up in cores, per-segment noise, cut costs and load
    factors; ``integer`` makes times small integers (neither of the last two) so equal throughputs (ties)
    happen often. ``segments`` / ``in_bytes`` (bytes crossing into each segment) come from a real graph when
    given. ``containers='per_cluster'``: hops between containers cost drawn send/receive lines (integers with
    ``integer``, so ties stay frequent), and every run of stages a container hosts costs drawn memory."""
    configs = [(c.name, k) for c in topo.clusters for k in range(1, c.size + 1)]
    base = rng.integers(1, 6, n_segments).astype(float) if integer else rng.uniform(0.2, 5.0, n_segments)
    rows = []
    for n, c in enumerate(topo.clusters):
        slow = (1 + n) if integer else 1 + n * rng.uniform(0.3, 1.5)
        for k in range(1, c.size + 1):
            if integer:
                rows.append(np.ceil(base * slow / k))
            else:
                rows.append(base * slow / k ** rng.uniform(0.4, 0.95) * rng.uniform(0.8, 1.25, n_segments))
    overhead = np.zeros(len(configs)) if integer else rng.uniform(0.0, 0.3, len(configs))
    cuts = None if integer else rng.uniform(0.0, 0.6, (len(configs), n_segments))   # layout conversions at cuts
    load = None if integer else rng.uniform(1.0, 1.6, len(configs))    # slower while the other cores work
    drawn = [int(b) for b in rng.integers(1_000, 3_000_000, n_segments)]
    table = CostTable(segments=segments or [(i, i) for i in range(n_segments)], configs=configs,
                     seg_ms=np.array(rows), cut_ms=cuts, load_factor=load,
                     overhead_ms=overhead, in_bytes=drawn if in_bytes is None else list(in_bytes),
                     weight_bytes=[int(b) for b in rng.integers(0, 4_000_000, n_segments)],
                     act_bytes=[int(b) for b in rng.integers(1_000, 2_000_000, n_segments)],
                     handover_fixed_ms=0.05 if handover and not integer else 0.0,
                     handover_ms_per_mb=0.4 if handover and not integer else 0.0, source='test',
                     topology_fingerprint=topo.fingerprint(), containers=containers,
                     **({} if containers == 'one' else HOP_INTEGER if integer else
                        dict(zip(HOP_INTEGER, rng.uniform(0.0, 1.5, 4)))))
    if containers == 'one':
        return table
    # what a run of stages adds to its container (CostTable.for_processes), drawn last: the draws above stay
    return table.for_processes(1, 0.0, 1_000_000 if integer else rng.uniform(0.0, 3_000_000))


def fake_graph(n_layers):
    """What baselines() reads of a LayerGraph: the layer count and the model hash."""
    return SimpleNamespace(layers=list(range(n_layers)), model_hash='')


def every_plan(cost, topo, replicas=True):
    """[(fps, latency_ms, memory_bytes, cores, stages, saturated_latency_ms)] of every plan, by plain enumeration
    from the model's definition (independent of pipeit_ros.planning.dp and .saturated)."""
    names, sizes = [c.name for c in topo.clusters], [c.size for c in topo.clusters]
    n = cost.n_segments
    options = []
    for k in range(1, max(sizes) + 1):
        for r in itertools.product(*[range(s // k + 1) for s in sizes]):
            if sum(r) and (replicas or sum(r) == 1) and all(
                    not rc or (names[c], k) in cost.configs for c, rc in enumerate(r)):
                options.append((k, r))
    plans = []

    def extend(i, left, stages):
        if i == n:
            plans.append(list(stages))
            return
        for j in range(i, n):
            for k, r in options:
                need = [k * x for x in r]
                if all(a <= b for a, b in zip(need, left)):
                    extend(j + 1, [b - a for a, b in zip(need, left)], stages + [(i, j, k, r)])

    extend(0, sizes, [])
    out = []
    loaded = cost.under_load()       # a plan of several core groups runs under load, one group alone
    for stages in plans:
        rates, lat, mem, cores, slowest = [], 0.0, shape_bytes(cost, stages), 0, []
        table = loaded if sum(sum(r) for _, _, _, r in stages) > 1 else cost
        hosts = [next(c for c, rc in enumerate(r) if rc) for _, _, _, r in stages]   # the first cluster hosts
        for n_stage, (i, j, k, r) in enumerate(stages):
            hop = {'cross_in': n_stage > 0 and hosts[n_stage - 1] != hosts[n_stage],
                   'cross_out': n_stage + 1 < len(stages) and hosts[n_stage + 1] != hosts[n_stage]}
            times = [table.stage_ms(i, j, names[c], k, **hop) for c, rc in enumerate(r) for _ in range(rc)]
            rates.append(sum(1.0 / t for t in times))
            lat += max(times)
            slowest.append(max(times))
            mem += sum(cost.weight_bytes[i:j + 1]) + sum(r) * max(cost.act_bytes[i:j + 1])   # weights shared
            # outputs in flight: a queue's worth before another stage; with replicas, the model's outputs held for
            # their turn: after the last stage the engine's reorder window, after an earlier one the frames that
            # overtake its slowest replica (its frames in flight, rate x slowest, rounded up, + the slack) less one
            # per replica
            window = math.ceil(rates[-1] * max(times) - 1e-6) + REORDER_SLACK - sum(r) if sum(r) > 1 else 0
            mem += (cost.out_bytes[j] * QUEUED_OUTPUTS if j + 1 < n else 0) + cost.out_bytes[n - 1] * max(window, 0)
            if n_stage == 0 or (hop['cross_in'] and cost.containers == 'per_cluster'):
                mem += cost.host_bytes          # a run of stages starts in a container
            cores += k * sum(r)
        out.append((1000.0 * min(rates), lat, mem, cores, stages, saturated(rates, slowest, stages)))
    return out


def shape_bytes(cost, stages):
    """What a plan of this shape holds beyond its stages (docs/memory.md): one group's build term; replicas of
    one stage, several stages, or both (the larger of the two), each its build and running terms."""
    groups = sum(sum(r) for _, _, _, r in stages)
    if groups == 1:
        return cost.build_bytes
    build = cost.build_bytes if cost.build_bytes_groups is None else cost.build_bytes_groups
    reps = build + cost.running_bytes_groups
    split = (build if cost.build_bytes_stages is None else cost.build_bytes_stages) + cost.running_bytes_stages
    if len(stages) == 1:
        return reps
    return split if groups == len(stages) else max(reps, split)


def saturated(rates, slowest, stages):
    """Saturated latency: every stage before the first bottleneck (rate within TIE of the lowest) holds its
    replicas' frames and a full queue, all leaving at the bottleneck's period (Little's law)."""
    low = min(rates)
    b = min(k for k, r in enumerate(rates) if r <= low * (1 + TIE))
    period = 1.0 / low
    waits = sum(max(t, sum(r) * period) + QUEUE * period for t, (_, _, _, r) in zip(slowest[:b], stages[:b]))
    return waits + sum(slowest[b:])


def lexicographic_best(plans, objective='throughput', max_latency_ms=None, min_fps=None, memory_mb=None):
    """The brute-force answer with the documented tie-breaks, or None when no plan meets the bounds. The latency
    objective minimises (and max_latency_ms bounds) the saturated latency, the throughput objective the plain."""
    at = 5 if objective == 'latency' else 1
    ok = [p for p in plans if (max_latency_ms is None or p[at] <= max_latency_ms)
          and (min_fps is None or p[0] >= min_fps * (1 - TIE))
          and (memory_mb is None or p[2] <= memory_mb * 2 ** 20)]
    if not ok:
        return None
    if objective == 'latency':
        best_lat = min(p[at] for p in ok)
        ok = [p for p in ok if p[at] <= best_lat * (1 + TIE) + 1e-12]
    best_fps = max(p[0] for p in ok)
    ok = [p for p in ok if p[0] >= best_fps * (1 - TIE)]
    fewest = min(p[3] for p in ok)
    ok = [p for p in ok if p[3] == fewest]
    return min(ok, key=lambda p: p[at])
