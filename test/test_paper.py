"""`pipeit bench --paper-table`: the table's arithmetic and text, and one real quick run over the tiny net."""
import json
import math
import os

import numpy as np
import pytest

from pipeit_ros.bench import paper_table as paper
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw.topology import Cluster, Topology

TOPOLOGY = Topology(clusters=(Cluster('big', (0,), 'host', 1.0),
                              Cluster('little', (1,), 'host', 0.5, emulate_share=0.5)), name='test-1+1')


def synthetic_table(seed, nets=paper.PAPER_NETS):
    rng = np.random.default_rng(seed)
    rows = []
    for net in nets:
        fps = {col: float(rng.uniform(10, 300)) for col in paper.COLUMNS}
        predicted = {col: float(rng.uniform(10, 300)) for col in paper.PLANS}
        specs = {col: f'0-9@big[0]:1 {col}' for col in paper.COLUMNS}
        rows.append(paper.make_row(net, fps, predicted, specs))
    method = {'rounds': 4, 'seconds_per_round': 2.0, 'warmup_frames': 20, 'fps': 'median over rounds'}
    machine = {'cpu_model': 'test cpu', 'cpus_online': 2, 'cpus_allowed': [0, 1], 'onnxruntime': 'x',
               'python': '3', 'kernel': 'k'}
    return paper.assemble(rows, TOPOLOGY, 'emulating big.LITTLE: cluster little cpus [1] at share 0.5', machine,
                          method, wall_s=1.0)


@pytest.mark.parametrize('seed', [0, 1, 2], ids=['seed0', 'seed1', 'seed2'])
def test_ratios_are_to_the_best_baseline_and_geomeans_are_geometric(seed):
    table = synthetic_table(seed)
    for row in table.rows:
        best = max(paper.BASELINES, key=lambda c: row.fps[c])
        assert row.best_baseline == best
        kernel = max(row.fps[c] for c in paper.KERNEL_LEVEL)
        for col in paper.COLUMNS:
            assert row.ratio[col] == pytest.approx(row.fps[col] / row.fps[best])
            assert row.ratio_kernel[col] == pytest.approx(row.fps[col] / kernel)
        assert max(row.ratio[c] for c in paper.BASELINES) == pytest.approx(1.0)
    for col in paper.COLUMNS:
        expected = np.exp(np.mean(np.log([r.ratio[col] for r in table.rows])))
        assert table.geomean[col] == pytest.approx(expected)
    vs = [r.fps['pipeit_exact'] / r.fps['pipeit_paper'] for r in table.rows]
    assert table.geomean_ours_vs_paper == pytest.approx(math.prod(vs) ** (1 / len(vs)))


def test_missing_plan_shows_a_dash_and_is_left_out_of_the_geomean():
    table = synthetic_table(3, nets=('alexnet', 'resnet50'))
    row = table.rows[0]
    gone = paper.make_row(row.net, {**row.fps, 'pipeit_paper': None}, row.predicted, row.specs,
                          notes=['pipeit_paper: no plan: test'])
    table = paper.assemble([gone, table.rows[1]], TOPOLOGY, 'x', table.machine, table.method)
    assert table.geomean['pipeit_paper'] == pytest.approx(table.rows[1].ratio['pipeit_paper'])
    text = paper.format_markdown(table)
    assert '| – |' in text and 'no plan: test' in text


def test_markdown_has_every_column_the_emulation_machine_and_method():
    table = synthetic_table(4)
    text = paper.format_markdown(table)
    header = next(line for line in text.splitlines() if line.startswith('| network |'))
    for title in [paper.TITLES[c] for c in paper.COLUMNS] + ['best baseline', 'paper × best', 'ours × best',
                                                              'ours × paper', 'paper pred. / meas.',
                                                              'ours pred. / meas.']:
        assert f' {title} |' in header
    rows = [line for line in text.splitlines() if line.startswith('| ') and not line.startswith('| network')]
    assert len(rows) == len(paper.PAPER_NETS) + 1          # one per network + geomean
    assert all(line.count('|') == header.count('|') for line in rows)
    assert 'emulated on identical cores' in text and 'test cpu' in text and 'rounds' in text
    assert f'{table.geomean["pipeit_exact"]:.2f}×' in text


def test_table_is_json_serialisable_and_plot_writes_a_png(tmp_path):
    table = synthetic_table(5)
    data = json.loads(json.dumps(table.to_dict()))
    assert [r['net'] for r in data['rows']] == list(paper.PAPER_NETS)
    path = paper.plot(table, str(tmp_path / 'paper.png'))
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_same_plan_measured_apart_is_flagged_next_to_the_table():
    """MobileNet v1 once: identical data-parallel plans at 117 and 92 frames/s in one run."""
    table = synthetic_table(4, nets=('mobilenet_v1', 'resnet50'))
    noisy, quiet = table.rows
    same = '0-30@big[0]:1,little[1]:1'
    noisy = paper.make_row(noisy.net, {**noisy.fps, 'data_parallel': 117.0, 'pipeit_exact': 92.0}, noisy.predicted,
                           {**noisy.specs, 'data_parallel': same, 'pipeit_exact': same})
    quiet = paper.make_row(quiet.net, {**quiet.fps, 'data_parallel': 100.0, 'pipeit_exact': 104.0}, quiet.predicted,
                           {**quiet.specs, 'data_parallel': same, 'pipeit_exact': same})
    assert [n['candidates'] for n in noisy.noise] == [['data_parallel', 'pipeit_exact']] and quiet.noise == []
    assert noisy.noise[0]['spread'] == pytest.approx(117 / 92 - 1)
    text = paper.format_markdown(paper.assemble([noisy, quiet], TOPOLOGY, 'x', table.machine, table.method))
    (line,) = [line for line in text.splitlines() if 'warning' in line]
    assert line.startswith('> warning: mobilenet_v1: data_parallel and pipeit_exact') and '117.0 and 92.0' in line
    assert '27% apart' in line


@pytest.mark.parametrize('text, expected', [(None, list(paper.PAPER_NETS)), ('tiny', ['tiny']),
                                            ('alexnet, resnet50', ['alexnet', 'resnet50']),
                                            ('yolov8n,lraspp_mobilenet_v3_large', ['yolov8n',
                                                                                   'lraspp_mobilenet_v3_large'])],
                         ids=['default', 'tiny', 'two', 'detector-segmenter'])
def test_nets_are_parsed(text, expected):
    assert paper.parse_nets(text) == expected


@pytest.mark.parametrize('text', ['vgg16', 'tiny,nope', ','], ids=['unknown', 'one-unknown', 'empty'])
def test_unknown_nets_are_a_user_error(text):
    with pytest.raises(PipeitError, match='--nets'):
        paper.parse_nets(text)


def test_auto_topology_is_heterogeneous():
    topology = paper.resolve_topology('auto', log=lambda _: None)
    assert len(topology.clusters) > 1


@pytest.mark.slow
def test_paper_table_cli_quick_run(run_cli, tmp_path):
    # 0.2 s rounds: the tiny net gives hundreds of frames per candidate in each, and what is checked is the table
    pytest.importorskip('pipeit_ros.planning.facade')
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip('the default topology needs CPUs 0 and 1')
    png = tmp_path / 'paper.png'
    code, out, err = run_cli('bench', '--paper-table', '--nets', 'tiny', '--seconds', '0.4', '--rounds', '2',
                             '--warmup', '3', '--no-progress', '--plot', png)
    assert code == 0, err
    assert png.exists()
    if paper.resolve_topology('auto', log=lambda _: None).has_emulation():
        assert 'emulating big.LITTLE' in err and 'emulated on identical cores' in out
    header = next(line for line in out.splitlines() if line.startswith('| network |'))
    assert all(paper.TITLES[c] in header for c in paper.COLUMNS)
    row = next(line for line in out.splitlines() if line.startswith('| tiny |'))
    assert row.count('|') == header.count('|') and ' – ' not in row

    code, out, err = run_cli('bench', '--paper-table', '--nets', 'tiny', '--seconds', '0.4', '--rounds', '2',
                             '--warmup', '3', '--no-progress', '--json', '--topology', paper.DEFAULT_TOPOLOGY)
    assert code == 0, err
    data = json.loads(out)
    (row,) = data['rows']
    for col in paper.COLUMNS:
        assert row['fps'][col] > 0 and row['ratio'][col] > 0
    for col in paper.PLANS:
        assert row['predicted'][col] > 0
    assert data['topology']['name'] == paper.DEFAULT_TOPOLOGY
    assert data['emulation'].startswith('emulating big.LITTLE')
