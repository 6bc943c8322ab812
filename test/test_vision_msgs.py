"""The vision_msgs branch of ``pipeit/classification`` on a real graph: vision_msgs/Classification built from
the upstream message definitions (test/fixtures/vision_msgs, by scripts/build-vision-msgs) and imported by a
child process only, so every other test sees the std_msgs/String branch that a PyPI-only install has."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from planner_helpers import domain_id, finish, last_json, start_cli
import pytest

from pipeit_ros.app import results
from pipeit_ros.app.preprocess import PreprocessConfig, Preprocessor
from pipeit_ros.engine.pipeline import Pipeline
from pipeit_ros.hw.topology import resolve
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.plan import parse_spec
from pipeit_ros.testing import harness

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W, H, N, K = 640, 480, 4, 3
STAMP = 1_700_000_000_000_000_000

CHILD = r'''
import json, os
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.plan import parse_spec
from pipeit_ros.app.wire.plan_msg import encode_plan_message
from pipeit_ros.ros import messages
from pipeit_ros.testing import harness
from pipeit_ros.hw.topology import resolve

W, H, N, K, STAMP = 640, 480, 4, 3, 1_700_000_000_000_000_000
assert messages.Classification is not None, 'vision_msgs is not importable here'
g, topo = graph_mod.load(os.environ['PIPEIT_MODEL']), resolve('emulated-2x1')
plan = parse_spec('0-%d@c0' % (len(g.layers) - 1), topo, n_layers=len(g.layers))
text = encode_plan_message(plan, generation=1, reason='start', model_path=g.path, model_hash=g.model_hash,
                           topology=topo, input_shape=g.input_shape)
with harness.RosGraph(domain_id=int(os.environ['PIPEIT_DOMAIN'])) as rg:
    col, src, planner = rg.collector(), rg.source(), rg.planner()
    planner.publish(text)
    rg.container({'cluster': '*', 'topology': 'emulated-2x1', 'policy': 'block', 'image_qos': 'reliable',
                  'top_k': K})
    assert harness.wait(lambda: col.running(1), 20), 'never running'
    assert src.wait_for_subscriber(10)
    for i in range(N):
        src.send(harness.image_msg(harness.synthetic_frame(i, W, H, seed=5), 'rgb8', STAMP + i * 33_000_000,
                                   frame_id='vision_cam'))
    assert col.wait_for(N, 30), '%d of %d results' % (len(col.classifications), N)
    types = dict(col.get_topic_names_and_types())
    print(json.dumps({'type': types.get('/pipeit/classification'), 'results': col.classifications}))
'''


@pytest.fixture(scope='session')
def vision_env():
    """The environment a process needs to import the fixture vision_msgs (built once; ~20 s cold)."""
    missing = [t for t in ('cmake', 'ninja', 'cc', 'c++') if shutil.which(t) is None]
    if missing:
        pytest.skip(f'building vision_msgs needs {", ".join(missing)}')
    out = subprocess.run([os.path.join(REPO, 'scripts', 'build-vision-msgs')], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    env = dict(os.environ)
    for line in out.stdout.split():
        key, _, value = line.partition('=')
        env[key] = value + (os.pathsep + env[key] if env.get(key) else '')
    return env


def test_vision_msgs_classification_carries_the_engines_top_k(vision_env, zoo_model):
    model = zoo_model('tiny')
    env = {**harness.dds_env(environ=vision_env), 'PIPEIT_MODEL': model, 'PIPEIT_DOMAIN': str(domain_id())}
    child = subprocess.run([sys.executable, '-c', CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
    got = json.loads(child.stdout.strip().splitlines()[-1])
    assert got['type'] == ['vision_msgs/msg/Classification']

    g, topo = graph_mod.load(model), resolve('emulated-2x1')
    plan = parse_spec(f'0-{len(g.layers) - 1}@c0', topo, n_layers=len(g.layers))
    pre = Preprocessor(PreprocessConfig(input_shape=g.input_shape))
    frames = [harness.synthetic_frame(i, W, H, seed=5) for i in range(N)]
    with Pipeline(g, plan) as p:
        outputs = [r.outputs[0] for r in p.run([pre('rgb8', H, W, W * 3, f.tobytes()) for f in frames])]
    assert len(got['results']) == N
    for i, (res, out) in enumerate(zip(got['results'], outputs)):
        stamp = STAMP + i * 33_000_000
        assert res['header'] == {'stamp': {'sec': stamp // 10**9, 'nanosec': stamp % 10**9},
                                 'frame_id': 'vision_cam'}
        want = results.top_k(out[0], K)
        assert [t['class_id'] for t in res['top_k']] == [t['class_id'] for t in want]
        np.testing.assert_allclose([t['score'] for t in res['top_k']], [t['score'] for t in want], rtol=1e-5)
        assert 'generation' not in res and 'seq' not in res      # vision_msgs has no field for them


def test_bringup_counts_vision_msgs_results(vision_env, zoo_model, tmp_path):
    """bringup's live monitor subscribes with the type the containers publish: with vision_msgs importable it
    still sees every result and its latency (a String subscription would match none)."""
    params = tmp_path / 'params.yaml'
    params.write_text("pipeit_planner:\n  ros__parameters:\n    stages: '0-3@c0,4-8@c1'\n"
                      "pipeit_camera:\n  ros__parameters:\n    rate_hz: 20.0\n    width: 64\n    height: 48\n")
    keys = ('PYTHONPATH', 'LD_LIBRARY_PATH')
    proc, out = start_cli(['bringup', '--params-file', params, '--model', zoo_model('tiny'), '--topology',
                           'emulated-2x1', '--with-camera', 'pattern', '--duration', 8, '--json'], domain_id(),
                          extra_env={k: vision_env[k] for k in keys})
    code, text = finish(proc, out, 50)
    assert code == 0, text
    summary = last_json(text)
    assert summary['frames'] > 0 and summary['latency_p50_ms'] > 0, text
    assert 'results on /pipeit/classification as vision_msgs/msg/Classification' in text


CHILD_DETECTIONS = r'''
import json, os
from pipeit_ros.app.preprocess import PreprocessConfig
from pipeit_ros.app.results import OutputSpec
from pipeit_ros.app.wire.plan_msg import encode_plan_message
from pipeit_ros.hw.topology import resolve
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.plan import parse_spec
from pipeit_ros.ros import messages
from pipeit_ros.testing import harness

STAMP = 1_700_000_000_000_000_000
assert messages.Detection2DArray is not None, 'vision_msgs has no Detection2DArray here'
g, topo = graph_mod.load(os.environ['PIPEIT_MODEL']), resolve('emulated-2x1')
plan = parse_spec('0-%d@c0' % (len(g.layers) - 1), topo, n_layers=len(g.layers))
text = encode_plan_message(plan, generation=1, reason='start', model_path=g.path, model_hash=g.model_hash,
                           topology=topo, preprocess=PreprocessConfig(g.input_shape, resize='letterbox').to_dict(),
                           output=OutputSpec(task='detection', detection_format='yolov8').to_dict())
with harness.RosGraph(domain_id=int(os.environ['PIPEIT_DOMAIN'])) as rg:
    col, src, planner = rg.collector(outputs=False), rg.source(), rg.planner()
    planner.publish(text)
    rg.container({'cluster': '*', 'topology': 'emulated-2x1', 'policy': 'block', 'image_qos': 'reliable'})
    assert harness.wait(lambda: col.running(1), 20), 'never running'
    assert src.wait_for_subscriber(10)
    src.send(harness.image_msg(harness.synthetic_frame(0, 640, 480), 'rgb8', STAMP, frame_id='vision_cam'))
    assert harness.wait(lambda: col.detections, 30), 'no detections'
    types = dict(col.get_topic_names_and_types())
    print(json.dumps({'type': types.get('/pipeit/detections'), 'results': col.detections}))
'''


def test_vision_msgs_detection2d_array_carries_the_boxes(vision_env, tmp_path):
    from test_output_ros import BOXES, fixed_head_net
    model = fixed_head_net(tmp_path / 'det.onnx')
    env = {**harness.dds_env(environ=vision_env), 'PIPEIT_MODEL': model, 'PIPEIT_DOMAIN': str(domain_id())}
    child = subprocess.run([sys.executable, '-c', CHILD_DETECTIONS], env=env, capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
    got = json.loads(child.stdout.strip().splitlines()[-1])
    assert got['type'] == ['vision_msgs/msg/Detection2DArray']
    res = got['results'][0]
    assert res['header'] == {'stamp': {'sec': STAMP // 10**9, 'nanosec': STAMP % 10**9}, 'frame_id': 'vision_cam'}
    # 640x480 letterboxed into 64x64: scale 0.1, 8 rows of border on top
    want = [(c, s, [(cx - w / 2) / 0.1, (cy - h / 2 - 8) / 0.1, w / 0.1, h / 0.1]) for cx, cy, w, h, c, s in BOXES]
    assert [(d['class_id'], round(d['score'], 6)) for d in res['detections']] == \
        [(c, round(s, 6)) for c, s, _ in want]
    for d, (_, _, box) in zip(res['detections'], want):
        np.testing.assert_allclose(d['bbox'], box, atol=1e-3)
