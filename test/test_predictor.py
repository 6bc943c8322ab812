"""The layer-time predictor: scikit-learn contract, calibration, persistence, cost tables, on-paper scaling."""
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from test_profiler import small_topology, topology_yaml

from pipeit_ros.cost import onpaper
from pipeit_ros.cost import predictor as pred
from pipeit_ros.cost import timing as measure
from pipeit_ros.cost.synth import Samples
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw.topology import Cluster, Topology


def formula_ms(d, cfg):
    """A known time law (ms) to train on: MACs spread over the cores plus a per-byte and fixed part."""
    return 0.002 + d.macs / 2e9 / (0.9 * cfg.cores + 0.1) + d.output_bytes / 5e9


@pytest.fixture(scope='module')
def graphs(zoo_model):
    from pipeit_ros.model import graph
    return {name: graph.load(zoo_model(name)) for name in ('tiny', 'squeezenet1_1')}


def formula_samples(graphs, topology, seed=0):
    """Samples whose layer and wall times follow formula_ms (with 5 % seeded noise): fast, deterministic."""
    rng = np.random.default_rng(seed)
    configs = measure.core_configs(topology)
    descriptors = [d for g in graphs.values() for d in g.layers]
    layer_ms = np.array([[formula_ms(d, c) for d in descriptors] for c in configs])
    layer_ms *= rng.uniform(0.95, 1.05, layer_ms.shape)
    units = [[i] for i in range(len(descriptors))]
    walls = layer_ms + 0.02 + 0.001 * np.arange(len(configs))[:, None]
    return Samples(configs, descriptors, [f'g{i % 7}' for i in range(len(descriptors))], layer_ms,
                   [f'u{i}' for i in range(len(units))], units, [d.output_bytes * 2 for d in descriptors], walls,
                   np.full(len(configs), 0.01), {'size': 'formula'})


@pytest.fixture(scope='module')
def topology():
    return small_topology(1)


@pytest.fixture(scope='module')
def fitted(graphs, topology):
    samples = formula_samples(graphs, topology)
    return pred.fit_samples(samples, 'hybrid').calibrate(samples, topology), samples


def test_init_only_stores_parameters_and_clone_round_trips():
    p = pred.LayerTimePredictor(kind='gbr', max_iter=50, random_state=3)
    assert p.get_params()['kind'] == 'gbr' and p.get_params()['random_state'] == 3
    assert not [k for k in vars(p) if k.endswith('_')]
    assert clone(p).get_params() == p.get_params()


def test_predict_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        pred.LayerTimePredictor().predict(np.zeros((1, len(pred.FEATURES))))


@pytest.mark.parametrize('bad', [{'kind': 'forest'}], ids=['unknown-kind'])
def test_fit_rejects_unknown_kind_quoting_the_allowed(bad, graphs, topology):
    samples = formula_samples(graphs, topology)
    X = pred.design_matrix(samples.descriptors, samples.configs)
    with pytest.raises(ValueError, match='linear'):
        pred.LayerTimePredictor(**bad).fit(X, samples.layer_ms.reshape(-1))


@pytest.mark.parametrize('kind', pred.KINDS)
def test_every_kind_learns_the_formula(kind, graphs, topology):
    samples = formula_samples(graphs, topology)
    X = pred.design_matrix(samples.descriptors, samples.configs)
    y = samples.layer_ms.reshape(-1)
    p = pred.LayerTimePredictor(kind=kind, max_iter=100, random_state=0)
    assert p.fit(X, y) is p
    assert {'n_features_in_', 'linear_', 'booster_'} <= set(vars(p))
    assert pred.mape(p.predict(X), y) < 30
    again = pred.LayerTimePredictor(kind=kind, max_iter=100, random_state=0).fit(X, y)
    np.testing.assert_allclose(again.predict(X), p.predict(X))  # seeded: same fit twice


def test_cost_table_shape_and_values_are_sane(fitted, graphs, topology):
    p, _ = fitted
    g = graphs['squeezenet1_1']
    table = p.cost_table(g, topology)
    configs = measure.core_configs(topology)
    assert table.source == 'predictor' and table.meta['prediction'] is True
    assert table.configs == [c.key for c in configs]
    assert table.segments == [tuple(s) for s in g.segments()]
    assert table.seg_ms.shape == (len(configs), len(g.segments()))
    assert np.all(table.seg_ms > 0) and np.all(table.overhead_ms > 0)
    if len(configs) > 1:  # more cores: faster, but not absurdly (the formula gives at most 1.8x)
        ratio = table.seg_ms[1].sum() / table.seg_ms[0].sum()
        assert 0.3 < ratio < 1.05


def test_calibration_recovers_the_segment_term(fitted):
    p, _ = fitted
    # walls = layers + 0.02 (+0.001 per config index) over an overhead of 0.01: the fitted terms sum to ~0.01
    for i, coef in enumerate(p.segment_coef_):
        assert coef[0] + coef[1] == pytest.approx(0.01 + 0.001 * i, abs=0.004)


def test_joblib_round_trip_keeps_predictions(fitted, graphs, topology, tmp_path):
    p, _ = fitted
    path = p.save(str(tmp_path / 'p.joblib'))
    back = pred.load(path, topology)
    g = graphs['tiny']
    np.testing.assert_allclose(back.cost_table(g, topology).seg_ms, p.cost_table(g, topology).seg_ms)
    assert back.meta_['features'] == list(pred.FEATURES)


def test_load_refuses_another_topology_with_a_clear_message(fitted, graphs, topology, tmp_path):
    p, _ = fitted
    path = p.save(str(tmp_path / 'p.joblib'))
    other = small_topology(2) if len(topology.cpus) == 2 else Topology(
        (Cluster('z', topology.cpus, 'host', 1.0, emulate_share=0.5),), 'other')
    with pytest.raises(PipeitError, match=f'trained for topology fingerprint {p.topology_fingerprint_}') as exc:
        pred.load(path, other)
    assert other.fingerprint() in str(exc.value) and 'pipeit train' in str(exc.value)
    with pytest.raises(PipeitError, match='trained for topology'):
        p.cost_table(graphs['tiny'], other)


@pytest.mark.parametrize('content', [b'', b'garbage', None], ids=['empty', 'garbage', 'missing'])
def test_load_refuses_a_file_that_is_not_a_predictor(tmp_path, topology, content):
    path = tmp_path / 'x.joblib'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PipeitError, match='x.joblib'):
        pred.load(str(path), topology)


def test_scaled_for_hikey970_is_labelled_and_orders_the_clusters(fitted, graphs):
    from pipeit_ros.hw import topology as topo
    p, _ = fitted
    board = topo.resolve('hikey970', check_cpus=False)
    table = onpaper.scaled_for(board, p, host_mobilenet_ms=5.0).cost_table(graphs['squeezenet1_1'])
    assert table.source == 'predictor-scaled' and table.meta['on_paper'] is True
    big1 = table.seg_ms[table.config_index('big', 1)].sum()
    big4 = table.seg_ms[table.config_index('big', 4)].sum()
    little1 = table.seg_ms[table.config_index('little', 1)].sum()
    assert big4 < big1 < little1
    assert 1.2 < little1 / big1 < 5  # A73 @ 2.36 GHz vs A53 @ 1.84 GHz per the documented speed table


def test_scaled_for_unknown_core_type_says_how_to_fix(fitted, graphs):
    p, _ = fitted
    board = Topology((Cluster('x', (0, 1), 'Mystery-Core', 1.0, max_freq_khz=2000000),), 'mystery')
    with pytest.raises(PipeitError, match="speeds=.*'Mystery-Core'"):
        onpaper.scaled_for(board, p, host_mobilenet_ms=5.0).cost_table(graphs['tiny'])


@pytest.mark.parametrize('argv', [
    ['train', '--quick', '--nets', 'no_such_net'],
    ['train', '--quick', '--out', '/no/such/dir/p.joblib'],
    ['train', '--quick', '--topology', 'no-such-topology'],
    ['train', '--kind', 'forest'],
], ids=['unknown-net', 'unwritable-out', 'unknown-topology', 'unknown-kind'])
def test_cli_train_bad_input_exits_2(run_cli, argv):
    if argv[1] == '--kind':
        with pytest.raises(SystemExit) as exc:
            run_cli(*argv)
        assert exc.value.code == 2
        return
    code, _, err = run_cli(*argv)
    assert code == 2
    assert err.startswith('pipeit: error:')


# -- measured: the --quick sweep ----------------------------------------------------------------------------

@pytest.mark.slow
def test_quick_sweep_train_cost_table_and_reuse(run_cli, tmp_path, zoo_model):
    from pipeit_ros.model import graph
    topo = topology_yaml(tmp_path, small_topology(2))
    code, out, err = run_cli('train', '--quick', '--topology', topo, '--no-progress')
    assert code == 0, err
    assert 'saved as' in err and out.strip().endswith('.joblib')
    path = out.strip().rsplit(' ', 1)[-1]
    code, out2, err = run_cli('train', '--quick', '--topology', topo)
    assert code == 0 and 'reusing cached predictor' in err and out2 == out
    from pipeit_ros.hw import topology as topo_mod
    topology = topo_mod.load_yaml(topo)
    p = pred.load(path, topology)
    table = p.cost_table(graph.load(zoo_model('tiny')), topology)
    assert np.all(table.seg_ms > 0) and np.all(np.isfinite(table.seg_ms))
    assert table.seg_ms.shape == (len(measure.core_configs(topology)), len(table.segments))
