"""Reading an ONNX file into the static-shape, batch-1 model that :mod:`pipeit_ros.model.graph` cuts.

Every rejection is a :class:`~pipeit_ros.errors.ModelError` with one line naming the file and the reason.
Preparation: initializer copies leave ``graph.input``, nodes get unique names, a symbolic batch dim becomes 1,
``Constant`` nodes, ``Shape`` of static tensors and nodes computed only from constants are folded into
initializers (so the shape arithmetic of exported ``Reshape`` s does not hold extra tensors across every
cut), and every used tensor gets a static shape (onnx shape inference; onnxruntime as a fallback).

Dynamic input dims: a dim counts as dynamic unless it is a positive number (a symbol, ``?``, -1 and 0 all
are; H and W may share one name, as Paddle exports do, so dims are fixed by position, not by name). A dynamic
batch becomes 1; any other dynamic dim needs the shape from the user (``--input-shape 1x3x480x640``, planner
parameter ``input_shape``). Output dims still dynamic after onnx shape inference come from one onnxruntime run.
A model that loads but does not run in onnxruntime is refused with onnxruntime's reason (:func:`check_run`).

Input types: the image input is float32 or uint8 (:data:`INPUT_TYPES`; a uint8 model casts the pixels
itself, as ``Cast`` first). Any other type is refused naming it. The type is a fact of the loaded model
(``LayerGraph.input_dtype``): every dummy input (:func:`sample_input`, :func:`session_feeds`) and byte count
made for it follows it.

The prepared model is kept in the cache by :mod:`pipeit_ros.model.prepared` (weights held once).
"""
import contextlib
import hashlib
import math
import os
import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

from pipeit_ros.errors import ModelError, check_regular_file

MIN_OPSET = 11
# Ops that must not be folded even when all their inputs are constants.
_NO_FOLD = {'RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli'}
# The largest tensor (input or activation) a model may have unless the caller's memory bound says otherwise:
# checked before onnxruntime allocates anything for a trial run (a 1x3x20000x20000 input is 4.5 GiB).
DEFAULT_MAX_TENSOR_MB = 1024
# Initializers larger than this travel to shape inference as typed inputs, not as data.
_INFER_DATA_LIMIT = 4096


INPUT_SHAPE_FLAG = '--input-shape'
INPUT_TYPES = {TensorProto.FLOAT: 'float32', TensorProto.UINT8: 'uint8'}   # image input types Pipe-it feeds


def fail(path, reason):
    return ModelError(f'{path}: {reason}')


def first_line(exc):
    lines = str(exc).strip().splitlines()
    line = lines[0].strip() if lines else type(exc).__name__
    return line if len(line) <= 240 else line[:237] + '...'


@contextlib.contextmanager
def _reading(path):
    """Open ``path`` for reading; the reasons it cannot be read become one-line ModelErrors."""
    check_regular_file(path, 'ONNX file', ModelError)
    try:
        with open(path, 'rb') as f:
            yield f
    except FileNotFoundError:
        raise fail(path, 'no such file') from None
    except OSError as exc:
        raise fail(path, f'cannot read it ({exc.strerror or exc})') from None


def file_hash(path):
    """16 hex digits of the sha256 of ``path``, read in chunks (a big model is never held whole for this)."""
    digest = hashlib.sha256()
    with _reading(path) as f:
        for chunk in iter(lambda: f.read(1 << 22), b''):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def read_model(path):
    """Parse and check ``path``; returns (model, 16 hex digits of the sha256 of the file)."""
    with _reading(path) as f:
        data = f.read()
    if not data:
        raise fail(path, 'empty file, not an ONNX model')
    digest = hashlib.sha256(data).hexdigest()[:16]
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeWarning, ...
        raise fail(path, f'not an ONNX model, truncated or corrupt ({first_line(exc)})') from None
    if not model.graph.node or not model.opset_import:
        raise fail(path, 'not an ONNX model (no graph nodes or opset), truncated or corrupt')
    del data
    try:
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            onnx.external_data_helper.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        onnx.checker.check_model(light_copy(model, weights_as_inputs=True))  # onnxruntime checks the weights
    except Exception as exc:  # noqa: BLE001 - ValidationError, OSError of external data
        raise fail(path, f'invalid ONNX model ({first_line(exc)})') from None
    return model, digest


def parse_input_shape(text):
    """'1x3x480x640' (or '1,3,480,640', or a list of 4 ints) -> (1, 3, 480, 640); ModelError saying why not.

    >>> parse_input_shape('1x3x480x640')
    (1, 3, 480, 640)
    """
    parts = [str(p) for p in text] if isinstance(text, (list, tuple)) else \
        [p for p in re.split(r'[x,\s]+', str(text).strip().lower()) if p]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise ModelError(f'input shape {text!r} is not 4 positive numbers N x C x H x W, e.g. 1x3x480x640')
    if dims[0] != 1:
        raise ModelError(f'input shape {text!r} has batch {dims[0]}; Pipe-it streams single frames (batch 1)')
    return dims


def is_static(dim):
    """A dim with a positive number; a symbol, '?', -1 (Paddle's any) and 0 are dynamic."""
    return dim.HasField('dim_value') and dim.dim_value > 0


def dim_text(dim):
    return str(dim.dim_value) if dim.HasField('dim_value') else (dim.dim_param or '?')


def check_interface(path, model, input_shape=None):
    """(input name, batch_fixed, shape): one 4-D float32 or uint8 image input; opset >= 11; ``batch_fixed`` True when
    the model's batch is dynamic and so is set to 1 here; ``shape`` the input's dims
    with every dynamic one fixed (batch 1, the others from ``input_shape``, which must agree with the dims
    the model fixes). A model with dynamic C, H or W and no ``input_shape`` is refused naming those dims."""
    opset = default_opset(model)
    if opset is None or opset < MIN_OPSET:
        raise fail(path, f'opset {opset} is older than {MIN_OPSET}; convert it with onnx.version_converter')
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        names = ', '.join(i.name for i in inputs) or 'none'
        raise fail(path, f'has {len(inputs)} graph inputs ({names}); Pipe-it needs exactly one image input')
    inp = inputs[0]
    tensor = inp.type.tensor_type
    if not inp.type.HasField('tensor_type') or tensor.elem_type not in INPUT_TYPES:
        kind = type_name(tensor.elem_type) if inp.type.HasField('tensor_type') else 'not a tensor'
        raise fail(path, f'input {inp.name!r} is {kind}; Pipe-it feeds {" or ".join(INPUT_TYPES.values())} '
                         'image inputs (re-export it with one of those)')
    dims = list(tensor.shape.dim) if tensor.HasField('shape') else []
    text = 'x'.join(dim_text(d) for d in dims)
    if len(dims) != 4:
        raise fail(path, f'input {inp.name!r} has shape [{text or "unknown"}], not a 4-D N x C x H x W image')
    batch_fixed = not is_static(dims[0])
    if input_shape is not None:
        given = parse_input_shape(input_shape)
        clash = [f'{axis} {d.dim_value} (given {g})' for axis, d, g in zip('NCHW', dims, given)
                 if is_static(d) and d.dim_value != g]
        if clash:
            raise fail(path, f'input {inp.name!r} is [{text}]; {INPUT_SHAPE_FLAG} {"x".join(map(str, given))} '
                             f'disagrees in {", ".join(clash)}')
        return inp.name, batch_fixed, given
    if not batch_fixed and dims[0].dim_value != 1:
        raise fail(path, f'input {inp.name!r} has batch {dims[0].dim_value}; Pipe-it streams single frames, '
                         're-export it with batch 1 or a dynamic batch')
    dynamic = [f'{axis}={dim_text(d)}' for axis, d in zip('CHW', dims[1:]) if not is_static(d)]
    if dynamic:
        raise fail(path, f'input {inp.name!r} is [{text}] with dynamic {", ".join(dynamic)}; give its shape '
                         f'with {INPUT_SHAPE_FLAG} NxCxHxW (e.g. 1x3x480x640; planner parameter input_shape)')
    return inp.name, batch_fixed, (1,) + tuple(d.dim_value for d in dims[1:])


def type_name(elem_type):
    """'float16', 'int64', ... for an onnx element type (numpy's name where there is one)."""
    try:
        return helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, TypeError, ValueError):
        return helper.tensor_dtype_to_string(elem_type).split('.')[-1].lower() if elem_type else 'undefined'


def sample_input(shape, dtype, rng=None):
    """A dummy input of ``shape`` and numpy ``dtype``: standard normal values for a float type, pixels
    (0..255) for uint8 and other integers, as a camera would give them; ``rng`` None gives zeros."""
    dtype = np.dtype(dtype)
    if rng is None:
        return np.zeros(shape, dtype)
    if dtype.kind == 'f':
        return rng.standard_normal(shape).astype(dtype)
    high = 2 if dtype.kind == 'b' else min(256, int(np.iinfo(dtype).max) + 1)
    return rng.integers(0, high, shape).astype(dtype)


_ORT_NAMES = {'float': 'float32', 'double': 'float64'}


def ort_dtype(type_text):
    """numpy dtype of an onnxruntime input/output type string ('tensor(float)' -> float32)."""
    name = type_text[len('tensor('):-1] if type_text.startswith('tensor(') else type_text
    return np.dtype(_ORT_NAMES.get(name, name))


def session_feeds(session, rng=None):
    """A :func:`sample_input` for every input of an onnxruntime ``session``, in its own type (symbolic dims
    -> 1)."""
    return {i.name: sample_input([d if isinstance(d, int) and d > 0 else 1 for d in i.shape], ort_dtype(i.type), rng)
            for i in session.get_inputs()}


def default_opset(model):
    return next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), None)


def check_runtime(path):
    """Refuse a model onnxruntime cannot load (unknown ops, bad attributes) before cutting it; returns the
    session for :func:`check_run`."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind exception types
        raise fail(path, f'onnxruntime cannot load it ({first_line(exc)})') from None


def check_size(path, tensors, max_tensor_mb=None):
    """Refuse a model whose largest tensor exceeds ``max_tensor_mb`` (default DEFAULT_MAX_TENSOR_MB) before
    anything is allocated for it. ``tensors``: name -> (shape, dtype) as :func:`static_shapes` gives."""
    limit = DEFAULT_MAX_TENSOR_MB if max_tensor_mb is None else max_tensor_mb
    name, biggest = max(((n, math.prod(s) * helper.tensor_dtype_to_np_dtype(d).itemsize) for n, (s, d) in tensors.items()),
                        key=lambda item: item[1], default=(None, 0))
    if biggest > limit * 2**20 and max_tensor_mb is None:
        raise fail(path, f'tensor {name!r} alone needs {biggest / 2**20:.0f} MiB, over the {limit:g} MiB a '
                         f'model may have without a larger memory bound (--memory-mb / memory_mb)')
    if biggest > limit * 2**20:
        raise fail(path, f'no plan fits --memory-mb {limit:g}: the smallest needs more than '
                         f'{biggest / 2**20:.3g} MiB (tensor {name!r} alone)')


def check_run(path, model):
    """Run the prepared (static) ``model`` once on zeros: a model onnxruntime loads but cannot run (an op
    it lacks for these types, NHWC data where NCHW is expected, ...) is refused with onnxruntime's reason."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=['CPUExecutionProvider'])
        session.run(None, session_feeds(session))
    except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind exception types
        raise fail(path, f'onnxruntime cannot run it ({first_line(exc)})') from None


def make_static(path, model, shape):
    """Mutate ``model`` in place into the ``shape``-input, folded, fully shaped form (module docstring)."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    keep = [i for i in graph.input if i.name not in inits]  # old exporters list the weights as inputs too
    del graph.input[:]
    graph.input.extend(keep)
    model.ir_version = max(model.ir_version, 4)
    for dim, value in zip(graph.input[0].type.tensor_type.shape.dim, shape):   # by position: names may repeat
        dim.Clear()
        dim.dim_value = int(value)
    _name_nodes(graph)
    for out in graph.output:  # exporters' symbolic or -1 output dims would clash with the fixed input
        tensor = out.type.tensor_type
        if tensor.HasField('shape') and not all(is_static(d) for d in tensor.shape.dim):
            tensor.ClearField('shape')
    keep = [vi for vi in graph.value_info if all(is_static(d) for d in vi.type.tensor_type.shape.dim)]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    _infer(path, model)
    if _fold(model):
        _infer(path, model)
    known = static_shapes(graph)
    missing = [t for t in used_tensors(graph) if t not in known]
    if missing:
        _runtime_shapes(path, model, missing)


def _name_nodes(graph):
    seen = set()
    for i, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            node.name = f'{node.op_type}_{i}' if node.name == '' else f'{node.name}_{i}'
        seen.add(node.name)


def used_tensors(graph):
    """Node outputs that something reads: another node or the graph's outputs."""
    read = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    return [o for node in graph.node for o in node.output if o and o in read]


def static_shapes(graph):
    """name -> (shape tuple incl. batch, onnx elem type) for every tensor with a fully static shape."""
    table = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = vi.type.tensor_type
        if vi.type.HasField('tensor_type') and tensor.HasField('shape') and \
                all(is_static(d) for d in tensor.shape.dim):
            table[vi.name] = (tuple(d.dim_value for d in tensor.shape.dim), tensor.elem_type)
    for t in graph.initializer:
        table[t.name] = (tuple(t.dims), t.data_type)
    return table


def light_copy(model, weights_as_inputs):
    """``model`` without the data of its big initializers (cheap to copy, check, infer, extract from).

    Each big initializer becomes a typed graph input (``weights_as_inputs``: what checking and shape
    inference need) or an initializer stub with its name, type and dims but no data (what
    onnx.utils.Extractor needs to find it; the caller puts the real tensor back).
    """
    graph = model.graph
    light = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                            functions=model.functions, producer_name=model.producer_name,
                            producer_version=model.producer_version)
    lg = light.graph
    lg.name = graph.name
    lg.node.extend(graph.node)
    lg.input.extend(graph.input)
    lg.output.extend(graph.output)
    lg.value_info.extend(graph.value_info)
    for t in graph.initializer:
        if math.prod(t.dims) <= _INFER_DATA_LIMIT:
            lg.initializer.append(t)
        elif weights_as_inputs:
            lg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            lg.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
    return light


def _infer(path, model):
    """onnx shape inference on a copy without the big weights (their shapes are all it needs)."""
    graph = model.graph
    light = light_copy(model, weights_as_inputs=True)
    del light.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)  # gaps: onnxruntime fills them
    except Exception as exc:  # noqa: BLE001 - InferenceError
        raise fail(path, f'shape inference failed ({first_line(exc)})') from None
    del graph.value_info[:]
    graph.value_info.extend(inferred.graph.value_info)
    for out, new in zip(graph.output, inferred.graph.output):
        out.type.CopyFrom(new.type)


def _fold(model):
    """Replace Constant nodes, Shape of static tensors and all-constant nodes by initializers."""
    from onnx.reference import ReferenceEvaluator  # noqa: PLC0415 - only preparing a model folds; a loaded one needs none (docs/memory.md: 10 MiB per process)
    graph, opset = model.graph, default_opset(model)
    shapes = static_shapes(graph)
    const = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    values, keep = {}, []

    def value(name):
        if name not in values:
            values[name] = numpy_helper.to_array(const[name])
        return values[name]

    for node in graph.node:
        ins = [i for i in node.input if i]
        foldable = node.domain in ('', 'ai.onnx') and node.op_type not in _NO_FOLD and \
            not any(o in outputs for o in node.output) and not any(a.g.node or a.graphs for a in node.attribute)
        result = None
        if foldable and node.op_type == 'Shape' and ins[0] in shapes and ins[0] not in const:
            attrs = {a.name: a.i for a in node.attribute}
            result = [np.array(shapes[ins[0]][0][attrs.get('start', 0):attrs.get('end')], dtype=np.int64)]
        elif foldable and (node.op_type == 'Constant' or ins) and all(i in const or i in values for i in ins):
            try:
                result = ReferenceEvaluator(node, opsets={'': opset}).run(None, {i: value(i) for i in ins})
            except Exception:  # noqa: BLE001 - an op the reference runtime lacks stays a node
                result = None
        if result is None:
            keep.append(node)
            continue
        for name, val in zip(node.output, result):
            values[name] = np.asarray(val)
            const[name] = None
    if len(keep) == len(graph.node):
        return False
    del graph.node[:]
    graph.node.extend(keep)
    read = {i for node in keep for i in node.input}
    folded = {name for name, t in const.items() if t is None}
    for name in sorted(folded & read):
        graph.initializer.append(numpy_helper.from_array(values[name], name))
    return True


def _runtime_shapes(path, model, names):
    """Shapes onnx could not infer (data-dependent ones): run the batch-1 model once on zeros and look."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=['CPUExecutionProvider'])
        results = session.run(names, session_feeds(session))
    except Exception as exc:  # noqa: BLE001
        raise fail(path, f'cannot find static tensor shapes ({first_line(exc)})') from None
    by_name = {o.name: o for o in model.graph.output}
    for name, arr in zip(names, results):
        info = helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape))
        if name in by_name:
            by_name[name].type.CopyFrom(info.type)
        else:
            model.graph.value_info.append(info)
