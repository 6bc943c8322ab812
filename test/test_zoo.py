"""pipeit_ros.model.zoo: architecture-faithful networks with sane random weights, cached files, the CLI."""
import json
import os

from graph_checks import run_file
import numpy as np
import pytest

from pipeit_ros.errors import PipeitError
from pipeit_ros.model import zoo

BIG = {'alexnet', 'resnet50'}
PAPER_NETS = [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in zoo.PUBLISHED]


@pytest.mark.parametrize('name', PAPER_NETS)
def test_parameter_count_within_1pc_of_published(name):
    params, _ = zoo.PUBLISHED[name]
    assert abs(zoo.parameter_count(zoo.build(name)) - params) <= 0.01 * params


OUTPUT_SHAPES = {'tiny': (1, 10), 'yolov8n': (1, 84, 8400), 'lraspp_mobilenet_v3_large': (1, 21, 520, 520)}


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in zoo.NETWORKS])
def test_outputs_are_finite_well_scaled_and_not_constant(zoo_model, name):
    x = np.random.default_rng(0).standard_normal((1, *zoo.input_shape(name))).astype(np.float32)
    (y,) = run_file(zoo_model(name), x)
    assert y.shape == OUTPUT_SHAPES.get(name, (1, 1000))
    assert np.isfinite(y).all() and np.ptp(y) > 0
    assert 0.1 < np.sqrt(np.mean(y ** 2)) < 100  # He init + near-identity BN: no blow-up, no collapse


def test_yolov8n_boxes_lie_on_their_anchors_and_scores_are_probabilities(zoo_model):
    """The decoded head: box centres near their anchor cell (DFL distances of 0..15 strides), widths >= 0."""
    x = np.random.default_rng(0).standard_normal((1, 3, 640, 640)).astype(np.float32)
    (y,) = run_file(zoo_model('yolov8n'), x)
    xy, wh, scores = y[0, :2], y[0, 2:4], y[0, 4:]
    assert (wh >= 0).all() and (wh <= 2 * 15 * 32).all() and ((0 < scores) & (scores < 1)).all()
    assert (-15 * 32 <= xy).all() and (xy <= 640 + 15 * 32).all() and np.ptp(scores) > 0.01


def test_published_counts_of_the_detector_and_the_segmenter():
    """Exact, not only within 1 %: the same layers as the exported models."""
    assert zoo.parameter_count(zoo.build('yolov8n')) == 3_151_904
    assert zoo.parameter_count(zoo.build('lraspp_mobilenet_v3_large')) == 3_221_538


def test_tiny_is_small_and_has_the_branches_the_cut_tests_need():
    model = zoo.build('tiny')
    ops = [n.op_type for n in model.graph.node]
    assert 'Add' in ops and 'Concat' in ops and ops.count('BatchNormalization') == 4
    assert zoo.parameter_count(model) < 20_000


def test_batchnorm_stays_a_separate_node():
    ops = [n.op_type for n in zoo.build('mobilenet_v2').graph.node]
    assert ops.count('BatchNormalization') == ops.count('Conv') == 52


def test_same_seed_same_bytes_other_seed_other_weights():
    a, b, c = (zoo.build('tiny', seed=s).SerializeToString() for s in (0, 0, 1))
    assert a == b and a != c and len(a) == len(c)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(PipeitError, match='unknown zoo network .*resnet50.*tiny'):
        zoo.build('resnet18')


def test_zoo_path_builds_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    path = zoo.zoo_path('tiny')
    assert path.startswith(str(tmp_path / 'pipeit' / 'zoo')) and f'v{zoo.ZOO_VERSION}' in path
    stamp = os.stat(path).st_mtime_ns
    assert zoo.zoo_path('tiny') == path and os.stat(path).st_mtime_ns == stamp
    assert zoo.zoo_path('tiny', seed=3) != path
    assert os.listdir(os.path.dirname(path)) and not [f for f in os.listdir(os.path.dirname(path)) if f.startswith('.')]


def test_default_model_is_mobilenet_v2(monkeypatch, tmp_path):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    path = zoo.default_model_path()
    assert os.path.basename(path).startswith('mobilenet_v2') and os.path.getsize(path) > 10 * 2**20


def test_cli_list(run_cli):
    code, out, _ = run_cli('zoo', '--list')
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == list(zoo.NETWORKS)
    code, out, _ = run_cli('zoo', '--list', '--json')
    rows = json.loads(out)
    assert code == 0 and {r['name']: r['published_params'] for r in rows}['resnet50'] == 25_557_032


def test_cli_build_writes_the_same_model_as_the_api(run_cli, tmp_path):
    out_path = tmp_path / 'tiny.onnx'
    code, out, err = run_cli('zoo', 'tiny', '--out', out_path)
    assert code == 0 and out.strip() == str(out_path) and 'built tiny' in err
    assert out_path.read_bytes() == zoo.build('tiny').SerializeToString()
    code, out, _ = run_cli('zoo', 'tiny', '--out', tmp_path / 's1.onnx', '--seed', '1', '--json')
    assert code == 0 and json.loads(out)['bytes'] == os.path.getsize(tmp_path / 's1.onnx')


@pytest.mark.parametrize('argv,words', [
    (['zoo', 'resnet18', '--out', 'x.onnx'], 'unknown zoo network'),
    (['zoo'], '--list'),
    (['zoo', 'tiny', '--out', '/nonexistent-dir/tiny.onnx'], 'cannot write /nonexistent-dir/tiny.onnx'),
], ids=['unknown', 'no-name', 'bad-dir'])
def test_cli_bad_input_exits_2(run_cli, argv, words):
    code, out, err = run_cli(*argv)
    assert code == 2 and out == '' and err.count('\n') == 1 and words in err
