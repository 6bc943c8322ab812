"""Drift detection, cost-table scaling and re-cutting (pipeit_ros.app.adapt), without ROS."""
import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from pipeit_ros.app import adapt
from pipeit_ros.cost.table import CostTable
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import topology as topology_mod
from pipeit_ros.plan import Plan, Stage


@pytest.fixture(scope='module')
def topo():
    return topology_mod.resolve('emulated-2x1', check_cpus=False)


def make_cost(topo, seg_ms, configs=(('c0', 1), ('c1', 1))):
    seg_ms = np.asarray(seg_ms, dtype=float)
    n = seg_ms.shape[1]
    return CostTable(segments=[(i, i) for i in range(n)], configs=list(configs), seg_ms=seg_ms,
                     overhead_ms=np.full(len(configs), 0.1), in_bytes=[1000] * n, weight_bytes=[0] * n,
                     act_bytes=[0] * n, source='test', topology_fingerprint=topo.fingerprint())


def two_stage(cut, n):
    return Plan(stages=(Stage(0, cut - 1, 'c0', (0,)), Stage(cut, n - 1, 'c1', (1,))))


def report(stage, measured, generation=1, predicted=1.0):
    return adapt.StageReport(stage=stage, generation=generation, measured_ms=measured, predicted_ms=predicted,
                             fps=10.0)


# ------------------------------------------------------------------------------------------ parsing

@pytest.mark.parametrize('name,values,expected', [
    ('pipeit/stage_2', {'generation': '3', 'measured_ms': '4.5', 'predicted_ms': '4.0', 'fps': '20'}, (2, 3, 4.5)),
    ('/robot/pipeit/stage_0', {'generation': '1', 'measured_ms': '1.0'}, (0, 1, 1.0)),
    ('pipeit/container', {'generation': '1', 'measured_ms': '1.0'}, None),
    ('pipeit/stage_1', {'generation': '1'}, None),
    ('pipeit/stage_1', {'generation': '1', 'measured_ms': 'nan'}, None),
    ('pipeit/stage_1', {'generation': '1', 'measured_ms': '2.0', 'fps': '0'}, None),
    ('pipeit/stage_1', {'generation': 'x', 'measured_ms': '2.0'}, None),
], ids=['full', 'namespaced', 'not-a-stage', 'no-measurement', 'nan', 'idle', 'bad-generation'])
def test_parse_stage_status(name, values, expected):
    r = adapt.parse_stage_status(name, values, 'c0')
    assert (None if r is None else (r.stage, r.generation, r.measured_ms)) == expected


# ------------------------------------------------------------------------------------------ detector

def feed(detector, seconds, measured, generation=1, t0=0.0):
    """One report per stage per second; returns (time, drift) of the first firing or None."""
    for t in range(int(seconds)):
        for stage, m in enumerate(measured):
            drift = detector.update(report(stage, m, generation), t0 + t)
            if drift is not None:
                return t0 + t, drift
    return None


def test_no_drift_inside_threshold():
    d = adapt.DriftDetector(threshold=0.25, window_s=3.0)
    d.start(1, [2.0, 1.0])
    assert feed(d, 20, [2.4, 1.2]) is None          # +20 %: inside


@pytest.mark.parametrize('measured,stage,ratio', [([6.0, 1.0], 0, 3.0), ([2.0, 5.0], 1, 5.0), ([1.0, 0.5], 0, 0.5)],
                         ids=['slow-stage0', 'slow-stage1-now-slowest', 'faster'])
def test_drift_fires_after_window(measured, stage, ratio):
    d = adapt.DriftDetector(threshold=0.25, window_s=3.0, warmup=1)
    d.start(1, [2.0, 1.0])
    t, drift = feed(d, 20, measured)
    # first report per stage is warm-up, the drift starts at t=1 and must last window_s
    assert t == pytest.approx(1 + 3.0)
    assert drift.stage == stage and drift.ratio == pytest.approx(ratio)
    assert drift.measured_ms == {0: measured[0], 1: measured[1]}
    assert drift.generation == 1


def test_interrupted_drift_starts_over():
    d = adapt.DriftDetector(threshold=0.25, window_s=3.0, warmup=0)
    d.start(1, [1.0])
    for t, m in enumerate([3.0, 3.0, 1.0, 3.0, 3.0, 3.0]):
        assert d.update(report(0, m), t) is None, t
    assert d.update(report(0, 3.0), 6) is not None   # 3 s of drift since t=3


def test_other_generation_and_stale_stage_do_not_count():
    d = adapt.DriftDetector(threshold=0.25, window_s=2.0, warmup=0, stale_s=2.5)
    d.start(2, [1.0, 1.0])
    for t in range(10):
        assert d.update(report(0, 5.0, generation=1), t) is None      # old plan's reports
    assert d.update(report(1, 1.0, generation=2), 0) is None
    for t in range(1, 10):                                            # stage 1 goes silent after t=0
        assert d.update(report(0, 5.0, generation=2), t) is None


def test_rebase_restarts_window():
    d = adapt.DriftDetector(threshold=0.25, window_s=2.0, warmup=0)
    d.start(1, [1.0])
    assert d.update(report(0, 3.0), 0) is None
    assert d.update(report(0, 3.0), 1) is None
    d.rebase([3.0])                                                   # predictions now match
    assert all(d.update(report(0, 3.0), t) is None for t in range(2, 10))


@pytest.mark.parametrize('kwargs', [{'threshold': 0}, {'window_s': -1}], ids=['threshold', 'window'])
def test_detector_rejects_bad_settings(kwargs):
    with pytest.raises(PipeitError):
        adapt.DriftDetector(**kwargs)


# ------------------------------------------------------------------------------------------ scaling

def test_scale_factors_are_measured_over_predicted(topo):
    cost = make_cost(topo, np.ones((2, 6)))
    plan = two_stage(3, 6)
    predicted = adapt.predicted_stage_ms(cost, plan)
    assert predicted == pytest.approx([3.1, 3.1])                    # 3 segments + overhead, no hand-over
    scaled, factors = adapt.scale_cost_table(cost, plan, {0: 3.1, 1: 9.3})
    assert factors == {('c0', 1): pytest.approx(1.0), ('c1', 1): pytest.approx(3.0)}
    assert adapt.predicted_stage_ms(scaled, plan) == pytest.approx([3.1, 9.3])
    again, _ = adapt.scale_cost_table(scaled, plan, {0: 3.1, 1: 18.6})
    assert again.meta['adapt_factors']['c1:1'] == pytest.approx(6.0)   # compounded
    assert cost.seg_ms[1, 0] == 1.0                                   # the input table is untouched


def test_unused_config_of_a_measured_cluster_takes_its_factor(topo):
    configs = [('c0', 1), ('c1', 1), ('c1', 2)]
    cost = make_cost(topo, np.ones((3, 4)), configs)
    plan = two_stage(2, 4)
    _, factors = adapt.scale_cost_table(cost, plan, {0: 2.1, 1: 4.2})
    assert factors[('c1', 2)] == pytest.approx(2.0) and factors[('c1', 1)] == pytest.approx(2.0)


def test_factor_is_clamped(topo):
    cost = make_cost(topo, np.ones((2, 4)))
    _, factors = adapt.scale_cost_table(cost, two_stage(2, 4), {1: 1e6})
    assert factors[('c1', 1)] == adapt.FACTOR_LIMITS[1] and factors[('c0', 1)] == 1.0


# ------------------------------------------------------------------------------------------ rebalance

def brute_force_best(cost, plan, topo):
    from pipeit_ros.planning import prediction
    n, k = cost.n_segments, len(plan.stages)
    best = math.inf
    for cuts in itertools.combinations(range(1, n), k - 1):
        bounds = list(zip((0,) + cuts, cuts + (n,)))
        stages = tuple(Stage(a, b - 1, s.cluster, s.cpus, s.threads, s.replicas)
                       for s, (a, b) in zip(plan.stages, bounds))
        fps, _ = prediction.predict(Plan(stages=stages), cost, topo)
        best = min(best, 1000.0 / fps)
    return best


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 9))
def test_rebalance_is_optimal_for_its_structure(topo, seed, n):
    rng = np.random.default_rng(seed)
    cost = make_cost(topo, rng.uniform(0.1, 5.0, size=(2, n)))
    plan = two_stage(1, n)
    out = adapt.rebalance(plan, cost, topo)
    assert [(s.cluster, s.cpus) for s in out.stages] == [('c0', (0,)), ('c1', (1,))]
    assert out.stages[0].first == 0 and out.stages[-1].last == n - 1
    assert 1000.0 / out.predicted_fps == pytest.approx(brute_force_best(cost, plan, topo))


def test_slow_core_loses_layers_end_to_end(topo):
    """Detector fires on a 4x slower c1, the scaled table moves the cut towards c1's end."""
    n = 12
    cost = make_cost(topo, np.ones((2, n)))
    plan = adapt.rebalance(two_stage(1, n), cost, topo)
    assert [s.n_layers for s in plan.stages] == [6, 6]
    predicted = adapt.predicted_stage_ms(cost, plan)
    d = adapt.DriftDetector(threshold=0.25, window_s=3.0)
    d.start(1, predicted)
    _, drift = feed(d, 20, [predicted[0], predicted[1] * 4])
    scaled, _ = adapt.scale_cost_table(cost, plan, drift.measured_ms)
    moved = adapt.rebalance(plan, scaled, topo)
    assert moved.stages[1].n_layers < plan.stages[1].n_layers
    assert not adapt.same_layout(moved, plan)
    assert adapt.same_layout(adapt.rebalance(moved, scaled, topo), moved)


def test_rebalance_needs_enough_segments(topo):
    cost = make_cost(topo, np.ones((2, 1)))
    with pytest.raises(PipeitError, match='2 stages cannot be cut from 1 segments'):
        adapt.rebalance(two_stage(1, 2), cost, topo)
