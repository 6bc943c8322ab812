"""The profiler: segments of a real (tiny) model measured on every core configuration, cached, via the CLI."""
import json
import os
import threading

import numpy as np
import pytest

from pipeit_ros.cost import fitting, profiler, synth
from pipeit_ros.cost import timing as measure
from pipeit_ros.hw.topology import Cluster, Topology


def small_topology(n_clusters=1):
    """At most two of the CPUs this process may use: one 2-core cluster, or two 1-core clusters."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if n_clusters == 2 and len(cpus) == 2:
        clusters = (Cluster('a', (cpus[0],), 'host', 1.0), Cluster('b', (cpus[1],), 'host', 1.0))
    else:
        clusters = (Cluster('a', tuple(cpus), 'host', 1.0),)
    return Topology(clusters=clusters, name=f'test-{n_clusters}', source='test')


def topology_yaml(tmp_path, topology):
    import yaml
    path = tmp_path / f'{topology.name}.yaml'
    path.write_text(yaml.safe_dump({'name': topology.name, 'clusters': [
        {'name': c.name, 'cpus': list(c.cpus)} for c in topology.clusters]}))
    return str(path)


@pytest.fixture(scope='module')
def tiny_graph(zoo_model):
    from pipeit_ros.model import graph
    return graph.load(zoo_model('tiny'))


@pytest.mark.parametrize('n_clusters', [1, 2], ids=['one-cluster', 'two-clusters'])
def test_core_configs_cover_every_k_of_every_cluster(n_clusters):
    topology = small_topology(n_clusters)
    configs = measure.core_configs(topology)
    expected = [(c.name, k) for c in topology.clusters for k in range(1, c.size + 1)]
    assert [c.key for c in configs] == expected
    for cfg in configs:
        cluster = topology.cluster(cfg.cluster)
        assert cfg.cpus == cluster.cpus[:cfg.cores]


def test_time_calls_stops_when_medians_are_stable():
    times = measure.time_calls([lambda: None, lambda: sum(range(100))], warmup=1, min_reps=5, max_reps=500,
                               budget_s=5.0, rtol=0.5, check_every=2)
    assert times.shape[0] == 2
    assert 5 <= times.shape[1] < 500
    assert np.all(times >= 0)


def test_time_calls_bursts_time_each_call_back_to_back():
    order = []
    times = measure.time_calls([lambda: order.append('a'), lambda: order.append('b')], warmup=0, min_reps=3,
                               max_reps=3, budget_s=5.0, burst=2)
    assert times.shape == (2, 6)                      # 3 rounds x 2 timed runs
    assert order[:6] == ['a', 'a', 'a', 'b', 'b', 'b']  # one untimed run, then the timed burst


def test_time_interleaved_takes_configurations_in_turn_each_on_its_cpu_alone():
    cpus = sorted(os.sched_getaffinity(0))
    pins = (cpus[0], cpus[-1])
    log, active = [], []

    def call(g):
        active.append(g)
        log.append((g, os.sched_getaffinity(0), len(active)))   # len(active) > 1: two configurations at once
        active.remove(g)

    workers = [measure.PinnedWorker((cpu,)) for cpu in pins]
    try:
        schedule = []
        times = measure.time_interleaved([(w, [lambda g=g: call(g)] * 2) for g, w in enumerate(workers)],
                                         warmup=1, min_reps=3, max_reps=3, budget_s=float('inf'), burst=2,
                                         schedule=schedule)
    finally:
        for w in workers:
            w.close()
    assert [t.shape for t in times] == [(2, 6), (2, 6)]
    assert schedule == [(0, 1), (1, 1), (1, 2), (0, 2), (0, 3), (1, 3)]   # A B, B A, A B: interleaved
    timed = [g for g, _, _ in log[4:]]                                     # after one warm-up round each
    assert timed == [g for g, _ in schedule for _ in range(2 * 3)]         # a round: 2 calls x (1 + burst 2)
    assert all(mask == {pins[g]} for g, mask, _ in log)                     # each on its own CPU
    assert all(n == 1 for _, _, n in log)                                   # the other one idle meanwhile
    assert not any(t.name.startswith('pipeit-measure') for t in threading.enumerate())


def test_interleaving_keeps_the_ratio_when_load_drifts_during_the_profile(monkeypatch):
    """A clock that the calls advance: configuration B costs 2x A, and everything 4x slower for the last third
    of the profile (another process starts). One after the other, B takes the slow spell alone: 8x; in turn, 2x."""
    clock = {'t': 0.0, 'calls': 0}

    def call(cost):
        clock['calls'] += 1
        clock['t'] += cost * (4.0 if clock['calls'] > 12 else 1.0)

    monkeypatch.setattr(measure, 'time', type('Clock', (), {'perf_counter': staticmethod(lambda: clock['t'])}))
    fixed = dict(warmup=0, min_reps=9, max_reps=9, budget_s=float('inf'))
    a, b = [lambda: call(1.0)], [lambda: call(2.0)]
    cpu = min(os.sched_getaffinity(0))
    workers = [measure.PinnedWorker((cpu,)) for _ in range(2)]
    try:
        in_turn = measure.time_interleaved(list(zip(workers, [a, b])), **fixed)
    finally:
        for w in workers:
            w.close()
    clock.update(t=0.0, calls=0)
    one_after_other = [measure.time_calls(a, **fixed), measure.time_calls(b, **fixed)]
    assert np.median(in_turn[1]) / np.median(in_turn[0]) == pytest.approx(2.0)
    assert np.median(one_after_other[1]) / np.median(one_after_other[0]) == pytest.approx(8.0)


def test_profile_times_configurations_in_memory_waves(tiny_graph, monkeypatch):
    topology = small_topology()
    n_cfg = len(measure.core_configs(topology))
    if n_cfg < 2:
        pytest.skip('needs two CPUs')
    logs = []
    monkeypatch.setattr(profiler.procmem, 'available_bytes', lambda: 0)   # room for one configuration at a time
    table = profiler.profile(tiny_graph, topology, reps=2, warmup=1, progress=False, log=logs.append,
                             use_cache=False)
    assert table.meta['schedule'] == [[i] for i in range(n_cfg) for _ in range(2)]
    assert any('timed in further waves' in line for line in logs)
    assert np.all(table.seg_ms > 0) and np.all(table.session_bytes >= 0)
    assert table.session_bytes.shape == table.seg_ms.shape


def test_emulation_correction_scales_an_emulated_cluster_to_its_share():
    """A little core whose whole model ran as fast as the big one's (1.0 against 0.5) is timed twice as slow; one
    four times slower, half as slow; a broken measurement is bounded; clusters without emulation stay as
    measured, and a configuration is compared with the reference of as many cores."""
    big, little = measure.CoreConfig('big', 1, (0,), 1.0), measure.CoreConfig('little', 1, (1,), 0.5, 0.5)
    assert fitting.emulation_correction([big, little], [100.0, 100.0]) == pytest.approx([1.0, 2.0])
    assert fitting.emulation_correction([big, little], [100.0, 400.0]) == pytest.approx([1.0, 0.5])
    assert fitting.emulation_correction([big, little], [100.0, 200.0]) == pytest.approx([1.0, 1.0])
    assert fitting.emulation_correction([big, little], [100.0, 1.0]) == pytest.approx([1.0, 4.0])
    little2 = measure.CoreConfig('little', 2, (1, 2), 0.5, 0.5)
    assert fitting.emulation_correction([big, little, little2], [100.0, 100.0, 60.0]) == [1.0, 2.0, 1.0]


def test_emulated_samples_scale_an_emulated_configuration_by_the_median_group_correction():
    """The sweep's probes on an emulated little core ran near the big one's speed (their short kernels escape the
    co-runners): each probe's correction is taken, and the median scales every time of that configuration;
    the big core and a machine without emulation stay as measured."""
    big, little = measure.CoreConfig('big', 1, (0,), 1.0), measure.CoreConfig('little', 1, (1,), 0.5, 0.5)
    layer_ms = np.array([[1.0, 1.0, 2.0, 4.0], [1.0, 1.0, 2.5, 4.0]])   # groups p0 (2 layers), p1, p2
    samples = synth.Samples([big, little], [None] * 4, ['p0', 'p0', 'p1', 'p2'], layer_ms,
                            unit_wall_ms=np.array([[3.0, 3.0, 5.0], [3.0, 3.0, 5.0]]), overhead_ms=np.array([0.1, 0.1]))
    out = fitting.emulated_samples(samples)
    want = np.median([2.0, 2 * 2.0 / 2.5, 2.0])       # p0: 2/(0.5*2), p1: 2/(0.5*2.5), p2: 4/(0.5*4)
    assert out.layer_ms[0] == pytest.approx(layer_ms[0]) and out.layer_ms[1] == pytest.approx(layer_ms[1] * want)
    assert out.unit_wall_ms[1] == pytest.approx(np.array([3.0, 3.0, 5.0]) * want) and out.overhead_ms == pytest.approx([0.1, 0.1 * want])
    assert out.meta['emulation_correction'] == pytest.approx([1.0, want])
    assert samples.layer_ms[1] == pytest.approx([1.0, 1.0, 2.5, 4.0])     # the measured times are left alone
    plain = synth.Samples([big, measure.CoreConfig('c1', 1, (1,), 1.0)], [None] * 4, ['p0', 'p0', 'p1', 'p2'], layer_ms)
    assert fitting.emulated_samples(plain) is plain


def test_a_correction_far_from_1_while_the_emulation_held_is_a_warning():
    """The emulated core ran at its share (0.50 of 0.5), yet its whole model needs x1.49: a slow spell elsewhere,
    said once; a correction near 1, or one that only makes up for an emulation that strayed (which
    hw.emulation.speed_warnings reports), is not."""
    big, little = measure.CoreConfig('big', 1, (0,), 1.0), measure.CoreConfig('little', 1, (1,), 0.5, 0.5)
    lines = fitting.correction_warnings([big, little], [1.0, 1.49], {'little': 0.50})
    assert len(lines) == 1 and 'little:1' in lines[0] and 'x1.49' in lines[0] and '--no-cache' in lines[0]
    assert fitting.correction_warnings([big, little], [1.0, 0.97], {'little': 0.50}) == []
    assert fitting.correction_warnings([big, little], [1.0, 2.0], {'little': 1.0}) == []
    assert fitting.correction_warnings([big, little], [1.0, 1.49], {}) == []


@pytest.mark.parametrize('alone, pairs, whole, want_scale', [
    ([2.0, 1.0, 3.0], [2.6, 3.9], 5.5, 1.0),     # the whole is faster than its segments: cuts make up for it
    ([2.0, 1.0, 3.0], [2.6, 3.9], 12.0, 2.0),    # slower (its long runs were preempted): segments scale up
    ([2.0, 4.0, 3.0], [5.9, 6.9], 4.0, 4.0 / 4.5),   # faster than cuts within their bounds explain: scale down
], ids=['cuts', 'preempted', 'short-runs-waited'])
def test_fit_segments_makes_one_stage_cost_the_whole_model(alone, pairs, whole, want_scale):
    seg, cut, scale = fitting.fit_segments(alone, pairs, whole)
    assert scale == pytest.approx(want_scale)
    assert seg.sum() == pytest.approx(whole)      # the model as one stage costs what it measured
    assert np.all(cut >= 0) and cut[0] == 0.0


def test_split_cuts_is_what_a_pair_saves_within_bounds():
    alone = np.array([2.0, 1.0, 3.0, 0.5])
    pairs = np.array([2.6, 3.9, 4.0])   # saves 0.4, 0.1 and -0.5 (noise)
    cut = fitting.split_cuts(alone, pairs)
    np.testing.assert_allclose(cut, [0.0, 0.4, 0.1, 0.0])
    assert np.all(fitting.split_cuts([1.0, 1.0], [0.1]) <= 1.0)   # never more than the smaller segment


def test_fit_cuts_makes_one_stage_cost_the_whole_model():
    alone = np.array([2.0, 1.0, 3.0, 0.5])
    cut = np.array([0.0, 0.4, 0.2, 0.1])
    fitted = fitting.fit_cuts(cut, alone, whole=5.5)              # the pairs saw 0.7 of the 1.0 saved
    assert alone.sum() - fitted.sum() == pytest.approx(5.5)
    np.testing.assert_allclose(fitted / fitted.sum(), cut / cut.sum())
    assert np.all(fitting.fit_cuts(cut, alone, whole=1.0) <= [0.0, 1.0, 1.0, 0.5])   # within bounds
    np.testing.assert_allclose(fitting.fit_cuts(cut, alone, whole=7.0), 0.0)         # never negative


def test_stage_time_pays_half_a_cut_at_each_end():
    from pipeit_ros.cost.table import CostTable
    table = CostTable(segments=[(0, 0), (1, 1), (2, 2)], configs=[('c', 1)], seg_ms=[[1.0, 2.0, 3.0]],
                      overhead_ms=[0.1], in_bytes=[10, 10, 10], weight_bytes=[0, 0, 0], act_bytes=[0, 0, 0],
                      cut_ms=[[9.0, 0.4, 0.6]])
    assert table.cut_ms[0, 0] == 0.0                                   # no cut before the first segment
    assert table.stage_ms(0, 2, 'c', 1) == pytest.approx(6.1)          # one stage: no cut at all
    assert table.stage_ms(0, 0, 'c', 1) == pytest.approx(1.0 + 0.1 + 0.2)
    assert table.stage_ms(1, 1, 'c', 1, include_handover=False) == pytest.approx(2.0 + 0.1 + 0.2 + 0.3)
    np.testing.assert_allclose(table.alone_ms(), [[1.2, 2.5, 3.3]])
    back = CostTable.from_dict(json.loads(json.dumps(table.to_dict())))
    np.testing.assert_allclose(back.cut_ms, table.cut_ms)
    old = table.to_dict()
    old.pop('cut_ms')                                                  # a table saved before cuts were kept
    assert CostTable.from_dict(old).stage_ms(0, 0, 'c', 1) == pytest.approx(1.1)


def test_time_under_load_runs_the_model_on_the_other_cpus(tiny_graph):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip('needs two CPUs')
    cfg = measure.CoreConfig('a', 1, (cpus[0],))
    model = tiny_graph.model.SerializeToString()
    session = measure.make_session(model, cfg.cpus, weights=tiny_graph.weights)
    feeds = measure.feeds_for(session, np.random.default_rng(0))
    alone, loaded = measure.time_under_load(model, cfg, feeds, cpus[1:2], budget_s=0.2, weights=tiny_graph.weights)
    assert alone.ndim == 1 and len(alone) >= 4 and len(loaded) == len(alone)
    assert np.all(alone > 0) and np.all(loaded > 0)
    assert not any(t.name.startswith('pipeit-load') for t in threading.enumerate())   # load threads ended


def test_run_pinned_runs_on_the_first_cpu_and_reraises():
    cpu = sorted(os.sched_getaffinity(0))[-1]
    assert measure.run_pinned((cpu,), lambda: os.sched_getaffinity(0)) == {cpu}
    with pytest.raises(ZeroDivisionError):
        measure.run_pinned((cpu,), lambda: 1 / 0)
    assert len(os.sched_getaffinity(0)) >= 1  # the caller's own mask is untouched


def test_trace_layer_times_map_every_kernel_to_a_layer(tiny_graph):
    cfg = measure.core_configs(small_topology())[0]
    lookup = measure.layer_lookup(tiny_graph.model, tiny_graph.layers)
    times, wall = measure.trace_layer_times(tiny_graph.model.SerializeToString(), cfg, lookup,
                                            len(tiny_graph.layers), runs=3, warmup=1, weights=tiny_graph.weights)
    assert times.shape == (len(tiny_graph.layers),)
    conv = [layer.index for layer in tiny_graph.layers if layer.op_type == 'conv']
    assert np.all(times[conv] > 0)
    assert times.sum() <= wall * 1.5  # kernel times are part of the run (wide margin: noisy shared machine)


def test_profile_of_tiny_net_is_complete_and_cached(tiny_graph):
    topology = small_topology()
    logs = []
    table = profiler.profile(tiny_graph, topology, reps=3, progress=False, log=logs.append)
    n_cfg = len(measure.core_configs(topology))
    assert table.source == 'profile'
    assert table.model_hash == tiny_graph.model_hash
    assert table.topology_fingerprint == topology.fingerprint()
    assert table.segments == [tuple(s) for s in tiny_graph.segments()]
    assert table.seg_ms.shape == (n_cfg, len(table.segments))
    assert np.all(table.seg_ms > 0) and np.all(table.overhead_ms > 0)
    assert table.cut_ms.shape == table.seg_ms.shape and np.all(table.cut_ms >= 0)
    assert table.load_factor.shape == (n_cfg,) and np.all(table.load_factor >= 1.0)
    whole_cfg = [i for i, cfg in enumerate(measure.core_configs(topology)) if len(cfg.cpus) == len(topology.cpus)]
    assert all(table.load_factor[i] == 1.0 for i in whole_cfg)    # no other CPU to load
    assert np.all(table.cut_ms[:, 1:] <= np.minimum(table.alone_ms()[:, :-1], table.alone_ms()[:, 1:]) + 1e-9)
    assert table.in_bytes[0] == int(np.prod(tiny_graph.input_shape)) * 4
    assert 'cross_process_copy' in table.meta['handover'] and table.handover_ms_per_mb >= 0
    assert not any('reusing cached profile' in line for line in logs)
    assert table.meta['schedule'] == [[(r + j) % n_cfg for j in range(n_cfg)] for r in range(3)]   # interleaved
    assert not any('further waves' in line for line in logs)
    assert len(table.meta['sessions_footprint_bytes']) == n_cfg
    # each adjacent pair's session measured on its first run (CostTable.private_bytes); what leaves each segment
    assert table.pair_arena_bytes.shape == table.seg_ms.shape and np.all(table.pair_arena_bytes[:, 0] == 0)
    assert np.all(table.pair_arena_bytes >= 0) and table.out_bytes[:-1] == table.in_bytes[1:]
    assert table.out_bytes[-1] == tiny_graph.layers[-1].output_bytes > 0
    assert table.tail_arena_bytes.shape == (n_cfg,) and np.all(table.tail_arena_bytes >= 0)   # several segments
    assert table.meta['emulated_speed'] == {} and table.meta['emulation_correction'] == [1.0] * n_cfg
    logs.clear()
    again = profiler.profile(tiny_graph, topology, reps=3, progress=False, log=logs.append)
    assert any('reusing cached profile' in line for line in logs)
    np.testing.assert_allclose(again.seg_ms, table.seg_ms)


@pytest.mark.parametrize('bad', [{'reps': 0}, {'budget_s': 0}], ids=['reps-0', 'budget-0'])
def test_profile_refuses_bad_options(tiny_graph, bad):
    from pipeit_ros.errors import PipeitError
    with pytest.raises(PipeitError):
        profiler.profile(tiny_graph, small_topology(), progress=False, log=lambda m: None, **bad)


def test_measure_handover_is_non_negative_and_cached():
    topology = small_topology(2)
    logs = []
    first = profiler.measure_handover(topology, log=logs.append)
    for part in ('in_process', 'cross_process_copy'):
        assert first[part]['fixed_ms'] >= 0 and first[part]['ms_per_mb'] >= 0
    second = profiler.measure_handover(topology, log=logs.append)
    assert second == first and any('reusing' in line for line in logs)


def test_cli_profile_caches_and_prints_json(run_cli, tmp_path):
    topo = topology_yaml(tmp_path, small_topology(2))
    out = tmp_path / 'p.json'
    code, stdout, err = run_cli('profile', 'tiny', '--topology', topo, '--reps', '3', '--no-progress',
                                '--out', out)
    assert code == 0, err
    assert 'overhead' in stdout and 'reusing cached profile' not in err
    code, stdout, err = run_cli('profile', 'tiny', '--topology', topo, '--reps', '3', '--json')
    assert code == 0
    assert 'reusing cached profile' in err
    data = json.loads(stdout)
    assert data['source'] == 'profile' and data['seg_ms'] == json.loads(out.read_text())['seg_ms']


@pytest.mark.parametrize('argv', [
    ['profile', 'no_such_net'],
    ['profile', 'tiny', '--reps', '0'],
    ['profile', 'tiny', '--budget', '-1'],
    ['profile', 'tiny', '--topology', 'no-such-topology'],
    ['profile', '{garbage}'],
], ids=['unknown-model', 'reps-0', 'budget-negative', 'unknown-topology', 'garbage-file'])
def test_cli_profile_bad_input_exits_2(run_cli, argv, tmp_path):
    if argv[1] == '{garbage}':
        bad = tmp_path / 'bad.onnx'
        bad.write_bytes(b'not a model')
        argv = ['profile', str(bad)]
    code, _, err = run_cli(*argv)
    assert code == 2
    assert err.startswith('pipeit: error:') and 'Traceback' not in err
