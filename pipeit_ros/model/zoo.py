"""The paper's networks, built in code with the onnx helper API (opset 17) and seeded random weights.

Pipe-it is evaluated on AlexNet, GoogLeNet, MobileNet v1/v2, ResNet-50 and SqueezeNet 1.1. Random weights
are enough to plan and time them, and building them here needs no download. The architectures follow
torchvision (MobileNet v1, which torchvision lacks, follows the paper): same layer shapes, ``Conv`` +
separate ``BatchNormalization`` + activation nodes as an exported network has them, no Dropout (inference),
input ``input`` 1x3x224x224 float32, output ``logits`` 1x1000. ``tiny`` (3x32x32 -> 10 classes, with a
residual and a concat branch) is for fast tests.

Weights are He-initialised (std sqrt(2 / fan_in)) and the BatchNorm statistics are near identity, with the
last BatchNorm of every residual branch damped so activations stay finite and well scaled through the net.

References for :data:`PUBLISHED` (parameters counted as torchvision does: weights, biases and BatchNorm
scale/shift, not the running statistics; MACs of the convolutions and fully connected layers):

- torchvision weight metadata (``num_params`` and ``_ops`` in GFLOPS, which are multiply-accumulates), e.g.
  https://pytorch.org/vision/stable/models/generated/torchvision.models.googlenet.html : AlexNet 61,100,840 /
  0.714 G, GoogLeNet (no aux heads) 6,624,904 / 1.498 G, MobileNet v2 3,504,872 / 0.301 G, ResNet-50
  25,557,032 / 4.089 G, SqueezeNet 1.1 1,235,496 / 0.349 G.
- MobileNet v1: Howard et al., "MobileNets", arXiv:1704.04861, Table 8 (1.0 MobileNet-224): 4.2 M
  parameters, 569 M mult-adds.

>>> from pipeit_ros.model import zoo
>>> zoo.build('tiny').graph.output[0].name
'logits'
"""
import math
import os
import tempfile

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper

from pipeit_ros import cache
from pipeit_ros.errors import PipeitError

# Bump when a network or the weight init changes, so cached files are rebuilt.
ZOO_VERSION = 1

NETWORKS = ('alexnet', 'googlenet', 'mobilenet_v1', 'mobilenet_v2', 'resnet50', 'squeezenet1_1', 'tiny')

PUBLISHED = {  # name -> (parameters, MACs); see the module docstring for the sources
    'alexnet': (61_100_840, 714_000_000),
    'googlenet': (6_624_904, 1_498_000_000),
    'mobilenet_v1': (4_200_000, 569_000_000),
    'mobilenet_v2': (3_504_872, 301_000_000),
    'resnet50': (25_557_032, 4_089_000_000),
    'squeezenet1_1': (1_235_496, 349_000_000),
}

OPSET = 17


class _Net:
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

    def conv(self, x, name, cout, k, s=1, p=None, g=1, bias=False, gain=2.0):
        cin, h, w = self.shape[x]
        p = k // 2 if p is None else p
        fan_in = cin // g * k * k
        inputs = [x, self._init(f'{name}.weight', self._randn((cout, cin // g, k, k), math.sqrt(gain / fan_in)))]
        if bias:
            inputs.append(self._init(f'{name}.bias', self._randn((cout,), 0.01)))
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return self.node('Conv', inputs, name, (cout, ho, wo), kernel_shape=[k, k], strides=[s, s],
                         pads=[p] * 4, group=g)

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

    def cbr(self, x, name, cout, k, s=1, p=None, g=1, act='relu', gamma=1.0, eps=1e-5):
        """Conv (no bias) + BatchNorm + activation, the block every BN network repeats."""
        y = self.bn(self.conv(x, f'{name}.conv', cout, k, s, p, g), f'{name}.bn', gamma, eps)
        return {'relu': self.relu, 'relu6': self.relu6, None: lambda t: t}[act](y)

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

    def model(self, name, input_shape, output):
        model, graph = self.proto, self.proto.graph
        graph.name = name
        graph.input.append(helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, *input_shape]))
        graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, *self.shape[output]]))
        model.opset_import.append(helper.make_opsetid('', OPSET))
        model.ir_version = 8  # opset 17's IR; readable by every onnxruntime that runs opset 17
        model.producer_name, model.producer_version = 'pipeit_ros.model.zoo', str(ZOO_VERSION)
        return model

def _alexnet(n):
    x = n.relu(n.conv('input', 'features.0', 64, 11, 4, 2, bias=True))
    x = n.maxpool(x, 'features.2', 3, 2)
    x = n.relu(n.conv(x, 'features.3', 192, 5, 1, 2, bias=True))
    x = n.maxpool(x, 'features.5', 3, 2)
    for name, cout in (('features.6', 384), ('features.8', 256), ('features.10', 256)):
        x = n.relu(n.conv(x, name, cout, 3, 1, 1, bias=True))
    x = n.flatten(n.maxpool(x, 'features.12', 3, 2), 'flatten')  # torchvision's 6x6 adaptive pool is identity
    x = n.relu(n.fc(x, 'classifier.1', 4096))
    x = n.relu(n.fc(x, 'classifier.4', 4096))
    return n.fc(x, 'classifier.6', 1000, gain=1.0, out='logits')


def _googlenet(n):
    def basic(x, name, cout, k, s=1, p=None):
        return n.cbr(x, name, cout, k, s, p, eps=1e-3)

    def inception(x, name, c1, c3r, c3, c5r, c5, pool_proj):
        b1 = basic(x, f'{name}.branch1', c1, 1)
        b2 = basic(basic(x, f'{name}.branch2.0', c3r, 1), f'{name}.branch2.1', c3, 3)
        b3 = basic(basic(x, f'{name}.branch3.0', c5r, 1), f'{name}.branch3.1', c5, 3)  # 3x3 as torchvision
        b4 = basic(n.maxpool(x, f'{name}.branch4.0', 3, 1, 1, ceil=True), f'{name}.branch4.1', pool_proj, 1)
        return n.concat([b1, b2, b3, b4], f'{name}.concat')

    x = n.maxpool(basic('input', 'conv1', 64, 7, 2, 3), 'maxpool1', 3, 2, ceil=True)
    x = n.maxpool(basic(basic(x, 'conv2', 64, 1), 'conv3', 192, 3), 'maxpool2', 3, 2, ceil=True)
    x = inception(x, 'inception3a', 64, 96, 128, 16, 32, 32)
    x = inception(x, 'inception3b', 128, 128, 192, 32, 96, 64)
    x = n.maxpool(x, 'maxpool3', 3, 2, ceil=True)
    for name, cfg in (('4a', (192, 96, 208, 16, 48, 64)), ('4b', (160, 112, 224, 24, 64, 64)),
                      ('4c', (128, 128, 256, 24, 64, 64)), ('4d', (112, 144, 288, 32, 64, 64)),
                      ('4e', (256, 160, 320, 32, 128, 128))):
        x = inception(x, f'inception{name}', *cfg)
    x = n.maxpool(x, 'maxpool4', 2, 2, ceil=True)
    x = inception(x, 'inception5a', 256, 160, 320, 32, 128, 128)
    x = inception(x, 'inception5b', 384, 192, 384, 48, 128, 128)
    return n.fc(n.flatten(n.gap(x, 'avgpool'), 'flatten'), 'fc', 1000, gain=1.0, out='logits')


def _mobilenet_v1(n):
    x = n.cbr('input', 'conv0', 32, 3, 2)
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (cout, s) in enumerate(cfg, 1):
        x = n.cbr(x, f'block{i}.dw', n.shape[x][0], 3, s, g=n.shape[x][0])
        x = n.cbr(x, f'block{i}.pw', cout, 1)
    return n.fc(n.flatten(n.gap(x, 'avgpool'), 'flatten'), 'fc', 1000, gain=1.0, out='logits')


def _mobilenet_v2(n):
    x = n.cbr('input', 'features.0', 32, 3, 2, act='relu6')
    i = 1
    for t, c, reps, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                          (6, 160, 3, 2), (6, 320, 1, 1)):
        for r in range(reps):
            cin, stride = n.shape[x][0], s if r == 0 else 1
            residual = stride == 1 and cin == c
            y = x if t == 1 else n.cbr(x, f'features.{i}.expand', cin * t, 1, act='relu6')
            y = n.cbr(y, f'features.{i}.dw', cin * t, 3, stride, g=cin * t, act='relu6')
            y = n.cbr(y, f'features.{i}.project', c, 1, act=None, gamma=0.5 if residual else 1.0)
            x = n.add(x, y, f'features.{i}.add') if residual else y
            i += 1
    x = n.cbr(x, f'features.{i}', 1280, 1, act='relu6')
    return n.fc(n.flatten(n.gap(x, 'avgpool'), 'flatten'), 'classifier.1', 1000, gain=1.0, out='logits')


def _resnet50(n):
    x = n.maxpool(n.cbr('input', 'stem', 64, 7, 2, 3), 'maxpool', 3, 2, 1)
    for li, (width, blocks, s) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
        for b in range(blocks):
            name, stride = f'layer{li}.{b}', s if b == 0 else 1
            y = n.cbr(x, f'{name}.1', width, 1)
            y = n.cbr(y, f'{name}.2', width, 3, stride)  # stride on the 3x3 (torchvision's ResNet v1.5)
            y = n.cbr(y, f'{name}.3', width * 4, 1, act=None, gamma=0.25)
            if b == 0:
                x = n.cbr(x, f'{name}.downsample', width * 4, 1, stride, act=None)
            x = n.relu(n.add(x, y, f'{name}.add'))
    return n.fc(n.flatten(n.gap(x, 'avgpool'), 'flatten'), 'fc', 1000, gain=1.0, out='logits')


def _squeezenet1_1(n):
    def fire(x, name, squeeze, expand):
        s = n.relu(n.conv(x, f'{name}.squeeze', squeeze, 1, bias=True))
        e1 = n.relu(n.conv(s, f'{name}.expand1x1', expand, 1, bias=True))
        e3 = n.relu(n.conv(s, f'{name}.expand3x3', expand, 3, bias=True))
        return n.concat([e1, e3], f'{name}.concat')

    x = n.maxpool(n.relu(n.conv('input', 'features.0', 64, 3, 2, 0, bias=True)), 'features.2', 3, 2, ceil=True)
    x = fire(fire(x, 'features.3', 16, 64), 'features.4', 16, 64)
    x = n.maxpool(x, 'features.5', 3, 2, ceil=True)
    x = fire(fire(x, 'features.6', 32, 128), 'features.7', 32, 128)
    x = n.maxpool(x, 'features.8', 3, 2, ceil=True)
    for i, (sq, ex) in enumerate(((48, 192), (48, 192), (64, 256), (64, 256)), 9):
        x = fire(x, f'features.{i}', sq, ex)
    x = n.relu(n.conv(x, 'classifier.1', 1000, 1, bias=True, gain=1.0))
    return n.node('Flatten', [n.gap(x, 'avgpool')], 'flatten', (1000,), out='logits', axis=1)


def _tiny(n):
    """3x32x32 -> 10; stem, a residual block, a two-branch concat block, a strided conv, the classifier."""
    x = n.maxpool(n.cbr('input', 'stem', 16, 3), 'stem.pool', 2, 2)
    y = n.cbr(n.cbr(x, 'res.1', 16, 3), 'res.2', 16, 3, act=None, gamma=0.5)
    x = n.relu(n.add(x, y, 'res.add'))
    a = n.relu(n.conv(x, 'mix.a', 8, 1, bias=True))
    b = n.relu(n.conv(x, 'mix.b', 8, 3, bias=True))
    x = n.cbr(n.concat([a, b], 'mix.concat'), 'head', 32, 3, 2)
    return n.fc(n.flatten(n.gap(x, 'avgpool'), 'flatten'), 'fc', 10, gain=1.0, out='logits')


_BUILDERS = {'alexnet': _alexnet, 'googlenet': _googlenet, 'mobilenet_v1': _mobilenet_v1,
             'mobilenet_v2': _mobilenet_v2, 'resnet50': _resnet50, 'squeezenet1_1': _squeezenet1_1,
             'tiny': _tiny}


def input_shape(name):
    """(C, H, W) of a zoo network's input."""
    _check_name(name)
    return (3, 32, 32) if name == 'tiny' else (3, 224, 224)


def _check_name(name):
    if name not in _BUILDERS:
        raise PipeitError(f'unknown zoo network {name!r}; choose one of {", ".join(NETWORKS)}')


def build(name, seed=0):
    """The network ``name`` as an in-memory ONNX model with weights drawn from ``seed``."""
    _check_name(name)
    net = _Net(seed)
    net.shape['input'] = input_shape(name)
    output = _BUILDERS[name](net)
    return net.model(name, input_shape(name), output)


def parameter_count(model):
    """Parameters as torchvision counts them: initializers except BatchNorm running stats and scalars."""
    stats = {t for node in model.graph.node if node.op_type == 'BatchNormalization' for t in node.input[3:5]}
    return sum(math.prod(t.dims) for t in model.graph.initializer if t.name not in stats and t.dims)


def save(name, path, seed=0):
    """Build ``name`` and write it to ``path`` atomically (a concurrent reader never sees half a file)."""
    model = build(name, seed)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix='.zoo-', suffix='.onnx', dir=os.path.dirname(os.path.abspath(path)))
        with os.fdopen(fd, 'wb') as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise PipeitError(f'cannot write {path}: {exc.strerror or exc}') from None
    return path


def cache_dir():
    return cache.cache_dir('zoo')


def zoo_path(name, seed=0, log=None):
    """Path of the cached ONNX file of ``name`` (built on first use; keyed by name, seed and ZOO_VERSION). A
    cached file that does not parse is moved aside (cache.move_aside) and built again."""
    _check_name(name)
    path = os.path.join(cache_dir(), f'{name}-s{seed}-v{ZOO_VERSION}.onnx')
    if os.path.exists(path):
        try:
            model = onnx.load_model(path, load_external_data=False)
            if not model.graph.node:
                raise ValueError('no graph nodes')
            return path
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, OSError, ...
            cache.move_aside(path, f'{type(exc).__name__}: {str(exc).strip() or "not an ONNX model"}', log=log)
    save(name, path, seed)
    return path


def default_model_path():
    """The model used when none is given: MobileNet v2, built once into the cache."""
    return zoo_path('mobilenet_v2')

