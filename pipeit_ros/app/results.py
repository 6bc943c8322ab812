"""What the last stage publishes and what /diagnostics reports, computed without rclpy.

- :class:`OutputSpec` / :func:`output_spec`: what a model's outputs are (``task`` classification, detection or
  raw, given or inferred from the output shape; the activation still to apply to class scores; the YOLO head
  format; labels; NMS settings), with a log line saying what was inferred.
- :func:`top_k` / :func:`classification_dict`: the classification summary (scores after the activation the
  model still lacks: softmax unless it ends in Softmax or Sigmoid; labels) that goes out on
  ``pipeit/classification``.
- :func:`decode_detections` / :func:`detections_dict`: a YOLO v5/v8 head decoded, NMS'd with
  ``cv2.dnn.NMSBoxesBatched`` (per class) and mapped back to source-image pixels, for ``pipeit/detections``.
- :func:`multiarray_layout`: the row-major ``(label, size, stride)`` dims of a Float32MultiArray for the raw
  output on ``pipeit/output``.
- :class:`LatencyWindow`, :class:`StageWindow`: the sliding figures (end-to-end latency p50/p99, fps, busy %,
  measured time per frame) behind each stage's DiagnosticStatus, and :func:`stage_diagnostic_values` which
  names them as the ROS contract does (values are strings).
"""
from collections import deque
import dataclasses
from dataclasses import dataclass
import math
import time

import numpy as np

from pipeit_ros.app.wire import diagnostics as keys
from pipeit_ros.errors import PipeitError
from pipeit_ros.model import meta

TASKS = ('auto', 'classification', 'detection', 'raw')
ACTIVATIONS = ('auto', 'softmax', 'sigmoid', 'none')
DETECTION_FORMATS = ('yolov8', 'yolov5')
DIM_LABELS = {2: ('batch', 'class'), 4: ('batch', 'channel', 'height', 'width')}


def softmax(logits):
    """Numerically stable softmax over the last axis (float64)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits, k=5, labels=None, activation='softmax'):
    """The ``k`` best classes of one frame's scores: [{'class_id', 'score', 'label'?}], best first.

    ``activation`` is what the model's output still needs: 'softmax' (logits), 'sigmoid' (independent
    logits) or 'none' (already probabilities: a model that ends in Softmax or Sigmoid). Only the ``k`` winners
    are scored (the softmax normaliser sums every class): it runs for every frame on the output thread.

    >>> [r['class_id'] for r in top_k([0.1, 3.0, 2.0], k=2)]
    [1, 2]
    >>> top_k([0.075, 0.925], k=1, activation='none')[0]['score']
    0.925
    """
    x = np.asarray(logits).reshape(-1)
    if x.dtype.kind != 'f':
        x = x.astype(np.float64)
    k = max(0, min(int(k), x.size))
    if k == 0:
        return []
    idx = np.argpartition(x, x.size - k)[x.size - k:] if k < x.size else np.arange(x.size)
    pairs = sorted(zip((-x[idx]).tolist(), idx.tolist()))      # best first, ties by class id: deterministic
    if activation == 'softmax':
        peak = -pairs[0][0]
        total = float(np.exp(np.subtract(x, peak, dtype=np.float64)).sum())
        scores = [math.exp(-v - peak) / total for v, _ in pairs]
    elif activation == 'sigmoid':
        scores = [1.0 / (1.0 + math.exp(v)) for v, _ in pairs]
    else:
        scores = [-v for v, _ in pairs]
    out = [{'class_id': i, 'score': sc} for (_, i), sc in zip(pairs, scores)]
    if labels is not None:
        for entry in out:
            if entry['class_id'] < len(labels):
                entry['label'] = labels[entry['class_id']]
    return out


@dataclass(frozen=True)
class OutputSpec:
    """How the last stage reads the model's first output (every output also goes out raw)."""

    task: str = 'classification'
    activation: str = 'softmax'          # for classification: what the scores still need
    detection_format: str = ''           # for detection: yolov8 ([1, 4+C, A]) or yolov5 ([1, A, 5+C])
    labels: tuple = ()
    score_threshold: float = 0.25
    nms_threshold: float = 0.45
    max_detections: int = 100

    def __post_init__(self):
        if self.task not in TASKS[1:]:
            raise PipeitError(f'task {self.task!r} is not one of {", ".join(TASKS[1:])}')
        if self.activation not in ACTIVATIONS[1:]:
            raise PipeitError(f'output_activation {self.activation!r} is not one of {", ".join(ACTIVATIONS[1:])}')
        if self.task == 'detection' and self.detection_format not in DETECTION_FORMATS:
            raise PipeitError(f'detection format {self.detection_format!r} is not one of '
                              f'{", ".join(DETECTION_FORMATS)}')
        for name in ('score_threshold', 'nms_threshold'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise PipeitError(f'{name} must be in [0, 1], got {getattr(self, name)}')
        if self.max_detections < 1:
            raise PipeitError(f'max_detections must be >= 1, got {self.max_detections}')
        object.__setattr__(self, 'labels', tuple(self.labels or ()))

    def to_dict(self):
        d = dataclasses.asdict(self)
        d['labels'] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})


def yolo_anchors(input_hw, strides=(8, 16, 32)):
    """Grid cells of a YOLO head over ``strides`` for an input of ``input_hw``."""
    return sum(math.ceil(input_hw[0] / s) * math.ceil(input_hw[1] / s) for s in strides)


def infer_task(shape, input_hw):
    """(task, detection format, why) from the first output's static shape and the model input's H, W.

    [1, N] (or [1, N, 1, 1]) is classification. [1, 4+C, A] is a YOLOv8-style head (box and class scores per
    anchor, rows first) and [1, A, 5+C] a YOLOv5-style one (box, objectness, class scores), when A is the
    head's anchor count for this input: one per cell of the stride 8, 16 and 32 grids (v8; P6 models add
    64), three per cell (v5). Anything else is raw.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) >= 2 and shape[0] == 1 and shape[1] > 1 and all(d == 1 for d in shape[2:]):
        return 'classification', '', f'output {list(shape)} holds one score per class'
    if len(shape) == 3 and shape[0] == 1:
        rows, cols = shape[1:]
        cells = {yolo_anchors(input_hw), yolo_anchors(input_hw, (8, 16, 32, 64))}
        if rows >= 5 and cols in cells:
            return 'detection', 'yolov8', f'output {list(shape)} is a [1, 4+C, anchors] head (C={rows - 4})'
        if cols >= 6 and rows in {3 * c for c in cells}:
            return 'detection', 'yolov5', f'output {list(shape)} is a [1, anchors, 5+C] head (C={cols - 5})'
    return 'raw', '', f'output {list(shape)} is neither [1, N] nor a YOLO head for this input size'


def output_spec(graph, task='auto', activation='auto', labels=None, log=None, **nms):
    """The :class:`OutputSpec` of ``graph`` (a LayerGraph) for the given (or 'auto') task and activation;
    ``labels`` (from a labels file) win over the model's metadata. ``log`` gets what was inferred."""
    shape = graph.output_shapes[0]
    hw = graph.input_shape[2:4] if meta.input_layout(graph.input_shape) == 'nchw' else graph.input_shape[1:3]
    inferred, fmt, why = infer_task(shape, hw)
    hint = meta.task_hint(graph.metadata)
    if task == 'auto':
        task = hint or inferred
        how = f'from the model metadata ({why})' if hint else why
    else:
        how = 'given'
    if task == 'detection' and not fmt:
        raise PipeitError(f'{graph.path}: task detection needs a YOLO head output [1, 4+C, A] or [1, A, 5+C], '
                          f'got {list(shape)}')
    final = meta.final_activation(graph.model, graph.output_names[0])
    if activation == 'auto':
        activation = 'none' if final in ('softmax', 'sigmoid') else 'softmax'
        act_how = f'the model ends in {final.capitalize()}' if final in ('softmax', 'sigmoid') else \
            'the model ends in no Softmax or Sigmoid'
    else:
        act_how = 'given'
    if labels is None:
        labels = meta.labels(graph.metadata)
    spec = OutputSpec(task=task, activation=activation if task == 'classification' else 'none',
                      detection_format=fmt if task == 'detection' else '', labels=labels or (), **nms)
    if log is not None:
        parts = [f'task {task} ({how})']
        if task == 'classification':
            parts.append(f'scores: {"as they are" if spec.activation == "none" else spec.activation} ({act_how})')
        if task == 'detection':
            parts.append(f'{fmt} head, score >= {spec.score_threshold:g}, NMS IoU {spec.nms_threshold:g}, '
                         f'at most {spec.max_detections}')
        if spec.labels:
            parts.append(f'{len(spec.labels)} labels')
        log(f'outputs of {graph.path}: ' + '; '.join(parts))
    return spec


def decode_detections(output, spec, geometry, src_hw):
    """[{'class_id', 'score', 'label'?, 'bbox': (x, y, w, h)}] in source-image pixels, best first.

    ``output`` is the head ([1, 4+C, A] for yolov8, [1, A, 5+C] for yolov5, boxes as centre + size in model
    pixels); ``geometry`` (sx, sy, ox, oy) maps source to model pixels (pipeit_ros.app.preprocess.geometry);
    boxes are clipped to the ``src_hw`` image. NMS is per class (cv2.dnn.NMSBoxesBatched).
    """
    out = np.asarray(output, dtype=np.float32)
    out = out.reshape(out.shape[-2:])
    rows = out.T if spec.detection_format == 'yolov8' else out
    first = 4 if spec.detection_format == 'yolov8' else 5
    cls = rows[:, first:]
    class_ids = cls.argmax(axis=1)
    scores = cls[np.arange(len(cls)), class_ids]
    if first == 5:
        scores = scores * rows[:, 4]
    keep = scores >= spec.score_threshold
    if not keep.any():
        return []
    rows, scores, class_ids = rows[keep], scores[keep], class_ids[keep]
    sx, sy, ox, oy = geometry
    h, w = src_hw
    x0 = np.clip((rows[:, 0] - rows[:, 2] / 2 - ox) / sx, 0, w)
    y0 = np.clip((rows[:, 1] - rows[:, 3] / 2 - oy) / sy, 0, h)
    x1 = np.clip((rows[:, 0] + rows[:, 2] / 2 - ox) / sx, 0, w)
    y1 = np.clip((rows[:, 1] + rows[:, 3] / 2 - oy) / sy, 0, h)
    boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    import cv2  # noqa: PLC0415 - only a detection head needs OpenCV here; the nodes that import this module for
    # its records (a container hosting no stage among them) do not load it (docs/memory.md, "An idle container")
    picked = np.asarray(cv2.dnn.NMSBoxesBatched(boxes.tolist(), scores.tolist(), class_ids.tolist(),
                                                spec.score_threshold, spec.nms_threshold), np.int64).reshape(-1)
    picked = picked[np.argsort(-scores[picked], kind='stable')][:spec.max_detections]
    dets = []
    for i in picked.tolist():
        d = {'class_id': int(class_ids[i]), 'score': float(scores[i]), 'bbox': [float(v) for v in boxes[i]]}
        if class_ids[i] < len(spec.labels):
            d['label'] = spec.labels[class_ids[i]]
        dets.append(d)
    return dets


def detections_dict(stamp_sec, stamp_nanosec, frame_id, seq, detections, generation=None, latency_ms=None):
    """The JSON object published on ``pipeit/detections`` without vision_msgs: the image header, ``seq``
    and the detections (``bbox`` = [x, y, w, h], top-left corner and size in source-image pixels)."""
    d = {'header': {'stamp': {'sec': int(stamp_sec), 'nanosec': int(stamp_nanosec)}, 'frame_id': frame_id},
         'seq': int(seq), 'detections': detections}
    if generation is not None:
        d['generation'] = int(generation)
    if latency_ms is not None:
        d['latency_ms'] = round(float(latency_ms), 3)
    return d


def load_labels(path):
    """One label per line (class id = line number from 0); blank trailing lines ignored."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise PipeitError(f'{path}: cannot read labels file: {exc.strerror}') from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise PipeitError(f'{path}: labels file is empty')
    return [line.strip() for line in lines]


# A header stamp further than this from our clock (ahead, or behind by more) comes from another clock (a camera's
# own, a recording's): end-to-end latency then starts at the head container's receive time instead.
FOREIGN_CLOCK_S = 60.0


def end_to_end_latency_ms(now_s, stamp_s, receive_latency_ms=None):
    """Latency of a result seen at ``now_s`` (this machine's wall clock) for a frame stamped ``stamp_s``: from
    the stamp when it is on our clock, else ``receive_latency_ms`` (from the head's receive time; nan without).

    >>> end_to_end_latency_ms(100.0, 99.5)
    500.0
    >>> end_to_end_latency_ms(1.8e9, 5.0, receive_latency_ms=12.5)
    12.5
    """
    latency_ms = (now_s - stamp_s) * 1000.0
    if 0.0 <= latency_ms <= FOREIGN_CLOCK_S * 1000.0:
        return latency_ms
    return float('nan') if receive_latency_ms is None else float(receive_latency_ms)


def multiarray_layout(shape):
    """[(label, size, stride)] for std_msgs/MultiArrayLayout: stride = elements spanned by one step of the
    dim above, i.e. dim[0].stride is the total size (the convention of MultiArrayLayout.msg)."""
    shape = tuple(int(d) for d in shape)
    labels = DIM_LABELS.get(len(shape), tuple(f'dim{i}' for i in range(len(shape))))
    out, stride = [], 1
    for label, size in zip(reversed(labels), reversed(shape)):
        stride *= size
        out.append((label, size, stride))
    return out[::-1]


def classification_dict(stamp_sec, stamp_nanosec, frame_id, seq, top, generation=None, latency_ms=None):
    """The JSON object published on ``pipeit/classification``; ``seq`` pairs it with the ``pipeit/output``
    message published just before it (Float32MultiArray has no header)."""
    d = {'header': {'stamp': {'sec': int(stamp_sec), 'nanosec': int(stamp_nanosec)}, 'frame_id': frame_id},
         'seq': int(seq), 'top_k': top}
    if generation is not None:
        d['generation'] = int(generation)
    if latency_ms is not None:
        d['latency_ms'] = round(float(latency_ms), 3)
    return d


class LatencyWindow:
    """The last ``size`` latencies (ms); percentiles over them."""

    def __init__(self, size=1000):
        self._values = deque(maxlen=int(size))

    def add(self, ms):
        self._values.append(float(ms))

    def __len__(self):
        return len(self._values)

    def percentiles(self, qs=(50, 99)):
        if not self._values:
            return tuple(math.nan for _ in qs)
        return tuple(float(v) for v in np.percentile(np.fromiter(self._values, float), qs))


@dataclass
class WindowFigures:
    fps: float
    busy_pct: float
    measured_ms: float
    frames: int


class StageWindow:
    """Figures of one stage over the time since the previous :meth:`update` from the engine's cumulative
    StageStats: frames/s, busy % (of its replicas' time) and measured busy ms per frame (NaN without frames)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._last = None           # (t, frames, busy_s)

    def update(self, stats):
        now = self._clock()
        frames, busy = stats.frames, stats.busy_s
        replicas = max(1, getattr(stats, 'replicas', 1))
        if self._last is None or frames < self._last[1]:
            self._last = (now, frames, busy)
            return WindowFigures(0.0, 0.0, math.nan, 0)
        t0, f0, b0 = self._last
        self._last = (now, frames, busy)
        dt, df, db = now - t0, frames - f0, busy - b0
        if dt <= 0:
            return WindowFigures(0.0, 0.0, math.nan, 0)
        return WindowFigures(fps=df / dt, busy_pct=min(100.0, 100.0 * db / (dt * replicas)),
                             measured_ms=(db / df * 1e3) if df else math.nan, frames=df)


def _fmt(x):
    return 'nan' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:.3f}'


def stage_diagnostic_values(*, generation, figures, queue_depth, drops, predicted_ms, latency=None,
                            extra=None):
    """[(key, value string)] of one stage's DiagnosticStatus, with the keys of :mod:`pipeit_ros.app.wire.diagnostics`.

    ``drops``: {reason: count} -> ``drops_<reason>``; ``latency``: (p50, p99) ms on the output stage only.
    """
    values = [(keys.GENERATION, str(int(generation))), (keys.FPS, _fmt(figures.fps)),
              (keys.BUSY_PCT, _fmt(figures.busy_pct)), (keys.QUEUE_DEPTH, str(int(queue_depth))),
              (keys.PREDICTED_MS, _fmt(predicted_ms)), (keys.MEASURED_MS, _fmt(figures.measured_ms))]
    values += [(keys.drops_key(reason), str(int(n))) for reason, n in sorted(drops.items())]
    if latency is not None:
        values += [(keys.LATENCY_P50_MS, _fmt(latency[0])), (keys.LATENCY_P99_MS, _fmt(latency[1]))]
    values += [(k, str(v)) for k, v in (extra or {}).items()]
    return values
