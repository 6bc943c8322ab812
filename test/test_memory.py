"""Weights held once and a memory figure that matches the process: real onnxruntime, fresh processes, relations
between measurements (never absolute numbers)."""
import os
import re
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from pipeit_ros.cost import profiler
from pipeit_ros.engine import footprint
from pipeit_ros.engine.sessions import make_session
from pipeit_ros.errors import PlanError
from pipeit_ros.hw import memory as procmem
from pipeit_ros.hw.cpus import allowed_cpus
from pipeit_ros.hw.topology import Cluster, Topology
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.plan import parse_spec
from pipeit_ros.planning import dse, prediction

MIB = 2**20


@pytest.fixture
def alexnet(zoo_model):
    return graph_mod.load(zoo_model('alexnet'))   # per test: the private cache is set per test


def test_prepared_model_keeps_no_weights_in_python(alexnet, zoo_model):
    """The weights lie in one external-data file in the cache; the model kept in Python holds none of them,
    and a second load reads the prepared copy (same layers, same weights file)."""
    w = alexnet.weights
    assert w is not None and os.path.getsize(w.path) == w.total_bytes
    assert w.total_bytes >= 0.99 * alexnet.total_weight_bytes
    assert alexnet.model.ByteSize() < 0.01 * w.total_bytes
    again = graph_mod.load(zoo_model('alexnet'))
    assert again.weights == w and [lay.to_dict() for lay in again.layers] == [lay.to_dict() for lay in alexnet.layers]


def test_sessions_over_the_mapped_weights_compute_what_the_model_computes(alexnet, zoo_model):
    x = np.random.default_rng(0).standard_normal(alexnet.input_shape).astype(np.float32)
    shared = make_session(alexnet.extract_bytes(0, len(alexnet.layers) - 1), (allowed_cpus()[0],),
                                  weights=alexnet.weights)
    plain = ort.InferenceSession(zoo_model('alexnet'), providers=['CPUExecutionProvider'])
    np.testing.assert_allclose(shared.run(None, {alexnet.input_name: x})[0],
                               plain.run(None, {alexnet.input_name: x})[0], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_two_replicas_in_one_process_share_the_weights(alexnet):
    """AlexNet's fully connected weights are used in place: a second replica adds less than 30 % of them."""
    cpus = allowed_cpus()[:2]
    if len(cpus) < 2:
        pytest.skip('needs 2 CPUs for 2 pinned replicas')
    topo = Topology(clusters=(Cluster('c0', tuple(cpus), 'host', 1.0),), name='test-1x2')
    last = len(alexnet.layers) - 1
    one = footprint.measure(alexnet, parse_spec(f'0-{last}@c0:1', topo, len(alexnet.layers)))
    two = footprint.measure(alexnet, parse_spec(f'0-{last}@c0:1x2', topo, len(alexnet.layers)))
    assert 'error' not in one and 'error' not in two, (one, two)
    weights_mib = alexnet.weights.total_bytes / MIB
    assert one['memory_mb'] > weights_mib                    # the weights are resident: this measures them
    assert two['memory_mb'] - one['memory_mb'] < 0.3 * weights_mib, (one, two)


def test_the_memory_probe_reads_its_parents_prepared_model(alexnet, tmp_path, monkeypatch):
    """The probe maps the parent's prepared entry and prepares nothing itself, whatever cache it is given
    (a probe that prepared the model held 12 MiB more than the plan does, and the budget test failed on it)."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    last = len(alexnet.layers) - 1
    topo = Topology(clusters=(Cluster('c0', (allowed_cpus()[0],), 'host', 1.0),), name='test-1')
    measured = footprint.measure(alexnet, parse_spec(f'0-{last}@c0:1', topo, last + 1))
    assert 'error' not in measured, measured
    assert measured['memory_mb'] > alexnet.weights.total_bytes / MIB
    models = tmp_path / 'pipeit' / 'models'
    assert not models.exists() or not any(models.iterdir())


HOLD = ('import sys, numpy as np; from pipeit_ros.model import graph; from pipeit_ros.engine.sessions import '
        'make_session; g = graph.load(sys.argv[1]); s = make_session(g.extract_bytes(0, len(g.layers) - 1), (0,), '
        'pinned=False, weights=g.weights); s.run(None, {g.input_name: np.zeros(g.input_shape, np.float32)}); '
        'print("ready", flush=True); sys.stdin.read()')


@pytest.mark.slow
def test_processes_share_the_weight_pages(alexnet):
    """Two processes running AlexNet: each one's PSS counts about half of the shared weight pages."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}
    procs = [subprocess.Popen([sys.executable, '-c', HOLD, alexnet.path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == 'ready'
        use = [procmem.usage(p.pid) for p in procs]
    finally:
        for p in procs:
            p.communicate(timeout=60)
    weights = alexnet.weights.total_bytes
    for u in use:
        assert u.rss > weights                               # both hold the weights resident ...
        assert u.pss < u.rss - 0.35 * weights, use           # ... and share them


@pytest.fixture(scope='module')
def alexnet_profiled(tmp_path_factory):
    """AlexNet profiled once for this module on up to 2 one-CPU clusters: (graph, topology, cost table). Never
    from a cache: a module fixture runs before the per-test private cache is set, and a profile's memory probes
    hold only in the conditions they were measured in (a parent process that ran onnxruntime shares its code
    pages with the probe: 17 MiB less PSS; docs/memory.md)."""
    from pipeit_ros.model import zoo
    path = tmp_path_factory.mktemp('alexnet') / 'alexnet.onnx'
    zoo.save('alexnet', str(path))
    net = graph_mod.load(str(path))
    cpus = allowed_cpus()[:2]
    topo = Topology(clusters=tuple(Cluster(f'c{i}', (c,), 'host', 1.0) for i, c in enumerate(cpus)), name='test-m')
    return net, topo, profiler.profile(net, topo, reps=2, warmup=1, progress=False, log=lambda *_: None,
                                       use_cache=False)


@pytest.mark.slow
def test_predicted_memory_matches_a_fresh_process(alexnet_profiled):
    """The profile's memory model against the PSS of the plan run in a fresh process, one and two replicas."""
    alexnet, topo, cost = alexnet_profiled
    last = len(alexnet.layers) - 1
    specs = [f'0-{last}@c0:1'] + ([f'0-4@c0:1,5-{last}@c1:1'] if len(topo.clusters) > 1 else [])
    for spec in specs:
        plan = prediction.with_predictions(parse_spec(spec, topo, len(alexnet.layers)), cost, topo)
        measured = footprint.measure(alexnet, plan)
        assert 'error' not in measured, measured
        assert 0.8 < plan.notes['memory_mib'] / measured['memory_mb'] < 1.25, (spec, plan.notes, measured)


@pytest.mark.slow
def test_a_plan_within_the_smallest_budget_runs_within_it(alexnet_profiled):
    """--memory-mb at the smallest feasible figure (the one the refusal names) gives a plan whose peak, measured
    in a fresh process (PSS, weights whole, docs/memory.md), stays within it; a budget below it is refused."""
    net, topo, cost = alexnet_profiled
    assert cost.base_bytes > 0 and cost.meta['memory_probes']
    with pytest.raises(PlanError, match='the smallest needs') as refused:
        dse.solve(cost, topo, memory_mb=1)
    smallest = float(re.search(r'needs ([0-9.]+) MiB', str(refused.value)).group(1))
    budget = smallest + 0.01                      # the message rounds to 0.01 MiB
    plan = dse.solve(cost, topo, memory_mb=budget)
    assert plan.notes['memory_mib'] <= budget
    measured = footprint.measure(net, plan)
    assert 'error' not in measured, measured
    assert measured['memory_mb'] <= budget, (plan.to_spec(), plan.notes, measured)


def test_build_temporaries_are_those_measured_on_a_plan_of_the_same_shape():
    """One core group, replicas of one stage and several stages each take their own probe's build figure (and,
    for several groups, what their probe held running beyond the model); the
    search, which cannot tell replicas from stages, bounds several groups by the larger, with or without load
    factors, and the plan it returns is predicted with its own shape's."""
    from dataclasses import replace

    from pipeit_ros.cost.table import CostTable
    topo = Topology(clusters=(Cluster('c0', (0,), 'host', 1.0), Cluster('c1', (1,), 'host', 1.0)), name='test-b')
    cost = CostTable(segments=[(i, i) for i in range(4)], configs=[('c0', 1), ('c1', 1)],
                     seg_ms=np.array([[1.0, 1.0, 4.0, 4.0], [4.0, 4.0, 1.0, 1.0]]), overhead_ms=[0.0, 0.0],
                     in_bytes=[1000] * 4, weight_bytes=[MIB] * 4, act_bytes=[MIB] * 4, source='test',
                     topology_fingerprint=topo.fingerprint(), base_bytes=MIB, build_bytes=10 * MIB,
                     build_bytes_groups=3 * MIB, build_bytes_stages=7 * MIB, running_bytes_groups=2 * MIB,
                     running_bytes_stages=5 * MIB)
    without = replace(cost, build_bytes=0.0, build_bytes_groups=None, build_bytes_stages=None,
                      running_bytes_groups=0.0, running_bytes_stages=0.0)
    for spec, shape in (('0-3@c0', 10), ('0-3@c0+c1[0+1]:1x2', 3 + 2), ('0-1@c0,2-3@c1', 7 + 5)):
        plan = parse_spec(spec, topo, 4)
        assert prediction.predict_memory(plan, cost, topo) - prediction.predict_memory(plan, without, topo) == shape * MIB, spec
    assert cost.plan_shape_bytes(2, 3) == 12 * MIB
    several = cost.under_load()
    assert several is not cost and several.process_bytes == cost.base_bytes + 12 * MIB
    plan = dse.solve(cost, topo)
    assert plan.to_spec() == '0-1@c0[0]:1,2-3@c1[1]:1'
    assert plan.notes['memory_mib'] * MIB == pytest.approx(prediction.predict_memory(plan, cost, topo), abs=MIB * 1e-3)

    # data parallelism's own figure (replicas' shape: 5 MiB) is below the search's bound (12): a budget between
    # the two still gets it, and the smallest budget named is its figure, not the bound's
    dp = prediction.with_predictions(parse_spec('0-3@c0+c1[0+1]:1x2', topo, 4), cost, topo)
    one = prediction.with_predictions(parse_spec('0-3@c0', topo, 4), cost, topo)
    assert dp.notes['memory_mib'] + 7 > one.notes['memory_mib'] > dp.notes['memory_mib']
    for budget in (dp.notes['memory_mib'], one.notes['memory_mib'] + 1):
        plan = dse.solve(cost, topo, memory_mb=budget)
        assert plan.to_spec() == dp.to_spec() and plan.notes['memory_mib'] == dp.notes['memory_mib'], budget
    for objective in ('throughput', 'latency'):
        with pytest.raises(PlanError, match=f'the smallest needs {dp.notes["memory_mib"]:.2f} MiB'):
            dse.solve(cost, topo, objective=objective, memory_mb=dp.notes['memory_mib'] - 0.5)


def test_a_chain_of_stages_is_held_to_its_own_shape_under_a_budget():
    """Where replicas' shape term is the larger (12 MiB against the stages' 4), the bound would put a pipeline
    8 MiB above its figure; the search without replicas, on the stages' own term, finds it at its figure."""
    from pipeit_ros.cost.table import CostTable
    topo = Topology(clusters=(Cluster('c0', (0,), 'host', 1.0), Cluster('c1', (1,), 'host', 1.0)), name='test-b')
    cost = CostTable(segments=[(i, i) for i in range(4)], configs=[('c0', 1), ('c1', 1)],
                     seg_ms=np.array([[1.0, 1.0, 4.0, 4.0], [4.0, 4.0, 1.0, 1.0]]), overhead_ms=[0.0, 0.0],
                     in_bytes=[1000] * 4, weight_bytes=[MIB] * 4, act_bytes=[MIB] * 4, source='test',
                     topology_fingerprint=topo.fingerprint(), base_bytes=MIB, build_bytes=MIB,
                     build_bytes_groups=10 * MIB, build_bytes_stages=3 * MIB, running_bytes_groups=2 * MIB,
                     running_bytes_stages=MIB)
    pipe = prediction.with_predictions(parse_spec('0-1@c0,2-3@c1', topo, 4), cost, topo)
    dp = prediction.with_predictions(parse_spec('0-3@c0+c1[0+1]:1x2', topo, 4), cost, topo)
    assert cost.under_load().build_bytes - cost.plan_shape_bytes(2, 2) == 8 * MIB
    assert dp.notes['memory_mib'] > pipe.notes['memory_mib'] + 8
    for objective in ('throughput', 'latency'):
        for budget in (pipe.notes['memory_mib'], pipe.notes['memory_mib'] + 7):
            plan = dse.solve(cost, topo, objective=objective, memory_mb=budget)
            assert plan.to_spec() == pipe.to_spec() and plan.notes['memory_mib'] <= budget, (objective, budget)
        plan = dse.solve(cost, topo, objective=objective, memory_mb=pipe.notes['memory_mib'] - 0.01)
        assert len(plan.stages) == 1 and plan.stages[0].replicas == 1, plan.to_spec()


def big_output_model(mib):
    """A one-node model whose output (float32, ``mib`` MiB) is ``mib`` times larger than its 1 MiB input."""
    from onnx import TensorProto, helper
    n = 2**18
    repeats = helper.make_tensor('r', TensorProto.INT64, [1], [mib])
    node = helper.make_node('Tile', ['x', 'r'], ['y'])
    graph = helper.make_graph([node], 'big_output', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [n * mib])], [repeats])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]).SerializeToString()


def test_outputs_held_stay_in_the_session_arena():
    """What ``CostTable.flight_bytes`` counts: onnxruntime returns a run's outputs in the session's arena, so
    every output held at once adds its size, and the arena keeps it once they are let go (a plan's outputs in
    flight stay resident)."""
    session = make_session(big_output_model(16), (allowed_cpus()[0],))
    feeds = {'x': np.ones(2**18, np.float32)}
    session.run(None, feeds)
    start = procmem.anonymous_now()
    held = [session.run(None, feeds) for _ in range(3)]
    grown = procmem.anonymous_now() - start
    assert grown >= 2 * 16 * MIB, grown / MIB          # the first run's output went back to the arena
    del held
    assert procmem.anonymous_now() - start >= 0.9 * grown   # let go, still resident


FREE_THEN_ALLOCATE = (
    'import sys, numpy as np; from pipeit_ros.hw import memory; fix = sys.argv[1] == "fixed"; '
    'fix and memory.fix_mmap_threshold(); a = np.ones(4 << 20, np.uint8); del a; b = np.ones(1 << 20, np.uint8); '
    'p = b.ctypes.data; maps = [l.split() for l in open("/proc/self/maps")]; '
    'print(next(m[5] if len(m) > 5 else "anonymous" for m in maps if int(m[0].split("-")[0], 16) <= p '
    '< int(m[0].split("-")[1], 16)))')


def test_the_mmap_threshold_stays_fixed():
    """After a 4 MiB buffer is freed, glibc by default serves the next 1 MiB from its heap (the threshold moved
    up); with sessions' fix_mmap_threshold it still gets a mapping of its own."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}
    where = {mode: subprocess.run([sys.executable, '-c', FREE_THEN_ALLOCATE, mode], capture_output=True, text=True,
                                  env=env, check=True).stdout.strip() for mode in ('default', 'fixed')}
    assert where == {'default': '[heap]', 'fixed': 'anonymous'}, where


def slow_then_fast_model(path, mib, muls=10):
    """Tile (a ``mib`` MiB output from a 1 MiB input) and ``muls`` Muls over it, then a Slice of one element: a
    plan cut before the Slice has a second stage far faster than its first, so its queue never fills by itself."""
    from onnx import TensorProto, helper, save
    consts = [helper.make_tensor(name, TensorProto.INT64, [4], values) for name, values in
              (('r', [1, mib, 1, 1]), ('starts', [0, 0, 0, 0]), ('ends', [1, 1, 1, 1]))]
    consts.append(helper.make_tensor('one', TensorProto.FLOAT, [1], [1.0]))
    nodes = [helper.make_node('Tile', ['x', 'r'], ['t0'])]
    nodes += [helper.make_node('Mul', [f't{i}', 'one'], [f't{i + 1}']) for i in range(muls)]
    nodes.append(helper.make_node('Slice', [f't{muls}', 'starts', 'ends'], ['y']))
    graph = helper.make_graph(nodes, 'slow_then_fast',
                              [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 1, 512, 512])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 1, 1, 1])], consts)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(path))
    return graph_mod.load(str(path))


@pytest.mark.slow
def test_the_memory_probe_fills_every_queue(tmp_path):
    """The probe stalls the last stage until the queues are full, so the first stage's outputs in flight reach
    QUEUED_OUTPUTS more than one stage holds, however fast the stage after it is."""
    from pipeit_ros.cost.table import QUEUED_OUTPUTS
    from pipeit_ros.engine.parts import QUEUE_SIZE
    cpus = allowed_cpus()[:2]
    if len(cpus) < 2:
        pytest.skip('needs 2 CPUs for 2 pinned stages')
    net = slow_then_fast_model(tmp_path / 'slow_then_fast.onnx', 16)
    last = len(net.layers) - 1
    topo = Topology(clusters=tuple(Cluster(f'c{i}', (c,), 'host', 1.0) for i, c in enumerate(cpus)), name='t')
    one, two = (footprint.measure(net, parse_spec(spec, topo, last + 1))
                for spec in (f'0-{last}@c0', f'0-{last - 1}@c0,{last}-{last}@c1'))
    assert 'error' not in one and 'error' not in two, (one, two)
    assert two['queue_high_water'] == [QUEUE_SIZE] * 2, two      # alone the second queue held 1 at most
    assert two['running_mb'] - one['running_mb'] >= (QUEUED_OUTPUTS - 0.5) * 16, (one, two)


def test_outputs_in_flight_are_counted_per_stage():
    """Before another stage a stage holds QUEUED_OUTPUTS more of its output; the last stage, replicas of speed 1
    and 1/2, its reorder window (rate x slowest time = 3, + REORDER_SLACK) less one per replica = 2 more; the
    search and predict_memory agree."""
    from dataclasses import replace

    from pipeit_ros.cost.table import QUEUED_OUTPUTS, CostTable
    from pipeit_ros.engine.parts import REORDER_SLACK
    topo = Topology(clusters=(Cluster('c0', (0,), 'host', 1.0), Cluster('c1', (1,), 'host', 1.0)), name='test-f')
    cost = CostTable(segments=[(i, i) for i in range(4)], configs=[('c0', 1), ('c1', 1)],
                     seg_ms=np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]]), overhead_ms=[0.0, 0.0],
                     in_bytes=[MIB] * 4, weight_bytes=[MIB] * 4, act_bytes=[MIB] * 4, source='test',
                     topology_fingerprint=topo.fingerprint(), out_bytes=[MIB, 2 * MIB, 3 * MIB, 5 * MIB])
    none = replace(cost, out_bytes=[0] * 4)
    for spec, extra in (('0-3@c0', 0), ('0-1@c0,2-3@c1', QUEUED_OUTPUTS * 2), ('0-3@c0+c1[0+1]:1x2', 2 * 5)):
        plan = parse_spec(spec, topo, 4)
        assert prediction.predict_memory(plan, cost, topo) - prediction.predict_memory(plan, none, topo) == extra * MIB, spec
    # the engine's reorder window for those replicas: 3 frames in flight + the slack, 2 outputs beyond one each
    dp = prediction.with_predictions(parse_spec('0-3@c0+c1[0+1]:1x2', topo, 4), cost, topo)
    assert dp.stages[-1].window == 3 + REORDER_SLACK == 2 + 2
    plan = dse.solve(cost, topo)
    assert plan.notes['memory_mib'] * MIB == pytest.approx(prediction.predict_memory(plan, cost, topo), abs=MIB * 1e-3)


def test_a_replicated_stage_before_the_last_counts_the_outputs_that_overtake_its_slowest_replica():
    """Frames that pass a stage's slow replica reach the output thread before the frame they overtook, which holds
    the model's outputs until it comes: replicas of speed 1 and 1/2 have 3 frames in flight, so 2 outputs of the
    model beyond one per replica, as a replicated last stage's window counts; plus the queue's worth of the
    stage's own outputs. The search and predict_memory agree."""
    from dataclasses import replace

    from pipeit_ros.cost.table import QUEUED_OUTPUTS, CostTable
    topo = Topology(clusters=tuple(Cluster(f'c{i}', (i,), 'host', 1.0) for i in range(3)), name='test-r')
    cost = CostTable(segments=[(i, i) for i in range(4)], configs=[('c0', 1), ('c1', 1), ('c2', 1)],
                     seg_ms=np.array([[1.0] * 4, [2.0] * 4, [0.5] * 4]), overhead_ms=[0.0] * 3,
                     in_bytes=[MIB] * 4, weight_bytes=[MIB] * 4, act_bytes=[MIB] * 4, source='test',
                     topology_fingerprint=topo.fingerprint(), out_bytes=[MIB, 2 * MIB, 3 * MIB, 5 * MIB])
    none = replace(cost, out_bytes=[0] * 4)
    plan = parse_spec('0-1@c0+c1[0+1]:1x2,2-3@c2', topo, 4)
    extra = prediction.predict_memory(plan, cost, topo) - prediction.predict_memory(plan, none, topo)
    assert extra == (QUEUED_OUTPUTS * 2 + 2 * 5) * MIB, extra / MIB
    best = dse.solve(cost, topo, memory_mb=10_000)
    assert best.notes['memory_mib'] * MIB == pytest.approx(prediction.predict_memory(best, cost, topo), abs=MIB * 1e-3)


def chain_model(mib):
    """Tile to ``mib`` MiB, then elementwise nodes over it, summed to one number: its arena holds a few
    ``mib``-MiB tensors while it runs."""
    from onnx import TensorProto, helper
    n = 2**18
    repeats = helper.make_tensor('r', TensorProto.INT64, [1], [mib])
    nodes = [helper.make_node('Tile', ['x', 'r'], ['t']), helper.make_node('Relu', ['t'], ['a']),
             helper.make_node('Sigmoid', ['a'], ['b']), helper.make_node('Add', ['a', 'b'], ['c']),
             helper.make_node('ReduceSum', ['c'], ['y'], keepdims=1)]
    graph = helper.make_graph(nodes, 'chain', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])], [repeats])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]).SerializeToString()


def test_a_session_holds_after_many_runs_what_it_held_after_the_first():
    """The profiler measures a session's arena on its first run (cost.profiler); the engine's sessions keep it
    there. onnxruntime's memory pattern (off in engine.sessions) would allocate a block of its own from the
    second run on, beside the first run's arena: this model's 16 MiB tensors grew it by 50 MiB."""
    session = make_session(chain_model(16), (allowed_cpus()[0],), pinned=False)
    x = {'x': np.ones(2**18, np.float32)}
    session.run(None, x)
    procmem.trim()
    first = procmem.anonymous_now()
    for _ in range(5):
        session.run(None, x)
    procmem.trim()
    assert procmem.anonymous_now() - first < 4 * MIB


def test_a_session_ending_with_the_last_segment_counts_the_tail_arena():
    """A stage of several segments that ends with the model's last holds the last segment's arena plus
    ``tail_arena_bytes`` (LR-ASPP: its final resize); a stage of the last segment alone, or one that ends
    before it, does not. The search charges what predict_memory does, under every budget."""
    from dataclasses import replace

    from pipeit_ros.cost.table import CostTable
    topo = Topology(clusters=(Cluster('c0', (0,), 'host', 1.0), Cluster('c1', (1,), 'host', 1.0)), name='test-t')
    cost = CostTable(segments=[(i, i) for i in range(4)], configs=[('c0', 1), ('c1', 1)],
                     seg_ms=np.array([[1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 1.0, 1.0]]), overhead_ms=[0.0, 0.0],
                     in_bytes=[MIB] * 4, weight_bytes=[MIB] * 4, act_bytes=[MIB] * 4, out_bytes=[0] * 4,
                     source='test', topology_fingerprint=topo.fingerprint(), tail_arena_bytes=[3 * MIB, 5 * MIB])
    none = replace(cost, tail_arena_bytes=None)
    for spec, extra in (('0-3@c0', 3), ('0-3@c1', 5), ('0-1@c0,2-3@c1', 5), ('0-2@c1,3-3@c0', 0),
                        ('0-3@c0+c1[0+1]:1x2', 3 + 5)):
        plan = parse_spec(spec, topo, 4)
        assert prediction.predict_memory(plan, cost, topo) - prediction.predict_memory(plan, none, topo) == extra * MIB, spec
    for budget in (None, 8.0, 9.0, 10.0, 12.0, 20.0):
        try:
            plan = dse.solve(cost, topo, memory_mb=budget)
        except PlanError:
            continue
        assert plan.notes['memory_mib'] * MIB == pytest.approx(prediction.predict_memory(plan, cost, topo), abs=MIB * 1e-3)
        assert budget is None or plan.notes['memory_mib'] <= budget


def test_the_memory_probes_run_under_the_topologys_emulation(zoo_model, monkeypatch):
    """Replicas of unequal speed hold outputs back to put them in order, and what that costs in their arenas
    shows only at their clusters' speeds (LR-ASPP's data parallelism: 221-236 MiB probed without the emulation,
    257-268 with it, docs/memory.md): each probe runs while the co-runners emulate the slow cluster."""
    from pipeit_ros.hw import emulation
    from pipeit_ros.hw.topology import resolve
    if len(allowed_cpus()) < 2 or not {0, 1} <= set(allowed_cpus()):
        pytest.skip('emulated-biglittle-1+1 needs CPUs 0 and 1')
    seen, real = [], footprint.measure

    def measure(graph, plan, *args, **kwargs):
        seen.append((plan.to_spec(), len(emulation.find_corunners())))
        return real(graph, plan, *args, **kwargs)

    monkeypatch.setattr(footprint, 'measure', measure)
    net = graph_mod.load(zoo_model('tiny'))
    cost = profiler.profile(net, resolve('emulated-biglittle-1+1'), reps=1, warmup=1, progress=False,
                            log=lambda *_: None, use_cache=False)
    assert len(seen) == len(cost.meta['memory_probes']) == 3, seen
    assert all(corunners > 0 for _, corunners in seen), seen
