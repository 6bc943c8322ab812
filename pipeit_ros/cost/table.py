"""The cost table: what the design-space exploration knows about a model on a topology.

Both ways of knowing produce one: the profiler (segments measured on every core configuration) and the
predictor (segments summed from per-layer predictions made from layer descriptors alone). The DSE reads only
this table, so it plans equally from measurements, predictions or live stage times.

The atoms are the model's *segments*: the layer ranges between consecutive legal cut points. A stage is a
contiguous run of segments; its time on a core configuration (cluster, k cores) is the sum of its segments'
times plus one fixed per-run overhead of that configuration, plus the hand-over of its input tensor.

A cut costs more than the hand-over: onnxruntime converts a tensor from its blocked internal layout back to
NCHW at a model's output and forward again at the next model's input, work that a merged stage never does
(MobileNetV2's first 12 layers: 4.1 ms as 9 segments, 3.2 ms as one stage). ``cut_ms[c, s]`` is that cost
at the cut before segment ``s`` (0 for s = 0); ``seg_ms`` is then a segment's time *inside* a stage, and a
stage pays half of the cut cost at each of its two ends (:meth:`CostTable.stage_ms`).

A core is slower while the others work too (shared caches and memory bandwidth): on the 2-core development VM,
two AlexNet replicas ran at 0.72x the rate that their times alone predicted, two MobileNetV2 ones at 0.80x.
``load_factor[c]`` is a configuration's time under load / time alone (the profiler measures the whole model
on it while every other CPU of the topology runs the model too). :meth:`CostTable.for_groups` gives the table
a plan of that many core groups (stages x replicas) is predicted with: as measured alone for one group,
scaled by the load factors for more.

A cut between stages in two processes costs more than one inside a process. In the ROS graph every cluster has
its own container (``containers='per_cluster'``, the default of ``pipeit bringup`` and the launch file), so a cut
between stages hosted on different clusters (:attr:`pipeit_ros.plan.Stage.host_cluster`) sends every crossing
tensor in one message: the sending stage's container packs and publishes it (``hop_send_*``: one copy into the
message, serialisation, the write into Fast DDS shared memory, on the engine's output thread), the receiving
one takes and unpacks it (``hop_recv_*``: transport, take, deserialisation). The sender's stage pays the first,
the receiver's the second instead of the in-process hand-over. Inside one process (``containers='one'``: the
engine, ``pipeit bench``, ``single_container:=true``) every cut is an in-process hand-over (zero-copy). The hop
costs are a measured calibration shipped in ``pipeit_ros/data/hop_cost.json`` (``tools/hopcost.py``: real
rclpy publisher and subscriber processes with the shipped Fast DDS profile, docs/architecture.md), used by
every table that does not carry its own.

Memory (docs/memory.md), in bytes, what a plan's process uses at its peak: ``base_bytes`` (an engine process:
Python, numpy, onnx, onnxruntime, the engine's threads) + ``build_bytes`` (the temporaries of one session
build, above the running memory) + ``weight_bytes`` of every segment once (one memory-mapped file shared by
every session and process; ``held_bytes``: the part of them that stays there, measured, since onnxruntime
reads weights it transforms into a copy of its own) + per stage replica its onnxruntime session's own memory on that configuration:
``session_bytes`` of each of its segments (graph, weights onnxruntime transforms into its own layout, e.g.
NCHWc convolution weights) + its arena (:meth:`CostTable.private_bytes`: the largest ``arena_bytes`` among its
segments and ``pair_arena_bytes`` among its adjacent pairs, activation buffers reused across a session's nodes;
a stage of several segments ending with the model's last adds ``tail_arena_bytes`` to the last one's) + its
outputs in flight (:meth:`CostTable.flight_bytes`). The profiler measures both per configuration and segment (anonymous memory grown while the
segment's session is built, then on its first run); a table without them (the predictor's) has
``arena_bytes`` = the largest activation, ``session_bytes`` = 0, ``held_bytes`` = all the weights and
``build_bytes`` = 0. The profiler measures ``base_bytes`` and ``build_bytes`` on the whole model run in a
fresh process (``cost.memory_probes.process_memory``). A ROS layout (:meth:`CostTable.for_processes`) replaces that
base by its containers' (``count`` of them, each as it holds hosting no stage) and adds ``host_bytes`` per run of
stages a container hosts.
"""
from dataclasses import asdict, dataclass, field, replace
import functools
import json
import os

import numpy as np

from pipeit_ros.engine.parts import QUEUE_SIZE, frames_in_flight, reorder_width
from pipeit_ros.errors import PipeitError, check_regular_file
from pipeit_ros.paths import DATA_DIR

QUEUED_OUTPUTS = QUEUE_SIZE + 1   # a stage's outputs alive beyond its first run's before a busy next stage
DEFAULT_BASE_BYTES = 36 * 2**20   # PSS of a fresh engine process here (docs/memory.md); the profiler measures it
CONTAINERS = ('one', 'per_cluster')   # every stage in one process / one container per cluster (the ROS graph)
HOP_FIELDS = ('hop_send_fixed_ms', 'hop_send_ms_per_mb', 'hop_recv_fixed_ms', 'hop_recv_ms_per_mb')
HOP_COST_FILE = os.path.join(DATA_DIR, 'hop_cost.json')


@functools.cache
def hop_calibration():
    """{field: ms} of :data:`HOP_FIELDS` from the shipped calibration (:data:`HOP_COST_FILE`)."""
    with open(HOP_COST_FILE, encoding='utf-8') as f:
        data = json.load(f)
    return {k: float(data[k]) for k in HOP_FIELDS}


@dataclass
class CostTable:
    segments: list                 # [(first_layer, last_layer)] per segment
    configs: list                  # [(cluster_name, cores)] per core configuration
    seg_ms: np.ndarray             # (n_configs, n_segments): time of each segment, per-run overhead excluded
    overhead_ms: np.ndarray        # (n_configs,): fixed cost of one session run on that configuration
    in_bytes: list                 # bytes of the tensor entering each segment (segment 0: the model input)
    weight_bytes: list             # weights of each segment
    act_bytes: list                # largest activation inside each segment (for memory bounds)
    handover_fixed_ms: float = 0.0     # cost of handing a tensor to the next stage: fixed + per MB
    handover_ms_per_mb: float = 0.0
    source: str = ''               # 'profile', 'predictor', 'measured', ...
    model_hash: str = ''
    topology_fingerprint: str = ''
    spread: np.ndarray | None = None   # optional (n_configs, n_segments) relative spread of measurements
    meta: dict = field(default_factory=dict)
    cut_ms: np.ndarray | None = None   # (n_configs, n_segments): cost of a stage boundary before segment s
    load_factor: np.ndarray | None = None  # (n_configs,): time while the other cores work / time alone
    session_bytes: np.ndarray | None = None  # (n_configs, n_segments): a segment's session, built (memory)
    arena_bytes: np.ndarray | None = None    # (n_configs, n_segments): its activation buffers, first run
    base_bytes: float = 0.0          # one engine process before any session
    held_bytes: list | None = None   # weights of each segment that stay in the shared mapping (default: all)
    hop_send_fixed_ms: float | None = None   # a cut between containers, sender's side: fixed + per MB
    hop_send_ms_per_mb: float | None = None  # (None: the shipped calibration, hop_calibration())
    hop_recv_fixed_ms: float | None = None   # receiver's side
    hop_recv_ms_per_mb: float | None = None
    containers: str = 'one'          # the process layout plans are predicted for (CONTAINERS)
    build_bytes: float = 0.0         # a process's peak above its running memory: session-build temporaries
    build_bytes_groups: float | None = None   # the same for replicas of one stage (default: build_bytes)
    build_bytes_stages: float | None = None   # the same for several stages (default: build_bytes_groups)
    running_bytes_groups: float = 0.0  # replicas of one stage: running memory beyond the model, over one group's
    running_bytes_stages: float = 0.0  # the same for several stages (YOLOv8n: 18 MiB; most nets 0-4)
    host_bytes: float = 0.0          # a ROS layout: what each run of stages adds to its container (for_processes)
    pair_arena_bytes: np.ndarray | None = None  # (n_configs, n_segments): segments s-1..s as one session, first
                                                # run (column 0: 0); default 0
    tail_arena_bytes: np.ndarray | None = None  # (n_configs,): what a session of several segments that ends with
                                                # the model's last holds beyond its parts (default 0)
    out_bytes: list | None = None    # bytes of the tensors leaving each segment (default: the next one's input;
                                     # the last: its largest activation)

    def __post_init__(self):
        self.segments = [tuple(map(int, s)) for s in self.segments]
        self.configs = [(str(c), int(k)) for c, k in self.configs]
        self.seg_ms = np.asarray(self.seg_ms, dtype=float).reshape(len(self.configs), len(self.segments))
        self.overhead_ms = np.asarray(self.overhead_ms, dtype=float).reshape(len(self.configs))
        shape = self.seg_ms.shape
        self.cut_ms = (np.zeros(shape) if self.cut_ms is None
                       else np.asarray(self.cut_ms, dtype=float).reshape(shape).copy())
        self.cut_ms[:, 0] = 0.0
        if self.load_factor is not None:
            self.load_factor = np.asarray(self.load_factor, dtype=float).reshape(len(self.configs))
        self.session_bytes = (np.zeros(shape) if self.session_bytes is None
                              else np.asarray(self.session_bytes, dtype=float).reshape(shape))
        self.arena_bytes = (np.tile(np.asarray(self.act_bytes, dtype=float), (shape[0], 1))
                            if self.arena_bytes is None else np.asarray(self.arena_bytes, dtype=float).reshape(shape))
        self.pair_arena_bytes = (np.zeros(shape) if self.pair_arena_bytes is None
                                 else np.asarray(self.pair_arena_bytes, dtype=float).reshape(shape))
        self.tail_arena_bytes = (np.zeros(shape[0]) if self.tail_arena_bytes is None
                                 else np.asarray(self.tail_arena_bytes, dtype=float).reshape(shape[0]))
        self.base_bytes = float(self.base_bytes)
        self.build_bytes = float(self.build_bytes)
        self.host_bytes = float(self.host_bytes)
        self.build_bytes_groups = None if self.build_bytes_groups is None else float(self.build_bytes_groups)
        self.build_bytes_stages = None if self.build_bytes_stages is None else float(self.build_bytes_stages)
        self.running_bytes_groups = float(self.running_bytes_groups)
        self.running_bytes_stages = float(self.running_bytes_stages)
        self.held_bytes = [int(b) for b in (self.weight_bytes if self.held_bytes is None else self.held_bytes)]
        self.out_bytes = [int(b) for b in (list(self.in_bytes[1:]) + [self.act_bytes[-1]] if self.out_bytes is None
                                           else self.out_bytes)]
        calibration = None
        for name in HOP_FIELDS:
            if getattr(self, name) is None:
                calibration = calibration or hop_calibration()
                setattr(self, name, calibration[name])
            setattr(self, name, float(getattr(self, name)))
        if self.containers not in CONTAINERS:
            raise ValueError(f'containers must be one of {", ".join(CONTAINERS)}, got {self.containers!r}')
        self._index = {c: i for i, c in enumerate(self.configs)}
        self._prefix = np.concatenate([np.zeros((len(self.configs), 1)), np.cumsum(self.seg_ms, axis=1)], axis=1)

    @property
    def process_bytes(self):
        """What a plan's process holds beyond its weights and sessions, at its peak: the base and the
        temporaries of a session build (the engine builds one session at a time), as for one core group (the
        search's bound for several: :meth:`under_load`)."""
        return self.base_bytes + self.build_bytes

    def plan_shape_bytes(self, stages, groups):
        """What a plan of ``stages`` stages and ``groups`` core groups (replicas summed over its stages) holds
        beyond one group's base and its sessions, as measured on a plan of that shape
        (cost.memory_probes.process_memory): the build temporaries above its running memory, and, for several
        groups, the running memory those probes held beyond the model (``running_bytes_*``). Shapes: one group,
        replicas of one stage, several stages; a plan of several stages with replicas takes the larger of the
        last two."""
        if groups <= 1:
            return self.build_bytes
        replicas = (self.build_bytes if self.build_bytes_groups is None else self.build_bytes_groups)
        split = replicas if self.build_bytes_stages is None else self.build_bytes_stages
        replicas += self.running_bytes_groups
        split += self.running_bytes_stages
        if stages <= 1:
            return replicas
        return split if groups == stages else max(replicas, split)

    def for_processes(self, count, idle_bytes, host_bytes=0.0):
        """The table a plan run in ``count`` containers (a ROS layout, pipeit_ros.ros.footprint) is sized with:
        each holds ``idle_bytes`` hosting nothing (they replace the one engine process's base), and every run
        of consecutive stages a container hosts (``app.handoff.hosted_runs``: its stage nodes, image or tensor
        subscription, frames in flight, engine threads) adds ``host_bytes``. :meth:`plan_runs` counts the runs."""
        return replace(self, base_bytes=count * float(idle_bytes), host_bytes=float(host_bytes),
                       meta={**self.meta, 'processes': int(count)})

    def plan_runs(self, host_clusters):
        """How many runs of stages hosted by one container a plan whose stages are hosted by ``host_clusters``
        (in stage order) makes: one with one container, else one more at each change of host."""
        hosts = list(host_clusters)
        if not hosts:
            return 0
        if self.containers == 'one':
            return 1
        return 1 + sum(a != b for a, b in zip(hosts, hosts[1:]))

    @property
    def n_segments(self):
        return len(self.segments)

    def config_index(self, cluster, cores):
        try:
            return self._index[(cluster, int(cores))]
        except KeyError:
            raise PipeitError(f'cost table has no core configuration {cluster}:{cores} '
                              f'(has {", ".join(f"{c}:{k}" for c, k in self.configs)})') from None

    def stage_ms(self, first_seg, last_seg, cluster, cores, include_handover=True, cross_in=False,
                 cross_out=False):
        """Time of segments first_seg..last_seg (inclusive) as one stage on (cluster, cores); ``cross_in`` /
        ``cross_out``: its input comes from / its output goes to another container (only counted when
        :attr:`containers` is 'per_cluster')."""
        i = self.config_index(cluster, cores)
        t = (self._prefix[i, last_seg + 1] - self._prefix[i, first_seg] + self.overhead_ms[i]
             + self.cut_ends(first_seg, last_seg)[i])
        per_cluster = self.containers == 'per_cluster'
        if include_handover and first_seg > 0:
            t += (self.hop_recv_ms if cross_in and per_cluster else self.handover_ms)(self.in_bytes[first_seg])
        if include_handover and cross_out and per_cluster and last_seg + 1 < self.n_segments:
            t += self.hop_send_ms(self.in_bytes[last_seg + 1])
        return float(t)

    def hop_send_ms(self, nbytes):
        """Sender's side of a cut of ``nbytes`` between containers."""
        return self.hop_send_fixed_ms + self.hop_send_ms_per_mb * nbytes / 1e6

    def hop_recv_ms(self, nbytes):
        """Receiver's side of a cut of ``nbytes`` between containers (instead of the in-process hand-over)."""
        return self.hop_recv_fixed_ms + self.hop_recv_ms_per_mb * nbytes / 1e6

    def in_containers(self, containers):
        """This table predicting for the process layout ``containers`` (one of :data:`CONTAINERS`)."""
        if containers not in CONTAINERS:
            raise PipeitError(f'containers must be one of {", ".join(CONTAINERS)}, got {containers!r}')
        return self if containers == self.containers else replace(self, containers=containers)

    @property
    def loaded(self):
        """True when some configuration is slower under load (a plan of several core groups is predicted
        with :meth:`under_load`)."""
        return self.load_factor is not None and bool(np.any(self.load_factor != 1.0))

    def under_load(self, chains=False):
        """A copy with every time of a configuration scaled by its load factor (hand-overs unchanged), and the
        build temporaries of a plan of several core groups, whatever its shape (the larger of
        :meth:`plan_shape_bytes` for replicas and for stages: the search's per-stage sums cannot tell them apart;
        the first session is built while the others' are not there yet, so less of its temporaries rises above
        the plan's running memory than with one group). ``chains``: for a search without replicas, the larger
        of the stages' shape and one group's. ``self`` where neither changes."""
        build = (max(self.build_bytes, self.plan_shape_bytes(2, 2)) if chains
                 else max(self.plan_shape_bytes(1, 2), self.plan_shape_bytes(2, 2)))
        if not self.loaded and build == self.build_bytes:
            return self
        f = self.load_factor[:, None] if self.loaded else np.ones((len(self.configs), 1))
        return replace(self, seg_ms=self.seg_ms * f, cut_ms=self.cut_ms * f, overhead_ms=self.overhead_ms * f[:, 0],
                       load_factor=None, build_bytes=build, build_bytes_groups=None, build_bytes_stages=None,
                       running_bytes_groups=0.0, running_bytes_stages=0.0,
                       meta={**self.meta, 'under_load': True})

    def for_groups(self, groups):
        """The table a plan with ``groups`` core groups (sum of replicas over stages) is predicted with."""
        return self.under_load() if groups > 1 else self

    def cut_ends(self, first_seg, last_seg):
        """Per configuration: the half cut costs a stage of segments first_seg..last_seg pays at its ends."""
        after = self.cut_ms[:, last_seg + 1] if last_seg + 1 < self.n_segments else 0.0
        return (self.cut_ms[:, first_seg] + after) / 2

    def alone_ms(self):
        """(n_configs, n_segments): each segment's time run as a stage of its own (overhead excluded)."""
        after = np.concatenate([self.cut_ms[:, 1:], np.zeros((len(self.configs), 1))], axis=1)
        return self.seg_ms + (self.cut_ms + after) / 2

    def private_bytes(self, first_seg, last_seg):
        """Per configuration: memory of one session of segments first_seg..last_seg beyond the shared weights."""
        span = slice(first_seg, last_seg + 1)
        arena = np.maximum(self.arena_bytes[:, span].max(1), self.pair_arena_bytes[:, span][:, 1:].max(1, initial=0.0))
        if last_seg == self.n_segments - 1 and first_seg < last_seg:
            arena = np.maximum(arena, self.arena_bytes[:, last_seg] + self.tail_arena_bytes)
        return self.session_bytes[:, span].sum(1) + arena

    def flight_bytes(self, last_seg, frames=1.0, replicas=1):
        """What a stage ending at segment ``last_seg`` holds for its outputs in flight beyond the one of its
        first run per replica (counted in ``arena_bytes``). onnxruntime returns a run's outputs in the session's
        arena, which keeps what it grew to, so every output alive at once stays resident: before another stage,
        :data:`QUEUED_OUTPUTS` more (the next stage's queue full, the frame it runs, this stage's next output
        waiting for room: a bound, reached where the next stage is the slower); and, with replicas, the model's
        outputs that the frames overtaking its slowest replica bring to the output thread before the frame they
        overtook (:meth:`reordered_outputs`; none with one replica: the output thread lets each output go as it
        comes)."""
        reordered = self.out_bytes[-1] * self.reordered_outputs(frames, replicas)
        if last_seg + 1 < self.n_segments:
            return float(self.out_bytes[last_seg] * QUEUED_OUTPUTS + reordered)
        return float(reordered)

    frames_in_flight = staticmethod(frames_in_flight)    # the ``frames`` of :meth:`flight_bytes`

    @staticmethod
    def reordered_outputs(frames, replicas):
        """The model's outputs held for their turn because of a stage of ``replicas`` replicas with ``frames`` in
        flight (numpy-vectorised), beyond one per replica. The model's last stage: the engine's ``ReorderWindow``
        lets it start ``reorder_width(frames)`` frames past the oldest one not yet delivered, every one an output
        alive at once at most. An earlier stage has no window (frames reach the last stage out of order, and a
        window there could wait for a frame stuck behind it): in a steady run its fast replicas overtake the
        slowest one's frame by its frames in flight, the same count; a replica that stalls lets them run on."""
        frames, replicas = np.asarray(frames, dtype=float), np.asarray(replicas)
        window = reorder_width(frames) - replicas
        out = np.where(replicas > 1, np.maximum(window, 0.0), 0.0)
        return float(out) if out.ndim == 0 else out

    def handover_ms(self, nbytes):
        return self.handover_fixed_ms + self.handover_ms_per_mb * nbytes / 1e6

    def segment_of_layer(self, layer):
        for s, (a, b) in enumerate(self.segments):
            if a <= layer <= b:
                return s
        raise PipeitError(f'layer {layer} is not in any segment')

    # -- JSON ------------------------------------------------------------------------------------------------
    def to_dict(self):
        d = asdict(self)
        for k in ('seg_ms', 'overhead_ms', 'spread', 'cut_ms', 'load_factor', 'session_bytes', 'arena_bytes',
                  'pair_arena_bytes', 'tail_arena_bytes'):
            d[k] = None if d[k] is None else np.asarray(d[k]).tolist()
        d.pop('_index', None)
        d.pop('_prefix', None)
        return d

    @classmethod
    def from_dict(cls, d):
        """From :meth:`to_dict`'s form; ValueError for times that no measurement gives (negative, nan, inf)."""
        d = dict(d)
        if d.get('spread') is not None:
            d['spread'] = np.asarray(d['spread'], dtype=float)
        table = cls(**d)
        for name in ('seg_ms', 'overhead_ms', 'cut_ms'):
            values = getattr(table, name)
            if not np.all(np.isfinite(values)) or np.any(values < 0):
                raise ValueError(f'{name} holds negative or non-finite times')
        return table

    def save(self, path):
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(self.to_dict(), f)
        return path

    @classmethod
    def load(cls, path):
        check_regular_file(path, 'cost table (JSON)')
        try:
            with open(path, encoding='utf-8') as f:
                return cls.from_dict(json.load(f))
        except OSError as exc:
            raise PipeitError(f'{path}: cannot read cost table: {exc.strerror}') from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise PipeitError(f'{path}: not a pipeit profile/cost table: {exc}') from None
