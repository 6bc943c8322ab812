"""plan.py as the engine relies on it: JSON round trip, the compact spec, every validation error."""
import json

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from pipeit_ros.errors import PipeitError, PlanError
from pipeit_ros.hw.topology import Cluster, Topology
from pipeit_ros.plan import Plan, Stage, parse_spec, validate

TOPO = Topology(clusters=(Cluster('big', (0, 1, 2, 3), 'a76', 1.0), Cluster('little', (4, 5, 6, 7), 'a55', 0.4)),
                name='test-4+4')


@st.composite
def plans(draw):
    n_stages = draw(st.integers(1, 4))
    cuts = sorted(draw(st.sets(st.integers(1, 40), min_size=n_stages - 1, max_size=n_stages - 1)))
    bounds = [0, *cuts, draw(st.integers(max(cuts, default=0) + 1, 60))]
    stages = []
    for a, b in zip(bounds, bounds[1:]):
        threads, replicas = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        cpus = draw(st.lists(st.integers(0, 63), min_size=threads * replicas, max_size=threads * replicas))
        stages.append(Stage(a, b - 1, draw(st.sampled_from(['big', 'little', 'big+little'])), tuple(cpus),
                            threads=threads, replicas=replicas, pinned=draw(st.booleans()),
                            predicted_ms=draw(st.none() | st.floats(0, 1e3))))
    return Plan(stages=tuple(stages), model_hash=draw(st.text(max_size=8)),
                predicted_fps=draw(st.none() | st.floats(0, 1e4)), search=draw(st.sampled_from(['manual', 'exact'])),
                notes=draw(st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)))


@settings(max_examples=60, deadline=None)
@given(plans())
def test_json_round_trip(plan):
    assert Plan.from_json(plan.to_json()) == plan
    assert json.loads(plan.to_json())['schema_version'] == 1


def test_save_and_load(tmp_path):
    plan = parse_spec('0-4@big:2,5-9@little:2x2', TOPO, n_layers=10)
    assert Plan.load(plan.save(tmp_path / 'p.json')) == plan


SPECS = {  # id -> (spec, [(first, last, cluster, cpus, threads, replicas)])
    'cpus-in-order': ('0-4@big:2,5-9@big:2', [(0, 4, 'big', (0, 1), 2, 1), (5, 9, 'big', (2, 3), 2, 1)]),
    'replicas': ('0-9@little:1x4', [(0, 9, 'little', (4, 5, 6, 7), 1, 4)]),
    'explicit-cpus': ('0-2@big[3+2],3-9@little[7]', [(0, 2, 'big', (3, 2), 2, 1), (3, 9, 'little', (7,), 1, 1)]),
    'default-one-thread': ('0-9@big', [(0, 9, 'big', (0,), 1, 1)]),
    'replicas-on-two-clusters': ('0-9@big+little[0+4]:1x2', [(0, 9, 'big+little', (0, 4), 1, 2)]),
}


@pytest.mark.parametrize('case', list(SPECS), ids=list(SPECS))
def test_parse_spec(case):
    spec, expected = SPECS[case]
    plan = parse_spec(spec, TOPO, n_layers=10)
    got = [(s.first, s.last, s.cluster, s.cpus, s.threads, s.replicas) for s in plan.stages]
    assert got == expected
    assert parse_spec(plan.to_spec(), TOPO, n_layers=10).stages == plan.stages
    assert plan.topology_fingerprint == TOPO.fingerprint()


BAD_SPECS = {
    'syntax': ('0-4 big', 'is not FIRST-LAST@CLUSTER'),
    'unknown-cluster': ('0-9@medium:1', "no cluster 'medium'"),
    'too-many-cpus': ('0-9@big:5', 'needs 5 CPUs'),
    'empty': (' , ', 'empty stage spec'),
    'short': ('0-4@big:1', 'the model has 10'),
    'two-clusters-no-cpus': ('0-9@big+little:1x2', 'need their CPUs listed'),
}


@pytest.mark.parametrize('case', list(BAD_SPECS), ids=list(BAD_SPECS))
def test_bad_specs(case):
    spec, words = BAD_SPECS[case]
    with pytest.raises(PipeitError, match=words):
        parse_spec(spec, TOPO, n_layers=10)


def _s(first, last, cluster='big', cpus=(0,), threads=1, replicas=1, pinned=True, window=None):
    return Stage(first, last, cluster, cpus, threads=threads, replicas=replicas, pinned=pinned, window=window)


INVALID = {  # id -> (stages, validate kwargs, words)
    'no-stages': ((), {}, 'at least one stage'),
    'not-from-0': ((_s(1, 9),), {}, 'starts at layer 1, expected 0'),
    'gap': ((_s(0, 3), _s(5, 9, cpus=(1,))), {}, 'starts at layer 5, expected 4'),
    'backwards': ((_s(0, 3), _s(4, 2, cpus=(1,))), {}, 'ends before it starts'),
    'illegal-cut': ((_s(0, 3), _s(4, 9, cpus=(1,))), {'cut_points': [2, 6]}, 'not a legal cut point'),
    'zero-threads': ((_s(0, 9, cpus=(), threads=0),), {}, 'must be >= 1'),
    'cpu-count': ((_s(0, 9, cpus=(0, 1, 2), threads=2),), {}, '3 CPUs given for 1 replica'),
    'outside-cluster': ((_s(0, 9, cpus=(3, 4), threads=2),), {}, r'CPUs \[3, 4\] of one replica'),
    'replica-across': ((_s(0, 9, 'big+little', cpus=(3, 4, 5, 6), threads=2, replicas=2),), {},
                       r'CPUs \[3, 4\] of one replica'),
    'cpu-twice': ((_s(0, 3), _s(4, 9, cpus=(0,))), {}, 'CPU 0 is already used by stage 0'),
    'uncovered': ((_s(0, 7),), {'n_layers': 10}, 'cover layers 0-7, the model has 10'),
    'unknown-cluster': ((_s(0, 9, 'medium'),), {}, "no cluster 'medium'"),
    'window-zero': ((_s(0, 9, window=0),), {}, 'window must be an integer >= 1 or absent, got 0'),
    'window-text': ((_s(0, 9, window='5'),), {}, "window must be an integer >= 1 or absent, got '5'"),
}


@pytest.mark.parametrize('case', list(INVALID), ids=list(INVALID))
def test_each_validation_error(case):
    stages, kwargs, words = INVALID[case]
    with pytest.raises(PipeitError, match=words):
        validate(Plan(stages=stages), TOPO, **kwargs)


def test_valid_plans_pass():
    plan = Plan(stages=(_s(0, 3, cpus=(0, 1), threads=2), _s(4, 9, 'big+little', cpus=(2, 3, 4, 5), threads=2,
                                                                 replicas=2)))
    assert validate(plan, TOPO, n_layers=10, cut_points=[4]) is plan
    unpinned = Plan(stages=(_s(0, 9, 'big+little', cpus=tuple(range(8)), threads=8, pinned=False),))
    assert validate(unpinned, TOPO, n_layers=10) is unpinned


JSON_ERRORS = {
    'not-json': ('{', 'not valid JSON'),
    'not-object': ('[1]', 'must be a JSON object'),
    'schema': ('{"schema_version": 99, "stages": []}', 'schema_version 99'),
    'malformed': ('{"stages": [{"first": 0}]}', 'malformed plan'),
}


@pytest.mark.parametrize('case', list(JSON_ERRORS), ids=list(JSON_ERRORS))
def test_bad_plan_json(case):
    text, words = JSON_ERRORS[case]
    with pytest.raises(PlanError, match=words):
        Plan.from_json(text)


def test_load_names_the_file(tmp_path):
    with pytest.raises(PlanError, match='missing.json: cannot read plan'):
        Plan.load(tmp_path / 'missing.json')
    bad = tmp_path / 'bad.json'
    bad.write_text('{')
    with pytest.raises(PlanError, match='bad.json: plan is not valid JSON'):
        Plan.load(bad)
