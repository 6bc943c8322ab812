"""The zoo's network builder: appends ONNX nodes with seeded random weights layer by layer and tracks each
tensor's (C, H, W) shape (:mod:`pipeit_ros.model.zoo` builds its networks with it)."""
import math

import numpy as np
from onnx import ModelProto, TensorProto, helper, numpy_helper

OPSET = 17
ZOO_VERSION = 1   # bump when a network or the weight init changes, so cached zoo files are rebuilt


class Net:
    """Appends nodes and initializers, tracks each tensor's (C, H, W) shape; tensor name = node name."""

    def __init__(self, seed):
        self.np = np
        self.rng = np.random.default_rng(seed)
        self.proto = ModelProto()
        self.shape = {}
        self.has_relu6 = False

    def _init(self, name, array):
        # What numpy_helper.from_array does for float32, written in place: no copy of AlexNet's 244 MB.
        t = self.proto.graph.initializer.add()
        t.name, t.data_type, t.raw_data = name, 1, array.tobytes()  # 1 = TensorProto.FLOAT
        t.dims.extend(array.shape)
        return name

    def _randn(self, shape, std):
        """Uniform with standard deviation ``std`` (twice as fast as normal draws; AlexNet has 61 M)."""
        a = self.rng.random(shape, dtype=self.np.float32)
        a -= self.np.float32(0.5)
        a *= self.np.float32(std * math.sqrt(12.0))
        return a

    def _uniform(self, c, low, high):
        return self.rng.uniform(low, high, c).astype(self.np.float32)

    def node(self, op, inputs, name, shape, out=None, **attrs):
        out = out or name
        self.proto.graph.node.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        self.shape[out] = shape
        return out

    def conv(self, x, name, cout, k, s=1, p=None, g=1, bias=False, gain=2.0, d=1):
        cin, h, w = self.shape[x]
        p = (k - 1) // 2 * d if p is None else p
        fan_in = cin // g * k * k
        inputs = [x, self._init(f'{name}.weight', self._randn((cout, cin // g, k, k), math.sqrt(gain / fan_in)))]
        if bias:
            inputs.append(self._init(f'{name}.bias', self._randn((cout,), 0.01)))
        ho, wo = ((v + 2 * p - d * (k - 1) - 1) // s + 1 for v in (h, w))
        dilation = {'dilations': [d, d]} if d != 1 else {}
        return self.node('Conv', inputs, name, (cout, ho, wo), kernel_shape=[k, k], strides=[s, s],
                         pads=[p] * 4, group=g, **dilation)

    def bn(self, x, name, gamma=1.0, eps=1e-5):
        c = self.shape[x][0]
        inputs = [x, self._init(f'{name}.weight', gamma * self._uniform(c, 0.8, 1.2)),
                  self._init(f'{name}.bias', self._randn((c,), 0.05)),
                  self._init(f'{name}.running_mean', self._randn((c,), 0.05)),
                  self._init(f'{name}.running_var', self._uniform(c, 0.8, 1.2))]
        return self.node('BatchNormalization', inputs, name, self.shape[x], epsilon=eps)

    def relu(self, x):
        return self.node('Relu', [x], f'{x}.relu', self.shape[x])

    def relu6(self, x):
        if not self.has_relu6:  # one pair of shared bound scalars, as exporters write them
            self._init('relu6.min', self.np.array(0, self.np.float32))
            self._init('relu6.max', self.np.array(6, self.np.float32))
            self.has_relu6 = True
        return self.node('Clip', [x, 'relu6.min', 'relu6.max'], f'{x}.relu6', self.shape[x])

    def cbr(self, x, name, cout, k, s=1, p=None, g=1, act='relu', gamma=1.0, eps=1e-5, d=1):
        """Conv (no bias) + BatchNorm + activation, the block every BN network repeats."""
        y = self.bn(self.conv(x, f'{name}.conv', cout, k, s, p, g, d=d), f'{name}.bn', gamma, eps)
        return {'relu': self.relu, 'relu6': self.relu6, 'hswish': self.hswish, None: lambda t: t}[act](y)

    def maxpool(self, x, name, k, s, p=0, ceil=False):
        c, h, w = self.shape[x]
        rnd = math.ceil if ceil else math.floor
        ho, wo = (int(rnd((d + 2 * p - k) / s)) + 1 for d in (h, w))
        return self.node('MaxPool', [x], name, (c, ho, wo), kernel_shape=[k, k], strides=[s, s],
                         pads=[p] * 4, ceil_mode=int(ceil))

    def gap(self, x, name):
        return self.node('GlobalAveragePool', [x], name, (self.shape[x][0], 1, 1))

    def flatten(self, x, name):
        return self.node('Flatten', [x], name, (math.prod(self.shape[x]),), axis=1)

    def fc(self, x, name, cout, gain=2.0, out=None):
        (cin,) = self.shape[x]
        w = self._init(f'{name}.weight', self._randn((cout, cin), math.sqrt(gain / cin)))
        b = self._init(f'{name}.bias', self._randn((cout,), 0.01))
        return self.node('Gemm', [x, w, b], name, (cout,), out=out, transB=1)

    def add(self, a, b, name):
        assert self.shape[a] == self.shape[b], (a, b)
        return self.node('Add', [a, b], name, self.shape[a])

    def concat(self, xs, name):
        c = sum(self.shape[x][0] for x in xs)
        assert len({self.shape[x][1:] for x in xs}) == 1, xs
        return self.node('Concat', xs, name, (c,) + self.shape[xs[0]][1:], axis=1)

    def const(self, name, array):
        """A constant initializer (int64 shapes, sizes, anchors), created once per name."""
        if name not in self.shape:
            self.shape[name] = None
            self.proto.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def nodes(self, op, inputs, name, shapes, **attrs):
        """A node with several outputs ``name.0``, ``name.1``, ...; returns their names."""
        outs = [f'{name}.{i}' for i in range(len(shapes))]
        self.proto.graph.node.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        for o, s in zip(outs, shapes):
            self.shape[o] = s
        return outs

    def silu(self, x):
        s = self.node('Sigmoid', [x], f'{x}.sigmoid', self.shape[x])
        return self.node('Mul', [x, s], f'{x}.silu', self.shape[x])

    def conv_silu(self, x, name, cout, k, s=1, gain=2.0):
        """ultralytics Conv as exported: Conv (BatchNorm folded in, so with a bias) + SiLU as Sigmoid * Mul."""
        return self.silu(self.conv(x, name, cout, k, s, bias=True, gain=gain))

    def split(self, x, name, sizes):
        c, h, w = self.shape[x]
        assert sum(sizes) == c
        split = self.const(f'{name}.split', self.np.array(sizes, self.np.int64))
        return self.nodes('Split', [x, split], name, [(n, h, w) for n in sizes], axis=1)

    def resize(self, x, name, size, mode):
        c = self.shape[x][0]
        sizes = self.const(f'{name}.sizes', self.np.array([1, c, *size], self.np.int64))
        attrs = dict(mode=mode, coordinate_transformation_mode='asymmetric' if mode == 'nearest' else 'half_pixel')
        if mode == 'nearest':
            attrs['nearest_mode'] = 'floor'
        return self.node('Resize', [x, '', '', sizes], name, (c, *size), **attrs)

    def hswish(self, x):
        return self.node('HardSwish', [x], f'{x}.hswish', self.shape[x])

    def model(self, name, input_shape, output):
        model, graph = self.proto, self.proto.graph
        graph.name = name
        graph.input.append(helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, *input_shape]))
        graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, *self.shape[output]]))
        model.opset_import.append(helper.make_opsetid('', OPSET))
        model.ir_version = 8  # opset 17's IR; readable by every onnxruntime that runs opset 17
        model.producer_name, model.producer_version = 'pipeit_ros.model.zoo', str(ZOO_VERSION)
        return model
