"""The plan message on pipeit/plan: encode, decode, and refuse what is not one."""
import json

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from pipeit_ros.app.wire import plan_msg as planmsg
from pipeit_ros.errors import PlanError
from pipeit_ros.hw import topology as topology_mod
from pipeit_ros.plan import Plan, Stage, parse_spec


@pytest.fixture(scope='module')
def topo():
    return topology_mod.resolve('emulated-2x1', check_cpus=False)


@pytest.fixture(scope='module')
def plan(topo):
    return parse_spec('0-4@c0,5-9@c1', topo, n_layers=10)


def encode(plan, topo, **kw):
    args = dict(generation=3, reason='param:objective', model_path='/models/tiny.onnx', model_hash='abc123',
                topology=topo, input_shape=(1, 3, 32, 32), predicted_stage_ms=[1.5, 2.0])
    args.update(kw)
    return planmsg.encode_plan_message(plan, **args)


def test_round_trip_and_contract_fields(plan, topo):
    text = encode(plan, topo)
    data = json.loads(text)
    assert set(data) == {'schema_version', 'generation', 'reason', 'model_path', 'model_hash', 'topology',
                         'plan', 'predicted_stage_ms', 'preprocess', 'output', 'graph'}
    assert data['schema_version'] == planmsg.SCHEMA_VERSION
    assert data['preprocess'] == {'mean': list(planmsg.IMAGENET_MEAN), 'std': list(planmsg.IMAGENET_STD),
                                  'rgb': True, 'input_shape': [1, 3, 32, 32]}
    m = planmsg.decode_plan_message(text)
    assert (m.generation, m.reason, m.model_hash) == (3, 'param:objective', 'abc123')
    assert m.plan == plan
    assert m.load_topology() == topo
    assert m.predicted_stage_ms == [1.5, 2.0]


def test_predicted_times_default_to_the_plan_stages(topo):
    plan = Plan(stages=(Stage(0, 3, 'c0', (0,), predicted_ms=2.5), Stage(4, 5, 'c1', (1,))))
    m = planmsg.decode_plan_message(encode(plan, topo, predicted_stage_ms=None))
    assert m.predicted_stage_ms == [2.5, 0.0]


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(0, 8), generation=st.integers(1, 10**6),
       times=st.lists(st.floats(0, 1e4, allow_nan=False), min_size=2, max_size=2),
       channels=st.sampled_from([1, 3]))
def test_round_trip_property(topo, cut, generation, times, channels):
    plan = parse_spec(f'0-{cut}@c0,{cut + 1}-9@c1', topo, n_layers=10)
    pre = planmsg.default_preprocess((1, channels, 16, 24), mean=[0.5], std=[0.25], rgb=channels == 3)
    text = planmsg.encode_plan_message(plan, generation=generation, reason='adapt', model_path='m',
                                       model_hash='h', topology=topo.to_dict(), preprocess=pre,
                                       predicted_stage_ms=times)
    m = planmsg.decode_plan_message(text)
    assert (m.plan, m.generation, m.predicted_stage_ms, m.preprocess) == (plan, generation, times, pre)


def _mutate(text, **changes):
    data = json.loads(text)
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize('changes,match', [
    ({'schema_version': 2}, 'schema_version 2 is not supported'),
    ({'schema_version': KeyError}, 'schema_version None'),
    ({'generation': 0}, 'generation must be an integer >= 1'),
    ({'generation': True}, 'generation must be an integer'),
    ({'reason': 'because'}, 'reason must be start, adapt or param:<name>'),
    ({'predicted_stage_ms': [1.0]}, 'one finite time >= 0 per stage'),
    ({'predicted_stage_ms': [1.0, -2.0]}, 'one finite time >= 0 per stage'),
    ({'preprocess': {'mean': [0.5]}}, 'preprocess needs mean, std, rgb and input_shape'),
    ({'preprocess': {'mean': [0.1, 0.2], 'std': [1], 'rgb': True, 'input_shape': [1, 3, 8, 8]}},
     'mean needs 1 or 3 values'),
    ({'preprocess': {'mean': [0], 'std': [0], 'rgb': True, 'input_shape': [1, 3, 8, 8]}}, 'std must be > 0'),
    ({'topology': {'name': 'x'}}, 'topology must be a Topology.to_dict'),
    ({'plan': {'stages': [{'first': 0}]}}, 'malformed plan'),
    ({'extra': 1}, 'unknown field'),
    ({'model_hash': KeyError}, 'lacks model_hash'),
], ids=['future-version', 'no-version', 'generation-0', 'generation-bool', 'reason', 'times-count',
        'times-negative', 'preprocess-keys', 'mean-length', 'std-zero', 'topology', 'plan', 'unknown-field',
        'missing-field'])
def test_decode_refuses_with_a_reason(plan, topo, changes, match):
    with pytest.raises(PlanError, match=match):
        planmsg.decode_plan_message(_mutate(encode(plan, topo), **changes))


@pytest.mark.parametrize('text', ['not json', '[1, 2]', None], ids=['garbage', 'array', 'none'])
def test_decode_refuses_non_objects(text):
    with pytest.raises(PlanError):
        planmsg.decode_plan_message(text)


def test_encode_refuses_nan_times(plan, topo):
    with pytest.raises(PlanError, match='finite'):
        encode(plan, topo, predicted_stage_ms=[float('nan'), 1.0])


def test_graph_ids_order_by_start_and_name_their_launcher():
    from pipeit_ros.app.wire.plan_msg import describe_graph, new_graph_id, older_graph
    first = new_graph_id(host='robot', pid=41, started=1000.0)
    second = new_graph_id(host='robot', pid=42, started=1000.5)
    assert first == 'robot:41:1000000'
    assert older_graph(first, second) and not older_graph(second, first) and not older_graph(first, first)
    assert not older_graph('not-an-id', first)
    assert describe_graph(first) == 'started by pid 41 on host robot at 00:16:40 UTC'


def test_plan_message_carries_its_graph(plan, topo):
    text = encode(plan, topo, graph='robot:41:1000000')
    assert planmsg.decode_plan_message(text).graph == 'robot:41:1000000'
    data = json.loads(text)
    data['graph'] = 7
    with pytest.raises(PlanError, match='graph must be a string'):
        planmsg.decode_plan_message(json.dumps(data))
