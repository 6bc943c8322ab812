"""The paper's networks, built in code with the onnx helper API (opset 17) and seeded random weights.

Pipe-it is evaluated on AlexNet, GoogLeNet, MobileNet v1/v2, ResNet-50 and SqueezeNet 1.1; robots mostly run
detectors and segmenters, so the zoo also has YOLOv8n and LR-ASPP MobileNetV3-Large. Random weights
are enough to plan and time them, and building them here needs no download. The architectures follow
torchvision (MobileNet v1, which torchvision lacks, follows the paper): same layer shapes, ``Conv`` +
separate ``BatchNormalization`` + activation nodes as an exported network has them, no Dropout (inference),
input ``input`` 1x3x224x224 float32, output ``logits`` 1x1000. ``tiny`` (3x32x32 -> 10 classes, with a
residual and a concat branch) is for fast tests.

The two dense-prediction nets are built as their exporters write them:

- ``yolov8n`` (ultralytics ``yolov8.yaml`` at scale n, ``yolo export format=onnx``): input 1x3x640x640,
  BatchNorm folded into the convolutions (so they have biases), SiLU as ``Sigmoid`` * ``Mul``, C2f's chunk as
  ``Split``, nearest ``Resize`` for the upsampling, SPPF's three max pools, the Detect head with its DFL
  (``Reshape`` / ``Transpose`` / ``Softmax`` / a fixed 1x1 conv) and the box decoding against constant anchors
  and strides; output ``output0`` 1x84x8400 (xywh + 80 class scores per anchor).
- ``lraspp_mobilenet_v3_large`` (torchvision, ``dilated=True`` backbone: output stride 16): input 1x3x520x520
  (torchvision's segmentation size), ``HardSwish`` / ``HardSigmoid``, squeeze-and-excitation blocks, the LR-ASPP
  head on features 4 (stride 8) and 16, bilinear ``Resize``; output ``out`` 1x21x520x520.

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
- LR-ASPP MobileNetV3-Large: torchvision ``LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1``
  (``num_params`` 3,221,538, ``_ops`` 2.1 G at 520x520).
- YOLOv8n: ultralytics' model table (https://docs.ultralytics.com/models/yolov8/): 3.2 M parameters, 8.7
  GFLOPs at 640x640 (FLOPs = 2 x multiply-accumulates); its fused model summary, which is what an export holds,
  counts 3,151,904 parameters.

>>> from pipeit_ros.model import zoo
>>> zoo.build('tiny').graph.output[0].name
'logits'
"""
import math
import os
import tempfile

import onnx

from pipeit_ros import cache
from pipeit_ros.errors import PipeitError
from pipeit_ros.model.net_builder import ZOO_VERSION, Net

NETWORKS = ('alexnet', 'googlenet', 'lraspp_mobilenet_v3_large', 'mobilenet_v1', 'mobilenet_v2', 'resnet50',
            'squeezenet1_1', 'tiny', 'yolov8n')
PAPER_NETWORKS = ('alexnet', 'googlenet', 'mobilenet_v1', 'mobilenet_v2', 'resnet50', 'squeezenet1_1')
INPUT_SHAPES = {'tiny': (3, 32, 32), 'yolov8n': (3, 640, 640), 'lraspp_mobilenet_v3_large': (3, 520, 520)}

PUBLISHED = {  # name -> (parameters, MACs); see the module docstring for the sources
    'alexnet': (61_100_840, 714_000_000),
    'googlenet': (6_624_904, 1_498_000_000),
    'mobilenet_v1': (4_200_000, 569_000_000),
    'mobilenet_v2': (3_504_872, 301_000_000),
    'resnet50': (25_557_032, 4_089_000_000),
    'squeezenet1_1': (1_235_496, 349_000_000),
    'lraspp_mobilenet_v3_large': (3_221_538, 2_100_000_000),
    'yolov8n': (3_151_904, 4_350_000_000),
}

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


def _yolov8n(n, nc=80, reg_max=16):
    """ultralytics YOLOv8n (yolov8.yaml, depth 0.33, width 0.25) as exported to ONNX: BatchNorm folded into the
    convolutions, SiLU as Sigmoid * Mul, C2f's chunk as Split, nearest Upsample as Resize, the Detect head with
    its DFL and box decoding; output ``output0`` 1 x (4 + nc) x anchors."""
    def c2f(x, name, cout, reps, shortcut):
        c = cout // 2
        ys = n.split(n.conv_silu(x, f'{name}.cv1', 2 * c, 1), f'{name}.split', [c, c])
        for i in range(reps):
            y = n.conv_silu(n.conv_silu(ys[-1], f'{name}.m.{i}.cv1', c, 3), f'{name}.m.{i}.cv2', c, 3, gain=1.0)
            ys.append(n.add(ys[-1], y, f'{name}.m.{i}.add') if shortcut else y)
        return n.conv_silu(n.concat(ys, f'{name}.cat'), f'{name}.cv2', cout, 1)

    def sppf(x, name, cout):
        ys = [n.conv_silu(x, f'{name}.cv1', n.shape[x][0] // 2, 1)]
        for i in range(3):
            ys.append(n.maxpool(ys[-1], f'{name}.m.{i}', 5, 1, 2))
        return n.conv_silu(n.concat(ys, f'{name}.cat'), f'{name}.cv2', cout, 1)

    def up(x, name):
        c, h, w = n.shape[x]
        return n.resize(x, name, (2 * h, 2 * w), 'nearest')

    x = n.conv_silu('input', 'model.0', 16, 3, 2)
    x = c2f(n.conv_silu(x, 'model.1', 32, 3, 2), 'model.2', 32, 1, True)
    p3 = c2f(n.conv_silu(x, 'model.3', 64, 3, 2), 'model.4', 64, 2, True)
    p4 = c2f(n.conv_silu(p3, 'model.5', 128, 3, 2), 'model.6', 128, 2, True)
    x = c2f(n.conv_silu(p4, 'model.7', 256, 3, 2), 'model.8', 256, 1, True)
    p5 = sppf(x, 'model.9', 256)
    h4 = c2f(n.concat([up(p5, 'model.10'), p4], 'model.11'), 'model.12', 128, 1, False)
    o3 = c2f(n.concat([up(h4, 'model.13'), p3], 'model.14'), 'model.15', 64, 1, False)
    o4 = c2f(n.concat([n.conv_silu(o3, 'model.16', 64, 3, 2), h4], 'model.17'), 'model.18', 128, 1, False)
    o5 = c2f(n.concat([n.conv_silu(o4, 'model.19', 128, 3, 2), p5], 'model.20'), 'model.21', 256, 1, False)
    # Detect: per level a box branch (4 x reg_max distribution bins) and a class branch, concatenated
    c2, c3, no = max(16, 64 // 4, reg_max * 4), max(64, min(nc, 100)), 4 * reg_max + nc
    flat, anchors, strides = [], [], []
    for i, x in enumerate((o3, o4, o5)):
        name = f'model.22.{i}'
        box = n.conv(n.conv_silu(n.conv_silu(x, f'{name}.cv2.0', c2, 3), f'{name}.cv2.1', c2, 3), f'{name}.cv2.2',
                     4 * reg_max, 1, bias=True, gain=1.0)
        cls = n.conv(n.conv_silu(n.conv_silu(x, f'{name}.cv3.0', c3, 3), f'{name}.cv3.1', c3, 3), f'{name}.cv3.2',
                     nc, 1, bias=True, gain=1.0)
        y = n.concat([box, cls], f'{name}.cat')
        _, h, w = n.shape[y]
        shape = n.const(f'{name}.flat.shape', n.np.array([1, no, h * w], n.np.int64))
        flat.append(n.node('Reshape', [y, shape], f'{name}.flat', (no, h * w)))
        stride = n.shape['input'][1] // h
        gy, gx = n.np.meshgrid(n.np.arange(h, dtype=n.np.float32) + 0.5, n.np.arange(w, dtype=n.np.float32) + 0.5,
                               indexing='ij')
        anchors.append(n.np.stack([gx.ravel(), gy.ravel()]))
        strides.append(n.np.full(h * w, stride, n.np.float32))
    a = sum(n.shape[f][1] for f in flat)
    x = n.node('Concat', flat, 'model.22.cat', (no, a), axis=2)
    box, cls = n.nodes('Split', [x, n.const('model.22.split', n.np.array([4 * reg_max, nc], n.np.int64))],
                       'model.22.split', [(4 * reg_max, a), (nc, a)], axis=1)
    # DFL: softmax over each side's reg_max bins, expectation by a fixed 1x1 conv with weights 0..reg_max-1
    shape = n.const('model.22.dfl.shape', n.np.array([1, 4, reg_max, a], n.np.int64))
    d = n.node('Reshape', [box, shape], 'model.22.dfl.view', (4, reg_max, a))
    d = n.node('Transpose', [d], 'model.22.dfl.transpose', (reg_max, 4, a), perm=[0, 2, 1, 3])
    d = n.node('Softmax', [d], 'model.22.dfl.softmax', (reg_max, 4, a), axis=1)
    weight = n._init('model.22.dfl.conv.weight', n.np.arange(reg_max, dtype=n.np.float32).reshape(1, reg_max, 1, 1))
    d = n.node('Conv', [d, weight], 'model.22.dfl.conv', (1, 4, a), kernel_shape=[1, 1])
    d = n.node('Reshape', [d, n.const('model.22.dfl.out', n.np.array([1, 4, a], n.np.int64))], 'model.22.dfl', (4, a))
    # dist2bbox (xywh) times the stride of each anchor's level
    lt, rb = n.nodes('Split', [d, n.const('model.22.lr', n.np.array([2, 2], n.np.int64))], 'model.22.lt_rb',
                     [(2, a), (2, a)], axis=1)
    anchor = n.const('model.22.anchors', n.np.concatenate(anchors, 1)[None])
    x1y1 = n.node('Sub', [anchor, lt], 'model.22.x1y1', (2, a))
    x2y2 = n.node('Add', [anchor, rb], 'model.22.x2y2', (2, a))
    c_xy = n.node('Div', [n.add(x1y1, x2y2, 'model.22.sum'), n.const('model.22.two', n.np.array(2, n.np.float32))],
                  'model.22.c_xy', (2, a))
    wh = n.node('Sub', [x2y2, x1y1], 'model.22.wh', (2, a))
    dbox = n.node('Mul', [n.concat([c_xy, wh], 'model.22.xywh'),
                          n.const('model.22.strides', n.np.concatenate(strides)[None])], 'model.22.dbox', (4, a))
    return n.node('Concat', [dbox, n.node('Sigmoid', [cls], 'model.22.cls', (nc, a))], 'output0', (4 + nc, a),
                  axis=1)


def _divisible(v, d=8):
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def _lraspp_mobilenet_v3_large(n, classes=21):
    """torchvision lraspp_mobilenet_v3_large: the dilated MobileNetV3-Large features (output stride 16) and the
    LR-ASPP head on features 4 (low, stride 8) and 16 (high); Hardswish/Hardsigmoid as ONNX ops, SE blocks,
    bilinear Resize; output ``out`` 1 x classes x H x W."""
    cfg = [(3, 16, 16, False, 'relu', 1, 1), (3, 64, 24, False, 'relu', 2, 1), (3, 72, 24, False, 'relu', 1, 1),
           (5, 72, 40, True, 'relu', 2, 1), (5, 120, 40, True, 'relu', 1, 1), (5, 120, 40, True, 'relu', 1, 1),
           (3, 240, 80, False, 'hswish', 2, 1), (3, 200, 80, False, 'hswish', 1, 1),
           (3, 184, 80, False, 'hswish', 1, 1), (3, 184, 80, False, 'hswish', 1, 1),
           (3, 480, 112, True, 'hswish', 1, 1), (3, 672, 112, True, 'hswish', 1, 1),
           (5, 672, 160, True, 'hswish', 2, 2), (5, 960, 160, True, 'hswish', 1, 2),
           (5, 960, 160, True, 'hswish', 1, 2)]
    x = n.cbr('input', 'features.0', 16, 3, 2, act='hswish')
    low = None
    for i, (k, exp, cout, se, act, s, d) in enumerate(cfg, 1):
        name, cin = f'features.{i}', n.shape[x][0]
        residual = s == 1 and cin == cout
        y = x if exp == cin else n.cbr(x, f'{name}.expand', exp, 1, act=act)
        y = n.cbr(y, f'{name}.dw', exp, k, 1 if d > 1 else s, g=exp, act=act, d=d)
        if se:
            sq = _divisible(exp // 4)
            g = n.gap(y, f'{name}.se.avgpool')
            g = n.relu(n.conv(g, f'{name}.se.fc1', sq, 1, bias=True))
            g = n.conv(g, f'{name}.se.fc2', exp, 1, bias=True, gain=1.0)
            g = n.node('HardSigmoid', [g], f'{name}.se.hsigmoid', n.shape[g], alpha=1.0 / 6, beta=0.5)
            y = n.node('Mul', [y, g], f'{name}.se.scale', n.shape[y])
        y = n.cbr(y, f'{name}.project', cout, 1, act=None, gamma=0.5 if residual else 1.0)
        x = n.add(x, y, f'{name}.add') if residual else y
        if i == 4:
            low = x
    high = n.cbr(x, 'features.16', 960, 1, act='hswish')
    # LR-ASPP head
    y = n.cbr(high, 'classifier.cbr', 128, 1)
    s = n.conv(n.gap(high, 'classifier.scale.avgpool'), 'classifier.scale.conv', 128, 1, gain=1.0)
    s = n.node('Sigmoid', [s], 'classifier.scale.sigmoid', n.shape[s])
    y = n.node('Mul', [y, s], 'classifier.scale.mul', n.shape[y])
    y = n.resize(y, 'classifier.up', n.shape[low][1:], 'linear')
    y = n.add(n.conv(low, 'classifier.low_classifier', classes, 1, bias=True, gain=1.0),
              n.conv(y, 'classifier.high_classifier', classes, 1, bias=True, gain=1.0), 'classifier.add')
    return n.resize(y, 'out', n.shape['input'][1:], 'linear')


_BUILDERS = {'alexnet': _alexnet, 'googlenet': _googlenet, 'mobilenet_v1': _mobilenet_v1,
             'mobilenet_v2': _mobilenet_v2, 'resnet50': _resnet50, 'squeezenet1_1': _squeezenet1_1,
             'tiny': _tiny, 'yolov8n': _yolov8n, 'lraspp_mobilenet_v3_large': _lraspp_mobilenet_v3_large}


def input_shape(name):
    """(C, H, W) of a zoo network's input."""
    _check_name(name)
    return INPUT_SHAPES.get(name, (3, 224, 224))


def _check_name(name):
    if name not in _BUILDERS:
        raise PipeitError(f'unknown zoo network {name!r}; choose one of {", ".join(NETWORKS)}')


def build(name, seed=0):
    """The network ``name`` as an in-memory ONNX model with weights drawn from ``seed``."""
    _check_name(name)
    net = Net(seed)
    net.shape['input'] = input_shape(name)
    output = _BUILDERS[name](net)
    return net.model(name, input_shape(name), output)


# op -> the inputs that are learned parameters (weights, biases, BatchNorm scale and shift)
_LEARNED = {'Conv': (1, 2), 'ConvTranspose': (1, 2), 'Gemm': (1, 2), 'MatMul': (1,), 'BatchNormalization': (1, 2)}


def parameter_count(model):
    """Parameters as torchvision and ultralytics count them: the initializers that convolutions, fully
    connected layers and BatchNorm scale/shift read (not running statistics, shapes, sizes or anchors)."""
    learned = {node.input[i] for node in model.graph.node for i in _LEARNED.get(node.op_type, ())
               if i < len(node.input)}
    return sum(math.prod(t.dims) for t in model.graph.initializer if t.name in learned)


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

