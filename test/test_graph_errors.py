"""Bad model files: `pipeit inspect` exits 2 with one line naming the file and the reason, no traceback."""
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import pytest

from pipeit_ros.errors import ModelError
from pipeit_ros.model import graph

X = helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 3, 8, 8])
Y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3, 8, 8])


def _model(nodes, inputs=(X,), outputs=(Y,), inits=(), opset=17, extra_opsets=()):
    graph_proto = helper.make_graph(list(nodes), 'bad', list(inputs), list(outputs), initializer=list(inits))
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid('', opset), *extra_opsets])
    model.ir_version = 7
    return model


def _relu(inp='input'):
    return helper.make_node('Relu', [inp], ['y'], name='relu')


def _tiny_bytes():
    from pipeit_ros.model import zoo
    return zoo.build('tiny').SerializeToString()


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, onnx.ModelProto):
        content = content.SerializeToString()
    path.write_bytes(content)
    return str(path)


def _type_mismatch():
    b = numpy_helper.from_array(np.zeros((1, 3, 8, 8), np.int64), 'b')  # float + int64: the checker lets it pass
    return _model([helper.make_node('Add', ['input', 'b'], ['y'], name='add')], inits=[b])


# name -> (file content or None for a missing file, words the message must contain)
CASES = {
    'missing': (None, 'no such file'),
    'empty': (b'', 'empty file'),
    'text': (b'this is not a model\n' * 10, 'not an ONNX model'),
    'random-bytes': (np.random.default_rng(0).bytes(4096), 'ONNX'),
    'truncated-10pc': (lambda: _tiny_bytes()[:len(_tiny_bytes()) // 10], 'truncated'),
    'truncated-90pc': (lambda: _tiny_bytes()[:len(_tiny_bytes()) * 9 // 10], 'truncated'),
    'truncated-last-byte': (lambda: _tiny_bytes()[:-1], 'truncated'),
    'two-inputs': (lambda: _model([helper.make_node('Add', ['input', 'b'], ['y'], name='add')],
                                  inputs=[X, helper.make_tensor_value_info('b', TensorProto.FLOAT, [1, 3, 8, 8])]),
                   '2 graph inputs'),
    'int-input': (lambda: _model([helper.make_node('Cast', ['input'], ['y'], name='cast', to=1)],
                                 inputs=[helper.make_tensor_value_info('input', TensorProto.INT64, [1, 3, 8, 8])]),
                  'is int64; Pipe-it feeds float32 or uint8'),
    '3d-input': (lambda: _model([_relu()], inputs=[helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 3, 8])],
                                outputs=[helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3, 8])]),
                 'not a 4-D'),
    'symbolic-height': (lambda: _model([_relu()],
                                       inputs=[helper.make_tensor_value_info('input', TensorProto.FLOAT,
                                                                             ['N', 3, 'H', 8])]),
                        'dynamic H=H; give its shape with --input-shape'),
    'batch-4': (lambda: _model([_relu()], inputs=[helper.make_tensor_value_info('input', TensorProto.FLOAT,
                                                                                [4, 3, 8, 8])]), 'batch 4'),
    'opset-10': (lambda: _model([_relu()], opset=10), 'opset 10'),
    'unknown-op': (lambda: _model([helper.make_node('Frobnicate', ['input'], ['y'], name='f', domain='ai.example')],
                                  extra_opsets=[helper.make_opsetid('ai.example', 1)]), 'onnxruntime cannot load'),
    'type-mismatch': (_type_mismatch, 'onnxruntime cannot load'),
}


def _make(tmp_path, case):
    content, words = CASES[case]
    if content is None:
        return str(tmp_path / 'missing.onnx'), words
    return _write(tmp_path, f'{case}.onnx', content() if callable(content) else content), words


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_model_file_exits_2_with_one_line(tmp_path, run_cli, case):
    path, words = _make(tmp_path, case)
    code, out, err = run_cli('inspect', path)
    assert code == 2 and out == ''
    assert err.count('\n') == 1 and err.startswith('pipeit: error: ') and 'Traceback' not in err
    assert path in err and words in err, err
    with pytest.raises(ModelError, match=words):
        graph.load(path)


def test_a_directory_is_refused(tmp_path, run_cli):
    code, _, err = run_cli('inspect', '--json', tmp_path)
    assert code == 2 and 'is a directory' in err and err.count('\n') == 1


@pytest.mark.parametrize('case', ['unknown-op', 'truncated-90pc'])
def test_bad_model_in_a_real_process_prints_only_the_error_line(tmp_path, case):
    """onnxruntime's own C++ logging must not add lines to stderr either."""
    path, words = _make(tmp_path, case)
    proc = subprocess.run([sys.executable, '-m', 'pipeit_ros', 'inspect', path], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ''
    assert proc.stderr.count('\n') == 1 and words in proc.stderr and 'Traceback' not in proc.stderr
