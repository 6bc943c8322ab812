"""Containers on a real ROS 2 graph (rclpy + Fast DDS): frames in -> results out, across processes, re-plans.

Each test process uses its own ROS domain (from its pid) so teammates' test runs do not cross-talk.
"""
import os
import signal
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from pipeit_ros.app.preprocess import PreprocessConfig, Preprocessor
from pipeit_ros.app.wire import diagnostics as keys
from pipeit_ros.app.wire.plan_msg import encode_plan_message
from pipeit_ros.engine.pipeline import Pipeline
from pipeit_ros.hw.cpus import parse_cpu_list
from pipeit_ros.hw.topology import resolve
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.plan import Plan, Stage, parse_spec
from pipeit_ros.testing import harness

pytestmark = [pytest.mark.ros, pytest.mark.slow,
              pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='needs CPUs 0 and 1')]

TOPOLOGY = 'emulated-2x1'
BLOCK = {'topology': TOPOLOGY, 'policy': 'block', 'image_qos': 'reliable'}
W, H = 640, 480


@pytest.fixture(scope='module')
def tiny(zoo_model):
    return graph_mod.load(zoo_model('tiny'))


@pytest.fixture(scope='module')
def topo():
    return resolve(TOPOLOGY)


def unpinned_plan(spec, topo):
    """A plan whose stages may share CPUs (pinned=False): two stages of one 1-CPU cluster, on this machine."""
    stages = []
    for part in spec.split(','):
        layers, cluster = part.split('@')
        first, last = map(int, layers.split('-'))
        stages.append(Stage(first, last, cluster, topo.cluster(cluster).cpus, pinned=False))
    return Plan(stages=tuple(stages), topology_fingerprint=topo.fingerprint())


def plan_text(g, topo, spec, generation):
    if spec.startswith('unpinned:'):
        plan = unpinned_plan(spec[len('unpinned:'):], topo)
    else:
        plan = parse_spec(spec, topo, n_layers=len(g.layers))
    return plan, encode_plan_message(plan, generation=generation, reason='start', model_path=g.path,
                                     model_hash=g.model_hash, topology=topo, input_shape=g.input_shape)


def engine_outputs(g, plan, frames):
    """What the engine alone makes of the frames: the container's output must equal it."""
    pre = Preprocessor(PreprocessConfig(input_shape=g.input_shape))
    with Pipeline(g, plan) as p:
        return [r.outputs[0] for r in p.run([pre('rgb8', H, W, W * 3, f.tobytes()) for f in frames])]


def stamp_ns(i):
    return 1_700_000_000_000_000_000 + i * 33_000_000


def send_frames(src, frames, start=0, period=0.005, on_frame=None):
    for i, f in enumerate(frames, start):
        if on_frame is not None:
            on_frame(i)
        src.send(harness.image_msg(f, 'rgb8', stamp_ns(i)))
        time.sleep(period)


def received_stamps(col):
    return [c['header']['stamp']['sec'] * 1_000_000_000 + c['header']['stamp']['nanosec']
            for c in col.classifications]


def test_single_container_results_in_order_with_source_stamps(tiny, topo):
    n = 24
    frames = [harness.synthetic_frame(i, W, H) for i in range(n)]
    plan, text = plan_text(tiny, topo, '0-3@c0,4-8@c1', 1)
    expected = engine_outputs(tiny, plan, frames)
    with harness.RosGraph() as rg:
        col, src, planner = rg.collector(), rg.source(), rg.planner()
        planner.publish(text)
        rg.container({'cluster': '*', **BLOCK})
        assert harness.wait(lambda: col.running(1), 20), 'container never reported running'
        assert src.wait_for_subscriber(10)
        send_frames(src, frames)
        assert col.wait_for(n, 30), f'{len(col.classifications)} of {n} results'
        assert received_stamps(col) == [stamp_ns(i) for i in range(n)]
        assert [c['seq'] for c in col.classifications] == list(range(n))
        assert {c['header']['frame_id'] for c in col.classifications} == {'camera'}
        for got, want, c in zip(col.outputs, expected, col.classifications):
            np.testing.assert_array_equal(got, want)       # zero-copy hand-over: bit for bit
            assert c['top_k'][0]['class_id'] == int(np.argmax(want))
        assert harness.wait(lambda: {'pipeit/stage_0', 'pipeit/stage_1'} <= set(col.diagnostics), 5)
        d0, d1 = col.diagnostics['pipeit/stage_0'], col.diagnostics['pipeit/stage_1']
        for key in ('generation', 'fps', 'busy_pct', 'queue_depth', 'predicted_ms', 'measured_ms', 'drops_queue'):
            assert key in d0, key
        assert float(d1['latency_p50_ms']) <= float(d1['latency_p99_ms'])
        for d in (d0, d1):      # the container process's memory: PSS never above RSS, both above nothing
            assert int(d[keys.PROCESS_PID]) > 0 and 0 < float(d[keys.PROCESS_PSS_MB]) <= float(d[keys.PROCESS_RSS_MB])
        assert harness.wait(lambda: col.diagnostics['pipeit/stage_1'].get('published_output') == str(n), 5)
        assert col.diagnostics['pipeit/stage_1']['published_classification'] == str(n)


def test_a_result_topic_nobody_reads_gets_no_messages(tiny, topo):
    n = 6
    _, text = plan_text(tiny, topo, '0-8@c0', 1)
    with harness.RosGraph() as rg:
        col, src, planner = rg.collector(outputs=False), rg.source(), rg.planner()
        planner.publish(text)
        rg.container({'cluster': '*', **BLOCK})
        assert harness.wait(lambda: col.running(1), 20), 'container never reported running'
        assert src.wait_for_subscriber(10)
        send_frames(src, [harness.synthetic_frame(i, W, H) for i in range(n)])
        assert col.wait_for(n, 30), f'{len(col.classifications)} of {n} results'
        assert received_stamps(col) == [stamp_ns(i) for i in range(n)]
        assert harness.wait(lambda: col.diagnostics.get('pipeit/stage_0', {}).get('published_classification')
                            == str(n), 5), col.diagnostics
        assert col.diagnostics['pipeit/stage_0']['published_output'] == '0'      # nobody subscribed to it


def thread_cpus(pid):
    out = set()
    for tid in os.listdir(f'/proc/{pid}/task'):
        with open(f'/proc/{pid}/task/{tid}/status') as f:
            for line in f:
                if line.startswith('Cpus_allowed_list:'):
                    out |= set(parse_cpu_list(line.split(":", 1)[1]))
    return out


@pytest.mark.parametrize('spec', ['0-3@c0,4-8@c1', '0-1@c0,2-8@c1'], ids=['one-tensor', 'two-tensors'])
def test_two_container_processes_match_engine_output(tiny, topo, spec):
    """The cut before layer 2 is inside the residual block: its message carries both tensors that cross."""
    n = 16
    frames = [harness.synthetic_frame(i, W, H, seed=1) for i in range(n)]
    plan, text = plan_text(tiny, topo, spec, 1)
    assert len(tiny.boundary(plan.stages[1].first)) == (2 if spec.startswith('0-1') else 1)
    expected = engine_outputs(tiny, plan, frames)
    domain = harness.domain_id_for_process(base=50)
    procs = [harness.spawn_container(c, BLOCK, domain) for c in ('c0', 'c1')]
    try:
        with harness.RosGraph(domain_id=domain) as rg:
            col, src, planner = rg.collector(), rg.source(), rg.planner()
            planner.publish(text)
            if not harness.wait(lambda: col.running(1), 40):
                for p in procs:
                    p.kill()
                pytest.fail('containers never reported running:\n' + '\n'.join(
                    p.communicate()[0][-3000:] for p in procs) + f'\nstatuses: {col.statuses[-6:]}')
            assert src.wait_for_subscriber(10)
            send_frames(src, frames, period=0.01)
            assert col.wait_for(n, 30), f'{len(col.classifications)} of {n} results'
            assert received_stamps(col) == [stamp_ns(i) for i in range(n)]
            for got, want in zip(col.outputs, expected):
                np.testing.assert_array_equal(got, want)   # the cross-process hop carries the tensor exactly
            assert thread_cpus(procs[0].pid) == {0} and thread_cpus(procs[1].pid) == {1}
            stages = {s['container']: s['stages'] for s in col.statuses if s['generation'] == 1}
            assert stages == {'pipeit_container_c0': [0], 'pipeit_container_c1': [1]}
        procs[0].send_signal(signal.SIGINT)
        procs[1].send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=15) for p in procs]
        assert codes == [0, 0], [p.stdout.read()[-2000:] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


REPLANS = [
    ({'c0': BLOCK, 'c1': BLOCK}, '0-3@c0,4-8@c1', '0-6@c0,7-8@c1'),
    ({'c0': BLOCK, 'c1': BLOCK}, '0-3@c0,4-8@c1', '0-6@c1,7-8@c0'),
    ({'c0': BLOCK, 'c1': BLOCK}, '0-3@c0,4-8@c1', '0-8@c1'),
    ({'*': BLOCK}, '0-3@c0,4-8@c1', '0-6@c0,7-8@c1'),
    ({'c0': BLOCK, 'c1': BLOCK}, 'unpinned:0-0@c0,1-3@c1,4-8@c0', '0-3@c1,4-8@c0'),
]


@pytest.mark.parametrize('containers,first,second', REPLANS,
                         ids=['head-stays', 'head-moves', 'to-one-cluster', 'single-container',
                              'cluster-hosts-two-runs'])
def test_replan_mid_stream_keeps_order_and_loses_nothing(tiny, topo, containers, first, second):
    n, switch = 60, 25
    frames = [harness.synthetic_frame(i, W, H, seed=2) for i in range(n)]
    plan1, text1 = plan_text(tiny, topo, first, 1)
    _, text2 = plan_text(tiny, topo, second, 2)
    expected = engine_outputs(tiny, plan1, frames)
    with harness.RosGraph() as rg:
        col, src, planner = rg.collector(), rg.source(), rg.planner()
        planner.publish(text1)
        for cluster, params in containers.items():
            rg.container({'cluster': cluster, **params})
        assert harness.wait(lambda: col.running(1), 20), 'never running'
        assert src.wait_for_subscriber(10)
        send_frames(src, frames, period=0.01, on_frame=lambda i: i == switch and planner.publish(text2))
        assert col.wait_for(n, 40), f'{len(col.classifications)} of {n} results'
        assert received_stamps(col) == [stamp_ns(i) for i in range(n)]
        gens = [c['generation'] for c in col.classifications]
        assert gens == sorted(gens) and gens[0] == 1 and gens[-1] == 2
        for got, want in zip(col.outputs, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)   # another split, same network


def test_bad_frames_are_counted_and_survived(tiny, topo):
    plan, text = plan_text(tiny, topo, '0-8@c0', 1)
    good = [harness.synthetic_frame(i, W, H, seed=3) for i in range(4)]
    expected = engine_outputs(tiny, plan, good)
    bad_size = harness.image_msg(good[0], 'rgb8', 0)
    bad_size.height = H - 1                                   # step x height no longer matches the data
    empty = harness.image_msg(np.zeros((0, 0, 3), np.uint8), 'rgb8', 0)
    bad = [harness.image_msg(good[0][:, :, 0].copy(), 'yuv422', 0), bad_size, empty,
           harness.image_msg(good[0][:, :, 0].copy(), '16UC1', 0)]
    with harness.RosGraph() as rg:
        col, src, planner = rg.collector(), rg.source(), rg.planner()
        planner.publish(text)
        c = rg.container({'cluster': '*', **BLOCK})
        assert harness.wait(lambda: col.running(1), 20)
        assert src.wait_for_subscriber(10)
        for i, frame in enumerate(good):
            src.send(harness.image_msg(frame, 'rgb8', stamp_ns(i)))
            src.send(bad[i])
            time.sleep(0.01)
        assert col.wait_for(4, 20)
        time.sleep(0.3)
        assert received_stamps(col) == [stamp_ns(i) for i in range(4)]
        for got, want in zip(col.outputs, expected):
            np.testing.assert_array_equal(got, want)
        drops = {'encoding': '2', 'size': '1', 'empty': '1'}
        assert harness.wait(lambda: all(col.diagnostics.get('pipeit/stage_0', {}).get(f'drops_{k}') == v
                                        for k, v in drops.items()), 5), col.diagnostics
        assert c.node.state == 'running'


def test_input_faster_than_pipeline_keeps_latest_and_counts_every_drop(zoo_model, topo):
    """A burst into a slow net with the default policy (drop_oldest): the newest frame always gets through,
    and every frame is either a result or a counted drop."""
    g = graph_mod.load(zoo_model('squeezenet1_1'))
    _, text = plan_text(g, topo, f'0-{len(g.layers) - 1}@c0', 1)
    n = 30
    frames = [harness.synthetic_frame(i, W, H, seed=4) for i in range(3)]
    with harness.RosGraph() as rg:
        col, src, planner = rg.collector(), rg.source(), rg.planner()
        planner.publish(text)
        rg.container({'cluster': '*', 'topology': TOPOLOGY, 'image_qos': 'reliable', 'queue_size': 1})
        assert harness.wait(lambda: col.running(1), 20)
        assert src.wait_for_subscriber(10)
        for i in range(n):
            src.send(harness.image_msg(frames[i % 3], 'rgb8', stamp_ns(i)))
            time.sleep(0.002)

        def dropped():
            d = col.diagnostics.get('pipeit/stage_0', {})
            return sum(int(v) for k, v in d.items() if k.startswith('drops_'))
        assert harness.wait(lambda: len(col.classifications) + dropped() == n, 15), \
            (len(col.classifications), col.diagnostics.get('pipeit/stage_0'))
        stamps = received_stamps(col)
        assert stamps == sorted(stamps) and stamps[-1] == stamp_ns(n - 1)
        assert dropped() > 0 and len(stamps) < n


@pytest.mark.parametrize('cluster,params,message', [
    ('gpu', {'topology': TOPOLOGY}, "cluster 'gpu' is not in topology"),
    ('c0', {'topology': TOPOLOGY, 'policy': 'newest'}, "policy 'newest' is not one of"),
], ids=['unknown-cluster', 'bad-policy'])
def test_container_process_refuses_bad_parameters_with_exit_2(cluster, params, message):
    proc = harness.spawn_container(cluster, params, harness.domain_id_for_process(base=70))
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2 and f'pipeit_container: error: {message}' in out, out


def test_replans_back_and_forth_reuse_no_stale_tensor_topic(tiny, topo):
    """Generations 1 and 3 (2 and 4) cut at the same layer: a tensor publisher of generation 3 must not take
    generation 1's subscription, gone in the other process but perhaps not yet in this one's discovery, for the
    new one (frames published to it would be lost under ``block``)."""
    n, switches, most = 80, {15: 2, 35: 3, 55: 4}, 400
    specs = {1: '0-3@c0,4-8@c1', 2: '0-6@c0,7-8@c1', 3: '0-3@c0,4-8@c1', 4: '0-6@c0,7-8@c1'}
    frames = [harness.synthetic_frame(i, W, H, seed=4) for i in range(most)]
    texts = {gen: plan_text(tiny, topo, spec, gen) for gen, spec in specs.items()}
    expected = engine_outputs(tiny, texts[1][0], frames)
    with harness.RosGraph() as rg:
        col, src, planner = rg.collector(), rg.source(), rg.planner()
        planner.publish(texts[1][1])
        for cluster in ('c0', 'c1'):
            rg.container({'cluster': cluster, **BLOCK})
        assert harness.wait(lambda: col.running(1), 20), 'never running'
        assert src.wait_for_subscriber(10)
        send_frames(src, frames[:n], period=0.01,
                    on_frame=lambda i: i in switches and planner.publish(texts[switches[i]][1]))
        while n < most and not any(c['generation'] == 4 for c in list(col.classifications)):
            send_frames(src, frames[n:n + 1], start=n, period=0.02)   # until generation 4 has taken over
            n += 1
        assert col.wait_for(n, 50), f'{len(col.classifications)} of {n} results'
        assert received_stamps(col) == [stamp_ns(i) for i in range(n)]
        gens = [c['generation'] for c in col.classifications]
        assert gens == sorted(gens) and gens[0] == 1 and gens[-1] == 4
        for got, want in zip(col.outputs, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


LEDGER_SPECS = ('0-3@c0,4-8@c1', '0-6@c1,7-8@c0')      # the head moves to the other container at every re-plan


def graph_ledger(containers):
    """The containers' ledgers summed: in, out, sent, received, dropped (by reason)."""
    total = {'in': 0, 'out': 0, 'sent': 0, 'received': 0, 'dropped': {}}
    for c in containers:
        snap = c.node.ledger_snapshot()
        for key in ('in', 'out', 'sent', 'received'):
            total[key] += snap[key]
        for reason, n in snap['dropped'].items():
            total['dropped'][reason] = total['dropped'].get(reason, 0) + n
    return total


def settled(ledger, n):
    """Every camera frame entered and left once (a tensor DDS lost between containers is booked as a 'dds' drop
    at its generation's end marker, so none is still on its way)."""
    return ledger['in'] == n == ledger['out'] + sum(ledger['dropped'].values()) and \
        ledger['sent'] == ledger['received']


@pytest.mark.parametrize('policy', ['block', 'drop_oldest'])
@pytest.mark.parametrize('interval_s', [0.05, 0.2, 0.5], ids=lambda s: f'replan-every-{s:g}s')
def test_frame_ledger_balances_across_replans(tiny, topo, policy, interval_s):
    """A camera stream with the frame counter in its stamps; re-plans through the planner's parameter service
    every ``interval_s`` move the head between the containers. Every camera frame enters, and leaves once:
    in == 150 == out + dropped; under block nothing is dropped, every frame comes out in camera order and seq is
    that order, never restarting. Under load this found frames left to a head whose generation was superseded
    before it started (issue 14)."""
    from planner_helpers import domain_id
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    from pipeit_ros.ros.planner_node import PlannerNode
    n, period = 150, 0.02
    params = {'topology': TOPOLOGY, 'policy': policy, 'image_qos': 'reliable'}
    frames = [harness.synthetic_frame(i, W, H, seed=5) for i in range(8)]
    with harness.RosGraph(domain_id()) as rg:          # a domain of its own: no peer of an earlier test is heard
        col, src = rg.collector(outputs=False), rg.source()
        planner = PlannerNode(context=rg.context, parameter_overrides=[
            Parameter('model_path', value=tiny.path), Parameter('topology', value=TOPOLOGY),
            Parameter('stages', value=LEDGER_SPECS[0])])
        rg._spin(planner)
        try:
            planner.start()
            containers = [rg.container({'cluster': c, **params}) for c in ('c0', 'c1')]
            assert harness.wait(lambda: col.running(1), 30), 'never running'
            assert src.wait_for_subscriber(10)
            client_node = rg._spin(Node('ledger_param_client', context=rg.context))
            client = AsyncParameterClient(client_node, 'pipeit_planner')
            assert client.wait_for_services(10)
            replans, next_replan = 0, time.monotonic() + interval_s
            for i in range(n):
                if time.monotonic() >= next_replan:
                    replans += 1
                    client.set_parameters([Parameter('stages', value=LEDGER_SPECS[replans % 2])])
                    next_replan += interval_s
                src.send(harness.image_msg(frames[i % len(frames)], 'rgb8', stamp_ns(i)))
                time.sleep(period)
            done = harness.wait(lambda: settled(graph_ledger(containers), n) and planner.idle(), 60)
            ledger = graph_ledger(containers)
            if policy == 'block':
                col.wait_for(ledger['out'], 30)
            missing = sorted(set(range(n)) - {(s - stamp_ns(0)) // 33_000_000 for s in received_stamps(col)})
            print(f'LEDGER policy={policy} every={interval_s:g} in={ledger["in"]} out={ledger["out"]} '
                  f'dropped={sum(ledger["dropped"].values())} sent={ledger["sent"]} received={ledger["received"]} '
                  f'replans={replans} generations={planner.generation} reasons={ledger["dropped"]} '
                  f'missing={missing if policy == "block" else "-"} camera: '
                  + '; '.join(f'{c.node.name} {c.node.ledger_snapshot()["camera_received"]} received, '
                              f'{c.node.ledger_snapshot()["camera_dropped"]}' for c in containers))
            assert done, f'the ledger does not balance: {ledger}'
            assert ledger['in'] == n, f'{n - ledger["in"]} camera frames never entered: {ledger}'
            if policy == 'block':        # nothing dropped; every frame comes out once, in camera order
                assert ledger['dropped'] == {} and ledger['sent'] == ledger['received'] and ledger['out'] == n
                assert col.wait_for(n, 30), f'{len(col.classifications)} of {n} results'
                assert received_stamps(col) == [stamp_ns(i) for i in range(n)]
            else:       # every loss counted with its reason (a tensor DDS lost between containers as 'dds')
                assert ledger['in'] == ledger['out'] + sum(ledger['dropped'].values()), ledger
                assert ledger['sent'] == ledger['received'], ledger
            seqs = [c['seq'] for c in col.classifications]
            assert seqs == sorted(set(seqs)), 'seq must follow camera order and never restart'
            # the planner's /diagnostics: each running container's process (in this test, this process) named,
            # with its RSS and PSS next to its stall verdict (docs/memory.md)
            names = [f'pipeit/{c.node.name}' for c in containers]
            assert harness.wait(lambda: all(keys.PROCESS_PSS_MB in col.diagnostics.get(n, {}) for n in names), 5), \
                sorted(col.diagnostics)
            for name in names:
                d = col.diagnostics[name]
                assert 'stalled' in d and int(d[keys.PROCESS_PID]) == os.getpid(), (name, d)
                assert 0 < float(d[keys.PROCESS_PSS_MB]) <= float(d[keys.PROCESS_RSS_MB]), (name, d)
        finally:
            planner.stop()
