"""The Pipe-it paper's own design-space exploration (Wang et al., TCAD 2019, §DSE), kept for comparison.

The paper splits the search in two: (1) enumerate *pipeline configurations* — the number of stages and the
core group of each, every group the cores of one cluster, the clusters' cores split between stages; (2) for
each configuration, a *layer allocation* heuristic: start from a split proportional to each stage's speed,
then repeatedly move a layer at the boundary of the slowest (bottleneck) stage to the neighbouring stage,
as long as that lowers the bottleneck. The best configuration by predicted throughput wins.

Here, configurations are: every non-empty set of clusters in every order, each used cluster split into
ordered core groups using all its cores (every composition up to 6 cores — the paper's clusters have 4 —
only the non-increasing ones for larger clusters, whose 2^(n-1) compositions would take minutes), its stages
kept adjacent; atoms are the cost table's segments (a segment is the smallest movable unit, like the
paper's layer); no replicas, no constraints. Every such plan lies in the exact search's space, so this
never beats :func:`dse.solve`.

Source note: the paper's full text was not at hand when this was written; the procedure follows the
issue's summary of its DSE and the abstract (enumerated core-cluster configurations, then layers moved
from the slowest stage to its neighbours until balanced).
"""
import itertools
import time

import numpy as np

from pipeit_ros.planning.dp import Space

COMPOSITIONS_UP_TO = 6     # cores per cluster; beyond, only non-increasing splits (2^(n-1) grows too fast)


def compositions(n):
    """Ordered splits of n cores into groups: 3 -> (3,), (2, 1), (1, 2), (1, 1, 1)."""
    if n == 0:
        return [()]
    return [(first,) + rest for first in range(n, 0, -1) for rest in compositions(n - first)]


def partitions(n, largest=None):
    """Splits of n cores into groups of non-increasing size: 3 -> (3,), (2, 1), (1, 1, 1)."""
    largest = n if largest is None else largest
    if n == 0:
        return [()]
    return [(first,) + rest for first in range(min(n, largest), 0, -1) for rest in partitions(n - first, first)]


def core_groups(n):
    """The stage core groups the search tries for a cluster of n cores."""
    return compositions(n) if n <= COMPOSITIONS_UP_TO else partitions(n)


def configurations(space):
    """Every pipeline configuration: a tuple of option indices (one single-replica option per stage)."""
    single = {}
    for o in range(len(space.opt_k)):
        k, per_cluster = space.option(o)
        if sum(per_cluster.values()) == 1:
            single[(next(iter(per_cluster)), k)] = o
    usable = [ci for ci in range(len(space.clusters))
              if all((ci, k) in single for k in range(1, space.clusters[ci].size + 1))]
    seen = set()
    for m in range(1, len(usable) + 1):
        for order in itertools.permutations(usable, m):
            per_cluster = [core_groups(space.clusters[ci].size) for ci in order]
            for groups in itertools.product(*per_cluster):
                config = tuple(single[(ci, k)] for ci, g in zip(order, groups) for k in g)
                if len(config) <= space.n and config not in seen:
                    seen.add(config)
                    yield config


def initial_split(space, config):
    """Stage boundaries proportional to each stage's speed on the whole model (each stage >= 1 segment)."""
    n = space.n
    whole = np.array([space.arrays(0)[1][o, n - 1] for o in config])
    target = np.cumsum(1.0 / whole) / np.sum(1.0 / whole)
    work = np.cumsum(space.prefix[0, 1:] - space.prefix[0, :-1])
    work = work / work[-1] if work[-1] > 0 else np.arange(1, n + 1) / n
    ends, start = [], 0
    for s, frac in enumerate(target[:-1]):
        left_for_rest = len(config) - s - 1
        end = int(np.searchsorted(work, frac - 1e-12))
        ends.append(min(max(end, start), n - 1 - left_for_rest))
        start = ends[-1] + 1
    ends.append(n - 1)
    return [(a, b) for a, b in zip([0] + [e + 1 for e in ends[:-1]], ends)]


def _time(space, o, a, b):
    return float(space.arrays(a)[1][o, b - a])


def allocate(space, config):
    """The paper's layer allocation for one configuration: [(first segment, last segment, option)]."""
    bounds = initial_split(space, config)
    times = [_time(space, o, a, b) for o, (a, b) in zip(config, bounds)]
    while True:
        slow = int(np.argmax(times))
        a, b = bounds[slow]
        others = max([t for s, t in enumerate(times) if s not in (slow - 1, slow, slow + 1)], default=0.0)
        best = None
        if slow > 0 and b > a:           # first segment of the bottleneck to the stage before
            pa, pb = bounds[slow - 1]
            new = (_time(space, config[slow - 1], pa, a), _time(space, config[slow], a + 1, b))
            rest = times[slow + 1] if slow + 1 < len(times) else 0.0
            best = (max(others, rest, *new), slow - 1, [(pa, a), (a + 1, b)], new)
        if slow + 1 < len(bounds) and b > a:   # last segment to the stage after
            na, nb = bounds[slow + 1]
            new = (_time(space, config[slow], a, b - 1), _time(space, config[slow + 1], b, nb))
            rest = times[slow - 1] if slow > 0 else 0.0
            cand = (max(others, rest, *new), slow, [(a, b - 1), (b, nb)], new)
            if best is None or cand[0] < best[0]:
                best = cand
        if best is None or not best[0] < times[slow]:
            break
        _, s, pair, new = best
        bounds[s:s + 2] = pair
        times[s:s + 2] = new
    return [(a, b, o) for (a, b), o in zip(bounds, config)]


def search(cost, topology):
    """The paper's DSE on ``cost``: (space, stages, notes) of the best configuration after layer allocation
    (ties: lower latency); :func:`pipeit_ros.planning.dse.pipeit_paper` turns them into a Plan."""
    started = time.perf_counter()
    space = Space(cost, topology, replicas=False)
    best, best_key, count = None, None, 0
    for config in configurations(space):
        count += 1
        stages = allocate(space, config)
        rate, lat, _ = space.totals(stages)
        key = (-rate, lat)
        if best_key is None or key < best_key:
            best, best_key = stages, key
    notes = {'objective': 'throughput', 'configurations': count,
             'search_ms': round((time.perf_counter() - started) * 1000, 1)}
    return space, best, notes
