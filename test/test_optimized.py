"""Stages built from onnxruntime's optimised model, stored beside the prepared one (engine.optimized): the weights
onnxruntime rewrites are file pages shared by replicas, the ones it keeps point back into the prepared file."""
import gc
import os
import shutil
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort
import pytest

from pipeit_ros.engine import optimized
from pipeit_ros.engine.sessions import make_session, optimize_stages
from pipeit_ros.hw import memory as procmem
from pipeit_ros.hw.cpus import allowed_cpus
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.plan import Plan, Stage

CONV_C = 192


def conv_fc_model(path):
    """Three 3x3 convolutions (onnxruntime re-lays their weights to NCHWc on x86) and a fully connected layer
    (kept as it is): 3.4 MB and 2.4 MB of weights, small activations."""
    rng = np.random.default_rng(0)
    inits, nodes, x, c = [], [], 'x', 16
    for i in range(3):
        w = rng.standard_normal((CONV_C, c, 3, 3)).astype(np.float32) * 0.05
        inits += [numpy_helper.from_array(w, f'w{i}'), numpy_helper.from_array(np.zeros(CONV_C, np.float32), f'b{i}')]
        nodes += [helper.make_node('Conv', [x, f'w{i}', f'b{i}'], [f'c{i}'], pads=[1, 1, 1, 1]),
                  helper.make_node('Relu', [f'c{i}'], [f'r{i}'])]
        x, c = f'r{i}', CONV_C
    fc = rng.standard_normal((CONV_C * 8 * 8, 48)).astype(np.float32) * 0.01
    inits.append(numpy_helper.from_array(fc, 'fc'))
    nodes += [helper.make_node('Flatten', [x], ['flat']), helper.make_node('MatMul', ['flat', 'fc'], ['y'])]
    g = helper.make_graph(nodes, 'convfc', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 16, 8, 8])],
                          [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 48])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    with open(path, 'wb') as f:
        f.write(model.SerializeToString())
    return str(path)


@pytest.fixture
def net(tmp_path):
    return graph_mod.load(conv_fc_model(tmp_path / 'convfc.onnx'))


def whole(net):
    return net.extract_bytes(0, len(net.layers) - 1)


def rewritten(stage):
    """onnxruntime rewrote some of the stage's weights (x86: NCHWc convolutions; none on other CPUs)."""
    return bool(stage.weights[1].entries)


def test_a_stage_computes_what_the_model_computes(net, tmp_path):
    x = np.random.default_rng(1).standard_normal(net.input_shape).astype(np.float32)
    session = make_session(whole(net), (allowed_cpus()[0],), weights=net.weights)
    plain = ort.InferenceSession(str(tmp_path / 'convfc.onnx'), providers=['CPUExecutionProvider'])
    np.testing.assert_allclose(session.run(None, {'x': x})[0], plain.run(None, {'x': x})[0], rtol=1e-4, atol=1e-5)


def test_kept_weights_point_into_the_prepared_file_and_rewritten_ones_into_their_own(net):
    stage = optimized.optimize(whole(net), net.weights)
    prepared_names = {e[0] for e in net.weights.entries}
    kept, own = stage.weights
    assert kept == net.weights
    own_names = {e[0] for e in own.entries}
    assert os.path.getsize(own.path) < net.weights.total_bytes        # not a second copy of the model
    assert 'fc' not in own_names                                      # the MatMul's weights are used as they are
    assert own_names.isdisjoint(prepared_names) or not own_names <= prepared_names
    assert all(offset % 64 == 0 for _, offset, *_ in own.entries)
    if os.uname().machine in ('x86_64', 'AMD64'):
        assert rewritten(stage), 'onnxruntime re-lays convolution weights to NCHWc on x86'
    again = optimized.optimize(whole(net), net.weights)
    assert again == stage


def test_replicas_share_the_weights_onnxruntime_rewrites(net):
    """A second session of the stage adds less than 30 % of the rewritten weights (it added all of them when
    every session optimised the model itself)."""
    stage = optimized.optimize(whole(net), net.weights)
    if not rewritten(stage):
        pytest.skip('onnxruntime rewrites no weights of this model on this CPU')
    x = {'x': np.zeros(net.input_shape, np.float32)}
    cpu = (allowed_cpus()[0],)
    sessions = [make_session(whole(net), cpu, weights=net.weights)]
    sessions[0].run(None, x)
    before = procmem.anonymous_now()
    sessions.append(make_session(whole(net), cpu, weights=net.weights))
    sessions[1].run(None, x)
    grown = procmem.anonymous_now() - before
    assert grown < 0.3 * stage.weights[1].total_bytes, (grown, stage.weights[1].total_bytes)
    folder = os.path.dirname(net.weights.path)
    assert procmem.mapped_bytes(stage.weights[1].path) >= 0.9 * os.path.getsize(stage.weights[1].path)
    sessions = None
    gc.collect()
    assert procmem.mapped_bytes(folder, under=True) == 0, 'the mappings go with the last session'


def test_the_key_follows_the_cpu(net, monkeypatch):
    first = optimized.optimize(whole(net), net.weights)
    monkeypatch.setattr(optimized, 'cpu_signature', lambda: 'another-cpu')
    other = optimized.optimize(whole(net), net.weights)
    assert other.weights[1].path != first.weights[1].path


def test_a_damaged_entry_is_made_again(net, capsys):
    stage = optimized.optimize(whole(net), net.weights)
    model_path = stage.weights[1].path[:-len('.data')] + '.onnx'
    with open(model_path, 'wb') as f:
        f.write(b'not a model')
    again = optimized.optimize(whole(net), net.weights)
    assert again == stage
    assert 'unusable' in capsys.readouterr().err
    assert any(n.startswith(os.path.basename(model_path) + '.bad-') for n in os.listdir(os.path.dirname(model_path)))


def test_a_stage_that_cannot_be_stored_is_built_as_before(net, capsys):
    """No optimised model (here: its folder cannot be made): one warning, and the session still runs."""
    folder = os.path.join(os.path.dirname(net.weights.path), optimized.FOLDER)
    shutil.rmtree(folder, ignore_errors=True)
    with open(folder, 'w') as f:
        f.write('in the way')
    try:
        assert optimized.optimize(whole(net), net.weights) is None
        session = make_session(whole(net), (allowed_cpus()[0],), weights=net.weights)
        assert session.run(None, {'x': np.zeros(net.input_shape, np.float32)})[0].shape == (1, 48)
    finally:
        os.remove(folder)
    err = capsys.readouterr().err
    assert err.count('could not store the optimised stage') == 1, err


def test_a_plan_s_stages_are_made_before_its_processes_start(net):
    n, cpu = len(net.layers), (allowed_cpus()[0],)
    plan = Plan(stages=[Stage(0, n // 2, 'c0', cpu), Stage(n // 2 + 1, n - 1, 'c0', cpu)])
    optimize_stages(net, plan)
    folder = os.path.join(os.path.dirname(net.weights.path), optimized.FOLDER)
    made = set(os.listdir(folder))
    assert {optimized.stage_key(net.extract_bytes(s.first, s.last)) + '.onnx' for s in plan.stages} <= made
    assert procmem.mapped_bytes(os.path.dirname(net.weights.path), under=True) == 0   # nothing left mapped here


def test_a_session_keeps_its_weights_mapped(net, tmp_path):
    """onnxruntime keeps no reference to the OrtValues it was given: the session holds their mapping, so
    nothing else needs to (a mapping gone under a session crashed the process)."""
    x = np.random.default_rng(2).standard_normal(net.input_shape).astype(np.float32)
    session = make_session(whole(net), (allowed_cpus()[0],), weights=net.weights)
    gc.collect()
    plain = ort.InferenceSession(str(tmp_path / 'convfc.onnx'), providers=['CPUExecutionProvider'])
    np.testing.assert_allclose(session.run(None, {'x': x})[0], plain.run(None, {'x': x})[0], rtol=1e-4, atol=1e-5)


def test_stages_unused_for_long_are_removed_when_another_is_stored(net):
    """A plan re-cut by adaptation leaves its old stages behind: those no process read for STALE_S go when the
    next stage is stored; one read recently stays, and so do its files."""
    n = len(net.layers)
    old, recent = optimized.optimize(whole(net), net.weights), optimized.optimize(net.extract_bytes(0, 1), net.weights)
    long_ago = time.time() - optimized.STALE_S - 60
    for stage in (old, recent):
        model_path = stage.weights[1].path[:-len('.data')] + '.onnx'
        os.utime(model_path, (long_ago, long_ago))
    folder = os.path.dirname(old.weights[1].path)
    left_over = os.path.join(folder, '.opt-killed')
    os.makedirs(left_over, exist_ok=True)
    os.utime(left_over, (long_ago, long_ago))
    assert optimized.optimize(net.extract_bytes(0, 1), net.weights) == recent      # read: in use again
    third = os.path.join(folder, optimized.stage_key(net.extract_bytes(2, n - 1)))
    for path in (third + '.onnx', third + '.data'):
        if os.path.exists(path):
            os.remove(path)
    optimized.optimize(net.extract_bytes(2, n - 1), net.weights)                    # stored: prunes
    names = set(os.listdir(folder))
    assert os.path.basename(old.weights[1].path)[:-len('.data')] + '.onnx' not in names
    assert os.path.basename(old.weights[1].path) not in names
    assert os.path.basename(recent.weights[1].path)[:-len('.data')] + '.onnx' in names
    assert '.opt-killed' not in names
