"""What an ONNX model says about itself: its ``metadata_props``, its final activation, its labels.

Keys read from ``metadata_props`` (what common exporters write):

- Ultralytics (``author`` Ultralytics, or ``stride`` + ``names``): ``names`` (a dict of class id -> label)
  gives the labels; ``task`` detect / classify / others gives the task; pre-processing is theirs: letterbox
  with pad 114 for detection (centre crop for classification), RGB, scale 1/255, mean 0, std 1.
- The ONNX image metadata convention (onnx/docs/MetadataProps.md): ``Image.BitmapPixelFormat`` (Rgb8, Bgr8,
  Gray8, Rgba8, Bgra8) gives the colour order, ``Image.NominalPixelRange`` (NominalRange_0_255,
  Normalized_0_1, Normalized_1_1) the scale, mean and std.
- Labels from ``labels`` or ``classes`` (a JSON list, or one per line) and ``character`` (one per line, as
  PaddleOCR / RapidAI exports write it).
"""
import ast
import json
import os

from pipeit_ros.errors import PipeitError
from pipeit_ros.yamlfile import read_yaml

SIDECAR_SUFFIX = '.pipeit.yaml'

# Ops that leave values as they are (a copy, a new shape): a Softmax before them still ends the model.
PASS_THROUGH = ('Identity', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Cast', 'Dropout', 'Transpose')
_PIXEL_FORMATS = {'rgb8': 'rgb', 'rgba8': 'rgb', 'bgr8': 'bgr', 'bgra8': 'bgr', 'gray8': 'grey'}
_PIXEL_RANGES = {'nominalrange_0_255': (1.0, 0.0, 1.0), 'normalized_0_1': (1 / 255, 0.0, 1.0),
                 'normalized_1_1': (1 / 255, 0.5, 0.5)}
ULTRALYTICS_TASKS = {'detect': 'detection', 'classify': 'classification'}


def metadata(model):
    """``metadata_props`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def final_activation(model, output_name):
    """'softmax', 'logsoftmax' or 'sigmoid' when that op computes ``output_name`` (through the ops in
    :data:`PASS_THROUGH`), else None."""
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer.get(output_name)
    seen = 0
    while node is not None and node.op_type in PASS_THROUGH and seen < 32:
        node, seen = producer.get(node.input[0]), seen + 1
    if node is not None and node.op_type in ('Softmax', 'LogSoftmax', 'Sigmoid'):
        return node.op_type.lower()
    return None


def is_ultralytics(md):
    return md.get('author', '').lower() == 'ultralytics' or {'stride', 'names'} <= set(md)


def labels(md):
    """Class labels from the metadata, or None."""
    if is_ultralytics(md) and 'names' in md:
        try:
            names = ast.literal_eval(md['names'])
        except (ValueError, SyntaxError):
            return None
        if isinstance(names, dict):
            return [str(names[i]) for i in sorted(names)] if sorted(names) == list(range(len(names))) else None
        return [str(n) for n in names] if isinstance(names, list) else None
    for key in ('labels', 'classes', 'character'):
        if key in md:
            text = md[key]
            try:
                values = json.loads(text)
            except json.JSONDecodeError:
                values = text.splitlines()
            if isinstance(values, list) and values:
                return [str(v) for v in values]
    return None


def task_hint(md):
    """'detection' / 'classification' / 'raw' where the metadata says, else None."""
    if is_ultralytics(md) and 'task' in md:
        return ULTRALYTICS_TASKS.get(md['task'], 'raw')
    return None


def preprocess_hints(md):
    """The pre-processing fields the metadata determines ({} when it says nothing)."""
    hints = {}
    if is_ultralytics(md):
        hints.update(colour='rgb', scale=1 / 255, mean=0.0, std=1.0)
        if md.get('task') == 'classify':
            hints['resize'] = 'center_crop'
        else:
            hints.update(resize='letterbox', pad_value=114.0)
    fmt = _PIXEL_FORMATS.get(md.get('Image.BitmapPixelFormat', '').lower())
    if fmt:
        hints['colour'] = fmt
    rng = _PIXEL_RANGES.get(md.get('Image.NominalPixelRange', '').lower())
    if rng:
        hints.update(zip(('scale', 'mean', 'std'), rng))
    return hints


def input_layout(shape):
    """'nhwc' for a (1, H, W, C) shape with C 1 or 3 and H, W larger; else 'nchw'."""
    if len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3) and shape[2] not in (1, 3):
        return 'nhwc'
    return 'nchw'


def sidecar_path(model_path):
    """``net.onnx`` -> ``net.pipeit.yaml`` (beside the model)."""
    root, ext = os.path.splitext(model_path)
    return (root if ext.lower() == '.onnx' else model_path) + SIDECAR_SUFFIX


def read_sidecar(model_path):
    """The sidecar's mapping ({} when there is none); PipeitError naming the file when it is not a mapping.
    Its keys are the planner parameters' names (input_shape, resize_mode, mean, task, labels_file, ...); a
    relative ``labels_file`` is relative to the sidecar."""
    path = sidecar_path(model_path)
    if not os.path.isfile(path):
        return {}
    data = read_yaml(path, 'model sidecar')
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PipeitError(f'{path}: the sidecar must be a mapping of parameter names, got {type(data).__name__}')
    if data.get('labels_file') and not os.path.isabs(str(data['labels_file'])):
        data['labels_file'] = os.path.join(os.path.dirname(os.path.abspath(path)), str(data['labels_file']))
    return data
