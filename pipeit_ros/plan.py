"""Plans: which contiguous layers each pipeline stage runs, on which cluster and CPUs.

A :class:`Plan` is what the design-space exploration produces, what ``pipeit bench --plan`` and the engine run,
and what the planner node publishes (its JSON carries a schema version). Validation checks a plan against the
facts that make it runnable: the model's legal cut points and the topology's clusters.
"""
from dataclasses import asdict, dataclass, field, replace
import json
import re

from pipeit_ros.errors import PlanError, check_regular_file

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Stage:
    """Layers ``first..last`` (inclusive) on ``replicas`` core groups of ``threads`` CPUs each.

    Each replica's CPUs lie in one cluster. ``cluster`` names that cluster, or several joined by ``+`` when the
    replicas sit on different clusters (data parallelism over a big.LITTLE pair): replicas then pull frames from
    one shared queue, so a fast replica takes more of them, and outputs are put back in order.
    """

    first: int
    last: int
    cluster: str
    cpus: tuple[int, ...]
    threads: int = 1
    replicas: int = 1
    pinned: bool = True          # False only for the `ort_all_cores` baseline: onnxruntime's own placement
    predicted_ms: float | None = None
    window: int | None = None    # the model's last stage, replicated: frames it may start past the oldest one
                                 # not yet delivered (engine.parts.ReorderWindow; set with the predictions)

    def __post_init__(self):
        object.__setattr__(self, 'cpus', tuple(int(c) for c in self.cpus))

    @property
    def n_layers(self):
        return self.last - self.first + 1

    @property
    def host_cluster(self):
        """The cluster whose container hosts this stage in the ROS graph: its cluster, or the first of a
        ``big+little`` pair."""
        return self.cluster.split('+')[0]

    def replica_cpus(self):
        """The CPUs of each replica: consecutive groups of ``threads`` CPUs."""
        return [self.cpus[i * self.threads:(i + 1) * self.threads] for i in range(self.replicas)]

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]
    model_hash: str = ''
    topology_fingerprint: str = ''
    predicted_fps: float | None = None
    predicted_latency_ms: float | None = None
    search: str = 'manual'       # who made it: manual, exact, pipeit-paper, a baseline's name
    name: str = ''
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, 'stages', tuple(self.stages))

    @property
    def n_layers(self):
        return self.stages[-1].last + 1 if self.stages else 0

    def cpus(self):
        return tuple(c for s in self.stages for c in s.cpus)

    # -- JSON ------------------------------------------------------------------------------------------------
    def to_dict(self):
        d = asdict(self)
        d['schema_version'] = SCHEMA_VERSION
        return d

    def to_json(self, indent=None):
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise PlanError(f'a plan must be a JSON object, got {type(d).__name__}')
        version = d.get('schema_version', SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise PlanError(f'plan schema_version {version} is not supported (this pipeit reads {SCHEMA_VERSION})')
        try:
            stages = tuple(Stage(**{**s, 'cpus': tuple(s['cpus'])}) for s in d['stages'])
            rest = {k: v for k, v in d.items() if k not in ('stages', 'schema_version')}
            return cls(stages=stages, **rest)
        except (KeyError, TypeError) as exc:
            raise PlanError(f'malformed plan: {exc}') from None

    @classmethod
    def from_json(cls, text):
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PlanError(f'plan is not valid JSON: {exc}') from None
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise PlanError(f'not a pipeit plan ({type(exc).__name__}: {exc})') from None

    @classmethod
    def load(cls, path):
        check_regular_file(path, 'plan (JSON)', PlanError)
        try:
            with open(path, encoding='utf-8') as f:
                return cls.from_json(f.read())
        except OSError as exc:
            raise PlanError(f'{path}: cannot read plan: {exc.strerror}') from None
        except UnicodeDecodeError as exc:
            raise PlanError(f'{path}: not a text (UTF-8) plan file (byte {exc.start} cannot be decoded)') from None
        except PlanError as exc:
            raise PlanError(f'{path}: {exc}') from None

    def save(self, path):
        with open(path, 'w', encoding='utf-8') as f:
            f.write(self.to_json(indent=2) + '\n')
        return path

    # -- compact text form -------------------------------------------------------------------------------------
    def to_spec(self):
        """``0-17@big:2,18-52@big:2x2,53-99@little:4`` (``:TxR`` = R replicas of T threads)."""
        parts = []
        for s in self.stages:
            reps = f'x{s.replicas}' if s.replicas > 1 else ''
            cpus = '[' + '+'.join(map(str, s.cpus)) + ']'
            parts.append(f'{s.first}-{s.last}@{s.cluster}{cpus}:{s.threads}{reps}')
        return ','.join(parts)

    def describe(self, graph=None):
        """Human lines: one per stage, then the predicted figures."""
        lines = []
        for i, s in enumerate(self.stages):
            reps = f' x{s.replicas} replicas' if s.replicas > 1 else ''
            pred = f'  predicted {s.predicted_ms:.2f} ms' if s.predicted_ms is not None else ''
            span = f'layers {s.first}-{s.last}'
            if graph is not None:
                span += f' ({graph.layers[s.first].name} .. {graph.layers[s.last].name})'
            pin = '' if s.pinned else ' (unpinned)'
            lines.append(f'stage {i}: {span} on {s.cluster} cpus {list(s.cpus)}'
                         f' ({s.threads} thread{"s" if s.threads > 1 else ""}{reps}){pin}{pred}')
        if self.predicted_fps is not None:
            lat = f', latency {self.predicted_latency_ms:.2f} ms' if self.predicted_latency_ms is not None else ''
            if self.notes.get('saturated_latency_ms') is not None:
                lat += f' ({self.notes["saturated_latency_ms"]:.2f} ms saturated)'
            lines.append(f'predicted: {self.predicted_fps:.1f} frames/s{lat}')
        return '\n'.join(lines)


_SPEC_RE = re.compile(r'^(\d+)-(\d+)@([A-Za-z_][\w-]*(?:\+[A-Za-z_][\w-]*)*)(?:\[([\d+]+)\])?(?::(\d+)(?:x(\d+))?)?$')


def parse_spec(spec, topology, n_layers=None):
    """Parse the compact form. CPUs left out are taken in order from the cluster's CPUs not yet used.

    ``0-17@big:2,18-52@big:2,53-99@little:4`` gives stage 0 the first two big CPUs, stage 1 the next two.
    A layer range end of ``-1`` or beyond is not guessed: the ranges must be explicit.
    """
    used = set()
    stages = []
    for part in [p.strip() for p in str(spec).split(',') if p.strip()]:
        m = _SPEC_RE.match(part)
        if not m:
            raise PlanError(f'stage spec {part!r} is not FIRST-LAST@CLUSTER[:THREADS[xREPLICAS]] '
                            f'(e.g. 0-17@big:2, 18-40@little[4+5]:1x2)')
        first, last, cluster_name = int(m.group(1)), int(m.group(2)), m.group(3)
        threads = int(m.group(5) or 1)
        replicas = int(m.group(6) or 1)
        clusters = [topology.cluster(name) for name in cluster_name.split('+')]
        if len(clusters) > 1 and not m.group(4):
            raise PlanError(f'stage spec {part!r}: replicas on several clusters need their CPUs listed, '
                            f'e.g. {first}-{last}@{cluster_name}[{"+".join(str(c.cpus[0]) for c in clusters)}]'
                            f':1x{len(clusters)}')
        cluster = clusters[0]
        if m.group(4):
            cpus = tuple(int(c) for c in m.group(4).split('+'))
            threads = int(m.group(5)) if m.group(5) else len(cpus) // replicas
        else:
            free = [c for c in cluster.cpus if c not in used]
            need = threads * replicas
            if need > len(free):
                raise PlanError(f'stage {part!r} needs {need} CPUs of cluster {cluster_name!r}, '
                                f'only {len(free)} are left ({free})')
            cpus = tuple(free[:need])
        used.update(cpus)
        stages.append(Stage(first=first, last=last, cluster=cluster_name, cpus=cpus, threads=threads,
                            replicas=replicas))
    if not stages:
        raise PlanError('empty stage spec')
    plan = Plan(stages=tuple(stages), topology_fingerprint=topology.fingerprint(), search='manual')
    if n_layers is not None:
        validate(plan, topology, n_layers=n_layers)
    return plan


def validate(plan, topology, n_layers=None, cut_points=None):
    """Raise PlanError unless the plan can run: contiguous stages covering every layer once, each cut at a legal
    cut point, each stage's CPUs inside its one cluster, no CPU used twice, threads x replicas = CPUs."""
    if not plan.stages:
        raise PlanError('a plan needs at least one stage')
    if cut_points is not None:
        cut_points = {getattr(c, 'index', c) for c in cut_points}
    expected_first = 0
    seen = {}
    for i, s in enumerate(plan.stages):
        where = f'stage {i} ({s.first}-{s.last}@{s.cluster})'
        if s.first != expected_first:
            raise PlanError(f'{where} starts at layer {s.first}, expected {expected_first}: stages must be '
                            f'contiguous and cover every layer once')
        if s.last < s.first:
            raise PlanError(f'{where} ends before it starts')
        if i > 0 and cut_points is not None and s.first not in cut_points:
            raise PlanError(f'{where}: layer {s.first} is not a legal cut point (more tensors cross there than '
                            f'the cut limit allows, or a graph output does); legal: {sorted(cut_points)}')
        if s.threads < 1 or s.replicas < 1:
            raise PlanError(f'{where}: threads and replicas must be >= 1')
        if s.window is not None and (isinstance(s.window, bool) or not isinstance(s.window, int) or s.window < 1):
            raise PlanError(f'{where}: window must be an integer >= 1 or absent, got {s.window!r}')
        if len(s.cpus) != s.threads * s.replicas:
            raise PlanError(f'{where}: {len(s.cpus)} CPUs given for {s.replicas} replica(s) of {s.threads} '
                            f'thread(s)')
        clusters = [topology.cluster(name) for name in s.cluster.split('+')]
        if s.pinned:
            for group in s.replica_cpus():
                if not any(set(group) <= set(c.cpus) for c in clusters):
                    raise PlanError(f'{where}: CPUs {list(group)} of one replica are not all inside one cluster of '
                                    + ', '.join(f'{c.name} {list(c.cpus)}' for c in clusters))
            for c in s.cpus:
                if c in seen:
                    raise PlanError(f'{where}: CPU {c} is already used by stage {seen[c]}')
                seen[c] = i
        expected_first = s.last + 1
    if n_layers is not None and expected_first != n_layers:
        raise PlanError(f'the stages cover layers 0-{expected_first - 1}, the model has {n_layers} '
                        f'(0-{n_layers - 1})')
    return plan


def check_against(plan, graph, topology):
    """Validate for a loaded LayerGraph and say so when the plan was made for another model or topology."""
    if plan.model_hash and plan.model_hash != graph.model_hash:
        raise PlanError(f'plan was made for model {plan.model_hash}, this model is {graph.model_hash}')
    if plan.topology_fingerprint and plan.topology_fingerprint != topology.fingerprint():
        raise PlanError(f'plan was made for topology {plan.topology_fingerprint}, this one is '
                        f'{topology.fingerprint()} ({topology.name})')
    return validate(plan, topology, n_layers=len(graph.layers), cut_points=graph.cut_points)


def with_model(plan, graph):
    return replace(plan, model_hash=graph.model_hash)
