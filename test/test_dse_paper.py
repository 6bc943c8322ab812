"""The Pipe-it paper's DSE (pipeit_ros.planning.paper_heuristic): its configurations, its layer allocation, and that it never
beats the exact search."""
from dse_cases import TIE, every_plan, random_table, topology
import numpy as np
import pytest

from pipeit_ros.cost.table import CostTable
from pipeit_ros.plan import validate
from pipeit_ros.planning import dse, prediction
from pipeit_ros.planning.dp import Space
from pipeit_ros.planning.paper_heuristic import (
    allocate,
    compositions,
    configurations,
    core_groups,
    initial_split,
    partitions,
)


@pytest.mark.parametrize('n', [1, 2, 3, 4, 5])
def test_compositions_are_every_ordered_split(n):
    got = compositions(n)
    assert len(got) == 2 ** (n - 1) == len(set(got))
    assert all(sum(c) == n and min(c) >= 1 for c in got)


@pytest.mark.parametrize('n,count', [(1, 1), (2, 2), (3, 3), (4, 5), (6, 11), (8, 22)])
def test_partitions_are_non_increasing_splits(n, count):
    got = partitions(n)
    assert len(got) == count == len(set(got))
    assert all(sum(p) == n and list(p) == sorted(p, reverse=True) for p in got)
    assert core_groups(n) == (compositions(n) if n <= 6 else got)


@pytest.mark.parametrize('sizes,count', [
    ((4, 4), 8 + 8 + 2 * 8 * 8), ((1, 1), 1 + 1 + 2), ((2, 1, 1), 2 + 1 + 1 + 2 * (2 + 2 + 1) + 6 * 2),
    ((8, 8), 22 + 22 + 2 * 22 * 22)], ids=['4+4', '1+1', '2+1+1', '8+8'])
def test_configurations_are_cluster_orders_times_compositions(sizes, count):
    topo = topology(sizes)
    space = Space(random_table(np.random.default_rng(0), topo, 20), topo, replicas=False)
    configs = list(configurations(space))
    assert len(configs) == count == len(set(configs))
    for config in configs:
        used = [space.option(o) for o in config]
        clusters = [next(iter(r)) for _, r in used]
        for ci in set(clusters):     # a cluster's stages are adjacent and use all of its cores
            at = [i for i, c in enumerate(clusters) if c == ci]
            assert at == list(range(at[0], at[-1] + 1))
            assert sum(used[i][0] for i in at) == sizes[ci]


def test_allocation_balances_two_stages_to_the_best_cut():
    """Two 1-core clusters of different speed: moving boundary segments off the bottleneck reaches the best
    cut of each 2-stage order, so the paper's plan is the best non-replicated plan."""
    topo = topology((1, 1))
    for seed in range(8):
        cost = random_table(np.random.default_rng(seed), topo, 12)
        best = max(p[0] for p in every_plan(cost, topo, replicas=False))
        plan = dse.pipeit_paper(cost, topo)
        assert plan.predicted_fps == pytest.approx(best, rel=1e-9)


def test_allocation_moves_layers_from_the_slowest_stage():
    """The speed-proportional start (c0 8 ms, c1 20 ms for the whole model -> c0 takes ~71 % of the work,
    segments 0-5) leaves c1 the bottleneck (8 ms); one move of segment 6 gives 7 | 4 ms, the best cut."""
    topo = topology((1, 1))
    seg = np.array([[1.0] * 8, [1.0] * 4 + [4.0] * 4])
    cost = CostTable(segments=[(i, i) for i in range(8)], configs=[('c0', 1), ('c1', 1)], seg_ms=seg,
                     overhead_ms=[0.0, 0.0], in_bytes=[0] * 8, weight_bytes=[0] * 8, act_bytes=[0] * 8)
    space = Space(cost, topo, replicas=False)
    config = next(c for c in configurations(space)
                  if [next(iter(space.option(o)[1])) for o in c] == [0, 1])
    assert initial_split(space, config) == [(0, 5), (6, 7)]
    assert [(i, j) for i, j, _ in allocate(space, config)] == [(0, 6), (7, 7)]


@pytest.mark.parametrize('sizes', [(4, 4), (1, 4, 3), (2, 2), (2, 1, 1)], ids=['4+4', '1+4+3', '2+2', '2+1+1'])
@pytest.mark.parametrize('seed', range(3))
def test_paper_plans_are_valid_and_never_beat_exact(sizes, seed):
    topo = topology(sizes)
    cost = random_table(np.random.default_rng(seed), topo, 30)
    paper = dse.pipeit_paper(cost, topo)
    validate(paper, topo, n_layers=30, cut_points=range(30))
    assert paper.search == 'pipeit-paper' and all(s.replicas == 1 for s in paper.stages)
    assert prediction.predict(paper, cost, topo)[0] == pytest.approx(paper.predicted_fps, rel=1e-9)
    for replicas in (False, True):
        exact = dse.solve(cost, topo, replicas=replicas)
        assert paper.predicted_fps <= exact.predicted_fps * (1 + TIE)
