"""The container's plumbing without rclpy: which stages a container hosts, the inbox between a subscription
callback and the feeder thread, and the re-plan handshake's decisions.

Re-plan handshake (generation G-1 -> G), driven by ``pipeit/status`` and in-band end-of-generation markers:

1. Every container gets plan G. The container hosting G's stage 0 (the new *head*) subscribes to the camera
   now and buffers frames; if it is not also the old head it reports ``first_stamp`` (the stamp of the first
   frame it holds) in its status.
2. The old head stops admitting frames: at once when it is also the new head (the next frame stays in the
   inbox for the new run). Else it holds until the new head's ``first_stamp`` arrives, takes the frames stamped
   before it and reports the last stamp it took (``handoff``); the new head skips frames up to that stamp
   (one camera publisher: stamps rise, so no frame falls between and none is taken twice).
   It drains its engine and sends an end-of-generation marker behind the last frame, down the old topics.
3. A container with old stages drains each run after that marker arrives on its input and passes the marker
   on; the old tail's results are all published (and acknowledged) before it reports anything newer. Only
   then does a container build its G stages, report ``ready``.
4. The new head admits frames when every container it has heard from reports generation G and none is
   ``draining``, and every cluster G uses has reported ``ready``/``running``: so frames of G-1 have all left
   before frames of G enter, and under ``block`` none was dropped on the way.
Every wait has a deadline (``replan_timeout_s``): a marker that never comes (a dead peer) ends the wait with a
warning and the frames left behind counted as ``replan`` drops. One container's side of it, what it heard and
when it moves on, is pipeit_ros.app.generations.
"""
from collections import deque
from dataclasses import dataclass, field
import threading
import time

from pipeit_ros.errors import PipeitError

ALL = '*'
STALE_S = 3.5           # a container silent this long is gone (containers report every second on pipeit/status)
START_WAIT_S = 10.0     # the planner holds a new plan this long at most for the running generation to start
CUT_NOW = 'now'         # an old head's cut: stop admitting at once (else the stamp of the new head's first frame)
CUT_IDLE_S = 1.0        # a hand-off cut waiting for a frame past the stamp gives up after this (camera stopped)
STATES = ('idle', 'draining', 'ready', 'running')


def host_cluster(stage):
    """The cluster whose container hosts ``stage`` (:attr:`pipeit_ros.plan.Stage.host_cluster`)."""
    return stage.host_cluster


def hosted_runs(plan, cluster):
    """Maximal runs of consecutive stage indices hosted by ``cluster`` ('*' or '' hosts every stage).

    Each run becomes one engine Pipeline: its stages hand arrays over in-process without a copy.
    """
    if cluster in (ALL, ''):
        return [list(range(len(plan.stages)))] if plan.stages else []
    runs = []
    for i, s in enumerate(plan.stages):
        if host_cluster(s) != cluster:
            continue
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def plan_clusters(plan):
    return {host_cluster(s) for s in plan.stages}


def head_cluster(plan):
    return host_cluster(plan.stages[0]) if plan and plan.stages else None


# -- inbox ---------------------------------------------------------------------------------------------------
class Closed(Exception):
    """The inbox was closed while waiting."""


class Inbox:
    """FIFO between a subscription callback (``put``) and a feeder thread (``get``).

    'drop_oldest': a full inbox drops its oldest item (keep-latest) and counts it. 'block': ``put`` waits for
    room, which stalls only that callback's executor thread while DDS queues the rest behind it.
    """

    def __init__(self, size, policy='drop_oldest'):
        if int(size) < 1:
            raise PipeitError(f'inbox size must be >= 1, got {size}')
        self.size, self.policy = int(size), policy
        self._items = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def __len__(self):
        return len(self._items)

    def put(self, item, timeout=None):
        """Add ``item``; returns the item dropped to make room (or None). Raises Closed once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._items) >= self.size and self.policy == 'block' and not self._closed:
                wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if wait <= 0:
                    break
                self._cond.wait(wait)
            if self._closed:
                raise Closed()
            dropped = None
            if len(self._items) >= self.size:
                dropped = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def unget(self, item):
        """Put ``item`` back in front (a frame the feeder took but leaves to the next generation)."""
        with self._cond:
            self._items.appendleft(item)
            self._cond.notify_all()

    def get(self, timeout=None):
        """The oldest item; None after ``timeout`` seconds; Closed once closed and empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise Closed()
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                self._cond.wait(wait)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def take_if(self, predicate):
        """Remove and return the items for which ``predicate`` is true (the others stay, in order)."""
        with self._cond:
            taken = [item for item in self._items if predicate(item)]
            if taken:
                self._items = deque(item for item in self._items if not predicate(item))
                self._cond.notify_all()
            return taken

    def clear(self):
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class SequenceGaps:
    """Frames a reader never got, from the publishers' sequence numbers (one counter per publisher): a best-effort
    reader loses frames in transport or in a full history, and DDS does not always report them. The first frame
    from a publisher only sets its counter (a reader that joins late has missed nothing)."""

    def __init__(self):
        self._last = {}

    def lost(self, publisher, seq):
        """Frames lost just before ``seq`` of ``publisher`` (0 for a repeated or older number)."""
        last = self._last.get(publisher)
        self._last[publisher] = seq if last is None else max(last, seq)
        return 0 if last is None else max(0, seq - last - 1)


# -- peers and the go decision ---------------------------------------------------------------------------------
@dataclass
class PeerStatus:
    """One container's latest ``pipeit/status`` as seen by another."""

    container: str
    cluster: str
    generation: int
    state: str
    stages: list = field(default_factory=list)
    pid: int = 0
    cpus: list = field(default_factory=list)    # the CPUs its process is pinned to (empty: not said)
    first_stamp_ns: int | None = None
    handoff_generation: int = 0     # generation it handed the camera input over to ...
    last_stamp_ns: int | None = None  # ... after taking the frames stamped up to this
    last_seq: int | None = None     # ... the last of which got this seq
    first_taken_ns: int | None = None  # ... and the first of which was stamped this
    seen: float = 0.0           # monotonic time it arrived

    @classmethod
    def from_dict(cls, d, seen):
        stamp = d.get('first_stamp')
        first = None if not stamp else int(stamp['sec']) * 1_000_000_000 + int(stamp['nanosec'])
        ho = d.get('handoff') or {}
        return cls(container=str(d['container']), cluster=str(d['cluster']), generation=int(d['generation']),
                   state=str(d['state']), stages=list(d.get('stages', [])), pid=int(d.get('pid', 0)),
                   cpus=[int(c) for c in d.get('cpus', [])],
                   first_stamp_ns=first, handoff_generation=int(ho.get('generation', 0)),
                   last_stamp_ns=ho.get('last_stamp_ns'), last_seq=ho.get('last_seq'),
                   first_taken_ns=ho.get('first_stamp_ns'), seen=seen)

    @property
    def key(self):
        return (self.container, self.pid)


def live_peers(peers, now, stale_s):
    """Peers heard from within ``stale_s`` seconds (a dead container must not block a plan forever)."""
    return [p for p in peers.values() if now - p.seen <= stale_s]


def check_runnable(plan, containers):
    """PipeitError unless every stage of ``plan`` can run in the running containers: each of its clusters (a
    ``big+little`` stage has two) hosted by a container of that name (or '*'), its CPUs among theirs.
    ``containers``: the live PeerStatus of ``pipeit/status``; with none heard there is nothing to check against
    (containers started later pin themselves to the plan's topology)."""
    if not containers:
        return
    running = ', '.join(sorted(f'{p.cluster} (cpus {",".join(map(str, p.cpus)) or "?"})' for p in containers))
    for i, stage in enumerate(plan.stages):
        hosts = []
        for cluster in stage.cluster.split('+'):
            found = [p for p in containers if p.cluster in (cluster, ALL)]
            if not found:
                raise PipeitError(f'stage {i} would run on cluster {cluster!r}, which no running container hosts '
                                  f'(running: {running}); restart the graph for this topology')
            hosts += found
        cpus = {c for p in hosts for c in p.cpus}
        if all(p.cpus for p in hosts) and not set(stage.cpus) <= cpus:
            raise PipeitError(f'stage {i} would run on cpus {list(stage.cpus)}, outside its running containers\' '
                              f'(running: {running}); restart the graph for this topology')


def generation_started(generation, peers):
    """True when frames of ``generation`` flow (a container reports it ``running``), or nobody reports at all."""
    return not peers or any(p.generation == generation and p.state == 'running' for p in peers)


def may_admit(generation, clusters, peers):
    """(True, '') when the new head may let frames of ``generation`` in, else (False, what it waits for).

    ``peers`` are the live statuses, this container's own included; ``clusters`` those the plan uses.
    """
    behind = sorted(p.container for p in peers if p.generation != generation)
    if behind:
        return False, f'container(s) {", ".join(behind)} still on another generation'
    draining = sorted(p.container for p in peers if p.state == 'draining')
    if draining:
        return False, f'container(s) {", ".join(draining)} still draining'
    ready = {p.cluster for p in peers if p.state in ('ready', 'running')}
    if ALL in ready:
        return True, ''
    missing = sorted(set(clusters) - ready)
    if missing:
        return False, f'no ready container for cluster(s) {", ".join(missing)}'
    return True, ''


def handoff_stamp(generation, head_cluster_name, peers):
    """The new head's ``first_stamp`` (ns) for ``generation`` when another container reports it, else None."""
    for p in peers:
        if p.generation == generation and p.first_stamp_ns is not None and \
                p.cluster in (head_cluster_name, ALL):
            return p.first_stamp_ns
    return None


def skip_until(generation, peers):
    """The newest stamp an old head took before handing the camera input over for ``generation`` (the new
    head skips frames up to it: both may hold the few frames that crossed while the hand-off was agreed)."""
    stamps = [p.last_stamp_ns for p in peers
              if p.handoff_generation == generation and p.last_stamp_ns is not None]
    return max(stamps) if stamps else None


def skip_ranges(generation, peers):
    """[(first, last)] stamps (ns) the old heads in other containers took before handing the camera input over for
    ``generation``: the new head skips exactly those. A head that moves away and back within a few generations
    leaves frames before another container's range in its own inbox: skipping everything up to the last stamp
    (:func:`skip_until`) would lose them."""
    return [(-1 if p.first_taken_ns is None else p.first_taken_ns, p.last_stamp_ns) for p in peers
            if p.handoff_generation == generation and p.last_stamp_ns is not None]


def next_seq(peers):
    """One past the last seq any other container's head gave (0 when none did): a new head numbers from at least
    this, so seq follows the camera-frame order for the graph's life and never restarts."""
    return max((p.last_seq + 1 for p in peers if p.last_seq is not None), default=0)


def stamp_ns(stamp):
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
