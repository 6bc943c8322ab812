"""Helpers of the graph/zoo tests: run models with onnxruntime, chain segments, build small DAG models."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeit_ros.engine.sessions import make_session

RTOL, ATOL = 1e-4, 1e-5


def session(model, weights=None):
    """A one-thread session; ``weights`` (graph.weights) for a sub-model of a prepared graph."""
    return make_session(model, (0,), threads=1, pinned=False, weights=weights, optimize=False)


def run_file(path, x, input_name='input'):
    with open(path, 'rb') as f:
        return session(f.read()).run(None, {input_name: x})


def chain(g, x, ranges=None):
    """Outputs of running the ranges (default: every segment) one after another, tensors handed on by name."""
    feed = {g.input_name: x}
    for first, last in ranges or g.segments():
        s = session(g.extract_bytes(first, last), g.weights)
        assert [i.name for i in s.get_inputs()] == g.boundary(first)
        out = s.run(None, feed)
        feed = {o.name: v for o, v in zip(s.get_outputs(), out)}
    return [feed[name] for name in g.output_names]


def assert_chain_matches(g, path, seed=0, ranges=None):
    x = np.random.default_rng(seed).standard_normal(g.input_shape).astype(np.float32)
    want = run_file(path, x, g.input_name)
    got = chain(g, x, ranges)
    for w, o in zip(want, got):
        assert np.isfinite(w).all() and np.ptp(w) > 0
        np.testing.assert_allclose(o, w, rtol=RTOL, atol=ATOL)


def crossing(g, index):
    """Brute force: activation tensors made before layer ``index`` (or the model input) read at/after it."""
    layer_nodes = {}
    for layer in g.layers:
        for name in layer.nodes:
            layer_nodes[name] = layer.index
    const = {t.name for t in g.model.graph.initializer}
    before, after_reads = {g.input_name}, set(g.output_names)
    for node in g.model.graph.node:
        if layer_nodes[node.name] < index:
            before.update(o for o in node.output if o)
        else:
            after_reads.update(i for i in node.input if i and i not in const)
    return before & after_reads


class DagBuilder:
    """Small float32 DAG models with the onnx helper API; tensor name = node name."""

    def __init__(self, channels=4, size=8, seed=0, batch=1):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.ch = {'input': channels}
        self.size, self.batch = size, batch  # batch: 1 or a symbolic name such as 'N'
        self.flat = set()  # tensors of shape (batch, C)

    def _w(self, name, shape, scale):
        self.inits.append(numpy_helper.from_array(
            (self.rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def node(self, op, inputs, name, ch, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        self.ch[name] = ch
        return name

    def conv(self, x, name, cout=None, k=3, groups=1, bn=True, relu=True):
        cin = self.ch[x]
        cout = cout or cin
        w = self._w(f'{name}.w', (cout, cin // groups, k, k), np.sqrt(2.0 / (cin // groups * k * k)))
        y = self.node('Conv', [x, w, self._w(f'{name}.b', (cout,), 0.1)], name, cout, pads=[k // 2] * 4,
                      kernel_shape=[k, k], group=groups)
        if bn:
            c = cout
            y = self.node('BatchNormalization', [y, self._w(f'{name}.g', (c,), 0.1), self._w(f'{name}.be', (c,), 0.1),
                                                 self._w(f'{name}.m', (c,), 0.1), self._var(f'{name}.v', c)],
                          f'{name}.bn', c)
        return self.node('Relu', [y], f'{name}.relu', cout) if relu else y

    def _var(self, name, c):
        self.inits.append(numpy_helper.from_array(self.rng.uniform(0.5, 1.5, c).astype(np.float32), name))
        return name

    def pool(self, x, name):
        return self.node('MaxPool', [x], name, self.ch[x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    def add(self, a, b, name):
        return self.node('Add', [a, b], name, self.ch[a])

    def concat(self, xs, name):
        return self.node('Concat', xs, name, sum(self.ch[x] for x in xs), axis=1)

    def head(self, x, classes=5, exported_flatten=False):
        """Global pool, flatten (as exporters write it with Shape/Gather/Concat/Reshape, or Flatten), Gemm."""
        x = self.node('GlobalAveragePool', [x], 'head.gap', self.ch[x])
        if exported_flatten:
            self.nodes += [helper.make_node('Shape', [x], ['head.shape'], name='head.shape'),
                           helper.make_node('Gather', ['head.shape', 'head.zero'], ['head.n'], name='head.gather',
                                            axis=0),
                           helper.make_node('Unsqueeze', ['head.n', 'head.axes'], ['head.n1'], name='head.unsq'),
                           helper.make_node('Concat', ['head.n1', 'head.minus1'], ['head.newshape'],
                                            name='head.cat', axis=0)]
            self.inits += [numpy_helper.from_array(np.array(0, np.int64), 'head.zero'),
                           numpy_helper.from_array(np.array([0], np.int64), 'head.axes'),
                           numpy_helper.from_array(np.array([-1], np.int64), 'head.minus1')]
            x = self.node('Reshape', [x, 'head.newshape'], 'head.flat', self.ch[x])
        else:
            x = self.node('Flatten', [x], 'head.flat', self.ch[x], axis=1)
        w = self._w('head.fc.w', (classes, self.ch[x]), np.sqrt(1.0 / self.ch[x]))
        self.flat.add('logits')
        return self.node('Gemm', [x, w, self._w('head.fc.b', (classes,), 0.1)], 'logits', classes, transB=1)

    def model(self, outputs, order=None, opset=17):
        b, s = self.batch, self.size
        inp = helper.make_tensor_value_info('input', TensorProto.FLOAT, [b, self.ch['input'], s, s])
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [b, self.ch[o]] + ([] if o in self.flat else [s, s]))
                for o in outputs]
        nodes = self.nodes if order is None else [self.nodes[i] for i in order]
        graph = helper.make_graph(nodes, 'dag', [inp], outs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
        model.ir_version = 8
        return model


def random_topological_order(nodes, rng):
    """A random valid topological order of ``nodes`` (Kahn's algorithm with random picks)."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    deps = [{producer[t] for t in n.input if t in producer} for n in nodes]
    done, order = set(), []
    while len(order) < len(nodes):
        ready = [i for i in range(len(nodes)) if i not in done and deps[i] <= done]
        pick = ready[rng.integers(len(ready))]
        order.append(pick)
        done.add(pick)
    return order


def save(model, path):
    onnx.save(model, str(path))
    return str(path)


def build_blocks(blocks, seed=0, batch=1, exported_flatten=False):
    """A DagBuilder of a chain of blocks (conv, dwconv, pool, residual, inception, long_skip) after a stem."""
    b = DagBuilder(channels=3, size=6, seed=seed, batch=batch)
    x = b.conv('input', 'b0.stem', cout=4)
    for k, kind in enumerate(blocks, 1):
        p = f'b{k}'
        if kind == 'conv':
            x = b.conv(x, f'{p}.conv')
        elif kind == 'dwconv':
            x = b.conv(x, f'{p}.dw', groups=b.ch[x], bn=False)
        elif kind == 'pool':
            x = b.pool(x, f'{p}.pool')
        elif kind == 'residual':
            x = b.add(x, b.conv(b.conv(x, f'{p}.c1'), f'{p}.c2', relu=False), f'{p}.add')
        elif kind == 'inception':
            a = b.conv(x, f'{p}.a', cout=2, k=1)
            c = b.conv(b.conv(x, f'{p}.b1', cout=2, k=1), f'{p}.b2', cout=2)
            d = b.conv(b.pool(x, f'{p}.pool'), f'{p}.d', cout=2, k=1, bn=False)
            x = b.concat([a, c, d], f'{p}.cat')
        else:  # a skip over two convs and a pool
            x = b.add(x, b.pool(b.conv(b.conv(x, f'{p}.c1'), f'{p}.c2'), f'{p}.pool'), f'{p}.add')
    b.head(x, exported_flatten=exported_flatten)
    return b
