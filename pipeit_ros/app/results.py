"""What the last stage publishes and what /diagnostics reports, computed without rclpy.

- :func:`top_k` / :func:`classification_dict`: the classification summary (softmax scores, labels from a labels
  file) that goes out as JSON on ``pipeit/classification``.
- :func:`multiarray_layout`: the row-major ``(label, size, stride)`` dims of a Float32MultiArray for the raw
  output on ``pipeit/output``.
- :class:`LatencyWindow`, :class:`StageWindow`: the sliding figures (end-to-end latency p50/p99, fps, busy %,
  measured time per frame) behind each stage's DiagnosticStatus, and :func:`stage_diagnostic_values` which
  names them as the ROS contract does (values are strings).
"""
from collections import deque
from dataclasses import dataclass
import math
import time

import numpy as np

from pipeit_ros.app.wire import diagnostics as keys
from pipeit_ros.errors import PipeitError

DIM_LABELS = {2: ('batch', 'class'), 4: ('batch', 'channel', 'height', 'width')}


def softmax(logits):
    """Numerically stable softmax over the last axis (float64)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits, k=5, labels=None):
    """The ``k`` best classes of one frame's logits: [{'class_id', 'score' (softmax), 'label'?}], best first.

    Softmax scores for the ``k`` winners only (float64; the normaliser sums every class): the result goes out
    for every frame on the output thread, so it costs a handful of numpy calls, not a full sort.

    >>> [r['class_id'] for r in top_k([0.1, 3.0, 2.0], k=2)]
    [1, 2]
    """
    x = np.asarray(logits).reshape(-1)
    if x.dtype.kind != 'f':
        x = x.astype(np.float64)
    k = max(0, min(int(k), x.size))
    if k == 0:
        return []
    idx = np.argpartition(x, x.size - k)[x.size - k:] if k < x.size else np.arange(x.size)
    pairs = sorted(zip((-x[idx]).tolist(), idx.tolist()))      # best first, ties by class id: deterministic
    peak = -pairs[0][0]
    total = float(np.exp(np.subtract(x, peak, dtype=np.float64)).sum())
    scores = [math.exp(-v - peak) / total for v, _ in pairs]
    out = [{'class_id': i, 'score': sc} for (_, i), sc in zip(pairs, scores)]
    if labels is not None:
        for entry in out:
            if entry['class_id'] < len(labels):
                entry['label'] = labels[entry['class_id']]
    return out


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
