"""Every zoo network through graph.load: MACs as published, every segment chain reproduces the model."""
import math

from graph_checks import assert_chain_matches
import pytest

from pipeit_ros.model import graph, zoo

BIG = {'alexnet', 'resnet50'}


def _nets(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in names]


@pytest.fixture(scope='module')
def loaded(zoo_model):
    cache = {}

    def get(name):
        if name not in cache:
            cache.clear()  # hold one big model at a time
            cache[name] = graph.load(zoo_model(name))
        return cache[name]
    return get


@pytest.mark.parametrize('name', _nets(zoo.NETWORKS))
def test_chained_segments_reproduce_the_model_at_every_cut_point(loaded, zoo_model, name):
    g = loaded(name)
    assert len(g.cut_points) >= 4
    assert_chain_matches(g, zoo_model(name))


@pytest.mark.parametrize('name', _nets(zoo.PUBLISHED))
def test_macs_within_5pc_of_published(loaded, name):
    _, macs = zoo.PUBLISHED[name]
    assert abs(loaded(name).total_macs - macs) <= 0.05 * macs


# name -> {layer type: count} the architecture implies
STRUCTURE = {
    'mobilenet_v1': {'dwconv': 13, 'conv': 14, 'fc': 1},
    'mobilenet_v2': {'dwconv': 17, 'eltwise': 10, 'fc': 1},
    'googlenet': {'concat': 9, 'fc': 1},
    'squeezenet1_1': {'concat': 8, 'fc': 0},
    'resnet50': {'eltwise': 16, 'conv': 53, 'fc': 1},
}


@pytest.mark.parametrize('name', _nets(STRUCTURE))
def test_layer_types_and_no_cut_inside_blocks(loaded, name):
    g = loaded(name)
    counts = {kind: sum(layer.op_type == kind for layer in g.layers) for kind in STRUCTURE[name]}
    assert counts == STRUCTURE[name]
    cut_before = {c.index for c in g.cut_points}
    for layer in g.layers:  # a branch-joining layer and the branches it joins are never separated
        if layer.op_type in ('eltwise', 'concat'):
            assert layer.index not in cut_before
    # total counts each initializer once; layers sharing one (MobileNet v2's ReLU6 bounds) each count it
    assert g.total_weight_bytes == sum(4 * math.prod(t.dims) for t in g.model.graph.initializer)
    assert sum(layer.weight_bytes for layer in g.layers) >= g.total_weight_bytes
