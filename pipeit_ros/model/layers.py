"""ONNX nodes grouped into layers, and each layer's descriptor (what the layer-time predictor sees).

Layers. Nodes are walked in the file's topological order. A node joins the layer before it when it is a
pure chain step: its only non-constant input is that layer's current output, read by nothing else and not a
graph output, and its op may be fused there. After a Conv/Gemm/MatMul (``conv``/``fc`` layers) that is
BatchNormalization, activations, Dropout/Identity, Flatten/Reshape/Squeeze/Unsqueeze, Softmax, a bias or
scale Add/Mul with a constant, LRN and one pooling op (local or global). After any other layer the same
minus LRN and pooling, so a pool behind an eltwise/concat layer is its own ``pool``/``gpool`` layer with its
own work counted. Everything else starts a layer: standalone pools, Add/Mul of two tensors (``eltwise``),
Concat, and the rest (``other``). A gated activation ``x * Sigmoid(x)`` (SiLU as exporters write it) or
``x * HardSigmoid(x)`` is fused as a whole: both nodes join x's layer.

Descriptors (per layer, batch 1): ``in_shape`` is C, H, W of the main node's first non-constant input
((K, 1, 1) for fc), ``out_shape`` that of the layer's output after the fused nodes; kernel, stride,
padding (ONNX order top, left, bottom, right, ``auto_pad`` resolved) and dilation of the main conv/pool
node, (1, 1) / (0, 0, 0, 0) otherwise; ``groups``; ``filters`` = output channels of conv/fc, 0 for layers
without weights. ``macs``: conv out_elems x C_in/g x kh x kw, ``deconv`` (ConvTranspose) in_elems x C_out/g x
kh x kw, fc in x out, ``matmul`` (two activations) out_elems x K, pool out_elems x kh x kw, gpool in_elems,
eltwise out_elems x (inputs - 1), concat/``resize``/other 0; fused nodes add nothing (they are small and the
published counts leave them out). ``weight_bytes``: the initializers the layer's nodes read.
"""
import collections
from dataclasses import asdict, dataclass
import math

from onnx import helper

CONV_OPS = {'Conv'}
FC_OPS = {'Gemm', 'MatMul'}
POOL_OPS = {'MaxPool', 'AveragePool', 'LpPool'}
GPOOL_OPS = {'GlobalAveragePool', 'GlobalMaxPool', 'GlobalLpPool'}
ELTWISE_OPS = {'Add', 'Sum', 'Mul', 'Sub', 'Div', 'Max', 'Min', 'Mean'}
FUSE_ANY = {'BatchNormalization', 'Relu', 'Clip', 'LeakyRelu', 'PRelu', 'Sigmoid', 'HardSigmoid', 'HardSwish',
            'Tanh', 'Elu', 'Selu', 'Celu', 'Softplus', 'Gelu', 'Mish', 'Dropout', 'Identity', 'Flatten',
            'Reshape', 'Squeeze', 'Unsqueeze', 'Softmax', 'LogSoftmax', 'Add', 'Mul', 'Sub', 'Div'}
GATE_OPS = {'Sigmoid', 'HardSigmoid'}
FUSE_AFTER_COMPUTE = POOL_OPS | GPOOL_OPS | {'LRN'}


@dataclass(frozen=True)
class LayerDescriptor:
    """One layer: what the layer-time predictor sees (see the module docstring for each field)."""
    index: int
    name: str
    op_type: str
    nodes: tuple
    fused: tuple
    in_shape: tuple
    out_shape: tuple
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    filters: int = 0
    macs: int = 0
    weight_bytes: int = 0
    output_bytes: int = 0

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def group(nodes, const, graph_outputs):
    """Node indices of the layers, in topological order (see the module docstring for the fusion rule)."""
    readers = collections.defaultdict(set)
    producer = {}
    for i, node in enumerate(nodes):
        for t in node.input:
            readers[t].add(i)
        for o in node.output:
            producer[o] = i
    layers, layer_of, pool_ok, gates = [], {}, [], {}
    for i, node in enumerate(nodes):
        acts = [t for t in node.input if t and t not in const]
        if i in gates and layers[gates[i][0]][-1] == gates[i][1]:   # x * gate(x): the gate's Mul
            layers[gates[i][0]].append(i)
            layer_of[i] = gates[i][0]
            continue
        gate = gate_mul(nodes, i, acts, readers, graph_outputs)
        if len(acts) == 1 and acts[0] in producer and acts[0] not in graph_outputs and \
                (len(readers[acts[0]]) == 1 or gate is not None) and node.domain in ('', 'ai.onnx'):
            p = producer[acts[0]]
            li = layer_of[p]
            tail_ok = layers[li][-1] == p and all(
                not o or o == acts[0] or (not readers[o] and o not in graph_outputs) for o in nodes[p].output)
            if tail_ok and (node.op_type in FUSE_ANY or (node.op_type in FUSE_AFTER_COMPUTE and pool_ok[li])):
                layers[li].append(i)
                layer_of[i] = li
                if gate is not None:
                    gates[gate] = (li, i)
                if node.op_type in FUSE_AFTER_COMPUTE:
                    pool_ok[li] = False
                continue
        layer_of[i] = len(layers)
        layers.append([i])
        pool_ok.append(node.op_type in CONV_OPS | FC_OPS | {'ConvTranspose'} and len(acts) == 1
                       and acts[0] == node.input[0])
    return layers


def gate_mul(nodes, i, acts, readers, graph_outputs):
    """Index of the Mul when node ``i`` is the gate of a gated activation ``x * Sigmoid(x)`` (SiLU, as exporters
    write it) or ``x * HardSigmoid(x)``: x read by the gate and that Mul only, the gate by the Mul only."""
    node = nodes[i]
    if node.op_type not in GATE_OPS or len(acts) != 1 or len(node.output) != 1:
        return None
    x, g = acts[0], node.output[0]
    others = readers[x] - {i}
    if len(others) != 1 or readers[g] != others or g in graph_outputs:
        return None
    j = next(iter(others))
    mul = nodes[j]
    return j if mul.op_type == 'Mul' and len(mul.input) == 2 and set(mul.input) == {x, g} else None


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def kind(node, acts, shape):
    op = node.op_type
    if op == 'ConvTranspose' and len(acts) == 1:
        return 'deconv'
    if op == 'MatMul' and len(acts) == 2:
        return 'matmul'
    if op == 'Resize':
        return 'resize'
    if op in CONV_OPS and len(acts) == 1:
        groups, cin = _attr(node, 'group', 1), shape(acts[0])[1]
        return 'conv' if groups == 1 else 'dwconv' if groups == cin else 'gconv'
    if op in FC_OPS and len(acts) == 1 and acts[0] == node.input[0]:
        return 'fc'
    if op in POOL_OPS:
        return 'pool'
    if op in GPOOL_OPS:
        return 'gpool'
    if op in ELTWISE_OPS and len(acts) >= 2:
        return 'eltwise'
    if op == 'Concat':
        return 'concat'
    return 'other'


def chw(shape):
    """C, H, W of a batch-1 tensor: (1, C, H, W) -> (C, H, W); (1, F) -> (F, 1, 1); extra dims fold into W."""
    dims = list(shape[1:])
    if len(dims) > 3:
        dims = [dims[0], dims[1], math.prod(dims[2:])]
    return tuple(dims + [1] * (3 - len(dims)))


def _pair(values, default):
    values = list(values or ())
    return tuple(values[-2:]) if len(values) >= 2 else (1, *values) if values else default


def geometry(node, kind, acts, shape):
    """kernel, stride, padding, dilation, groups, filters and MACs of the main node."""
    out = shape(node.output[0])
    if kind in ('conv', 'dwconv', 'gconv', 'pool'):
        w = shape(node.input[1]) if kind != 'pool' else None
        kernel = _pair(_attr(node, 'kernel_shape') or (w[2:] if w else ()), (1, 1))
        stride, dilation = _pair(_attr(node, 'strides'), (1, 1)), _pair(_attr(node, 'dilations'), (1, 1))
        padding = _padding(node, shape(acts[0])[2:], out[2:], kernel, stride, dilation)
        per_output = kernel[0] * kernel[1] * (w[1] if w else 1)
        return dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                    groups=_attr(node, 'group', 1) if w else 1, filters=w[0] if w else 0,
                    macs=math.prod(out[1:]) * per_output)
    if kind == 'deconv':
        x, w = shape(acts[0]), shape(node.input[1])    # weight (C_in, C_out / g, kh, kw)
        groups = _attr(node, 'group', 1)
        kernel = _pair(_attr(node, 'kernel_shape') or w[2:], (1, 1))
        return dict(kernel=kernel, stride=_pair(_attr(node, 'strides'), (1, 1)),
                    padding=tuple((list(_attr(node, 'pads') or ()) + [0] * 4)[:4]),
                    dilation=_pair(_attr(node, 'dilations'), (1, 1)), groups=groups, filters=w[1] * groups,
                    macs=math.prod(x[1:]) * w[1] * kernel[0] * kernel[1])
    if kind == 'matmul':
        a = shape(acts[0])
        return dict(filters=out[-1], macs=math.prod(out[1:]) * a[-1])
    if kind == 'fc':
        w = shape(node.input[1])
        k = w[1] if node.op_type == 'Gemm' and _attr(node, 'transB', 0) else w[0] if len(w) == 2 else w[-2]
        return dict(in_shape=(k, 1, 1), filters=out[-1], macs=math.prod(out) * k)
    if kind == 'gpool':
        x = shape(acts[0])
        return dict(kernel=_pair(x[2:], (1, 1)), macs=math.prod(x[1:]))
    if kind == 'eltwise':
        return dict(macs=math.prod(out) * (len(acts) - 1))
    return {}


def _padding(node, in_hw, out_hw, kernel, stride, dilation):
    auto = _attr(node, 'auto_pad', b'NOTSET')
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ('SAME_UPPER', 'SAME_LOWER'):
        pads = []
        for i, o, k, s, d in zip(in_hw[-2:], out_hw[-2:], kernel, stride, dilation):
            total = max((o - 1) * s + (k - 1) * d + 1 - i, 0)
            pads.append((total // 2, total - total // 2) if auto == 'SAME_UPPER' else (total - total // 2, total // 2))
        return (pads[0][0], pads[1][0], pads[0][1], pads[1][1]) if len(pads) == 2 else (0, 0, 0, 0)
    pads = list(_attr(node, 'pads') or ())
    if len(pads) == 4:
        return tuple(pads)
    if len(pads) == 2:
        return (0, pads[0], 0, pads[1])
    return (0, 0, 0, 0)
