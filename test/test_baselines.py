"""The baselines are valid plans of the intended shape, and they run on the engine."""
import numpy as np
import pytest

from pipeit_ros.engine.pipeline import Pipeline
from pipeit_ros.engine.sessions import make_session
from pipeit_ros.hw.cpus import allowed_cpus
from pipeit_ros.hw.topology import Cluster, Topology
from pipeit_ros.plan import validate
from pipeit_ros.planning.baselines import NAMES, baselines

TOPOLOGIES = {
    '2x1': Topology(clusters=(Cluster('c0', (0,), 'host', 1.0), Cluster('c1', (1,), 'host', 1.0))),
    '4+4': Topology(clusters=(Cluster('little', (0, 1, 2, 3), 'a55', 0.4), Cluster('big', (4, 5, 6, 7), 'a76', 1.0))),
    '2+4': Topology(clusters=(Cluster('big', (4, 5), 'a76', 1.0), Cluster('little', (0, 1, 2, 3), 'a55', 0.4))),
    'one-cluster': Topology(clusters=(Cluster('all', (0, 1, 2), 'x', 1.0),)),
}


@pytest.fixture(scope='module')
def tiny(zoo_model):
    from pipeit_ros.model import graph
    return graph.load(zoo_model('tiny'))


@pytest.mark.parametrize('topo_id', list(TOPOLOGIES), ids=list(TOPOLOGIES))
def test_baselines_are_valid_and_shaped_as_named(tiny, topo_id):
    topo = TOPOLOGIES[topo_id]
    plans = baselines(tiny, topo)
    assert list(plans) == list(NAMES)
    for name, plan in plans.items():
        validate(plan, topo, n_layers=len(tiny.layers), cut_points=tiny.cut_points)
        assert len(plan.stages) == 1 and plan.name == name and plan.model_hash == tiny.model_hash
        assert plan.topology_fingerprint == topo.fingerprint()
    ort, best = plans['ort_all_cores'].stages[0], plans['best_cluster'].stages[0]
    assert not ort.pinned and ort.threads == len(topo.cpus) and set(ort.cpus) == set(topo.cpus)
    assert best.cpus == topo.clusters[0].cpus and best.threads == topo.clusters[0].size
    assert best.cluster == max(topo.clusters, key=lambda c: c.capacity).name
    per_core = plans['data_parallel_core'].stages[0]
    assert per_core.threads == 1 and per_core.replicas == len(topo.cpus)
    per_cluster = plans['data_parallel_cluster'].stages[0]
    sizes = {c.size for c in topo.clusters}
    if len(sizes) == 1:
        assert per_cluster.replicas == len(topo.clusters) and per_cluster.threads == sizes.pop()
        assert 'replicas' not in plans['data_parallel_cluster'].notes
    else:   # 2+4: replicas of gcd = 2 cores, one on big, two on little
        assert (per_cluster.threads, per_cluster.replicas) == (2, 3)
        assert 'differ in size' in plans['data_parallel_cluster'].notes['replicas']


@pytest.mark.skipif(len(allowed_cpus()) < 2, reason='needs CPUs 0 and 1')
@pytest.mark.skipif(not {0, 1} <= set(allowed_cpus()), reason='needs CPUs 0 and 1')
@pytest.mark.parametrize('name', NAMES, ids=NAMES)
def test_every_baseline_runs_on_the_engine(tiny, name):
    plan = baselines(tiny, TOPOLOGIES['2x1'])[name]
    x = np.random.default_rng(0).standard_normal(tiny.input_shape).astype(np.float32)
    reference = make_session(tiny.extract_bytes(0, len(tiny.layers) - 1), (0,), weights=tiny.weights).run(None, {'input': x})
    with Pipeline(tiny, plan, topology=TOPOLOGIES['2x1']) as pipe:
        results = pipe.run([x] * 6)
    assert [r.seq for r in results] == list(range(6))
    for r in results:
        np.testing.assert_allclose(r.outputs[0], reference[0], rtol=1e-5, atol=1e-6)
