"""Outputs by task: inferred from the output shape or metadata, class scores that are already probabilities
left alone, YOLO heads decoded with NMS and mapped back to source pixels (against a numpy reference)."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import pytest

from pipeit_ros.app import results
from pipeit_ros.app.preprocess import PreprocessConfig, geometry
from pipeit_ros.errors import PipeitError
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import meta


@pytest.mark.parametrize('shape,hw,task,fmt', [
    ((1, 1000), (224, 224), 'classification', ''), ((1, 4, 1, 1), (224, 224), 'classification', ''),
    ((1, 84, 8400), (640, 640), 'detection', 'yolov8'), ((1, 22, 2100), (320, 320), 'detection', 'yolov8'),
    ((1, 15, 21504), (1024, 1024), 'detection', 'yolov8'), ((1, 84, 6300), (480, 640), 'detection', 'yolov8'),
    ((1, 25200, 85), (640, 640), 'detection', 'yolov5'),
    ((1, 1, 480, 640), (480, 640), 'raw', ''), ((1, 40, 6625), (48, 320), 'raw', ''),
    ((1, 84, 8400), (320, 320), 'raw', ''), ((1, 3, 8, 8), (8, 8), 'raw', ''),
], ids=['logits', 'logits-4d', 'yolov8-coco', 'yolov8-18', 'yolov8-1024', 'yolov8-480x640', 'yolov5-coco',
        'dbnet-map', 'crnn-ctc', 'head-of-another-size', 'features'])
def test_task_is_inferred_from_the_output_shape(shape, hw, task, fmt):
    assert results.infer_task(shape, hw)[:2] == (task, fmt)


def head_net(path, last_ops, n=4, metadata=None):
    """input [1, 3, 4, 4] -> GlobalAveragePool -> Flatten -> Gemm(n) -> last_ops..."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, 3)).astype(np.float32), 'w')
    nodes = [helper.make_node('GlobalAveragePool', ['input'], ['p'], name='pool'),
             helper.make_node('Flatten', ['p'], ['f'], name='flatten'),
             helper.make_node('Gemm', ['f', 'w'], ['t0'], name='fc', transB=1)]
    for i, op in enumerate(last_ops):
        nodes.append(helper.make_node(op, [f't{i}'], [f't{i + 1}'], name=f'{op.lower()}_{i}'))
    out = f't{len(last_ops)}'
    g = helper.make_graph(nodes, 'head', [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, n])], initializer=[w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return graph_mod.load(str(path))


@pytest.mark.parametrize('last_ops,activation', [
    ([], 'softmax'), (['Softmax'], 'none'), (['Softmax', 'Identity'], 'none'), (['Sigmoid'], 'none'),
    (['Relu'], 'softmax'),
], ids=['logits', 'softmax', 'paddle-softmax-identity', 'sigmoid', 'relu'])
def test_scores_get_softmax_only_when_the_model_does_not_end_in_one(tmp_path, last_ops, activation):
    lines = []
    g = head_net(tmp_path / 'h.onnx', last_ops)
    spec = results.output_spec(g, log=lines.append)
    assert spec.task == 'classification' and spec.activation == activation
    assert len(lines) == 1 and 'task classification' in lines[0]


def test_a_distribution_is_published_as_it_is():
    """Was: softmax over probabilities, 0.925 published as 0.45."""
    probs = np.array([[0.925, 0.025, 0.025, 0.025]], np.float32)
    assert results.top_k(probs, 1, activation='none')[0]['score'] == pytest.approx(0.925)
    assert results.top_k(probs, 1, activation='softmax')[0]['score'] == pytest.approx(0.4505, abs=1e-3)
    logits = np.array([2.0, -1.0])
    assert results.top_k(logits, 1, activation='sigmoid')[0]['score'] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_given_task_and_activation_win_and_labels_come_from_metadata(tmp_path):
    g = head_net(tmp_path / 'h.onnx', ['Softmax'], metadata={'character': 'up\nright\ndown\nleft'})
    spec = results.output_spec(g, task='raw')
    assert spec.task == 'raw'
    spec = results.output_spec(g, activation='softmax')
    assert spec.activation == 'softmax' and spec.labels == ('up', 'right', 'down', 'left')
    assert results.output_spec(g, labels=['a', 'b', 'c', 'd']).labels == ('a', 'b', 'c', 'd')
    with pytest.raises(PipeitError, match='task detection needs a YOLO head'):
        results.output_spec(g, task='detection')


@pytest.mark.parametrize('md,labels', [
    ({'author': 'Ultralytics', 'names': "{0: 'person', 1: 'bicycle'}", 'stride': '32'}, ['person', 'bicycle']),
    ({'labels': '["cat", "dog"]'}, ['cat', 'dog']), ({'classes': 'cat\ndog'}, ['cat', 'dog']),
    ({'character': '0\n90\n180\n270'}, ['0', '90', '180', '270']), ({}, None),
], ids=['ultralytics', 'json-labels', 'lines', 'paddle-character', 'none'])
def test_labels_from_metadata(md, labels):
    assert meta.labels(md) == labels


# -- detection ---------------------------------------------------------------------------------------------------
def yolo_head(boxes, fmt, n_classes=3, anchors=50, seed=0):
    """A head with ``boxes`` [(cx, cy, w, h, class, score)] in model pixels among low-score noise anchors."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((anchors, (4 if fmt == 'yolov8' else 5) + n_classes), np.float32)
    rows[:, :4] = rng.uniform(10, 100, (anchors, 4))
    first = 4 if fmt == 'yolov8' else 5
    rows[:, first:] = rng.uniform(0, 0.1, (anchors, n_classes))
    if fmt == 'yolov5':
        rows[:, 4] = 1.0
    for i, (cx, cy, w, h, c, s) in enumerate(boxes):
        rows[i, :4] = (cx, cy, w, h)
        rows[i, first + c] = s
    return rows.T[None] if fmt == 'yolov8' else rows[None]


def reference_decode(head, fmt, geo, src_hw, score_threshold, iou_threshold):
    """numpy only: threshold, greedy per-class NMS, map back, clip."""
    rows = head[0].T if fmt == 'yolov8' else head[0]
    first = 4 if fmt == 'yolov8' else 5
    cls = rows[:, first:]
    ids = cls.argmax(1)
    scores = cls.max(1) * (rows[:, 4] if fmt == 'yolov5' else 1)
    sx, sy, ox, oy = geo
    h, w = src_hw
    x0 = np.clip((rows[:, 0] - rows[:, 2] / 2 - ox) / sx, 0, w)
    y0 = np.clip((rows[:, 1] - rows[:, 3] / 2 - oy) / sy, 0, h)
    x1 = np.clip((rows[:, 0] + rows[:, 2] / 2 - ox) / sx, 0, w)
    y1 = np.clip((rows[:, 1] + rows[:, 3] / 2 - oy) / sy, 0, h)
    keep = []
    for i in np.argsort(-scores, kind='stable'):
        if scores[i] < score_threshold:
            break
        ok = True
        for j in keep:
            if ids[j] != ids[i]:
                continue
            iw = max(0.0, min(x1[i], x1[j]) - max(x0[i], x0[j]))
            ih = max(0.0, min(y1[i], y1[j]) - max(y0[i], y0[j]))
            inter = iw * ih
            union = (x1[i] - x0[i]) * (y1[i] - y0[i]) + (x1[j] - x0[j]) * (y1[j] - y0[j]) - inter
            if inter / union > iou_threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return [(int(ids[i]), float(scores[i]), [x0[i], y0[i], x1[i] - x0[i], y1[i] - y0[i]]) for i in keep]


@pytest.mark.parametrize('fmt', ['yolov8', 'yolov5'])
@pytest.mark.parametrize('resize', ['letterbox', 'stretch', 'center_crop'])
def test_detections_equal_a_numpy_reference_in_source_pixels(fmt, resize):
    boxes = [(160, 120, 80, 60, 0, 0.9), (165, 122, 80, 60, 0, 0.8),    # overlaps the first: suppressed
             (165, 122, 80, 60, 1, 0.7),                                # same place, other class: kept
             (60, 200, 40, 40, 2, 0.6), (300, 100, 30, 50, 1, 0.3)]
    head = yolo_head(boxes, fmt)
    cfg = PreprocessConfig(input_shape=(1, 3, 320, 320), resize=resize)
    src_hw = (480, 800)                                                 # non-square source
    geo = geometry(cfg, src_hw)
    spec = results.OutputSpec(task='detection', detection_format=fmt, labels=('a', 'b', 'c'),
                              score_threshold=0.25, nms_threshold=0.45)
    got = results.decode_detections(head, spec, geo, src_hw)
    want = reference_decode(head, fmt, geo, src_hw, 0.25, 0.45)
    assert [(d['class_id'], round(d['score'], 6)) for d in got] == [(c, round(s, 6)) for c, s, _ in want]
    for d, (_, _, box) in zip(got, want):
        np.testing.assert_allclose(d['bbox'], box, atol=1e-3)
    assert [d['label'] for d in got] == ['a', 'b', 'c', 'b']


def test_max_detections_keeps_the_best():
    boxes = [(40 + 60 * i, 100, 30, 30, 0, 0.5 + 0.04 * i) for i in range(5)]
    head = yolo_head(boxes, 'yolov8', anchors=20)
    spec = results.OutputSpec(task='detection', detection_format='yolov8', max_detections=2)
    cfg = PreprocessConfig(input_shape=(1, 3, 320, 320))
    got = results.decode_detections(head, spec, geometry(cfg, (320, 320)), (320, 320))
    assert [round(d['score'], 2) for d in got] == [0.66, 0.62]


def test_letterbox_mapping_agrees_with_opencv():
    """Our source<->model map equals OpenCV's own Image2BlobParams.blobRectToImageRect (integer rects)."""
    import cv2
    for resize, mode in (('letterbox', cv2.dnn.DNN_PMODE_LETTERBOX), ('center_crop', cv2.dnn.DNN_PMODE_CROP_CENTER),
                         ('stretch', cv2.dnn.DNN_PMODE_NULL)):
        cfg = PreprocessConfig(input_shape=(1, 3, 320, 256), resize=resize)
        p = cv2.dnn.Image2BlobParams()
        p.size, p.paddingmode = (256, 320), mode
        src_hw = (480, 640)
        sx, sy, ox, oy = geometry(cfg, src_hw)
        for rect in [(10, 20, 100, 50), (0, 0, 256, 320), (100, 150, 40, 40)]:
            x, y, w, h = rect
            mine = ((x - ox) / sx, (y - oy) / sy, w / sx, h / sy)
            theirs = p.blobRectToImageRect(rect, (src_hw[1], src_hw[0]))
            np.testing.assert_allclose(mine, theirs, atol=1.5, err_msg=f'{resize} {rect}')
