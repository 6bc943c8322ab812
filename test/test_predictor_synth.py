"""The predictor's training data: synthetic probes read back as the layers real networks have; the report."""
import json

import numpy as np
import pytest
from test_profiler import small_topology, topology_yaml

from pipeit_ros.cost import synth
from pipeit_ros.cost import timing as measure

EXPECTED = {'conv': ('conv', ()), 'conv_pool': ('conv', ('MaxPool',)), 'conv_gpool': ('conv', ('GlobalAveragePool',)),
            'dwconv': ('dwconv', ()), 'gconv': ('gconv', ()), 'fc': ('fc', ()), 'pool': ('pool', ()),
            'gpool': ('gpool', ()), 'add': ('eltwise', ()), 'concat': ('concat', ()), 'deconv': ('deconv', ()),
            'resize': ('resize', ()), 'split': ('other', ()), 'transpose': ('other', ()), 'matmul': ('matmul', ())}


def test_sweep_specs_are_seeded_sized_and_capped():
    for size, col in (('quick', 1), ('full', 0)):
        specs = synth.sweep_specs(size, seed=0)
        assert specs == synth.sweep_specs(size, seed=0)
        assert len(specs) == len(set(specs))
        for kind in synth.KINDS:
            assert sum(s.kind == kind for s in specs) == synth.COUNTS[kind][col], (size, kind)
        assert max(synth.probe_macs(s) for s in specs) <= synth.MAX_MACS[size]
    assert synth.sweep_specs('quick', seed=1) != synth.sweep_specs('quick', seed=0)


@pytest.mark.parametrize('kind', synth.KINDS)
def test_probe_reads_back_as_the_layer_type_it_stands_for(kind, tmp_path):
    spec = next(s for s in synth.sweep_specs('quick') if s.kind == kind)
    g, blob = synth.load_probe(spec, str(tmp_path), 0)
    op_type, fused = EXPECTED[kind]
    main = [d for d in g.layers if d.op_type == op_type]
    assert main, [d.op_type for d in g.layers]
    assert all(f in main[0].fused for f in fused)
    assert isinstance(blob, bytes) and blob


def test_measure_units_and_samples_subset_concat(tmp_path):
    topology = small_topology(1)
    configs = measure.core_configs(topology)
    specs = [s for s in synth.sweep_specs('quick') if s.kind in ('add', 'pool')][:2]
    units = [(f'p{i}', *synth.load_probe(s, str(tmp_path), i)) for i, s in enumerate(specs)]
    samples = synth.measure_units(units, configs, budget_s=0.01, trace_runs=2, progress=False)
    n_layers = sum(len(u[1].layers) for u in units)
    assert samples.layer_ms.shape == (len(configs), n_layers)
    assert samples.unit_wall_ms.shape == (len(configs), len(units))
    assert np.all(samples.unit_wall_ms > 0) and np.all(samples.overhead_ms > 0)
    first = samples.subset(lambda g: g == 'p0')
    assert first.groups == ['p0'] * len(units[0][1].layers)
    both = synth.Samples.concat([first, samples.subset(lambda g: g == 'p1')])
    np.testing.assert_allclose(both.layer_ms, samples.layer_ms)
    assert both.unit_layers == samples.unit_layers


@pytest.mark.slow
def test_cli_train_quick_report_prints_mape_per_config(run_cli, tmp_path):
    topo = topology_yaml(tmp_path, small_topology(2))
    code, out, err = run_cli('train', '--quick', '--report', '--nets', 'tiny', '--topology', topo, '--json',
                             '--no-progress')
    assert code == 0, err
    report = json.loads(out)['report']
    entry = report['nets']['tiny']
    assert set(entry) == {'linear', 'gbr', 'hybrid'}
    for e in entry.values():
        assert len(e['layer_wape']) == len(report['configs'])
        assert all(np.isfinite(v) and v >= 0 for v in e['segment_wape'])
