"""pipeit_ros.model.graph: layer grouping, descriptors, cut points and extraction on small models built here."""
import json
import os

from graph_checks import DagBuilder, assert_chain_matches, build_blocks, crossing, random_topological_order, save
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import pytest

from pipeit_ros.errors import PipeitError, PlanError
from pipeit_ros.model import graph


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from pipeit_ros.model import zoo
    path = str(tmp_path_factory.mktemp('tiny') / 'tiny.onnx')
    zoo.save('tiny', path)
    return path, graph.load(path, max_cut_tensors=1)   # the Pipe-it paper's chain cuts: one tensor crosses


def test_tiny_layers_cuts_and_descriptors(tiny):
    _, g = tiny
    assert [layer.op_type for layer in g.layers] == \
        ['conv', 'conv', 'conv', 'eltwise', 'conv', 'conv', 'concat', 'conv', 'fc']
    # residual block = layers 1..3, concat block = 4..6: never cut inside them
    assert [c.index for c in g.cut_points] == [1, 4, 7, 8]
    assert g.segments() == [(0, 0), (1, 3), (4, 6), (7, 7), (8, 8)]
    stem, add, head, fc = g.layers[0], g.layers[3], g.layers[7], g.layers[8]
    assert stem.fused == ('BatchNormalization', 'Relu', 'MaxPool')
    assert (stem.in_shape, stem.out_shape, stem.kernel, stem.padding, stem.filters) == \
        ((3, 32, 32), (16, 16, 16), (3, 3), (1, 1, 1, 1), 16)
    assert stem.macs == 16 * 32 * 32 * 3 * 3 * 3  # conv output before the fused pool
    assert stem.weight_bytes == 4 * (16 * 3 * 9 + 4 * 16)  # conv weight + BN's four vectors
    assert add.macs == 16 * 16 * 16 and add.fused == ('Relu',) and add.weight_bytes == 0
    assert head.stride == (2, 2) and head.out_shape == (32, 1, 1) and head.output_bytes == 32 * 4
    assert (fc.in_shape, fc.out_shape, fc.filters, fc.macs) == ((32, 1, 1), (10, 1, 1), 10, 320)
    assert g.cut_points[0].shapes == ((1, 16, 16, 16),) and g.cut_points[0].bytes == 16 * 16 * 16 * 4
    assert g.total_macs == sum(layer.macs for layer in g.layers)
    weights_dir = os.path.dirname(g.weights.path)    # the prepared model's weights lie in its external-data file
    assert g.total_weight_bytes == sum(numpy_helper.to_array(t, weights_dir).nbytes for t in g.model.graph.initializer)
    assert not g.batch_fixed and g.input_shape == (1, 3, 32, 32) and len(g.model_hash) == 16


def test_every_node_in_exactly_one_layer_and_extracts_hold_exactly_their_layers(tiny):
    _, g = tiny
    names = [n for layer in g.layers for n in layer.nodes]
    assert sorted(names) == sorted(node.name for node in g.model.graph.node)
    for first, last in g.segments() + [(0, len(g.layers) - 1), (1, 6)]:
        sub = g.extract(first, last)
        want = {n for layer in g.layers[first:last + 1] for n in layer.nodes}
        assert {node.name for node in sub.graph.node} == want


def test_cut_points_agree_with_brute_force(tiny):
    _, g = tiny
    cuts = {c.index: c.tensors for c in g.cut_points}
    for i in range(1, len(g.layers)):
        tensors = crossing(g, i)
        assert (i in cuts) == (len(tensors) == 1), (i, tensors)
        if i in cuts:
            assert cuts[i] == tuple(tensors)


def test_chained_segments_reproduce_the_model(tiny):
    path, g = tiny
    assert_chain_matches(g, path)
    assert_chain_matches(g, path, ranges=[(0, 3), (4, 8)])


def test_extract_bytes_is_extract_serialized_and_memoised(tiny, monkeypatch):
    g = graph.load(tiny[0], max_cut_tensors=1)  # a fresh memo
    for first, last in g.segments() + [(0, 8)]:
        data = g.extract_bytes(first, last)
        assert onnx.load_from_string(data).SerializeToString() == g.extract(first, last).SerializeToString()
        assert g.extract_bytes(first, last) is data
    monkeypatch.setattr(graph, 'EXTRACT_CACHE_BYTES', 1)
    g.extract_bytes(1, 6)
    g.extract_bytes(4, 7)
    assert list(g._bytes_cache) == [(4, 7)]  # bounded: the oldest entries went


@pytest.mark.parametrize('index', [-1, 2, 3, 10, 1.5, 'x'], ids=lambda v: f'boundary-{v}')
def test_boundary_refuses_illegal_indices(tiny, index):
    _, g = tiny
    with pytest.raises(PlanError, match='legal boundaries are 0, 1, 4, 7, 8, 9'):
        g.boundary(index)


@pytest.mark.parametrize('first,last', [(0, 1), (2, 3), (4, 3), (0, 9), (-1, 0), (None, 3)], ids=str)
def test_extract_refuses_ranges_off_the_cut_points(tiny, first, last):
    _, g = tiny
    with pytest.raises(PlanError):
        g.extract(first, last)
    with pytest.raises(PlanError):
        g.extract_bytes(first, last)


def test_boundaries_of_ends(tiny):
    _, g = tiny
    assert g.boundary(0) == ['input'] and g.boundary(len(g.layers)) == ['logits'] and g.boundary(4) == ['res.add.relu']


def _geometry_model():
    """SAME_UPPER strided conv, depthwise, grouped, standalone pools, MatMul+Add fc, Softmax, a skip."""
    b = DagBuilder(channels=4, size=8, seed=3)
    init = b._w
    x = b.node('Conv', ['input', init('s.w', (8, 4, 3, 3), 0.2)], 's', 8, kernel_shape=[3, 3], strides=[2, 2],
               auto_pad='SAME_UPPER')
    x = b.node('Relu', [x], 's.relu', 8)
    dw = b.node('Conv', [x, init('dw.w', (8, 1, 3, 3), 0.3)], 'dw', 8, kernel_shape=[3, 3], pads=[1] * 4, group=8)
    gc = b.node('Conv', [dw, init('gc.w', (8, 4, 1, 1), 0.3)], 'gc', 8, kernel_shape=[1, 1], group=2)
    x = b.add(x, gc, 'skip')
    x = b.node('AveragePool', [x], 'avg', 8, kernel_shape=[2, 2], strides=[2, 2])
    x = b.node('GlobalMaxPool', [x], 'gmp', 8)
    x = b.node('Flatten', [x], 'flat', 8, axis=1)
    x = b.node('MatMul', [x, init('fc.w', (8, 6), 0.3)], 'fc', 6)
    x = b.node('Add', [x, init('fc.b', (6,), 0.1)], 'fc.bias', 6)
    b.node('Softmax', [x], 'prob', 6, axis=-1)
    b.flat.add('prob')
    return b.model(['prob'])


def test_descriptors_of_each_kind(tmp_path):
    path = save(_geometry_model(), tmp_path / 'geometry.onnx')
    g = graph.load(path, max_cut_tensors=1)
    by = {layer.name: layer for layer in g.layers}
    assert [layer.op_type for layer in g.layers] == ['conv', 'dwconv', 'gconv', 'eltwise', 'pool', 'gpool', 'fc']
    s = by['s']
    assert (s.out_shape, s.stride, s.padding, s.macs) == ((8, 4, 4), (2, 2), (0, 0, 1, 1), 8 * 4 * 4 * 4 * 9)
    assert (by['dw'].groups, by['dw'].macs) == (8, 8 * 4 * 4 * 9)
    assert (by['gc'].groups, by['gc'].filters, by['gc'].macs) == (2, 8, 8 * 4 * 4 * 4)
    assert (by['avg'].kernel, by['avg'].out_shape, by['avg'].macs) == ((2, 2), (8, 2, 2), 8 * 2 * 2 * 4)
    assert by['gmp'].fused == ('Flatten',) and by['gmp'].kernel == (2, 2) and by['gmp'].macs == 8 * 2 * 2
    fc = by['fc']
    assert (fc.fused, fc.in_shape, fc.out_shape, fc.filters, fc.macs) == (('Add', 'Softmax'), (8, 1, 1), (6, 1, 1),
                                                                          6, 48)
    assert [c.index for c in g.cut_points] == [1, 4, 5, 6]  # not inside the skip (dw, gc, skip)
    assert_chain_matches(g, path)


def test_symbolic_batch_and_exported_flatten_are_folded(tmp_path, run_cli):
    b = DagBuilder(channels=3, size=8, seed=1, batch='N')
    x = b.conv(b.conv('input', 'c1', cout=4), 'c2')
    b.head(x, exported_flatten=True)
    path = save(b.model(['logits']), tmp_path / 'exported.onnx')
    g = graph.load(path)
    assert g.batch_fixed and g.input_shape == (1, 3, 8, 8) and g.output_shapes == [(1, 5)]
    assert not any(node.op_type in ('Shape', 'Gather', 'Constant') for node in g.model.graph.node)
    assert g.layers[-1].op_type == 'fc' and g.cut_points[-1].index == len(g.layers) - 1
    assert g.cut_points[-1].shapes == ((1, 4),)
    assert_chain_matches(g, path)
    code, out, err = run_cli('inspect', '--json', path)
    assert code == 0 and json.loads(out)['batch_fixed'] is True and 'batch' in err


def test_a_graph_output_in_the_middle_is_never_cut_past(tmp_path):
    b = DagBuilder(channels=4, size=6, seed=2)
    x = b.conv('input', 'c1')
    aux = b.conv(x, 'aux')
    y = b.conv(x, 'c2')
    y = b.conv(y, 'c3')
    path = save(b.model([aux, y]), tmp_path / 'two_outputs.onnx')
    g = graph.load(path)
    assert g.output_names == [aux, y]
    assert [layer.name for layer in g.layers] == ['c1', 'aux', 'c2', 'c3']
    assert [c.index for c in g.cut_points] == [1]  # then 'aux' would have to cross with every later cut
    assert_chain_matches(g, path)


BLOCKS = ('conv', 'dwconv', 'pool', 'residual', 'inception', 'long_skip')
BRANCHY = {'residual', 'inception', 'long_skip'}


def check_blocks(tmp_path, blocks, seed, shuffle, batch, exported_flatten, name='dag.onnx', max_cut_tensors=1):
    b = build_blocks(blocks, seed, batch, exported_flatten)
    order = random_topological_order(b.nodes, np.random.default_rng(seed)) if shuffle else None
    path = save(b.model(['logits'], order=order), tmp_path / name)
    g = graph.load(path, max_cut_tensors=max_cut_tensors)
    cuts = {c.index: c for c in g.cut_points}
    for i in range(1, len(g.layers)):  # exactly the places where 1..max_cut_tensors tensors cross, no output
        tensors = crossing(g, i)
        legal = 1 <= len(tensors) <= (max_cut_tensors or len(tensors)) and not tensors & set(g.output_names)
        assert (i in cuts) == legal, (i, tensors)
        if legal:   # the crossing tensors in the order they were made, with their sizes
            c = cuts[i]
            assert set(c.tensors) == tensors and len(c.tensors) == len(tensors)
            assert list(c.tensors) == sorted(c.tensors, key=_made_at(g).__getitem__)  # stable: no two equal
            assert c.bytes == sum(c.sizes) == sum(4 * int(np.prod(s)) for s in c.shapes)
            assert g.boundary(i) == list(c.tensors)
    if max_cut_tensors != 1:
        assert_chain_matches(g, path, seed=seed)
        return
    block_of = {}
    for layer in g.layers:
        block_of[layer.index] = int(layer.name.split('.')[0][1:]) if layer.name.startswith('b') else None
    for i in cuts:  # never inside a residual or inception block
        k = block_of[i]
        if k and blocks[k - 1] in BRANCHY:
            assert block_of[i - 1] != k, (i, g.layers[i].name)
    for i in range(1, len(g.layers)):  # every block that starts a layer starts at a cut
        if block_of[i] and block_of[i] != block_of[i - 1]:
            assert i in cuts, (i, g.layers[i].name)
    assert_chain_matches(g, path, seed=seed)


@pytest.mark.parametrize('blocks,shuffle,batch,exported', [
    (('residual', 'inception'), False, 1, False),
    (('conv', 'long_skip', 'pool', 'residual'), True, 'N', True),
    (('inception', 'inception', 'dwconv'), True, 1, False),
    (('pool', 'pool', 'residual', 'long_skip'), False, 'N', False),
], ids=['res-inc', 'skip-shuffled-symbolic', 'inc-inc-shuffled', 'pools-symbolic'])
def test_dag_blocks(tmp_path, blocks, shuffle, batch, exported):
    check_blocks(tmp_path, blocks, seed=7, shuffle=shuffle, batch=batch, exported_flatten=exported)


def _made_at(g):
    """Tensor -> (layer, position in the layer) of the node that made it (the model input first)."""
    made, nodes = {g.input_name: (-1, 0)}, {n.name: n for n in g.model.graph.node}
    for layer in g.layers:
        for k, name in enumerate(layer.nodes):
            made.update((o, (layer.index, k)) for o in nodes[name].output)
    return made


@pytest.mark.parametrize('max_cut_tensors', [2, 3, 4, None], ids=lambda k: f'k{k}')
def test_dag_blocks_cut_where_up_to_k_tensors_cross(tmp_path, max_cut_tensors):
    check_blocks(tmp_path, ('residual', 'inception', 'long_skip'), seed=5, shuffle=True, batch=1,
                 exported_flatten=False, max_cut_tensors=max_cut_tensors)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=6), seed=st.integers(0, 2**16),
       shuffle=st.booleans(), symbolic=st.booleans(), exported=st.booleans(), k=st.integers(1, 4))
def test_random_dags_cut_only_where_few_tensors_cross(tmp_path, blocks, seed, shuffle, symbolic, exported, k):
    check_blocks(tmp_path, tuple(blocks), seed, shuffle, 'N' if symbolic else 1, exported, max_cut_tensors=k)


def test_inspect_human_output_marks_cuts_and_totals(tiny, run_cli):
    path, g = tiny
    code, out, err = run_cli('inspect', path, '--max-cut-tensors', '1')
    assert code == 0 and err == ''
    for layer in g.layers:
        assert layer.name in out
    assert f'{len(g.layers)} layers, {len(g.cut_points)} legal cut points' in out
    table = out[:out.index('(cut:')]   # the layer rows (the cut list follows)
    rows = [line.split() for line in table.splitlines() if line[:4].strip().isdigit()]
    assert [r[1] for r in rows if r[1].endswith('B')] == ['16KB', '16KB', '16KB', '128B']


def test_inspect_json_is_the_summary(tiny, run_cli):
    path, g = tiny
    code, out, _ = run_cli('inspect', path, '--json', '--max-cut-tensors', '1')
    data = json.loads(out)
    assert code == 0 and data == json.loads(json.dumps(g.summary()))
    assert data['n_layers'] == len(data['layers']) == 9
    assert [c['index'] for c in data['cut_points']] == [1, 4, 7, 8]
    assert data['layers'][0]['in_shape'] == [3, 32, 32]


def test_model_error_is_a_pipeit_error(tmp_path):
    with pytest.raises(PipeitError, match='no such file'):
        graph.load(str(tmp_path / 'missing.onnx'))


def test_const_only_weight_preprocessing_is_folded(tmp_path):
    """A Transpose of a weight (as some exporters write Gemm/MatMul) becomes an initializer."""
    b = DagBuilder(channels=2, size=4, seed=5)
    x = b.node('Flatten', ['input'], 'flat', 32, axis=1)
    b.nodes.append(helper.make_node('Transpose', ['w_t'], ['w'], name='wt', perm=[1, 0]))
    b.inits.append(numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32),
                                           'w_t'))
    b.node('MatMul', [x, 'w'], 'out', 3)
    b.flat.add('out')
    path = save(b.model(['out']), tmp_path / 'transposed.onnx')
    g = graph.load(path)
    assert [layer.op_type for layer in g.layers] == ['other', 'fc'] and g.layers[1].macs == 96
    assert [c.index for c in g.cut_points] == [1]
    assert_chain_matches(g, path)
    assert TensorProto.FLOAT == g.model.graph.initializer[-1].data_type


def test_shapes_onnx_cannot_infer_come_from_one_runtime_pass(tmp_path):
    """A Reshape whose target is computed from data: onnx shape inference leaves it unknown."""
    b = DagBuilder(channels=2, size=6, seed=4)
    y = b.conv('input', 'c1', cout=4)
    consts = {'zero': np.zeros((), np.float32), 'one': np.array([1], np.int64), 'minus1': np.array([-1], np.int64),
              'axes': np.array([0], np.int64)}
    b.inits += [numpy_helper.from_array(v, k) for k, v in consts.items()]
    b.nodes += [helper.make_node('Mul', [y, 'zero'], ['z'], name='z'),
                helper.make_node('ReduceSum', ['z'], ['s'], name='s', keepdims=0),
                helper.make_node('Cast', ['s'], ['k'], name='k', to=TensorProto.INT64),
                helper.make_node('Unsqueeze', ['k', 'axes'], ['k1'], name='k1'),
                helper.make_node('Add', ['k1', 'minus1'], ['k2'], name='k2'),
                helper.make_node('Concat', ['one', 'k2'], ['target'], name='target', axis=0)]
    b.node('Reshape', [y, 'target'], 'flat', 144)
    b.flat.add('flat')
    model = b.model(['flat'])
    for dim, name in zip(model.graph.output[0].type.tensor_type.shape.dim, ('N', 'F')):
        dim.dim_param = name  # as an exporter writes it: only running the model can tell F
    path = save(model, tmp_path / 'data_dependent.onnx')
    g = graph.load(path)
    assert g.output_shapes == [(1, 144)] and g.layers[-1].out_shape == (144, 1, 1)
    assert_chain_matches(g, path)


def test_extract_bytes_from_many_threads_at_once(tiny):
    from concurrent.futures import ThreadPoolExecutor
    g = graph.load(tiny[0])
    ranges = g.segments() * 4
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda r: g.extract_bytes(*r), ranges))
    assert all(data is g.extract_bytes(*r) for data, r in zip(results, ranges))


def _gated_model():
    """conv -> SiLU (Sigmoid * Mul) -> SE-like gate (x * HardSigmoid(conv(gap(x)))) -> ConvTranspose -> Resize,
    and a MatMul of two activations."""
    b = DagBuilder(channels=4, size=8, seed=6)
    x = b.conv('input', 'c1', bn=False, relu=False)
    s = b.node('Sigmoid', [x], 'c1.sig', 4)
    x = b.node('Mul', [s, x], 'c1.silu', 4)   # either order (YOLOv8n in the zoo has x first)
    g = b.node('GlobalAveragePool', [x], 'se.gap', 4)
    g = b.node('Conv', [g, b._w('se.w', (4, 4, 1, 1), 0.3)], 'se.fc', 4, kernel_shape=[1, 1])
    g = b.node('HardSigmoid', [g], 'se.hsig', 4, alpha=1 / 6, beta=0.5)
    x = b.node('Mul', [x, g], 'se.scale', 4)
    x = b.node('ConvTranspose', [x, b._w('up.w', (4, 2, 2, 2), 0.3)], 'up', 2, kernel_shape=[2, 2], strides=[2, 2])
    x = b.node('Resize', [x, '', b._w('half', (4,), 0.0)], 'down', 2, mode='linear')
    b.inits[-1].CopyFrom(numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), 'half'))
    y = b.node('Transpose', [x], 'xt', 2, perm=[0, 1, 3, 2])
    b.node('MatMul', [x, y], 'mm', 2)
    return b.model(['mm'])


def test_gated_activations_fuse_and_new_kinds_have_macs(tmp_path):
    path = save(_gated_model(), tmp_path / 'gated.onnx')
    g = graph.load(path)
    assert [(layer.op_type, layer.fused) for layer in g.layers] == [
        ('conv', ('Sigmoid', 'Mul')), ('gpool', ()), ('conv', ('HardSigmoid',)), ('eltwise', ()),
        ('deconv', ()), ('resize', ()), ('other', ()), ('matmul', ())]
    up, mm = g.layers[4], g.layers[7]
    assert (up.in_shape, up.out_shape, up.kernel, up.stride, up.filters) == ((4, 8, 8), (2, 16, 16), (2, 2), (2, 2), 2)
    assert up.macs == 4 * 8 * 8 * 2 * 2 * 2     # every input element times C_out x kh x kw
    assert mm.macs == 2 * 8 * 8 * 8             # out elements x K
    assert_chain_matches(g, path)


def test_max_cut_tensors_is_checked():
    with pytest.raises(PlanError, match='max_cut_tensors must be an integer >= 1'):
        graph.LayerGraph('x', _gated_model(), 'h', False, max_cut_tensors=0)


def test_inspect_lists_each_cut_with_its_tensors_and_bytes(tiny, run_cli):
    path, _ = tiny
    g = graph.load(path)
    assert g.max_cut_tensors == graph.DEFAULT_MAX_CUT_TENSORS == 4
    code, out, _ = run_cli('inspect', path)
    listing = out[out.index('cut points (at most 4 tensors cross)'):].splitlines()[2:2 + len(g.cut_points)]
    assert [int(line.split()[0]) for line in listing] == [c.index for c in g.cut_points] == list(range(1, 9))
    two = next(c for c in g.cut_points if len(c.tensors) == 2)
    line = listing[two.index - 1]
    assert all(t in line for t in two.tensors) and line.split()[1] == f'{two.bytes // 1024}KB'
    code, out, _ = run_cli('inspect', path, '--json')
    cut = json.loads(out)['cut_points'][two.index - 1]
    assert cut['tensors'] == list(two.tensors) and cut['bytes'] == sum(cut['sizes']) == two.bytes


@pytest.mark.parametrize('value', ['0', '-1'])
def test_inspect_refuses_a_bad_cut_limit(tiny, run_cli, value):
    code, out, err = run_cli('inspect', tiny[0], '--max-cut-tensors', value)
    assert code == 2 and out == '' and err.count('\n') == 1 and 'max-cut-tensors' in err
