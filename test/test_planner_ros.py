"""The planner node on a real rclpy + Fast DDS graph: latched plan, re-plan on parameter set, rejections with a
reason, adaptation from /diagnostics. Each test on its own ROS domain."""
import os
import subprocess
import sys

import numpy as np
from planner_helpers import RosGraph, domain_id, plan_listener
import pytest

from pipeit_ros.cost.table import CostTable
from pipeit_ros.hw import topology as topology_mod
from pipeit_ros.model import graph as graph_mod

pytestmark = pytest.mark.ros

TINY_SPLIT = '0-3@c0,4-8@c1'         # the tiny net: 9 layers, legal cuts at 1, 4, 7, 8


@pytest.fixture
def ros():
    graph = RosGraph(domain_id())
    yield graph
    graph.close()


def start_planner(ros, **params):
    from rclpy.parameter import Parameter

    from pipeit_ros.ros.planner_node import PlannerNode
    node = PlannerNode(context=ros.context,
                       parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    ros.add(node)
    node.start()
    return node


def parameter_client(ros):
    from rclpy.node import Node
    from rclpy.parameter_client import AsyncParameterClient

    node = ros.add(Node('param_client', context=ros.context))
    client = AsyncParameterClient(node, 'pipeit_planner')
    ros.wait(lambda: client.services_are_ready(), 10, 'the planner parameter services')

    def set_parameters(**values):
        from rclpy.parameter import Parameter
        future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        ros.wait(future.done, 10, f'set_parameters {values}')
        return future.result().results[0]
    return client, set_parameters


def test_plan_is_latched_for_late_subscribers(ros, zoo_model):
    tiny = zoo_model('tiny')
    node = start_planner(ros, model_path=tiny, topology='emulated-2x1', stages=TINY_SPLIT)
    ros.wait(lambda: node.generation == 1 and node.idle(), 30, 'the first plan')
    late = plan_listener(ros)                         # subscribes after the plan was published
    ros.wait(lambda: late.plans, 10, 'the latched plan')
    ros.spin(0.3)
    assert len(late.plans) == 1
    m = late.plans[0]
    assert (m.generation, m.reason, m.plan.to_spec()) == (1, 'start', '0-3@c0[0]:1,4-8@c1[1]:1')
    g = graph_mod.load(tiny)
    assert (m.model_hash, m.model_path) == (g.model_hash, g.path)
    assert m.load_topology().fingerprint() == topology_mod.resolve('emulated-2x1').fingerprint()
    assert m.preprocess['input_shape'] == [1, 3, 32, 32] and m.preprocess['rgb'] is True


def test_param_set_replans_and_bad_values_are_rejected(ros, zoo_model):
    # chain cuts only, so that a cut inside the tiny net's residual block is refused
    node = start_planner(ros, model_path=zoo_model('tiny'), topology='emulated-2x1', stages=TINY_SPLIT,
                         max_cut_tensors=1)
    listener = plan_listener(ros)
    ros.wait(lambda: [m.generation for m in listener.plans] == [1], 30, 'the first plan')
    _, set_parameters = parameter_client(ros)

    ok = set_parameters(stages='0-6@c0,7-8@c1')
    assert ok.successful, ok.reason
    ros.wait(lambda: len(listener.plans) == 2, 20, 'the re-plan')
    m = listener.plans[-1]
    assert (m.generation, m.reason, m.plan.to_spec()) == (2, 'param:stages', '0-6@c0[0]:1,7-8@c1[1]:1')

    rejected = {
        'objective': (dict(objective='fastest'), 'objective must be one of throughput, latency'),
        'illegal cut': (dict(stages='0-1@c0,2-8@c1'), 'layer 2 is not a legal cut point'),
        'cluster': (dict(stages='0-3@big,4-8@c1'), "no cluster 'big'"),
        'model': (dict(model_path='/nonexistent.onnx'), 'not a file and not a zoo network'),
        'range': (dict(adapt_threshold=-1.0), 'out of range'),
        'type': (dict(memory_mb=1.5), 'Wrong parameter type'),
    }
    for what, (values, reason) in rejected.items():
        result = set_parameters(**values)
        assert not result.successful, what
        assert reason in result.reason, (what, result.reason)
    ros.spin(1.0)
    assert [m.generation for m in listener.plans] == [1, 2]          # the old plan stays
    assert node.get_parameter('objective').value == 'throughput'
    assert node.get_parameter('stages').value == '0-6@c0,7-8@c1'
    assert node.current.plan.to_spec() == '0-6@c0[0]:1,7-8@c1[1]:1'


def test_parameters_are_described(ros, zoo_model):
    from rcl_interfaces.msg import ParameterType

    from pipeit_ros.app.planner_state import PARAMS
    node = start_planner(ros, model_path=zoo_model('tiny'), topology='emulated-2x1', stages=TINY_SPLIT)
    for spec in PARAMS:
        d = node.describe_parameter(spec.name)
        assert d.description == spec.description
        if d.type == ParameterType.PARAMETER_DOUBLE:
            assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == (spec.low, spec.high)
        if d.type == ParameterType.PARAMETER_INTEGER:
            assert d.integer_range[0].to_value == spec.high
        if spec.choices:
            assert all(c in d.additional_constraints for c in spec.choices)


@pytest.mark.parametrize('params,message', [
    (['stages:=0-2@c0,3-8@c1', 'max_cut_tensors:=1'], 'layer 3 is not a legal cut point'),
    (['source:=profile', 'max_latency_ms:=0.001'], 'cannot make the first plan'),
    (['max_latency_ms:=5'], 'max_latency_ms'),
], ids=['illegal-cut', 'infeasible', 'int-for-double'])
def test_bad_start_parameters_stop_the_node(zoo_model, params, message):
    """Start-up values the checks (or the DSE) refuse: the node exits 2 saying why, publishing nothing."""
    code = 'import sys; from pipeit_ros.ros.planner_node import main; sys.exit(main())'
    argv = ['--ros-args', '-p', f'model_path:={zoo_model("tiny")}', '-p', 'topology:=emulated-2x1']
    for p in params:
        argv += ['-p', p]
    proc = subprocess.run([sys.executable, '-c', code, *argv], capture_output=True, text=True, timeout=60,
                          env={**os.environ, 'ROS_DOMAIN_ID': str(domain_id())})
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert 'plan generation' not in proc.stderr


def synthetic_profile(path, graph, topology, per_segment_ms=1.0):
    """A saved cost table (every segment costs the same on both cores) so the planner needs no profiling."""
    n = len(graph.segments())
    table = CostTable(segments=graph.segments(), configs=[('c0', 1), ('c1', 1)],
                      seg_ms=np.full((2, n), per_segment_ms), overhead_ms=np.zeros(2),
                      in_bytes=[graph.cut_points[0].bytes] * n, weight_bytes=[0] * n, act_bytes=[0] * n,
                      source='profile', model_hash=graph.model_hash, topology_fingerprint=topology.fingerprint())
    return table.save(str(path))


def publish_stage_times(ros, generation, measured_ms, seconds, rate_hz=5.0):
    """Act as the containers: /diagnostics with each stage's measured time, for `seconds`."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.node import Node

    node = getattr(ros, '_diag_node', None) or ros.add(Node('fake_container', context=ros.context))
    ros._diag_node = node
    pub = getattr(node, 'pub', None) or node.create_publisher(DiagnosticArray, '/diagnostics', 10)
    node.pub = pub
    for _ in range(int(seconds * rate_hz)):
        msg = DiagnosticArray()
        for i, ms in enumerate(measured_ms):
            values = {'generation': str(generation), 'fps': '20.0', 'measured_ms': f'{ms:.3f}'}
            msg.status.append(DiagnosticStatus(name=f'pipeit/stage_{i}', hardware_id=f'c{i}',
                                               values=[KeyValue(key=k, value=v) for k, v in values.items()]))
        pub.publish(msg)
        ros.spin(1.0 / rate_hz)


@pytest.mark.slow
def test_adaptation_from_diagnostics(ros, zoo_model, tmp_path):
    """Stage 1 reported 4x slower than predicted for longer than the window: a re-cut plan (reason adapt)
    with fewer layers on c1; with adapt off nothing happens."""
    tiny = zoo_model('tiny')
    g, topo = graph_mod.load(tiny, max_cut_tensors=1), topology_mod.resolve('emulated-2x1')   # 5 chain segments
    profile = synthetic_profile(tmp_path / 'profile.json', g, topo)
    start_planner(ros, model_path=tiny, topology='emulated-2x1', stages='0-3@c0,4-8@c1', source='profile',
                  profile_path=profile, adapt=False, adapt_window_s=1.0, adapt_threshold=0.5, max_cut_tensors=1)
    listener = plan_listener(ros)
    ros.wait(lambda: len(listener.plans) == 1, 30, 'the first plan')
    predicted = listener.plans[0].predicted_stage_ms
    assert predicted == pytest.approx([2.0, 3.0])       # segments (0,0)+(1,3) and (4,6)+(7,7)+(8,8)
    publish_stage_times(ros, 1, [predicted[0], predicted[1] * 4], seconds=2.5)
    assert len(listener.plans) == 1                      # adapt is off

    _, set_parameters = parameter_client(ros)
    assert set_parameters(adapt=True).successful
    publish_stage_times(ros, 1, [predicted[0], predicted[1] * 4], seconds=3.0)
    ros.wait(lambda: len(listener.plans) == 2, 10, 'the adapted plan')
    m = listener.plans[-1]
    assert (m.generation, m.reason) == (2, 'adapt')
    # c1's segments now cost 4 ms against c0's 1 ms: the best cut leaves c1 the last segment only
    assert m.plan.to_spec() == '0-7@c0[0]:1,8-8@c1[1]:1'
    assert m.predicted_stage_ms == pytest.approx([4.0, 4.0])


@pytest.mark.slow
def test_dse_planning_off_the_executor_thread(ros, monkeypatch, tmp_path):
    """A cold profile takes seconds (the tiny net's: 7-10 s, its memory probes included; mobilenet_v2's took over
    a minute here for the same check): the parameter services answer meanwhile (planning runs on the worker
    thread), the plan is the DSE's, and a later objective change re-plans on the same cost table."""
    from pipeit_ros.plan import check_against

    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))      # nothing cached: profiling runs
    node = start_planner(ros, model_path='tiny', topology='emulated-2x1', source='profile')
    listener = plan_listener(ros)
    client, set_parameters = parameter_client(ros)
    future = client.get_parameters(['objective'])
    ros.wait(future.done, 10, 'get_parameters while planning')
    assert not node.idle() and not listener.plans                     # answered while the plan was being made
    assert future.result().values[0].string_value == 'throughput'
    ros.wait(lambda: listener.plans, 90, 'the first plan')
    m = listener.plans[0]
    g, topo = graph_mod.load(m.model_path), topology_mod.resolve('emulated-2x1')
    check_against(m.plan, g, topo)
    assert m.plan.search == 'exact' and all(t > 0 for t in m.predicted_stage_ms)
    assert set_parameters(objective='latency').successful
    ros.wait(lambda: len(listener.plans) == 2, 30, 'the re-plan')
    assert (listener.plans[1].generation, listener.plans[1].reason) == (2, 'param:objective')
    assert len(node.inputs.cost_tables()) == 1                              # the cost table was reused


def ort_failing_model(path):
    """A model onnx accepts and onnxruntime loads, but cannot run: its conv weight has 5 input channels for a
    3-channel image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 5, 3, 3)).astype(np.float32), 'w')
    graph = helper.make_graph(
        [helper.make_node('Conv', ['x', 'w'], ['y'], pads=[1, 1, 1, 1], name='conv'),
         helper.make_node('GlobalAveragePool', ['y'], ['g'], name='gap'),
         helper.make_node('Flatten', ['g'], ['out'], name='flat')], 'ort_fails',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT, [1, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def act_as_containers(ros, containers, generation=1):
    """Publish each {cluster: cpus} container's status on pipeit/status every 0.5 s, as running containers do,
    ``running`` at ``node.generation`` (the test moves it)."""
    import json

    from rclpy.node import Node
    from std_msgs.msg import String

    from pipeit_ros.ros.messages import STATUS_QOS
    node = ros.add(Node('fake_containers', context=ros.context))
    node.generation = generation
    pub = node.create_publisher(String, 'pipeit/status', STATUS_QOS)

    def publish():
        for cluster, cpus in containers.items():
            pub.publish(String(data=json.dumps({'container': f'pipeit_container_{cluster}', 'cluster': cluster,
                                                'generation': node.generation, 'state': 'running', 'stages': [],
                                                'pid': 1, 'cpus': cpus})))
    node.create_timer(0.5, publish)
    publish()
    return node


@pytest.mark.parametrize('change,reason', [
    ('model_ort_fails', 'onnxruntime cannot run it'),
    ('max_latency_ms', 'latency'),
    ('topology', "cluster 'big', which no running container hosts"),
], ids=['model-fails-in-ort', 'max-latency-1e-6', 'topology-of-other-containers'])
def test_a_change_is_taken_only_if_it_can_be_planned_and_run(ros, zoo_model, tmp_path, change, reason):
    """Parameters are validated by planning: a change that cannot be planned, or whose plan the running containers
    cannot host, is refused with the reason; parameters, plan and generation stay; the next valid change works."""
    from rclpy.parameter import Parameter
    tiny = zoo_model('tiny')
    if change == 'topology':          # a forced plan needs no cost table on the new topology
        start = dict(stages=TINY_SPLIT)
    else:
        g, topo = graph_mod.load(tiny), topology_mod.resolve('emulated-2x1')
        start = dict(source='profile', profile_path=synthetic_profile(tmp_path / 'profile.json', g, topo))
    node = start_planner(ros, model_path=tiny, topology='emulated-2x1', **start)
    listener = plan_listener(ros)
    act_as_containers(ros, {'c0': [0], 'c1': [1]})
    ros.wait(lambda: len(listener.plans) == 1, 30, 'the first plan')
    ros.wait(lambda: len(node.running_containers()) == 2, 10, 'the containers\' status')
    client, set_parameters = parameter_client(ros)
    before = {name: node.get_parameter(name).value for name in ('model_path', 'max_latency_ms', 'topology',
                                                                'stages', 'profile_path')}
    spec = node.current.plan.to_spec()

    values = {'model_ort_fails': dict(model_path=ort_failing_model(tmp_path / 'ort_fails.onnx')),
              'max_latency_ms': dict(max_latency_ms=1e-6),
              'topology': dict(topology='emulated-biglittle-1+1', stages='0-3@big,4-8@little')}[change]
    future = client.set_parameters_atomically([Parameter(k, value=v) for k, v in values.items()])
    ros.wait(future.done, 30, f'set_parameters_atomically {values}')
    result = future.result().result
    assert not result.successful
    assert reason in result.reason, result.reason
    ros.spin(0.5)
    assert {name: node.get_parameter(name).value for name in before} == before
    assert node.config.to_dict().items() >= before.items()
    assert (node.generation, node.current.plan.to_spec(), len(listener.plans)) == (1, spec, 1)

    ok = set_parameters(objective='latency')
    assert ok.successful, ok.reason
    ros.wait(lambda: len(listener.plans) == 2, 20, 'the re-plan')
    assert (listener.plans[-1].generation, listener.plans[-1].reason) == (2, 'param:objective')


def test_replans_faster_than_a_generation_starts_are_coalesced(ros, zoo_model):
    """While generation 2 has not started in the containers, later changes wait; the newest wins, the one it
    replaces is never published, and it comes out once generation 2 runs."""
    node = start_planner(ros, model_path=zoo_model('tiny'), topology='emulated-2x1', stages=TINY_SPLIT)
    listener = plan_listener(ros)
    containers = act_as_containers(ros, {'c0': [0], 'c1': [1]})
    ros.wait(lambda: len(listener.plans) == 1, 30, 'the first plan')
    ros.wait(lambda: len(node.running_containers()) == 2, 10, 'the containers\' status')
    _, set_parameters = parameter_client(ros)
    for spec in ('0-6@c0,7-8@c1', '0-0@c0,1-8@c1', '0-7@c0,8-8@c1'):
        assert set_parameters(stages=spec).successful
        ros.spin(0.3)
    assert [m.generation for m in listener.plans] == [1, 2]        # 3 waits for generation 2 to start
    containers.generation = 2
    ros.wait(lambda: len(listener.plans) == 3, 10, 'the newest plan')
    ros.spin(0.5)
    assert [(m.generation, m.plan.to_spec()) for m in listener.plans[1:]] == [
        (2, '0-6@c0[0]:1,7-8@c1[1]:1'), (3, '0-7@c0[0]:1,8-8@c1[1]:1')]
