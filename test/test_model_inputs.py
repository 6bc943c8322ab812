"""Models as exporters write them: dynamic input dims (symbols, '?' shared by H and W, -1 or 0 batch) fixed by
``--input-shape`` / ``input_shape``, output dims of -1, and models onnxruntime loads but cannot run."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from planner_helpers import domain_id
import pytest

from pipeit_ros.errors import ModelError
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model.load import parse_input_shape

COMMANDS = {               # every command that takes a MODEL, with what it needs to get to the model
    'inspect': ['inspect'],
    'profile': ['profile', '--topology', 'emulated-2x1'],
    'plan': ['plan', '--topology', 'emulated-2x1'],
    'bench': ['bench', '--topology', 'emulated-2x1', '--auto', '--seconds', '0.2', '--rounds', '1'],
}


def conv_net(path, input_dims, output_dims, channels=3):
    """Conv(3x3, 4 filters) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(2), with the given declared dims."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), 'w'),
             numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), 'fc_w')]
    nodes = [helper.make_node('Conv', ['input', 'w'], ['c'], name='conv', pads=[1, 1, 1, 1]),
             helper.make_node('Relu', ['c'], ['r'], name='relu'),
             helper.make_node('GlobalAveragePool', ['r'], ['p'], name='pool'),
             helper.make_node('Flatten', ['p'], ['f'], name='flatten'),
             helper.make_node('Gemm', ['f', 'fc_w'], ['logits'], name='fc', transB=1)]
    g = helper.make_graph(nodes, 'dyn', [helper.make_tensor_value_info('input', TensorProto.FLOAT, input_dims)],
                          [helper.make_tensor_value_info('logits', TensorProto.FLOAT, output_dims)], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


DYNAMIC = {   # id -> (declared input dims, the dims the refusal must name)
    'symbols': (['batch', 3, 'height', 'width'], 'H=height, W=width'),
    'shared-question-mark': ([-1, 3, '?', '?'], 'H=?, W=?'),          # Paddle: H and W share the name '?'
    'zero-batch': ([0, 3, 'h', 48], 'H=h'),
    'dynamic-channels': ([1, 'c', 32, 48], 'C=c'),
}


@pytest.mark.parametrize('case', sorted(DYNAMIC), ids=sorted(DYNAMIC))
def test_dynamic_dims_without_a_shape_exit_2_naming_them_and_the_flag(tmp_path, run_cli, case):
    dims, named = DYNAMIC[case]
    path = conv_net(tmp_path / f'{case}.onnx', dims, [-1, 2])
    code, out, err = run_cli('inspect', path)
    assert code == 2 and out == '' and err.count('\n') == 1, err
    assert named in err and '--input-shape' in err and path in err


@pytest.mark.parametrize('case', sorted(DYNAMIC), ids=sorted(DYNAMIC))
def test_given_shape_fixes_every_dynamic_dim_and_the_model_runs(tmp_path, run_cli, case):
    dims, _ = DYNAMIC[case]
    path = conv_net(tmp_path / f'{case}.onnx', dims, [-1, 2])
    code, out, err = run_cli('inspect', '--json', path, '--input-shape', '1x3x32x48')
    assert code == 0, err
    summary = json.loads(out)
    assert summary['input_shape'] == [1, 3, 32, 48] and summary['output_shapes'] == [[1, 2]]


def test_a_dynamic_batch_alone_needs_no_shape(tmp_path):
    g = graph_mod.load(conv_net(tmp_path / 'b.onnx', [-1, 3, 16, 16], [-1, 2]))
    assert g.input_shape == (1, 3, 16, 16) and g.batch_fixed


def test_shape_is_part_of_the_model_hash_only_where_it_fixed_a_dim(tmp_path):
    dyn = conv_net(tmp_path / 'dyn.onnx', ['n', 3, 'h', 'w'], ['n', 2])
    fixed = conv_net(tmp_path / 'fixed.onnx', [1, 3, 32, 32], [1, 2])
    assert graph_mod.load(dyn, '1x3x32x32').model_hash != graph_mod.load(dyn, '1x3x64x64').model_hash
    assert graph_mod.load(fixed, '1x3x32x32').model_hash == graph_mod.load(fixed).model_hash


@pytest.mark.parametrize('shape,words', [
    ('1x3x32', '4 positive numbers'), ('1x3x0x32', '4 positive numbers'), ('ax3x32x32', '4 positive numbers'),
    ('2x3x32x32', 'batch 2'),
], ids=['three-dims', 'zero-dim', 'not-a-number', 'batch-2'])
def test_bad_input_shapes_are_refused_with_the_reason(tmp_path, run_cli, shape, words):
    with pytest.raises(ModelError, match=words):
        parse_input_shape(shape)
    path = conv_net(tmp_path / 'n.onnx', ['n', 3, 'h', 'w'], ['n', 2])
    with pytest.raises(SystemExit) as info:         # argparse's own usage error: exit 2
        run_cli('inspect', path, '--input-shape', shape)
    assert info.value.code == 2


def test_a_shape_that_contradicts_a_fixed_dim_is_refused(tmp_path, run_cli):
    path = conv_net(tmp_path / 'f.onnx', [1, 3, 32, 'w'], [1, 2])
    code, _, err = run_cli('inspect', path, '--input-shape', '1x3x64x64')
    assert code == 2 and 'H 32 (given 64)' in err and err.count('\n') == 1


def test_input_shape_from_the_sidecar(tmp_path):
    path = conv_net(tmp_path / 'net.onnx', ['n', 3, 'h', 'w'], ['n', 2])
    (tmp_path / 'net.pipeit.yaml').write_text('input_shape: 1x3x40x24\n')
    assert graph_mod.load(path).input_shape == (1, 3, 40, 24)


def test_output_dims_of_minus_one_never_reach_the_cost_model_as_negative_bytes(tmp_path):
    """Paddle writes -1 for its output dims: every byte count the cost model reads must come out positive."""
    path = conv_net(tmp_path / 'paddle.onnx', [-1, 3, '?', '?'], [-1, -1])
    g = graph_mod.load(path, '1x3x48x192')
    assert g.output_shapes == [(1, 2)]
    assert all(layer.output_bytes > 0 for layer in g.layers), [layer.output_bytes for layer in g.layers]
    assert all(c.bytes > 0 for c in g.cut_points)
    assert all(d > 0 for shape, _ in g._tensors.values() for d in shape)


@pytest.mark.slow
def test_plan_with_the_predictor_on_minus_one_outputs_gives_finite_times(tmp_path, run_cli):
    """Was: output_bytes -8, log10 -> NaN in the predictor, exit 1 'internal error'."""
    path = conv_net(tmp_path / 'paddle.onnx', [-1, 3, '?', '?'], [-1, -1])
    code, out, err = run_cli('plan', path, '--input-shape', '1x3x48x192', '--topology', 'rk3588', '--json')
    assert code == 0, err
    stages = json.loads(out)['stages']
    assert stages and all(math.isfinite(s['predicted_ms']) and s['predicted_ms'] > 0 for s in stages)


NHWC_GIVEN = '1x8x8x3'      # NHWC data for a model whose Conv expects NCHW: onnxruntime refuses to run it


@pytest.mark.parametrize('command', sorted(COMMANDS), ids=sorted(COMMANDS))
def test_a_model_onnxruntime_cannot_run_exits_2_with_its_reason(tmp_path, run_cli, command):
    path = conv_net(tmp_path / 'nchw.onnx', ['n', 'c', 'h', 'w'], [-1, 2])
    code, out, err = run_cli(*COMMANDS[command], path, '--input-shape', NHWC_GIVEN)
    assert code == 2 and err.count('\n') == 1 and 'Traceback' not in err, err
    assert 'onnxruntime cannot run it' in err and 'Input channels C is not equal to kernel channels' in err


@pytest.mark.ros
@pytest.mark.parametrize('shape,message', [
    ('', 'give its shape with --input-shape'),
    (NHWC_GIVEN, 'Input channels C is not equal to kernel channels'),
], ids=['no-shape', 'onnxruntime-refuses'])
def test_planner_node_refuses_such_a_model_at_start_with_exit_2(tmp_path, shape, message):
    path = conv_net(tmp_path / 'nchw.onnx', ['n', 'c', 'h', 'w'], [-1, 2])
    code = 'import sys; from pipeit_ros.ros.planner_node import main; sys.exit(main())'
    argv = ['--ros-args', '-p', f'model_path:={path}', '-p', 'topology:=emulated-2x1']
    argv += ['-p', f'input_shape:={shape}'] if shape else []
    proc = subprocess.run([sys.executable, '-c', code, *argv], capture_output=True, text=True, timeout=60,
                          env={**os.environ, 'ROS_DOMAIN_ID': str(domain_id())})
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and 'plan generation' not in proc.stderr, proc.stderr


def test_bringup_and_launch_pass_the_input_shape_to_the_planner(tmp_path):
    from pipeit_ros.app import layout
    path = conv_net(tmp_path / 'n.onnx', ['n', 3, 'h', 'w'], ['n', 2])
    params = layout.load_params_file(layout.default_params_file())
    specs = layout.build_layout(params, 'emulated-2x1', model=path, input_shape=(1, 3, 48, 192))
    planner = next(s for s in specs if s.role == 'planner')
    assert planner.parameters['input_shape'] == '1x3x48x192' and planner.parameters['model_path'] == path


@pytest.mark.ros
def test_planner_parameters_for_shape_preprocessing_and_task_are_checked_and_replan(tmp_path):
    """ros2 param set input_shape / resize_mode / task: bad values are refused with the reason and the old plan
    stays; a good one re-plans and the plan message carries the new pre-processing and output spec."""
    from planner_helpers import RosGraph, plan_listener
    from test_planner_ros import parameter_client, start_planner
    path = conv_net(tmp_path / 'dyn.onnx', ['n', 3, 'h', 'w'], ['n', 2])
    ros = RosGraph(domain_id())
    try:
        start_planner(ros, model_path=path, topology='emulated-2x1', stages='0-1@c0', input_shape='1x3x32x48')
        listener = plan_listener(ros)
        ros.wait(lambda: len(listener.plans) == 1, 30, 'the first plan')
        assert listener.plans[0].preprocess['input_shape'] == [1, 3, 32, 48]
        _, set_parameters = parameter_client(ros)
        for values, reason in ((dict(input_shape='1x3x32'), '4 positive numbers'),
                               (dict(input_shape='1x4x32x48'), 'disagrees in C 3 (given 4)'),
                               (dict(resize_mode='fit'), 'resize_mode must be one of'),
                               (dict(mean='a,b'), 'mean must be numbers'),
                               (dict(task='detection'), 'task detection needs a YOLO head')):
            result = set_parameters(**values)
            assert not result.successful and reason in result.reason, (values, result.reason)
        ok = set_parameters(input_shape='1x3x64x64')
        assert ok.successful, ok.reason
        ros.wait(lambda: len(listener.plans) == 2, 30, 'the re-plan')
        ok = set_parameters(resize_mode='letterbox')
        assert ok.successful, ok.reason
        ros.wait(lambda: len(listener.plans) == 3, 30, 'the second re-plan')
        m = listener.plans[-1]
        assert m.preprocess['input_shape'] == [1, 3, 64, 64] and m.preprocess['resize'] == 'letterbox'
        assert m.output['task'] == 'classification' and m.output['activation'] == 'softmax'
        assert m.model_hash != listener.plans[0].model_hash          # another input size, another profile key
    finally:
        ros.close()


# -- models whose input is not float32 ------------------------------------------------------------------------------
def pixel_net(path, elem=TensorProto.UINT8, shape=(1, 3, 32, 32)):
    """An image model that casts its own pixels, as detectors exported for embedded targets do: input of
    ``elem`` -> Cast(float) -> x/255 -> [Conv 3x3 -> Relu] x 3 (one MaxPool) -> GlobalAveragePool -> Gemm(4)."""
    rng = np.random.default_rng(3)
    inits, nodes, x, cin = [numpy_helper.from_array(np.array(1 / 255, np.float32), 'inv255')], [], 'pixels', shape[1]
    nodes += [helper.make_node('Cast', ['input'], ['pixels'], name='cast', to=TensorProto.FLOAT),
              helper.make_node('Mul', ['pixels', 'inv255'], ['x0'], name='norm')]
    x = 'x0'
    for i, cout in enumerate((8, 8, 16)):
        inits.append(numpy_helper.from_array(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) / 3, f'w{i}'))
        nodes += [helper.make_node('Conv', [x, f'w{i}'], [f'c{i}'], name=f'conv{i}', pads=[1, 1, 1, 1]),
                  helper.make_node('Relu', [f'c{i}'], [f'r{i}'], name=f'relu{i}')]
        x, cin = f'r{i}', cout
        if i == 1:
            nodes.append(helper.make_node('MaxPool', [x], ['p'], name='pool', kernel_shape=[2, 2], strides=[2, 2]))
            x = 'p'
    inits.append(numpy_helper.from_array(rng.standard_normal((4, cin)).astype(np.float32), 'fc_w'))
    nodes += [helper.make_node('GlobalAveragePool', [x], ['g'], name='gpool'),
              helper.make_node('Flatten', ['g'], ['f'], name='flatten'),
              helper.make_node('Gemm', ['f', 'fc_w'], ['logits'], name='fc', transB=1)]
    g = helper.make_graph(nodes, 'pixels', [helper.make_tensor_value_info('input', elem, list(shape))],
                          [helper.make_tensor_value_info('logits', TensorProto.FLOAT, [1, 4])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_a_uint8_input_is_a_fact_of_the_model_and_every_byte_count_follows_it(tmp_path):
    from pipeit_ros.cost.predictor import segment_bytes
    g = graph_mod.load(pixel_net(tmp_path / 'u8.onnx'))
    assert g.input_dtype == np.uint8 and g.summary()['input_dtype'] == 'uint8'
    assert g.input_bytes == 3 * 32 * 32                            # a quarter of the float32 figure
    x = g.sample_input(0)
    assert x.dtype == np.uint8 and x.shape == (1, 3, 32, 32) and x.max() > 200
    assert all(layer.output_bytes > 0 for layer in g.layers) and all(c.bytes > 0 for c in g.cut_points)
    in_bytes, out_bytes, _, acts = segment_bytes(g, g.segments())
    assert in_bytes[0] == g.input_bytes and min(in_bytes + out_bytes + acts) > 0


def test_a_uint8_model_split_and_chained_at_several_cuts_equals_the_whole(tmp_path):
    """Through the engine: every plan of 1-4 stages gives onnxruntime's own output on the unsplit file."""
    import onnxruntime as ort

    from pipeit_ros.engine.pipeline import Pipeline
    from pipeit_ros.hw.cpus import allowed_cpus
    from pipeit_ros.plan import Plan, Stage
    path = pixel_net(tmp_path / 'u8.onnx')
    g = graph_mod.load(path)
    cuts = [c.index for c in g.cut_points]
    assert len(cuts) >= 3
    xs = [g.sample_input(seed) for seed in range(4)]
    whole = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    want = [whole.run(None, {'input': x})[0] for x in xs]
    cpu = allowed_cpus()[:1]
    for chosen in ([], cuts[:1], cuts[1:3], cuts[:3]):
        bounds = [0, *chosen, len(g.layers)]
        plan = Plan(stages=tuple(Stage(a, b - 1, 'any', cpu, threads=1, pinned=False)
                                 for a, b in zip(bounds, bounds[1:])))
        with Pipeline(g, plan) as pipe:
            got = pipe.run(xs)
        for r, w in zip(got, want):
            np.testing.assert_allclose(r.outputs[0], w, rtol=1e-5, atol=1e-6, err_msg=str(chosen))


def test_a_uint8_model_gets_its_pixels_as_they_are(tmp_path):
    """The planner's record for a uint8 model is uint8, scale 1, mean 0, std 1; what the container's input
    node makes of a frame is the numpy resize of the frame, laid out NCHW or NHWC."""
    import cv2

    from pipeit_ros.app.planner_state import PlannerConfig, model_io
    from pipeit_ros.app.preprocess import PreprocessConfig, Preprocessor
    rng = np.random.default_rng(7)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (5, 5), 2)
    for shape in ((1, 3, 32, 32), (1, 24, 40, 3)):
        path = pixel_net(tmp_path / f'u8_{shape[1]}.onnx', shape=shape) if shape[1] == 3 else None
        if path is None:      # NHWC: the record from the input's shape, as resolve() finds it for such a model
            cfg = PreprocessConfig(input_shape=shape, layout='nhwc', dtype='uint8', scale=1, mean=0, std=1)
        else:
            pre, _ = model_io(PlannerConfig(model_path=path), graph_mod.load(path))
            assert (pre['dtype'], pre['scale'], list(pre['mean']), list(pre['std'])) == ('uint8', 1.0, [0.0] * 3,
                                                                                          [1.0] * 3)
            cfg = PreprocessConfig.from_dict(pre)
        out = Preprocessor(cfg)('rgb8', 48, 64, 64 * 3, frame.tobytes())
        h, w = cfg.size
        ref = cv2.resize(frame.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        ref = ref.transpose(2, 0, 1)[None] if cfg.layout == 'nchw' else ref[None]
        assert out.dtype == np.uint8 and out.shape == shape
        np.testing.assert_allclose(out.astype(np.float64), ref, atol=1.01, rtol=0)


@pytest.mark.parametrize('command', sorted(COMMANDS), ids=sorted(COMMANDS))
def test_a_uint8_model_goes_through_every_command(tmp_path, run_cli, command):
    fewer = ['--only', 'ort_all_cores', '--warmup', '2'] if command == 'bench' else []   # 2 fresh processes, not 5
    code, out, err = run_cli(*COMMANDS[command], *fewer, pixel_net(tmp_path / 'u8.onnx'))
    assert code == 0 and 'Traceback' not in err, err


@pytest.mark.parametrize('elem,name', [(TensorProto.FLOAT16, 'float16'), (TensorProto.INT64, 'int64'),
                                       (TensorProto.INT8, 'int8')], ids=['float16', 'int64', 'int8'])
def test_other_input_types_exit_2_naming_the_type(tmp_path, run_cli, elem, name):
    path = pixel_net(tmp_path / f'{name}.onnx', elem=elem)
    code, out, err = run_cli('inspect', path)
    assert code == 2 and out == '' and err.count('\n') == 1 and 'Traceback' not in err, err
    assert f"input 'input' is {name}" in err and 'float32 or uint8' in err
