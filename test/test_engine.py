"""The pipelined engine on the tiny zoo net: order, zero-copy hand-over, pinning, drops, failures, shutdown."""
import os
import queue
import sys
import threading
import time

import numpy as np
import pytest

from pipeit_ros.engine.parts import REORDER_SLACK
from pipeit_ros.engine.pipeline import Pipeline
from pipeit_ros.engine.sessions import make_session
from pipeit_ros.errors import PipeitError, PlanError, StageError
from pipeit_ros.hw.cpus import allowed_cpus, task_cpus_allowed
from pipeit_ros.plan import Plan, Stage

CPUS = allowed_cpus()
two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason='needs 2 CPUs this process may use')
A, B = (CPUS + CPUS)[:2]


@pytest.fixture(scope='module')
def tiny(zoo_model):
    from pipeit_ros.model import graph
    return graph.load(zoo_model('tiny'))


@pytest.fixture(scope='module')
def full(tiny):
    """The whole model in one plain 1-thread session: the reference for every pipelined result."""
    session = make_session(tiny.extract_bytes(0, len(tiny.layers) - 1), CPUS[:1], weights=tiny.weights)
    return lambda x: session.run(None, {tiny.input_name: x})


def frames(graph, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(graph.input_shape).astype(np.float32) for _ in range(n)]


def cut_plan(graph, cuts, cpus=None, replicas=None):
    """Stages split at ``cuts`` (legal cut points), stage i on one CPU (or ``replicas[i]`` 1-CPU replicas)."""
    bounds = [0, *cuts, len(graph.layers)]
    stages, used = [], 0
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        r = replicas[i] if replicas else 1
        mine = tuple(cpus[used:used + r]) if cpus else tuple(CPUS[:1]) * r
        used += r
        stages.append(Stage(a, b - 1, 'any', mine, threads=1, replicas=r))
    return Plan(stages=tuple(stages))


PLANS = {  # id -> (cuts, replicas per stage)
    'one-stage': ((), None),
    'two-stages': ((4,), None),
    'four-stages': ((1, 4, 7), None),
    'one-stage-2-replicas': ((), (2,)),
}


@pytest.mark.parametrize('plan_id', list(PLANS), ids=list(PLANS))
def test_pipelined_outputs_equal_the_full_model_in_input_order(tiny, full, plan_id):
    cuts, reps = PLANS[plan_id]
    need = sum(reps) if reps else 1
    if reps and len(CPUS) < need:
        pytest.skip(f'needs {need} CPUs')
    cpus = list(CPUS[:need]) if reps else None
    # one CPU shared by every stage is not a legal plan: give each stage its own (or the same one, unpinned)
    plan = cut_plan(tiny, cuts, cpus=cpus, replicas=reps)
    if not reps and len(cuts) >= 1:
        plan = Plan(stages=tuple(Stage(s.first, s.last, 'any', s.cpus, pinned=False) for s in plan.stages))
    xs = frames(tiny, 24, seed=1)
    with Pipeline(tiny, plan) as pipe:
        results = pipe.run(xs)
    assert [r.seq for r in results] == list(range(len(xs)))
    for x, r in zip(xs, results):
        np.testing.assert_allclose(r.outputs[0], full(x)[0], rtol=1e-5, atol=1e-6)
        assert r.t_submit <= r.t_start <= r.t_done


@two_cpus
def test_replicas_overtake_each_other_but_outputs_come_in_order(tiny, full):
    """Replica 1 is slowed at random (seeded) so frames finish out of order; the engine reorders them."""
    rng = np.random.default_rng(3)
    delays = rng.uniform(0, 0.004, size=64)
    finished = []

    def tap(stage, replica, seq, inputs, outputs):
        if replica == 1:
            time.sleep(delays[seq])
        finished.append(seq)

    plan = Plan(stages=(Stage(0, len(tiny.layers) - 1, 'any', (A, B), threads=1, replicas=2),))
    xs = frames(tiny, 64, seed=2)
    got = []
    with Pipeline(tiny, plan, tap=tap, on_output=got.append) as pipe:
        for x in xs:
            pipe.submit(x)
        assert pipe.drain(timeout=30)
    assert finished != sorted(finished), 'the replicas never overtook each other: the test proves nothing'
    assert [r.seq for r in got] == list(range(len(xs)))
    for x, r in zip(xs, got):
        np.testing.assert_allclose(r.outputs[0], full(x)[0], rtol=1e-5, atol=1e-6)
    stats = pipe.stats()[0]
    assert stats.frames == len(xs) and stats.replicas == 2


@two_cpus
@pytest.mark.parametrize('window', [None, 3], ids=['measured', 'from-plan'])
def test_a_stalled_replica_holds_the_other_back_within_the_reorder_window(tiny, window):
    """Replica 1 stalls once for 0.3 s on a frame: the other, 2 ms a frame, would otherwise run every frame after
    it, each output waiting resident to be put back in order. The ReorderWindow lets it start only ~2 (its
    frames in flight) + REORDER_SLACK frames past the oldest undelivered one (the plan's ``window`` where it
    has one), and the order is kept."""
    ahead, got, stalled = [], [], threading.Event()

    def tap(stage, replica, seq, inputs, outputs):
        ahead.append(seq - len(got))          # frames past the oldest one not yet delivered
        if replica == 1 and seq >= 12 and not stalled.is_set():
            stalled.set()
            time.sleep(0.3)
        else:
            time.sleep(0.002)

    plan = Plan(stages=(Stage(0, len(tiny.layers) - 1, 'any', (A, B), threads=1, replicas=2, window=window),))
    n = 80
    with Pipeline(tiny, plan, tap=tap, on_output=got.append) as pipe:
        for x in frames(tiny, n, seed=4):
            pipe.submit(x)
        assert pipe.drain(timeout=30)
    assert stalled.is_set()
    assert [r.seq for r in got] == list(range(n))
    # equal replicas: 2 frames in flight (3 where their times differ a little), + the slack; or the plan's
    assert max(ahead) <= (3 + REORDER_SLACK if window is None else window - 1), max(ahead)


def test_hand_over_passes_the_same_array_objects(tiny):
    seen = {}

    def tap(stage, replica, seq, inputs, outputs):
        seen[stage, seq] = (inputs, outputs)

    plan = Plan(stages=(Stage(0, 3, 'any', CPUS[:1], pinned=False), Stage(4, 6, 'any', CPUS[:1], pinned=False),
                        Stage(7, len(tiny.layers) - 1, 'any', CPUS[:1], pinned=False)))
    xs = frames(tiny, 5)
    with Pipeline(tiny, plan, tap=tap) as pipe:
        results = pipe.run(xs)
    for x, r in zip(xs, results):
        assert seen[0, r.seq][0][0] is x
        assert seen[1, r.seq][0][0] is seen[0, r.seq][1][0]
        assert seen[2, r.seq][0][0] is seen[1, r.seq][1][0]
        assert r.outputs[0] is seen[2, r.seq][1][0]


def test_every_tensor_of_a_multi_tensor_cut_is_handed_over_without_a_copy(tiny, full):
    """Cuts inside the residual (2 tensors) and the concat block (2 tensors): each array stage k+1 is fed is the
    very object stage k's session returned."""
    assert [len(tiny.boundary(i)) for i in (2, 6)] == [2, 2]
    seen = {}

    def tap(stage, replica, seq, inputs, outputs):
        seen[stage, seq] = (list(inputs), list(outputs))

    plan = Plan(stages=(Stage(0, 1, 'any', CPUS[:1], pinned=False), Stage(2, 5, 'any', CPUS[:1], pinned=False),
                        Stage(6, len(tiny.layers) - 1, 'any', CPUS[:1], pinned=False)))
    xs = frames(tiny, 5)
    with Pipeline(tiny, plan, tap=tap) as pipe:
        results = pipe.run(xs)
    for x, r in zip(xs, results):
        for k in (1, 2):
            got, made = seen[k, r.seq][0], seen[k - 1, r.seq][1]
            assert len(got) == len(made) == 2 and all(a is b for a, b in zip(got, made))
        np.testing.assert_allclose(r.outputs[0], full(x)[0], rtol=1e-5, atol=1e-6)


@two_cpus
@pytest.mark.parametrize('layout', ['one-stage-2-threads', 'two-stages-1-thread'])
def test_workers_and_pool_threads_are_pinned(tiny, layout):
    last = len(tiny.layers) - 1
    if layout == 'one-stage-2-threads':
        plan = Plan(stages=(Stage(0, last, 'any', (A, B), threads=2),))
    else:
        plan = Plan(stages=(Stage(0, 3, 'any', (A,)), Stage(4, last, 'any', (B,))))
    before = set(task_cpus_allowed())
    with Pipeline(tiny, plan) as pipe:
        pipe.run(frames(tiny, 3))
        tids = pipe.worker_tids()
        allowed = task_cpus_allowed()
        for i, s in enumerate(plan.stages):
            for tid, group in zip(tids[f'stage_{i}'], s.replica_cpus()):
                assert os.sched_getaffinity(tid) == {group[0]} == allowed[tid]
    new = {t: cpus for t, cpus in allowed.items() if t not in before and t not in tids['output']}
    assert all(len(cpus) == 1 for cpus in new.values()), new          # every worker and pool thread: one CPU
    assert set().union(*new.values()) == {A, B}
    if layout == 'one-stage-2-threads':                                 # the pool thread got the second CPU
        assert {B} in [cpus for t, cpus in new.items() if t not in tids['stage_0']]


def test_drop_oldest_counts_every_drop_under_a_fast_producer(tiny):
    plan = Plan(stages=(Stage(0, len(tiny.layers) - 1, 'any', CPUS[:1]),))
    slow = lambda *a: time.sleep(0.002)  # noqa: E731 - the stage takes >= 2 ms, the producer ~10 us
    x = frames(tiny, 1)[0]
    with Pipeline(tiny, plan, policy='drop_oldest', queue_size=1, tap=slow) as pipe:
        for _ in range(200):
            pipe.submit(x)
        assert pipe.drain(timeout=30)
        results = []
        while True:
            try:
                results.append(pipe.get(timeout=0))
            except queue.Empty:
                break
    assert pipe.dropped > 0
    assert pipe.dropped + len(results) == 200
    assert pipe.stats()[0].drops == pipe.dropped
    seqs = [r.seq for r in results]
    assert seqs == sorted(seqs) and seqs[-1] == 199          # the newest frame is never the one dropped


@pytest.mark.timeout(20)
@pytest.mark.parametrize('where', ['ort-in-stage-0', 'tap-in-stage-1'])
def test_a_stage_failure_stops_the_pipeline_and_names_the_stage(tiny, where):
    plan = Plan(stages=(Stage(0, 3, 'any', CPUS[:1], pinned=False), Stage(4, len(tiny.layers) - 1, 'any',
                                                                          CPUS[:1], pinned=False)))
    x = frames(tiny, 1)[0]

    def tap(stage, replica, seq, inputs, outputs):
        if stage == 1 and seq == 3:
            raise ValueError('boom at frame 3')

    pipe = Pipeline(tiny, plan, tap=tap if where == 'tap-in-stage-1' else None).start()
    try:
        bad = np.zeros((1, 5, 7, 7), np.float32) if where == 'ort-in-stage-0' else x
        with pytest.raises(StageError) as info:
            for _ in range(1000):
                pipe.submit(bad)
            pipe.drain()
        expected = 'stage_0' if where == 'ort-in-stage-0' else 'stage_1'
        assert info.value.stage_name == expected and str(info.value).startswith(expected + ':')
        if where == 'tap-in-stage-1':
            assert isinstance(info.value.cause, ValueError) and 'boom at frame 3' in str(info.value)
        for call in (lambda: pipe.submit(x), lambda: pipe.get(timeout=1), lambda: pipe.drain(timeout=1)):
            with pytest.raises(StageError):
                call()
    finally:
        assert pipe.stop(timeout=5)


@pytest.mark.timeout(20)
def test_stop_under_load_never_hangs(tiny):
    plan = Plan(stages=(Stage(0, 3, 'any', CPUS[:1], pinned=False), Stage(4, len(tiny.layers) - 1, 'any',
                                                                          CPUS[:1], pinned=False)))
    x = frames(tiny, 1)[0]
    pipe = Pipeline(tiny, plan, tap=lambda *a: time.sleep(0.001)).start()
    errors = []

    def produce():
        try:
            while True:
                pipe.submit(x)
        except PipeitError as exc:  # the pipeline stopped under it
            errors.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    while pipe.submitted < 20:
        time.sleep(0.01)
    before = sys.getswitchinterval()
    t0 = time.monotonic()
    assert pipe.stop(timeout=5)
    assert time.monotonic() - t0 < 5
    producer.join(5)
    assert not producer.is_alive() and errors
    with pytest.raises(PipeitError, match='not running'):
        pipe.drain(timeout=1)
    assert before == pytest.approx(0.001) and sys.getswitchinterval() != pytest.approx(0.001)


def test_stats_count_every_frame(tiny):
    plan = Plan(stages=(Stage(0, 3, 'any', CPUS[:1], pinned=False), Stage(4, len(tiny.layers) - 1, 'any',
                                                                          CPUS[:1], pinned=False)))
    with Pipeline(tiny, plan, timeline=100) as pipe:
        pipe.run(frames(tiny, 30))
        stats = pipe.stats()
        timeline = pipe.timeline()
    assert [s.name for s in stats] == ['stage_0', 'stage_1']
    for s in stats:
        assert s.frames == 30 and s.busy_s > 0 and s.mean_ms == pytest.approx(s.busy_s / 30 * 1e3)
        assert 1 <= s.queue_high_water <= 2 and s.drops == 0
    assert len(timeline) == 60 and all(a <= b for *_, a, b in timeline)


def test_a_container_hosts_a_sub_chain(tiny, full):
    """stages=[1] runs the second stage only: fed the cut tensor, it yields the model's output."""
    last = len(tiny.layers) - 1
    plan = Plan(stages=(Stage(0, 3, 'any', CPUS[:1], pinned=False), Stage(4, last, 'any', CPUS[:1], pinned=False)))
    x = frames(tiny, 1)[0]
    head = make_session(tiny.extract_bytes(0, 3), CPUS[:1], weights=tiny.weights).run(None, {tiny.input_name: x})
    with Pipeline(tiny, plan, stages=[1]) as pipe:
        assert pipe.input_names == tiny.boundary(4) and pipe.output_names == tiny.output_names
        [r] = pipe.run([head[0]])
    np.testing.assert_allclose(r.outputs[0], full(x)[0], rtol=1e-5, atol=1e-6)


BAD = {  # id -> (plan maker, Pipeline kwargs, words the message must hold)
    'gap': (lambda g: Plan(stages=(Stage(0, 3, 'a', CPUS[:1]), Stage(5, len(g.layers) - 1, 'a', CPUS[:1]))),
            {}, 'expected 4'),
    'short': (lambda g: Plan(stages=(Stage(0, 3, 'a', CPUS[:1]),)), {}, 'the model has'),
    'illegal-cut': (lambda g: Plan(stages=(Stage(0, 1, 'a', CPUS[:1], pinned=False),
                                           Stage(2, len(g.layers) - 1, 'a', CPUS[:1], pinned=False))),
                    {}, 'not a legal cut point'),
    'cpu-not-here': (lambda g: Plan(stages=(Stage(0, len(g.layers) - 1, 'a', (4095,)),)), {}, '4095'),
    'cpu-twice': (lambda g: Plan(stages=(Stage(0, 3, 'a', CPUS[:1]), Stage(4, len(g.layers) - 1, 'a', CPUS[:1]))),
                  {}, 'already used'),
    'sub-chain': (lambda g: Plan(stages=(Stage(0, len(g.layers) - 1, 'a', CPUS[:1]),)), {'stages': [0, 1]},
                  'consecutive'),
    'policy': (lambda g: Plan(stages=(Stage(0, len(g.layers) - 1, 'a', CPUS[:1]),)), {'policy': 'newest'},
               'drop_oldest'),
}


@pytest.mark.parametrize('case', list(BAD), ids=list(BAD))
def test_bad_plans_are_rejected_with_a_clear_message(tiny, zoo_model, case):
    from pipeit_ros.model import graph
    make, kwargs, words = BAD[case]
    # two tensors cross before layer 2: legal under the default cut limit, not with chain cuts only
    g = graph.load(zoo_model('tiny'), max_cut_tensors=1) if case == 'illegal-cut' else tiny
    with pytest.raises(PipeitError, match=words) as info:
        Pipeline(g, make(g), **kwargs)
    assert isinstance(info.value, PlanError) or case == 'policy'


def test_submit_timeout_refuses_a_frame_and_keeps_the_order(tiny):
    plan = Plan(stages=(Stage(0, len(tiny.layers) - 1, 'any', CPUS[:1]),))
    x = frames(tiny, 1)[0]
    accepted, refused = [], 0
    with Pipeline(tiny, plan, queue_size=1, tap=lambda *a: time.sleep(0.003)) as pipe:
        for _ in range(40):
            try:
                accepted.append(pipe.submit(x, timeout=0))
            except queue.Full:
                refused += 1
        assert pipe.drain(timeout=30)
        got = [pipe.get(timeout=5).seq for _ in accepted]
    assert refused > 0 and got == accepted and pipe.dropped == 0


@pytest.mark.timeout(20)
def test_a_failing_output_callback_stops_the_pipeline(tiny):
    plan = Plan(stages=(Stage(0, len(tiny.layers) - 1, 'any', CPUS[:1]),))

    def on_output(frame):
        raise KeyError('no subscriber')

    with Pipeline(tiny, plan, on_output=on_output) as pipe:
        pipe.submit(frames(tiny, 1)[0])
        with pytest.raises(StageError, match="on_output: KeyError: 'no subscriber'"):
            pipe.drain(timeout=10)


def test_only_the_hosted_stages_cpus_must_be_available(tiny):
    """A container pinned to one cluster hosts that cluster's stages; the others' CPUs are not checked."""
    plan = Plan(stages=(Stage(0, 3, 'other', (4095,)), Stage(4, len(tiny.layers) - 1, 'mine', CPUS[:1])))
    Pipeline(tiny, plan, stages=[1])
    with pytest.raises(PlanError, match=r'stage 0 .* uses CPU\(s\) \[4095\]'):
        Pipeline(tiny, plan, stages=[0])
