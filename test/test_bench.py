"""`pipeit bench` and bench.run_benchmark on the tiny net: every candidate measured, ratios, JSON, plot, errors."""
import json

import pytest

from pipeit_ros.bench import benchmark as bench
from pipeit_ros.bench import report
from pipeit_ros.hw.cpus import allowed_cpus
from pipeit_ros.hw.topology import Cluster, Topology
from pipeit_ros.plan import parse_spec
from pipeit_ros.planning.baselines import NAMES, baselines

needs_cpus_0_1 = pytest.mark.skipif(not {0, 1} <= set(allowed_cpus()), reason='needs CPUs 0 and 1')
TOPO = Topology(clusters=(Cluster('c0', (0,), 'host', 1.0), Cluster('c1', (1,), 'host', 1.0)), name='test-2x1')


@pytest.fixture(scope='module')
def tiny(zoo_model):
    from pipeit_ros.model import graph
    return graph.load(zoo_model('tiny'))


@pytest.fixture(scope='module')
def result(tiny):
    plan = parse_spec('0-3@c0,4-8@c1', TOPO, n_layers=len(tiny.layers))
    candidates = {'plan': plan, **baselines(tiny, TOPO)}
    return bench.run_benchmark(tiny, TOPO, candidates, seconds=0.3, rounds=2, warmup=2, bare=True,
                               progress=False, stage_alone_for=['plan'])


@needs_cpus_0_1
def test_every_candidate_is_measured(result):
    assert list(result.candidates) == ['plan', *NAMES, 'bare']
    for name, c in result.candidates.items():
        assert len(c.fps_rounds) == 2 and c.fps > 0 and c.frames > 0, name
        assert 0 < c.p50_ms <= c.p99_ms, name
        if name != 'bare':
            assert c.stages and all(0 < s['utilisation'] <= 1.05 and s['frames'] > 0 for s in c.stages), name
            assert c.memory_error is None and 0 < c.pss_mb <= c.memory_mb <= c.peak_rss_mb, (name, c)
    assert len(result.candidates['plan'].stages) == 2
    assert result.candidates['ort_all_cores'].ratio_ort == pytest.approx(1.0)
    best = result.best_baseline
    assert best in NAMES and result.candidates[best].ratio_best == pytest.approx(1.0)
    assert all(result.candidates[n].fps <= result.candidates[best].fps for n in NAMES)
    assert result.method['bare_reference'] == 'plan' and result.method['rounds'] == 2


@needs_cpus_0_1
def test_stage_alone_and_timeline(result):
    [a, b] = result.stage_alone['plan']
    assert a['stage'] == 'stage_0' and b['stage'] == 'stage_1'
    assert all(s['ms'] > 0 and s['fps_bound'] == pytest.approx(1e3 / s['ms']) for s in (a, b))
    events = result.candidates['plan'].timeline
    assert {e[0] for e in events} == {'stage_0', 'stage_1'}
    by_seq = {}
    for stage, _, seq, start, end in events:
        assert start <= end
        by_seq.setdefault(seq, {})[stage] = (start, end)
    both = [v for v in by_seq.values() if len(v) == 2]
    assert both and all(v['stage_0'][1] <= v['stage_1'][0] for v in both)   # a frame's stages run in order


@needs_cpus_0_1
def test_report_json_and_plot(result, tmp_path):
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data['candidates']) == set(result.candidates)
    assert 'timeline' not in data['candidates']['plan']
    assert data['machine']['onnxruntime'] and data['topology']['name'] == 'test-2x1'
    table = report.format_table(result)
    for name in result.candidates:
        assert name in table
    assert 'pipeline efficiency' in table and 'bare ran on the cores of plan' in table
    assert 'rounds' in report.format_method(result)
    from pipeit_ros.bench.plot import plot
    path = plot(result, str(tmp_path / 'bench.png'))
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@needs_cpus_0_1
@pytest.mark.slow
def test_cli_bench_tiny_json_has_every_candidate(run_cli, tmp_path):
    plot = tmp_path / 'b.png'
    code, out, err = run_cli('bench', 'tiny', '--topology', 'emulated-2x1', '--stages', '0-3@c0,4-8@c1',
                             '--seconds', '0.4', '--rounds', '2', '--warmup', '2', '--bare', '--stage-alone',
                             '--json', '--no-progress', '--plot', plot)
    assert code == 0, err
    data = json.loads(out)
    assert set(data['candidates']) == {'plan', *NAMES, 'bare'}
    assert all(c['fps'] > 0 for c in data['candidates'].values())
    assert plot.exists() and 'topology emulated-2x1' in err


@needs_cpus_0_1
@pytest.mark.parametrize('argv, words', [
    (['nosuchnet'], 'not a zoo network'),
    (['tiny', '--only', 'fastest'], 'unknown baseline'),
    (['tiny', '--stage-alone'], 'needs a plan'),
    (['tiny', '--stages', '0-2@c0,3-8@c1', '--max-cut-tensors', '1'], 'not a legal cut point'),
    (['tiny', '--max-cut-tensors', '0'], '--max-cut-tensors must be >= 1'),
    (['tiny', '--seconds', '0'], '--seconds must be > 0'),
    (['tiny', '--rate', '0'], '--rate must be > 0'),
], ids=['model', 'only', 'stage-alone', 'illegal-cut', 'cut-limit', 'seconds', 'rate'])
def test_cli_bad_input_exits_2(run_cli, argv, words):
    code, out, err = run_cli('bench', *argv, '--topology', 'emulated-2x1', '--no-progress')
    assert code == 2 and words in err and out == ''


@needs_cpus_0_1
@pytest.mark.slow
def test_cli_auto_plans_and_measures(run_cli):
    pytest.importorskip('pipeit_ros.planning.facade', reason='the DSE engineer\'s planning module has not landed')
    code, out, err = run_cli('bench', 'tiny', '--topology', 'emulated-2x1', '--auto', '--only', 'ort_all_cores',
                             '--seconds', '0.2', '--rounds', '1', '--warmup', '1', '--json', '--no-progress')
    assert code == 0, err
    data = json.loads(out)
    assert 'ort_all_cores' in data['candidates'] and len(data['candidates']) == 2


@needs_cpus_0_1
def test_bare_against_a_one_stage_plan_gives_the_engine_overhead(tiny):
    solo = parse_spec(f'0-{len(tiny.layers) - 1}@c0', TOPO, n_layers=len(tiny.layers))
    result = bench.run_benchmark(tiny, TOPO, {'solo': solo}, seconds=0.1, rounds=1, warmup=1, bare=True,
                                 progress=False)
    assert list(result.candidates) == ['solo', 'bare'] and result.best_baseline is None
    assert 'cpus [0]' in result.candidates['bare'].spec
    assert 'engine overhead: solo' in report.format_table(result)


@pytest.mark.parametrize('fps,specs,want', [
    ({'a': 117.0, 'b': 92.0, 'c': 50.0}, {'a': 'S', 'b': 'S', 'c': 'T'}, [(['a', 'b'], 117 / 92 - 1)]),
    ({'a': 100.0, 'b': 104.9}, {'a': 'S', 'b': 'S'}, []),
    ({'a': 100.0, 'b': 130.0}, {'a': 'S', 'b': 'T'}, []),
    ({'a': 100.0, 'b': 90.0, 'c': 120.0}, {'a': 'S', 'b': 'S', 'c': 'S'}, [(['a', 'b', 'c'], 120 / 90 - 1)]),
    ({'a': 100.0, 'b': None}, {'a': 'S', 'b': 'S'}, []),
], ids=['pair', 'within-5pc', 'other-specs', 'three', 'unmeasured'])
def test_same_spec_spread_flags_one_plan_measured_apart(fps, specs, want):
    got = report.same_spec_spread(fps, specs)
    assert [(g['candidates'], pytest.approx(g['spread'])) for g in got] == want
    assert len(report.noise_warnings(got)) == len(want)


@needs_cpus_0_1
def test_same_plans_in_a_run_are_compared(result):
    """The real run: every flagged group is one spec measured > 5 % apart, and the table says so."""
    table = report.format_table(result)
    for item in result.noise:
        specs = {result.candidates[n].spec for n in item['candidates']}
        fps = [result.candidates[n].fps for n in item['candidates']]
        assert specs == {item['spec']} and max(fps) / min(fps) - 1 > report.NOISE_SPREAD
    assert table.count('warning:') == len(result.noise) and 'noise' in result.to_dict()


@pytest.mark.parametrize('a, b, want', [
    ([10.0, 20.0, 40.0], [5.0, 10.0, 20.0], (2.0, 2.0, 2.0)),          # drift between rounds cancels
    ([10.0, 30.0, 12.0], [10.0, 10.0, 40.0], (1.0, 0.3, 3.0)),         # paired: not the ratio of medians (12/10)
    ([10.0, 0.0, 12.0], [5.0, 10.0, 6.0], (2.0, 2.0, 2.0)),            # a round that measured nothing is left out
], ids=['drift', 'paired', 'unmeasured-round'])
def test_ratios_are_paired_by_round(a, b, want):
    got = report.paired_ratio(a, b)
    assert (got['median'], got['min'], got['max']) == pytest.approx(want)
    assert report.round_ratio(a, b) == pytest.approx(want[0])
    assert report.paired_ratio([0.0], [1.0]) is None and report.round_ratio([], []) is None


@needs_cpus_0_1
def test_plan_ratios_and_measured_speeds_per_round(result):
    """Every plan has a paired ratio to every baseline, one per round; every window says what speed the
    emulated clusters ran at (none here: test-2x1 emulates nothing)."""
    assert set(result.paired) == {'plan'} and set(result.paired['plan']) == set(NAMES)
    for name, got in result.paired['plan'].items():
        assert len(got['rounds']) == 2 and got['min'] <= got['median'] <= got['max'], name
    best = result.best_baseline
    assert result.candidates['plan'].ratio_best == pytest.approx(result.paired['plan'][best]['median'])
    assert all(c.speeds == [{}, {}] for n, c in result.candidates.items()), result.candidates
    assert result.emulation == [] and 'median of per-round ratios' in report.format_table(result)


@needs_cpus_0_1
def test_paced_producer_sends_at_most_one_frame_per_period(tiny):
    """With ``rate`` the producer sends one frame per period (a camera), never a burst: a round of 0.2 s at
    20 frames/s gets at most 5 frames whatever the machine, where the saturated tiny net takes hundreds."""
    plan = parse_spec('0-3@c0,4-8@c1', TOPO, n_layers=len(tiny.layers))
    result = bench.run_benchmark(tiny, TOPO, {'plan': plan}, seconds=0.4, rounds=2, warmup=1, progress=False,
                                 rate=20.0)
    c = result.candidates['plan']
    assert 0 < c.frames <= 2 * 5 and result.method['rate'] == 20.0
