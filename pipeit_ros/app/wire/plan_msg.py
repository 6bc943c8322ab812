"""The plan message: what the planner node publishes on ``pipeit/plan`` and every container reads.

A std_msgs/String holding JSON, so any ROS tool can show it and no custom interface package has to be built.
It carries everything a container needs to build its stages without asking anyone: the model file and its
hash (a container refuses a model that changed under it), the topology (so a container checks its cluster),
the plan, per-stage predicted times (the diagnostics compare against them) and the input pre-processing.
``schema_version`` lets a reader refuse a message it does not understand instead of misreading it.

>>> from pipeit_ros.plan import Plan, Stage
>>> plan = Plan(stages=(Stage(0, 3, 'c0', (0,)),))
>>> text = encode_plan_message(plan, generation=1, reason='start', model_path='/m.onnx', model_hash='ab',
...                            topology={'name': 't', 'clusters': []}, input_shape=(1, 3, 32, 32))
>>> decode_plan_message(text).plan == plan
True
"""
from dataclasses import asdict, dataclass, field
import json
import math
import os
import re
import socket
import time

from pipeit_ros.errors import PlanError
from pipeit_ros.hw.topology import Topology
from pipeit_ros.plan import Plan

SCHEMA_VERSION = 1

# ImageNet statistics on pixels scaled to [0, 1]: what the zoo nets (and torchvision exports) expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ('linear', 'area', 'nearest')     # the resize's, as OpenCV names them (cv2.INTER_<NAME>)

_REASON_RE = re.compile(r'^(start|adapt|param:[A-Za-z_][A-Za-z0-9_]*)$')


@dataclass
class PlanMessage:
    """One published plan. ``topology`` stays the dict of Topology.to_dict(); :meth:`load_topology` parses it."""

    generation: int
    reason: str
    model_path: str
    model_hash: str
    topology: dict
    plan: Plan
    predicted_stage_ms: list
    preprocess: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)      # pipeit_ros.app.results.OutputSpec.to_dict(); {}: classify
    graph: str = ''             # the graph's id (new_graph_id below): containers of another one ignore it
    schema_version: int = SCHEMA_VERSION

    def load_topology(self):
        return Topology.from_dict(self.topology, source=self.topology.get('source') or 'plan message')

    def to_dict(self):
        d = asdict(self)
        d['plan'] = self.plan.to_dict()
        return d

    def to_json(self):
        return json.dumps(self.to_dict(), allow_nan=False)


def new_graph_id(host=None, pid=None, started=None):
    """A graph's id, ``<host>:<pid of its launcher>:<start time, ms since the epoch>``: one per ``ros2 launch`` or
    ``pipeit bringup`` run, given to its planner and containers (pipeit_ros.app.layout)."""
    host = host or socket.gethostname()
    pid = os.getpid() if pid is None else pid
    started = time.time() if started is None else started
    return f'{host}:{int(pid)}:{int(started * 1000)}'


def _graph_parts(graph):
    host, pid, started = graph.rsplit(':', 2)
    return host, int(pid), int(started) / 1000.0


def older_graph(a, b):
    """True when graph ``a`` started before graph ``b`` (ids of :func:`new_graph_id`; False if unreadable)."""
    try:
        return (_graph_parts(a)[2], a) < (_graph_parts(b)[2], b)
    except ValueError:
        return False


def describe_graph(graph):
    """'started by pid 123 on host vm at 11:50:02 UTC' for a :func:`new_graph_id` id."""
    try:
        host, pid, started = _graph_parts(graph)
    except ValueError:
        return 'started elsewhere'
    return f'started by pid {pid} on host {host} at {time.strftime("%H:%M:%S", time.gmtime(started))} UTC'


def default_preprocess(input_shape, mean=IMAGENET_MEAN, std=IMAGENET_STD, rgb=True):
    """Pre-processing for an image model: resize to input_shape's H x W, pixels / 255, then (x - mean) / std.
    (The planner sends pipeit_ros.app.preprocess.PreprocessConfig.to_dict(), a superset of these keys.)"""
    shape = [int(d) for d in input_shape]
    if len(shape) != 4 or shape[0] != 1:
        raise PlanError(f'input_shape must be (1, C, H, W), got {tuple(input_shape)}')
    channels = shape[1]
    mean, std = _per_channel(mean, channels, 'mean'), _per_channel(std, channels, 'std')
    if any(s <= 0 for s in std):
        raise PlanError(f'std must be > 0, got {std}')
    return {'mean': mean, 'std': std, 'rgb': bool(rgb), 'input_shape': shape}


def _per_channel(values, channels, what):
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise PlanError(f'{what} needs 1 or {channels} values for a {channels}-channel input, got {values}')
    return values


def encode_plan_message(plan, *, generation, reason, model_path, model_hash, topology, preprocess=None,
                        input_shape=None, predicted_stage_ms=None, output=None, graph=''):
    """The JSON text of a plan message.

    ``topology`` is a Topology or its dict; ``preprocess`` a dict like :func:`default_preprocess` gives (built
    from ``input_shape`` when not given); ``predicted_stage_ms`` defaults to the plan's per-stage
    ``predicted_ms`` (0.0 where unknown, e.g. a forced plan with no cost table).
    """
    if preprocess is None:
        if input_shape is None:
            raise PlanError('encode_plan_message needs preprocess or input_shape')
        preprocess = default_preprocess(input_shape)
    if predicted_stage_ms is None:
        predicted_stage_ms = [s.predicted_ms or 0.0 for s in plan.stages]
    message = PlanMessage(
        generation=int(generation), reason=str(reason), model_path=str(model_path), model_hash=str(model_hash),
        topology=topology.to_dict() if hasattr(topology, 'to_dict') else dict(topology), plan=plan,
        predicted_stage_ms=[float(t) for t in predicted_stage_ms], preprocess=dict(preprocess),
        output=dict(output or {}), graph=str(graph))
    _check(message)
    return message.to_json()


def decode_plan_message(text):
    """Parse and check a plan message; PlanError with the reason when it is not one this pipeit reads."""
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise PlanError(f'plan message is not valid JSON: {exc}') from None
    if not isinstance(data, dict):
        raise PlanError(f'plan message must be a JSON object, got {type(data).__name__}')
    version = data.get('schema_version')
    if version != SCHEMA_VERSION:
        raise PlanError(f'plan message schema_version {version!r} is not supported (this pipeit reads '
                        f'{SCHEMA_VERSION})')
    missing = sorted({'generation', 'reason', 'model_path', 'model_hash', 'topology', 'plan',
                      'predicted_stage_ms', 'preprocess'} - set(data))
    if missing:
        raise PlanError(f'plan message lacks {", ".join(missing)}')
    unknown = sorted(set(data) - {f for f in PlanMessage.__dataclass_fields__})
    if unknown:
        raise PlanError(f'plan message has unknown field(s) {", ".join(unknown)}')
    message = PlanMessage(**{**data, 'plan': Plan.from_dict(data['plan'])})
    _check(message)
    return message


def _check(m):
    if isinstance(m.generation, bool) or not isinstance(m.generation, int) or m.generation < 1:
        raise PlanError(f'plan message generation must be an integer >= 1, got {m.generation!r}')
    if not isinstance(m.graph, str):
        raise PlanError(f'plan message graph must be a string, got {m.graph!r}')
    if not isinstance(m.reason, str) or not _REASON_RE.match(m.reason):
        raise PlanError(f'plan message reason must be start, adapt or param:<name>, got {m.reason!r}')
    if not isinstance(m.topology, dict) or not isinstance(m.topology.get('clusters'), list):
        raise PlanError('plan message topology must be a Topology.to_dict() object with clusters')
    times = m.predicted_stage_ms
    if (not isinstance(times, list) or len(times) != len(m.plan.stages)
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0
                       for t in times)):
        raise PlanError(f'plan message predicted_stage_ms must hold one finite time >= 0 per stage '
                        f'({len(m.plan.stages)}), got {times!r}')
    p = m.preprocess
    if not isinstance(p, dict) or not {'mean', 'std', 'input_shape'} <= set(p) or not {'rgb', 'colour'} & set(p):
        raise PlanError(f'plan message preprocess needs mean, std, rgb and input_shape (colour may stand for rgb), '
                        f'got {p!r}')
    if p.get('layout', 'nchw') == 'nchw':   # the container checks the rest (pipeit_ros.app.preprocess)
        default_preprocess(p['input_shape'], p['mean'], p['std'], p.get('rgb', True))
    if not isinstance(m.output, dict):
        raise PlanError(f'plan message output must be an object, got {m.output!r}')
