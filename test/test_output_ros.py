"""What the last stage publishes per task on a real ROS 2 graph: every output of a multi-output model on
``pipeit/output``, detections (std_msgs/String JSON here, vision_msgs where built) with the image header and
boxes in source pixels, and the planner's pre-processing parameters applied by the container."""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import pytest

rclpy = pytest.importorskip('rclpy')

from pipeit_ros.app import results
from pipeit_ros.app.preprocess import PreprocessConfig, geometry
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.testing import harness

pytestmark = [pytest.mark.ros, pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='needs CPUs 0 and 1')]
STAMP = 1_700_000_000_000_000_000
CONTAINER = {'cluster': '*', 'topology': 'emulated-2x1', 'policy': 'block', 'image_qos': 'reliable'}


def save(model, path):
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def two_output_net(path):
    """uint8 pixels -> Cast -> Conv -> Relu -> (a) GlobalAveragePool -> Flatten [1, 4] and (b) the Relu map
    itself [1, 4, 8, 8]."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), 'w')
    nodes = [helper.make_node('Cast', ['input'], ['x'], name='cast', to=TensorProto.FLOAT),
             helper.make_node('Conv', ['x', 'w'], ['c'], name='conv', pads=[1, 1, 1, 1]),
             helper.make_node('Relu', ['c'], ['features'], name='relu'),
             helper.make_node('GlobalAveragePool', ['features'], ['p'], name='pool'),
             helper.make_node('Flatten', ['p'], ['logits'], name='flatten')]
    g = helper.make_graph(nodes, 'two', [helper.make_tensor_value_info('input', TensorProto.UINT8, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info('logits', TensorProto.FLOAT, [1, 4]),
                           helper.make_tensor_value_info('features', TensorProto.FLOAT, [1, 4, 8, 8])],
                          initializer=[w])
    return save(helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]), path)


BOXES = [(32.0, 30.0, 20.0, 10.0, 0, 0.9), (10.0, 40.0, 12.0, 12.0, 1, 0.4)]   # cx, cy, w, h (64x64 input), class


def fixed_head_net(path):
    """A 64 x 64 input 'detector' whose YOLOv8 head [1, 4+2, 84] holds BOXES whatever the image (plus the
    input's mean times 0, so the head depends on the input as a graph)."""
    head = np.zeros((1, 6, 84), np.float32)
    head[0, :4] = 1.0
    for i, (cx, cy, w, h, c, s) in enumerate(BOXES):
        head[0, :4, i] = (cx, cy, w, h)
        head[0, 4 + c, i] = s
    inits = [numpy_helper.from_array(head, 'head'), numpy_helper.from_array(np.zeros(1, np.float32), 'zero')]
    nodes = [helper.make_node('ReduceMean', ['input'], ['m'], name='mean', keepdims=0),
             helper.make_node('Mul', ['m', 'zero'], ['z'], name='times_zero'),
             helper.make_node('Add', ['head', 'z'], ['output0'], name='add')]
    g = helper.make_graph(nodes, 'det', [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 3, 64, 64])],
                          [helper.make_tensor_value_info('output0', TensorProto.FLOAT, [1, 6, 84])],
                          initializer=inits)
    return save(helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]), path)


def run_graph(path, frames, want, **planner_params):
    with harness.RosGraph() as rg:
        col, src = rg.collector(), rg.source()
        planner = rg.planner_node(model_path=path, topology='emulated-2x1', **planner_params)
        assert harness.wait(lambda: planner.generation == 1 and planner.idle(), 30), 'no plan'
        rg.container(CONTAINER)
        assert harness.wait(lambda: col.running(1), 30), 'container never reported running'
        assert src.wait_for_subscriber(10)
        for i, f in enumerate(frames):
            src.send(harness.image_msg(f, 'rgb8', STAMP + i * 33_000_000))
        assert harness.wait(lambda: want(col), 30), (len(col.outputs), len(col.classifications), len(col.detections))
        return col, planner.current


def test_every_output_of_a_two_output_model_is_published_in_order(tmp_path):
    """... and a uint8-input model gets the frame's resized pixels as they are: onnxruntime's outputs on the
    numpy reference input."""
    import cv2
    import onnxruntime as ort
    path = two_output_net(tmp_path / 'two.onnx')
    g = graph_mod.load(path)
    stages = f'0-{len(g.layers) - 1}@c0'
    frames = [harness.synthetic_frame(i, 64, 48) for i in range(3)]
    col, result = run_graph(path, frames, lambda c: len(c.outputs) >= 6 and len(c.classifications) >= 3,
                            **{'stages': stages})
    assert [o.shape for o in col.outputs] == [(1, 4), (1, 4, 8, 8)] * 3
    for i in range(3):   # the classification summarises the first output of the same frame
        assert col.classifications[i]['top_k'][0]['class_id'] == int(np.argmax(col.outputs[2 * i]))
    assert result.output['task'] == 'classification'
    assert result.preprocess['dtype'] == 'uint8' and result.preprocess['scale'] == 1.0
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for i, f in enumerate(frames):
        x = cv2.resize(f, (8, 8), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)[None].copy()
        for got, want in zip(col.outputs[2 * i:2 * i + 2], session.run(None, {'input': x})):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_detections_carry_the_image_header_and_source_pixel_boxes(tmp_path):
    path = fixed_head_net(tmp_path / 'det.onnx')
    g = graph_mod.load(path)
    frame = harness.synthetic_frame(0, 640, 480)
    col, result = run_graph(path, [frame], lambda c: len(c.detections) >= 1,
                            stages=f'0-{len(g.layers) - 1}@c0', resize_mode='letterbox', score_threshold=0.5)
    d = col.detections[0]
    assert d['header']['stamp'] == {'sec': STAMP // 10**9, 'nanosec': STAMP % 10**9}
    assert d['header']['frame_id'] == 'camera'
    assert result.output['task'] == 'detection' and result.preprocess['resize'] == 'letterbox'
    sx, sy, ox, oy = geometry(PreprocessConfig.from_dict(result.preprocess), (480, 640))
    assert (sx, sy, ox, oy) == (0.1, 0.1, 0.0, 8.0)             # 640x480 -> 64x48 band, 8 rows of border
    cx, cy, w, h, c, s = BOXES[0]                              # the box below the threshold is not published
    assert [(x['class_id'], round(x['score'], 6)) for x in d['detections']] == [(c, round(s, 6))]
    np.testing.assert_allclose(d['detections'][0]['bbox'],
                               [(cx - w / 2 - ox) / sx, (cy - h / 2 - oy) / sy, w / sx, h / sy], atol=1e-3)
    spec = results.OutputSpec.from_dict(result.output)
    assert spec.score_threshold == 0.5 and spec.detection_format == 'yolov8'
