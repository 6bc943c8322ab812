"""One container's side of the hand-over between plan generations (the handshake of pipeit_ros.app.handoff),
without rclpy: what it heard on ``pipeit/status``, the newest generation started anywhere, when it began moving
to its own generation, what its old head took, and the decisions made from them each tick: move on to a newer
plan, cut an old head, build the new stages, let the new head's frames in, book what a head that never started
held.

The control node (pipeit_ros.ros.container) keeps the runs, the camera input and the publishers, and asks a
:class:`Generations` with plain values; its log comes in as two callables. So the decisions are tested without a
ROS graph.
"""
import time

from pipeit_ros.app import handoff, sleeper

HANDOFF_WAIT_S = 2.0    # old head waits this long for the new head's first stamp, then cuts at once
WAIT_NOTE_S = 5.0       # a container still waiting this long (for a plan, a subscriber, its peers) says for what


def hosts_head(plan, cluster):
    """True when ``cluster``'s container hosts stage 0 of ``plan`` (it takes the camera frames)."""
    return cluster == handoff.ALL or handoff.head_cluster(plan) == cluster


def hosts_tail(plan, cluster):
    """True when ``cluster``'s container hosts the last stage of ``plan`` (it publishes the results)."""
    return any(r[-1] == len(plan.stages) - 1 for r in handoff.hosted_runs(plan, cluster))


def _now(now):
    return time.monotonic() if now is None else now


class Generations:
    """The hand-over bookkeeping of the container ``me`` (its status key: container name, pid). ``warn(text)`` logs
    a warning; ``note(kind, text)`` one that comes at most once a while for each kind (waits are noted every tick).
    """

    def __init__(self, me, warn, note, now=None):
        self.me, self.warn, self.note = me, warn, note
        self.peers = {}             # status key -> handoff.PeerStatus, this container's own included
        self.started_gen = 0        # newest generation any container (this one included) reported running
        self.since = _now(now)      # start, then the moment this container began moving to its generation
        self.handed_over = None     # {'generation', 'first/last_stamp_ns', 'last_seq'} once an old head ended here

    # -- what it heard --------------------------------------------------------------------------------------
    def heard(self, peer):
        """Record a ``pipeit/status`` (another container's or this one's own); a container going to sleep
        (pipeit_ros.app.sleeper) is no peer until it wakes."""
        if peer.state == sleeper.SLEEPING:
            self.peers.pop(peer.key, None)
            return
        self.peers[peer.key] = peer
        if peer.state == 'running':
            self.started(peer.generation)

    def started(self, generation):
        self.started_gen = max(self.started_gen, generation)

    def live(self, now=None):
        return handoff.live_peers(self.peers, _now(now), handoff.STALE_S)

    def others(self, now=None):
        """The live peers but this container."""
        return [p for p in self.live(now) if p.key != self.me]

    def heard_from(self, now=None):
        """The other live containers with their generation and state, for a log line."""
        return ', '.join(sorted(f'{p.container} (generation {p.generation}, {p.state})' for p in self.others(now)))

    def wait_note(self, kind, text, now=None):
        """Note ``text`` once this container has waited WAIT_NOTE_S since it began its generation (or started);
        ``text`` may be a callable, so a line is only built (every tick while waiting) when it is due."""
        if _now(now) - self.since > WAIT_NOTE_S:
            self.note(kind, text() if callable(text) else text)

    # -- moving on to a newer plan --------------------------------------------------------------------------
    def move_on(self, current, latest, failed, timeout_s, now=None):
        """True when this container may move from the plan message ``current`` (None: none yet) to ``latest``
        (None: none received). It moves once the current generation started (its head took frames), so the frames
        waiting for that head are not left to nobody. The planner holds plans that long already
        (handoff.START_WAIT_S); this holds one that came anyway (a planner restarted, or a generation that could
        not start: ``failed``), ``timeout_s`` at most."""
        if latest is None or (current is not None and latest.generation == current.generation):
            return False
        if current is None or failed or self.started_gen >= current.generation:
            return True
        if _now(now) - self.since <= timeout_s:
            return False
        self.warn(f'generation {current.generation} did not start within {timeout_s:g} s; moving on to generation '
                  f'{latest.generation} (frames left to it are counted as replan drops)')
        return True

    def begin(self, now=None):
        """This container begins moving to a new generation (the hand-over's deadlines count from here)."""
        self.since = _now(now)

    # -- the old head ---------------------------------------------------------------------------------------
    def cut(self, msg, idle_s, timeout_s, now=None):
        """Where an old head run cuts for the new plan message ``msg``: the new head's first frame stamp (ns) once
        its container reports it, ``handoff.CUT_NOW`` when it waited too long for it, else None (keep taking
        frames). ``idle_s``: seconds since the old head last took a frame (over CUT_IDLE_S: the camera stopped).
        Frames still coming in and none at the new head yet (its subscription not matched): cutting now would
        lose the ones it misses, so the old head keeps taking them until ``timeout_s``."""
        now = _now(now)
        stamp = handoff.handoff_stamp(msg.generation, handoff.head_cluster(msg.plan), self.live(now))
        if stamp is not None:
            return stamp
        waited = now - self.since
        if waited > HANDOFF_WAIT_S and (idle_s > handoff.CUT_IDLE_S or waited > timeout_s):
            self.warn('no first frame stamp from the new head container; cutting now')
            return handoff.CUT_NOW
        return None

    def head_ended(self, generation, first_stamp_ns, last_stamp_ns, last_seq):
        """An old head run ended here after taking frames: its range goes into the status (``handoff``)."""
        self.handed_over = {'generation': generation, 'first_stamp_ns': first_stamp_ns,
                            'last_stamp_ns': last_stamp_ns, 'last_seq': last_seq}

    def book_unstarted(self, ledger, generation, went, cut, inbox, evicted, now=None):
        """A head run of ``generation`` that never started (``went`` false) hands the camera input over to another
        container: the frames in ``inbox`` (camera frames: (image, meta, lost before)) stamped before that
        container's first, ``cut`` (ns; None: no hand-off), were taken by no head. They are booked in ``ledger``
        as taken and dropped ('replan'; 'queue' for those the full inbox dropped meanwhile, ``evicted``: (stamp
        ns, lost before); 'dds' for sequence gaps before them), except those an old head in another container
        took (its skip ranges). Returns how many frames it held were lost ('replan')."""
        if went or cut is None:
            return 0
        ranges = handoff.skip_ranges(generation, self.others(now))

        def skipped(stamp):
            return any(lo <= stamp <= hi for lo, hi in ranges)
        left = inbox.take_if(lambda item: handoff.stamp_ns(item[0].header.stamp) < cut)
        lost = [item for item in left if not skipped(handoff.stamp_ns(item[0].header.stamp))]
        queue = [e for e in (evicted.popleft() for _ in range(len(evicted))) if e[0] < cut and not skipped(e[0])]
        dds = sum(item[2] for item in lost) + sum(lost_before for _, lost_before in queue)
        ledger.count('took', len(lost) + len(queue) + dds)
        ledger.drop('replan', len(lost))
        ledger.drop('queue', len(queue))
        ledger.drop('dds', dds)
        if lost:
            self.warn(f'generation {generation} never started: {len(lost)} frame(s) it held are dropped (replan)')
        return len(lost)

    # -- the new generation ---------------------------------------------------------------------------------
    def may_build(self, generation, now=None):
        """True once every live container works towards ``generation`` and none drains: the old generation's
        frames have left, so this container may build the new stages."""
        return all(p.generation == generation and p.state != 'draining' for p in self.live(now))

    def running(self, generation, now=None):
        """True when a live container reports ``generation`` running: a container without the head runs then."""
        return any(p.generation == generation and p.state == 'running' for p in self.live(now))

    def admit(self, generation, plan, now=None):
        """('', skip ranges, first seq) when the new head may let frames of ``generation`` in: it skips the stamps
        old heads elsewhere took and numbers its frames from at least that seq; else (what it waits for, (), 0)."""
        live = self.live(now)
        ok, why = handoff.may_admit(generation, handoff.plan_clusters(plan), live)
        if not ok:
            return why, (), 0
        others = [p for p in live if p.key != self.me]
        return '', handoff.skip_ranges(generation, others), handoff.next_seq(others)
