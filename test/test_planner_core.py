"""The planner's parameters, checks and planning (pipeit_ros.app.planner_state), without ROS."""
import os
import re
import shutil

import numpy as np
import pytest

from pipeit_ros.app import adapt
from pipeit_ros.app import planner_state as planner_core
from pipeit_ros.app.planner_state import PlanInputs, PlannerConfig, check_config, check_value, make_plan
from pipeit_ros.errors import PipeitError, TopologyError

TINY_SPLIT = '0-3@c0,4-8@c1'       # the tiny net: 9 layers, chain cut points 1, 4, 7, 8 (every one with 2 tensors)


@pytest.fixture
def inputs():
    return PlanInputs(log=lambda *a: None)


@pytest.fixture
def cfg(zoo_model):
    return PlannerConfig(model_path=zoo_model('tiny'), topology='emulated-2x1', stages=TINY_SPLIT)


@pytest.mark.parametrize('name,value,reason', [
    ('objective', 'latency', None),
    ('objective', 'fastest', 'objective must be one of throughput, latency'),
    ('source', 'profile', None),
    ('search', 'greedy', 'search must be one of exact, pipeit-paper'),
    ('max_latency_ms', 50, None),
    ('max_latency_ms', -1.0, r'max_latency_ms must be in \[0, 1e\+06\]'),
    ('memory_mb', 1.5, 'memory_mb must be an integer'),
    ('memory_mb', True, 'memory_mb must be an integer'),
    ('adapt', 'yes', 'adapt must be true or false'),
    ('adapt_window_s', 0.1, 'adapt_window_s must be in'),
    ('max_cut_tensors', 1, None),
    ('max_cut_tensors', 0, r'max_cut_tensors must be in \[1, 64\]'),
    ('color', 'red', "unknown planner parameter 'color'"),
], ids=['enum-ok', 'enum-bad', 'source', 'search-bad', 'int-for-float', 'negative', 'float-for-int', 'bool-for-int',
        'str-for-bool', 'window-small', 'cut-limit', 'cut-limit-0', 'unknown'])
def test_check_value(name, value, reason):
    got = check_value(name, value)
    if reason is None:
        assert got is None
    else:
        assert got is not None and re.search(reason, got), got


def test_config_from_params_and_defaults():
    assert PlannerConfig.from_params({}) == PlannerConfig()
    assert PlannerConfig().to_dict() == {p.name: p.default for p in planner_core.PARAMS}
    with pytest.raises(PipeitError, match=r'unknown planner parameter\(s\) objectiv'):
        PlannerConfig.from_params({'objectiv': 'latency'})


def test_good_config_passes(cfg, inputs):
    check_config(cfg, inputs)
    check_config(cfg.updated({'stages': '', 'objective': 'latency'}), inputs)


@pytest.mark.parametrize('changes,error,match', [
    ({'stages': '0-1@c0,2-8@c1', 'max_cut_tensors': 1}, PipeitError, 'layer 2 is not a legal cut point'),
    ({'stages': '0-3@big,4-8@c1'}, TopologyError, "no cluster 'big'"),
    ({'stages': '0-3@c0,4-7@c1'}, PipeitError, 'the model has 9'),
    ({'stages': 'first half'}, PipeitError, 'is not FIRST-LAST@CLUSTER'),
    ({'topology': 'no-such-board'}, TopologyError, 'unknown topology'),
    ({'model_path': '/nonexistent.onnx'}, PipeitError, 'not a file and not a zoo network'),
    ({'predictor_path': '/nonexistent.joblib'}, PipeitError, "predictor_path '/nonexistent.joblib' is not a file"),
    ({'objective': 'fastest'}, PipeitError, 'objective must be one of'),
    ({'stages': '', 'search': 'pipeit-paper', 'max_latency_ms': 5.0}, PipeitError,
     'max_latency_ms need\\(s\\) search exact'),
    ({'stages': '', 'search': 'pipeit-paper', 'objective': 'latency'}, PipeitError, 'objective latency need'),
], ids=['illegal-cut', 'unknown-cluster', 'short', 'garbage-spec', 'topology', 'model', 'predictor', 'enum',
        'paper-constrained', 'paper-latency'])
def test_bad_config_is_refused(cfg, inputs, changes, error, match):
    with pytest.raises(error, match=match):
        check_config(cfg.updated(changes), inputs)


def test_topology_of_another_machine_is_refused(cfg, inputs):
    """rk3588 has CPUs 0-7; this machine has fewer (the CI machines have 2)."""
    import os
    if len(os.sched_getaffinity(0)) >= 8:
        pytest.skip('this machine has CPUs 0-7')
    with pytest.raises(TopologyError, match='cpu'):
        check_config(cfg.updated({'topology': 'rk3588', 'stages': ''}), inputs)


def test_forced_plan_needs_no_cost_table(cfg, inputs):
    result = make_plan(cfg, inputs)
    assert result.plan.to_spec() == '0-3@c0[0]:1,4-8@c1[1]:1'
    assert result.plan.model_hash == result.graph.model_hash
    assert result.cost is None and result.predicted_stage_ms == [0.0, 0.0]
    assert inputs.graph(cfg.model_path) is result.graph                     # memoised


def test_a_plan_s_stages_are_optimised_before_it_is_published(cfg, inputs):
    """The containers find each stage's optimised model made (engine.optimized): onnxruntime's temporaries
    while it optimises stay in the planner's process."""
    from pipeit_ros.engine import optimized
    folder = os.path.join(os.path.dirname(make_plan(cfg, inputs).graph.weights.path), optimized.FOLDER)
    shutil.rmtree(folder)                       # made by this or an earlier test: start without it
    result = make_plan(cfg, PlanInputs(log=lambda *a: None))
    made = set(os.listdir(folder))
    for s in result.plan.stages:
        assert optimized.stage_key(result.graph.extract_bytes(s.first, s.last)) + '.onnx' in made


def test_cut_limit_decides_which_forced_cuts_are_legal(cfg, inputs):
    """Layer 2 of the tiny net is inside its residual block: two tensors cross there."""
    inside = cfg.updated({'stages': '0-1@c0,2-8@c1'})
    assert len(inputs.graph(cfg.model_path).boundary(2)) == 2
    assert make_plan(inside, inputs).plan.to_spec() == '0-1@c0[0]:1,2-8@c1[1]:1'
    with pytest.raises(PipeitError, match='layer 2 is not a legal cut point'):
        make_plan(inside.updated({'max_cut_tensors': 1}), inputs)
    assert inputs.graph(cfg.model_path, max_cut_tensors=1) is not inputs.graph(cfg.model_path)


def test_zoo_names_are_models(inputs):
    g = inputs.graph('tiny')
    assert g.input_shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_dse_plan_reuses_the_cost_table(cfg, inputs):
    """source=profile on the tiny net (seconds); a second plan with another objective reuses the table."""
    first = make_plan(cfg.updated({'stages': '', 'source': 'profile'}), inputs)
    assert first.cost is not None and len(first.predicted_stage_ms) == len(first.plan.stages)
    assert all(t > 0 for t in first.predicted_stage_ms)
    assert first.plan.model_hash == first.graph.model_hash
    second = make_plan(cfg.updated({'stages': '', 'source': 'profile', 'objective': 'latency'}), inputs)
    assert second.cost is first.cost
    forced = make_plan(cfg.updated({'source': 'profile', 'adapt': True}), inputs)
    assert forced.cost is first.cost and all(t > 0 for t in forced.predicted_stage_ms)


@pytest.mark.slow
@pytest.mark.parametrize('slow_stage', [0, 1], ids=['c0-slow', 'c1-slow'])
def test_adapt_moves_layers_off_the_slow_core(cfg, inputs, slow_stage):
    """A forced 2-stage plan on the tiny net's profiled table: stage `slow_stage` measured 5x slower than
    predicted -> the re-cut plan gives that stage fewer layers, keeps the CPUs, and the table stays scaled."""
    cfg = cfg.updated({'source': 'profile', 'adapt': True, 'stages': '0-3@c0,4-8@c1'})
    current = make_plan(cfg, inputs)
    measured = {i: t * (5.0 if i == slow_stage else 1.0) for i, t in enumerate(current.predicted_stage_ms)}
    drift = adapt.Drift(generation=1, stage=slow_stage, ratio=5.0, since=0.0, measured_ms=measured)
    moved = planner_core.adapt_plan(current, cfg, drift, inputs)
    assert moved.plan.stages[slow_stage].n_layers < current.plan.stages[slow_stage].n_layers
    assert [s.cpus for s in moved.plan.stages] == [(0,), (1,)]
    assert moved.plan.search == 'rebalance'
    assert inputs.cost(cfg, moved.graph, moved.topology, build=False) is moved.cost     # kept for re-plans
    factors = moved.cost.meta['adapt_factors']
    slow_cluster = ('c0', 'c1')[slow_stage]
    assert factors[f'{slow_cluster}:1'] == pytest.approx(5.0, rel=1e-6)
    assert np.allclose(moved.cost.seg_ms[1 - slow_stage], current.cost.seg_ms[1 - slow_stage])


def test_shipped_params_file_repeats_the_planner_defaults():
    """config/pipeline.yaml lists every planner parameter for users to edit; its values are PlannerConfig's."""
    from conftest import REPO
    import yaml
    with open(os.path.join(REPO, 'config', 'pipeline.yaml')) as f:
        shipped = yaml.safe_load(f)['pipeit_planner']['ros__parameters']
    assert shipped == PlannerConfig().to_dict()
    assert all(type(shipped[k]) is type(v) for k, v in PlannerConfig().to_dict().items())
