"""The engine's small parts: frame and statistics records, the bounded channel, the switch-interval guard, and
the plan check. Kept apart from engine.py so the Pipeline's threads read in one place."""
import collections
from dataclasses import asdict, dataclass, field
import queue
import statistics
import sys
import threading

import numpy as np

from pipeit_ros.errors import PlanError
from pipeit_ros.hw.cpus import allowed_cpus
from pipeit_ros.plan import check_against, validate

QUEUE_SIZE = 2                # frames waiting before each stage, by default (engine, bench, containers; the DSE
                              # counts them: outputs in flight in memory, the saturated latency's queues)
SWITCH_INTERVAL_S = 0.001
REORDER_SLACK = 1             # frames a replicated last stage may start beyond its steady run-ahead (ReorderWindow)


@dataclass(slots=True)
class FrameResult:
    """One frame; ``outputs`` holds the tensors of the last stage that ran it (the inputs before stage 0)."""

    seq: int
    meta: object
    outputs: list
    t_submit: float                 # perf_counter when submit() was called
    t_done: float = 0.0             # perf_counter when it left the pipeline in order
    t_start: float = 0.0            # perf_counter when the first stage started it (latency without input queue)

    @property
    def latency_ms(self):
        return (self.t_done - self.t_start) * 1e3


@dataclass
class StageStats:
    name: str
    cluster: str
    cpus: tuple
    frames: int = 0
    busy_s: float = 0.0
    wait_in_s: float = 0.0
    wait_out_s: float = 0.0
    queue_high_water: int = 0
    drops: int = 0
    replicas: int = 1

    @property
    def mean_ms(self):
        return self.busy_s / self.frames * 1e3 if self.frames else 0.0

    def to_dict(self):
        return {**asdict(self), 'cpus': list(self.cpus), 'mean_ms': self.mean_ms}


@dataclass
class Worker:
    """Counters of one replica thread; written by that thread only (no locks on the hot path)."""

    stage: int
    replica: int
    cpus: tuple
    frames: int = 0
    busy_s: float = 0.0
    wait_in_s: float = 0.0
    wait_out_s: float = 0.0
    native_id: int = 0
    timeline: list = field(default_factory=list)


# -- switch interval: lowered while any pipeline runs (docs/architecture.md), restored when the last one stops
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = None


def switch_acquire():
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        _switch_users += 1


def switch_release():
    global _switch_users
    with _switch_lock:
        _switch_users -= 1
        if _switch_users == 0 and _switch_saved is not None:
            sys.setswitchinterval(_switch_saved)


class Channel:
    """A bounded FIFO made of two C-level SimpleQueues, the items and the free slots: several times cheaper per
    hand-over than queue.Queue (a Python Condition, a lock allocated per wait) on the engine's hot path."""

    __slots__ = ('items', 'slots')

    def __init__(self, maxsize):
        self.items, self.slots = queue.SimpleQueue(), queue.SimpleQueue()
        for _ in range(maxsize):
            self.slots.put(None)

    def qsize(self):
        return self.items.qsize()


def frames_in_flight(replica_times):
    """The frames of a stage whose replicas take ``replica_times`` each that are alive at once (Little's law: its
    rate x the slowest replica's time)."""
    return max(replica_times) * sum(1.0 / max(t, 1e-9) for t in replica_times)


def reorder_width(frames):
    """The reorder window of a stage with ``frames`` in flight: rounded up, plus :data:`REORDER_SLACK` (an int, or
    an array for an array: the DSE takes it for every option at once)."""
    width = np.ceil(np.asarray(frames, dtype=float) - 1e-6) + REORDER_SLACK
    return int(width) if width.ndim == 0 else width


class ReorderWindow:
    """How far the replicas of a model's last stage may run ahead of the oldest frame not yet delivered.

    Replicas of unequal speed pull from one queue, and a fast one's outputs wait for the slow one's frame before
    them, resident in its session's arena. Unbounded, a replica that stalled once for 0.3 s let the other run 66
    frames past it (test/test_engine.py). A frame starts only while it is less than :meth:`width` frames past the
    oldest undelivered one: the stage's frames in flight by Little's law (the slowest replica's time x the stage's
    rate) rounded up, plus :data:`REORDER_SLACK`, so a steady stage never waits. A plan with predictions carries
    the width (``Stage.window``, from the predicted times), the figure ``CostTable.reordered_outputs`` counts; a
    plan without them, e.g. one forced from a spec, gets it from the median of each replica's recent cycles.
    Deadlock-free only when the frames reach the stage in order (no replicated stage before it in the same
    Pipeline): the oldest frame is then always taken first."""

    RECENT = 9                  # cycles per replica whose median is its time (one hiccup does not widen it)

    def __init__(self, replicas, width=None):
        self.replicas = int(replicas)
        self.fixed = None if width is None else max(int(width), self.replicas + REORDER_SLACK)
        self.cycles = [collections.deque(maxlen=self.RECENT) for _ in range(self.replicas)]
        self.next_out = 0
        self.cond = threading.Condition()

    def width(self):
        if self.fixed is not None:
            return self.fixed
        if not all(self.cycles):
            return self.replicas + REORDER_SLACK
        return reorder_width(frames_in_flight([statistics.median(d) for d in self.cycles]))

    def enter(self, seq, stopping, poll_s):
        """Wait until frame ``seq`` may start, or ``stopping()``."""
        if seq < self.next_out + self.replicas + REORDER_SLACK:    # never above width(): no lock on the way
            return
        with self.cond:
            while seq >= self.next_out + self.width() and not stopping():
                self.cond.wait(poll_s)

    def record(self, replica, seconds):
        """A replica's cycle: from taking a frame to handing its output on."""
        self.cycles[replica].append(seconds)

    def advance(self, next_seq):
        """Every frame before ``next_seq`` was delivered (or dropped)."""
        with self.cond:
            self.next_out = next_seq
            self.cond.notify_all()


class _AnyCPU:
    """A stand-in topology whose every cluster holds all of the plan's CPUs: lets plan.validate check a plan's
    structure (coverage, cut points, CPU counts, CPUs used twice) when the engine is given no topology."""

    def __init__(self, plan):
        self.cpus = tuple(sorted(set(plan.cpus())))

    def cluster(self, name):
        return _AnyCluster(name, self.cpus)


@dataclass
class _AnyCluster:
    name: str
    cpus: tuple


def check_plan(graph, plan, topology=None, stages=None):
    """Raise PlanError unless ``plan`` can run here: validated against ``graph`` (and ``topology`` if given),
    and the CPUs of the hosted ``stages`` (default all) available to the calling thread. Only the hosted
    stages count: a container pinned to one cluster hosts that cluster's stages."""
    if topology is not None:
        check_against(plan, graph, topology)
    else:
        validate(plan, _AnyCPU(plan), n_layers=len(graph.layers), cut_points=graph.cut_points)
    allowed = set(allowed_cpus())
    for i in range(len(plan.stages)) if stages is None else stages:
        s = plan.stages[i]
        missing = sorted(set(s.cpus) - allowed)
        if missing and s.pinned:
            raise PlanError(f'stage {i} ({s.first}-{s.last}@{s.cluster}) uses CPU(s) {missing} that this process '
                            f'may not run on (allowed: {sorted(allowed)})')
    return plan
