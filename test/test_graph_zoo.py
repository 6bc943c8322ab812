"""Every zoo network through graph.load: MACs as published, every cut reproduces the model."""
import math

from graph_checks import ATOL, RTOL, chain, run_file
import numpy as np
from onnx import helper
import pytest

from pipeit_ros.model import graph, zoo

BIG = {'alexnet', 'resnet50'}
SPLITS = 8      # two-stage splits tried per net at most (a seeded sample of its cut points beyond that)


def _nets(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in names]


@pytest.fixture(scope='module')
def loaded(zoo_model):
    cache = {}

    def get(name, max_cut_tensors=graph.DEFAULT_MAX_CUT_TENSORS):
        if (name, max_cut_tensors) not in cache:
            cache.clear()  # hold one big model at a time
            cache[name, max_cut_tensors] = graph.load(zoo_model(name), max_cut_tensors=max_cut_tensors)
        return cache[name, max_cut_tensors]
    return get


@pytest.mark.parametrize('name', _nets(zoo.NETWORKS))
def test_split_and_chain_equals_the_model_at_every_legal_cut(loaded, zoo_model, name):
    """Every segment chained (so every legal cut at once), then two-stage splits at SPLITS sampled cuts."""
    g = loaded(name)
    assert len(g.cut_points) >= 4
    x = np.random.default_rng(0).standard_normal(g.input_shape).astype(np.float32)
    want = run_file(zoo_model(name), x, g.input_name)
    assert all(np.isfinite(w).all() and np.ptp(w) > 0 for w in want)
    cuts = [c.index for c in g.cut_points]
    if len(cuts) > SPLITS:
        cuts = sorted(np.random.default_rng(15).choice(cuts, SPLITS, replace=False))
    n = len(g.layers)
    for ranges in [None] + [[(0, c - 1), (c, n - 1)] for c in cuts]:
        for w, o in zip(want, chain(g, x, ranges)):
            # onnxruntime fuses across what is one model here and a cut there: float rounding, at the output's scale
            atol = ATOL * max(1.0, float(np.sqrt(np.mean(w ** 2))))
            np.testing.assert_allclose(o, w, rtol=RTOL, atol=atol, err_msg=f'{name} split {ranges or "all"}')


@pytest.mark.parametrize('name', _nets(zoo.PUBLISHED))
def test_macs_within_5pc_of_published(loaded, name):
    _, macs = zoo.PUBLISHED[name]
    assert abs(loaded(name).total_macs - macs) <= 0.05 * macs


@pytest.mark.parametrize('name', ['yolov8n', 'lraspp_mobilenet_v3_large'])
def test_detector_and_segmenter_macs_within_1pc_of_published(loaded, name):
    _, macs = zoo.PUBLISHED[name]
    assert abs(loaded(name).total_macs - macs) <= 0.01 * macs


def test_multi_tensor_cuts_break_up_the_detector_neck(loaded):
    """YOLOv8n: with chain cuts only, one segment holds most of the work; with 4 tensors no segment does."""
    def largest_share(g):
        macs = [sum(g.layers[i].macs for i in range(a, b + 1)) for a, b in g.segments()]
        return max(macs) / sum(macs)
    assert largest_share(loaded('yolov8n', max_cut_tensors=1)) > 0.75
    g = loaded('yolov8n')
    assert largest_share(g) < 0.15 and max(len(c.tensors) for c in g.cut_points) == 4


# name -> {layer type: count} the architecture implies
STRUCTURE = {
    'mobilenet_v1': {'dwconv': 13, 'conv': 14, 'fc': 1},
    'mobilenet_v2': {'dwconv': 17, 'eltwise': 10, 'fc': 1},
    'googlenet': {'concat': 9, 'fc': 1},
    'squeezenet1_1': {'concat': 8, 'fc': 0},
    'resnet50': {'eltwise': 16, 'conv': 53, 'fc': 1},
    'yolov8n': {'conv': 64, 'concat': 19, 'resize': 2, 'pool': 3, 'eltwise': 8},
    'lraspp_mobilenet_v3_large': {'dwconv': 15, 'gpool': 9, 'resize': 2, 'eltwise': 20},
}


@pytest.mark.parametrize('name', _nets(STRUCTURE))
def test_layer_types_and_no_cut_inside_blocks(loaded, name):
    g = loaded(name, max_cut_tensors=1)
    counts = {kind: sum(layer.op_type == kind for layer in g.layers) for kind in STRUCTURE[name]}
    assert counts == STRUCTURE[name]
    cut_before = {c.index for c in g.cut_points}
    for layer in g.layers:  # a branch-joining layer and the branches it joins are never separated
        if layer.op_type in ('eltwise', 'concat'):
            assert layer.index not in cut_before
    # total counts each initializer once; layers sharing one (MobileNet v2's ReLU6 bounds) each count it
    assert g.total_weight_bytes == sum(helper.tensor_dtype_to_np_dtype(t.data_type).itemsize * math.prod(t.dims)
                                       for t in g.model.graph.initializer)
    assert sum(layer.weight_bytes for layer in g.layers) >= g.total_weight_bytes
