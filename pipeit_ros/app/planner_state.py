"""What the planner node does, without ROS: its parameters, their checks, and making (and re-making) a plan.

The node (``pipeit_ros.ros.planner_node``) only maps these onto ROS parameters, topics and a worker thread.
:class:`PlanInputs` memoises what is slow to get — the loaded model, the resolved topology, the cost table
(profiled or predicted) — so a re-plan after ``ros2 param set objective latency`` only re-runs the DSE.
"""
from dataclasses import dataclass, fields, replace
import os
import threading

from pipeit_ros.app import adapt, preprocess, results
from pipeit_ros.engine.sessions import optimize_stages
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import topology as topology_mod
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import meta, zoo
from pipeit_ros.plan import check_against, parse_spec, with_model
from pipeit_ros.planning import facade as planning
from pipeit_ros.planning import prediction


@dataclass(frozen=True)
class PlannerConfig:
    """The planner's parameters with their defaults: the one place they are defined (the ROS parameters, the
    launch file and ``config/pipeline.yaml`` follow it; a test checks the YAML)."""

    model_path: str = ''
    topology: str = 'auto'
    source: str = 'auto'
    predictor_path: str = ''
    profile_path: str = ''
    objective: str = 'throughput'
    max_latency_ms: float = 0.0
    min_fps: float = 0.0
    memory_mb: int = 0
    search: str = 'exact'
    containers: str = 'per_cluster'
    max_cut_tensors: int = graph_mod.DEFAULT_MAX_CUT_TENSORS
    stages: str = ''
    input_shape: str = ''
    resize_mode: str = ''
    pad_value: float = -1.0
    colour: str = ''
    pixel_scale: float = 0.0
    mean: str = ''
    std: str = ''
    task: str = 'auto'
    output_activation: str = 'auto'
    score_threshold: float = 0.25
    nms_threshold: float = 0.45
    max_detections: int = 100
    labels_file: str = ''
    adapt: bool = False
    adapt_threshold: float = 0.25
    adapt_window_s: float = 3.0
    stall_timeout_s: float = 5.0

    @classmethod
    def from_params(cls, values):
        """From a {name: value} dict (ROS parameters, a YAML file); unknown names are an error."""
        unknown = sorted(set(values) - set(PARAM_SPECS))
        if unknown:
            raise PipeitError(f'unknown planner parameter(s) {", ".join(unknown)} '
                              f'(known: {", ".join(PARAM_SPECS)})')
        return cls(**values)

    def updated(self, values):
        return replace(self, **values)

    def to_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULTS = PlannerConfig().to_dict()


@dataclass(frozen=True)
class ParamSpec:
    """One planner parameter: what it means and its allowed values; its default (which fixes its ROS type)
    comes from :class:`PlannerConfig`."""

    name: str
    description: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    replans: bool = True          # False: only the adaptation settings, which re-plan nothing themselves

    @property
    def default(self):
        return DEFAULTS[self.name]


PARAMS = (
    ParamSpec('model_path', 'ONNX model file or zoo network name; empty: the zoo default (mobilenet_v2)'),
    ParamSpec('topology', "CPU clusters: 'auto' (sysfs), a topology YAML path or a shipped name"),
    ParamSpec('source', 'where stage times come from: profile (measure), predictor (descriptors '
              'only) or auto (a given file, else a cached profile, else profile now)', planning.SOURCES),
    ParamSpec('predictor_path', 'trained predictor file (joblib) for source predictor/auto; empty: none'),
    ParamSpec('profile_path', 'saved profile (cost table JSON) for source profile/auto; empty: none'),
    ParamSpec('objective', 'what the DSE optimises (latency: the saturated one, frames as fast as the plan '
              'takes them)', planning.OBJECTIVES),
    ParamSpec('max_latency_ms', 'latency bound for the DSE in ms (the saturated latency under objective '
              'latency); 0: none', low=0.0, high=1e6),
    ParamSpec('min_fps', 'throughput floor for the DSE in frames/s; 0: none', low=0.0, high=1e6),
    ParamSpec('memory_mb', 'memory budget in MiB of the plan\'s containers together, at their peak (docs/memory.md); 0: none', low=0, high=1_000_000),
    ParamSpec('search', "DSE: exact optimum or the paper's heuristic", planning.SEARCHES),
    ParamSpec('containers', "process layout the plan's figures are predicted for: per_cluster (a container per "
              "cluster: a cut between clusters costs a hop between processes) or one (single_container)",
              planning.CONTAINERS),
    ParamSpec('max_cut_tensors', 'a cut is legal where at most this many tensors cross it (1: only chain cuts, '
              'as the Pipe-it paper)', low=1, high=64),
    ParamSpec('stages', 'force this plan (compact spec, e.g. 0-5@c0,6-11@c1) instead of the DSE; '
              'empty: plan with the DSE'),
    ParamSpec('input_shape', 'model input NxCxHxW (e.g. 1x3x480x640) for a model with dynamic dims; '
              "empty: the sidecar's, else the model's own"),
    ParamSpec('resize_mode', 'frame to input: stretch, letterbox or center_crop; empty: sidecar, model '
              'metadata, else stretch', ('',) + preprocess.RESIZE_MODES),
    ParamSpec('pad_value', 'letterbox border pixel value (0-255); -1: sidecar, metadata, else 114',
              low=-1.0, high=255.0),
    ParamSpec('colour', "the model's channel order: rgb, bgr or grey; empty: sidecar, metadata, else rgb",
              ('',) + preprocess.COLOURS),
    ParamSpec('pixel_scale', 'input = (pixel * pixel_scale - mean) / std; 0: sidecar, metadata, else 1/255',
              low=0.0, high=1e6),
    ParamSpec('mean', "per-channel mean, e.g. '0.5' or '0.485,0.456,0.406'; empty: sidecar, metadata, "
              'else ImageNet'),
    ParamSpec('std', "per-channel std, e.g. '0.5' or '0.229,0.224,0.225'; empty: sidecar, metadata, "
              'else ImageNet'),
    ParamSpec('task', 'what the first output is; auto: from the model metadata or its shape', results.TASKS),
    ParamSpec('output_activation', 'what class scores still need; auto: none when the model ends in '
              'Softmax or Sigmoid, else softmax', results.ACTIVATIONS),
    ParamSpec('score_threshold', 'detection: lowest score kept', low=0.0, high=1.0),
    ParamSpec('nms_threshold', 'detection: IoU above which NMS drops the weaker box of a class', low=0.0,
              high=1.0),
    ParamSpec('max_detections', 'detection: most boxes per frame', low=1, high=100_000),
    ParamSpec('labels_file', "class labels, one per line; empty: the sidecar's, else the model metadata"),
    ParamSpec('adapt', 're-plan from measured stage times (/diagnostics) when they drift', replans=False),
    ParamSpec('adapt_threshold', 'relative drift of the slowest stage from its prediction that counts',
              low=0.01, high=10.0, replans=False),
    ParamSpec('adapt_window_s', 'seconds a drift must last before re-planning', low=0.5, high=600.0,
              replans=False),
    ParamSpec('stall_timeout_s', 'a container hosting stages that sends no status, or finishes no frame while '
              'frames wait, this long is reported stalled on /diagnostics', low=0.5, high=3600.0, replans=False),
)
PARAM_SPECS = {p.name: p for p in PARAMS}
_TYPE_NAMES = {str: 'a string', float: 'a number', int: 'an integer', bool: 'true or false'}


def check_value(name, value):
    """Reason why ``value`` is no good for parameter ``name``, or None (enums and ranges only)."""
    spec = PARAM_SPECS.get(name)
    if spec is None:
        return f'unknown planner parameter {name!r}'
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return f'{name} must be {_TYPE_NAMES[expected]}, got {value!r}'
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {choices_text(spec.choices)}, got {value!r}'
    if spec.low is not None and not spec.low <= value <= spec.high:
        return f'{name} must be in [{spec.low:g}, {spec.high:g}], got {value!r}'
    return None


def choices_text(choices):
    """'a, b' with an empty choice shown as '' (the 'not given' of the string parameters)."""
    return ', '.join(c or "''" for c in choices)


def check_config(cfg, inputs):
    """Raise PipeitError (one line) unless ``cfg`` can be planned: values, files, topology, forced stages.

    Cheap enough for an on-set parameter callback (the model is loaded once and memoised); what only the DSE
    can tell (an unmeetable latency bound) is found when planning.
    """
    for name, value in cfg.to_dict().items():
        reason = check_value(name, value)
        if reason:
            raise PipeitError(reason)
    for name in ('predictor_path', 'profile_path'):
        path = getattr(cfg, name)
        if path and not os.path.isfile(path):
            raise PipeitError(f'{name} {path!r} is not a file')
    if cfg.predictor_path and cfg.profile_path:
        raise PipeitError('give predictor_path or profile_path, not both')
    if cfg.profile_path and cfg.source == 'predictor':
        raise PipeitError(f'source predictor does not read profile_path {cfg.profile_path!r}')
    if not cfg.stages:
        planning.check_search(cfg.search, cfg.objective, cfg.max_latency_ms or None, cfg.min_fps or None,
                              cfg.memory_mb or None, option=str)
    graph = inputs.graph(cfg.model_path, cfg.input_shape, cfg.max_cut_tensors)
    model_io(cfg, graph)
    topology = inputs.topology(cfg.topology)
    if cfg.stages:
        forced_plan(cfg.stages, graph, topology)


def forced_plan(spec, graph, topology):

    plan = with_model(parse_spec(spec, topology, n_layers=len(graph.layers)), graph)
    return check_against(plan, graph, topology)


def resolve_model_path(value):
    """A file path, a zoo network name (built into the cache) or '' (the zoo default)."""

    if not value:
        return zoo.default_model_path()
    if os.path.isfile(value):
        return os.path.abspath(value)
    if value in zoo.NETWORKS:
        return zoo.zoo_path(value)
    raise PipeitError(f'model_path {value!r} is not a file and not a zoo network ({", ".join(zoo.NETWORKS)})')


@dataclass
class PlanResult:
    """A plan with what made it: the model, the topology, and the cost table (None for a forced plan that
    did not need one)."""

    plan: object
    graph: object
    topology: object
    cost: object
    cost_key: tuple
    predicted_stage_ms: list
    preprocess: dict = None     # PreprocessConfig.to_dict() for the plan message
    output: dict = None         # OutputSpec.to_dict() for the plan message


class PlanInputs:
    """Memoised model graphs, topologies and cost tables, shared by the parameter checks and the planning
    thread (a lock keeps one load at a time)."""

    def __init__(self, log=print, layout=None):
        self.log = log
        self.layout = layout   # layout(topology, measure, containers) -> CostTable.for_processes' arguments or None
        self._lock = threading.RLock()
        self._graphs = {}
        self._topologies = {}
        self._costs = {}

    def graph(self, model_path, input_shape='', max_cut_tensors=graph_mod.DEFAULT_MAX_CUT_TENSORS):
        """The model's LayerGraph, its input fixed to ``input_shape`` where dynamic, with cut points where at
        most ``max_cut_tensors`` tensors cross."""
        path = resolve_model_path(model_path)
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size, input_shape, max_cut_tensors)
        with self._lock:
            if key not in self._graphs:
                self._graphs[key] = graph_mod.load(path, input_shape or None, max_cut_tensors=max_cut_tensors)
            return self._graphs[key]

    def topology(self, spec):

        with self._lock:
            if spec not in self._topologies:
                self._topologies[spec] = topology_mod.resolve(spec or 'auto')
            return self._topologies[spec]

    @staticmethod
    def cost_key(cfg, graph, topology):
        return (graph.model_hash, graph.max_cut_tensors, topology.fingerprint(), cfg.source, cfg.predictor_path,
                cfg.profile_path)

    def cost(self, cfg, graph, topology, build=True):
        """The cost table for this model, topology and source, predicting for ``cfg.containers`` (None when not
        built yet and build=False)."""
        key = self.cost_key(cfg, graph, topology)
        with self._lock:
            if key not in self._costs and build:
                self._costs[key] = planning.cost_table(
                    graph, topology, source=cfg.source, predictor_path=cfg.predictor_path or None,
                    profile_path=cfg.profile_path or None, log=self.log)
            table = self._costs.get(key)
            if table is not None and table.containers != cfg.containers:
                table = self._costs[key] = table.in_containers(cfg.containers)
            return table

    def cost_tables(self):
        """The memoised cost tables (one per model, topology and source seen)."""
        with self._lock:
            return list(self._costs.values())

    def for_layout(self, cost, topology, cfg):
        """``cost`` sized for the processes the plan runs in (docs/memory.md): a budget needs their base
        measured; without one the figure uses it only where it is known already."""
        where = (self.layout(topology, bool(cfg.memory_mb), cfg.containers)
                 if self.layout is not None and cost is not None else None)
        return cost if where is None else cost.for_processes(*where)

    def store_cost(self, key, cost):
        """Replace a memoised table (adaptation keeps the scaled one for later re-plans)."""
        with self._lock:
            self._costs[key] = cost


def make_plan(cfg, inputs):
    """The plan for ``cfg``: the forced ``stages`` or the DSE's on the (memoised) cost table."""

    graph = inputs.graph(cfg.model_path, cfg.input_shape, cfg.max_cut_tensors)
    pre, out = model_io(cfg, graph, inputs.log)
    topology = inputs.topology(cfg.topology)
    # a forced plan is predicted when that is cheap (a given file) or needed (adaptation compares against it)
    need_cost = not cfg.stages or cfg.adapt or bool(cfg.profile_path or cfg.predictor_path)
    cost = inputs.for_layout(inputs.cost(cfg, graph, topology, build=need_cost), topology, cfg)
    if cfg.stages:
        plan = forced_plan(cfg.stages, graph, topology)
    else:
        plan = run_dse(cfg, cost, topology, graph)
    return _result(plan, graph, topology, cost, inputs.cost_key(cfg, graph, topology), pre, out)


def model_io(cfg, graph, log=None):
    """(pre-processing dict, output spec dict) of ``graph`` for the plan message: parameters first, then the
    model's sidecar, its metadata, the defaults (``log`` says which, and what task was inferred)."""
    sidecar = meta.read_sidecar(graph.path)
    explicit = {'resize_mode': cfg.resize_mode, 'colour': cfg.colour,
                'pad_value': cfg.pad_value if cfg.pad_value >= 0 else None, 'pixel_scale': cfg.pixel_scale or None,
                'mean': _floats('mean', cfg.mean), 'std': _floats('std', cfg.std)}
    pre, _ = preprocess.resolve(graph, explicit, sidecar, log)
    given = {name: getattr(cfg, name) for name in _OUTPUT_PARAMS
             if getattr(cfg, name) != PARAM_SPECS[name].default}
    chosen = {name: given.get(name, sidecar.get(name, PARAM_SPECS[name].default)) for name in _OUTPUT_PARAMS}
    labels_file = cfg.labels_file or sidecar.get('labels_file') or ''
    labels = results.load_labels(labels_file) if labels_file else None
    try:
        out = results.output_spec(graph, chosen['task'], chosen['output_activation'], labels, log,
                                  score_threshold=float(chosen['score_threshold']),
                                  nms_threshold=float(chosen['nms_threshold']),
                                  max_detections=int(chosen['max_detections']))
    except (TypeError, ValueError) as exc:
        raise PipeitError(f'{meta.sidecar_path(graph.path)}: {exc}') from None
    return pre.to_dict(), out.to_dict()


_OUTPUT_PARAMS = ('task', 'output_activation', 'score_threshold', 'nms_threshold', 'max_detections')


def _floats(name, text):
    """'0.5' / '0.485, 0.456, 0.406' -> a list of floats; '' -> None."""
    if not text.strip():
        return None
    try:
        return [float(v) for v in text.replace(',', ' ').split()]
    except ValueError:
        raise PipeitError(f"{name} must be numbers separated by commas, e.g. '0.485,0.456,0.406', "
                          f'got {text!r}') from None


def run_dse(cfg, cost, topology, graph):

    return planning.plan_from_cost(cost, graph, topology, objective=cfg.objective,
                                   max_latency_ms=cfg.max_latency_ms or None, min_fps=cfg.min_fps or None,
                                   memory_mb=cfg.memory_mb or None, search=cfg.search, containers=cfg.containers)


def adapt_plan(current, cfg, drift, inputs):
    """Re-plan from measured stage times: scale the cost table (see :mod:`pipeit_ros.app.adapt`), keep it for
    later re-plans, then re-cut a forced plan or re-run the DSE."""

    if current.cost is None:
        raise PipeitError('cannot adapt without a cost table')
    scaled, factors = adapt.scale_cost_table(current.cost, current.plan, drift.measured_ms)
    inputs.store_cost(current.cost_key, scaled)
    inputs.log('adapt: scaled cost rows ' + ', '.join(f'{c}:{k} x{f:.2f}' for (c, k), f in factors.items()))
    if cfg.stages:
        plan = adapt.rebalance(current.plan, scaled, current.topology)
    else:
        plan = run_dse(cfg, inputs.for_layout(scaled, current.topology, cfg), current.topology, current.graph)
    return _result(plan, current.graph, current.topology, scaled, current.cost_key, current.preprocess,
                   current.output)


def _result(plan, graph, topology, cost, key, pre, out):
    """The PlanResult to publish; the plan's stages are optimised here first (engine.optimized), so the
    containers find them made and onnxruntime's temporaries stay in the planner's process."""
    optimize_stages(graph, plan)
    if cost is None:
        predicted = [s.predicted_ms or 0.0 for s in plan.stages]
    else:
        plan = prediction.with_predictions(plan, cost, topology)
        predicted = adapt.predicted_stage_ms(cost, plan)
    return PlanResult(plan=plan, graph=graph, topology=topology, cost=cost, cost_key=key,
                      predicted_stage_ms=predicted, preprocess=pre, output=out)
