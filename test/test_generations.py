"""One container's hand-over bookkeeping between plan generations, without ROS: when it moves on to a newer plan,
where an old head cuts, what a head that never started held, when the new head lets frames in."""
from collections import deque
from types import SimpleNamespace

import pytest

from pipeit_ros.app import generations, handoff
from pipeit_ros.app.ledger import FrameLedger
from pipeit_ros.plan import Plan, Stage

ME = ('pipeit_container_big', 10)
T0 = 100.0


def plan_of(*clusters):
    return Plan(stages=tuple(Stage(i, i, c, (i,)) for i, c in enumerate(clusters)))


def msg_of(generation, *clusters):
    """The two fields of a plan message the hand-over reads."""
    return SimpleNamespace(generation=generation, plan=plan_of(*clusters))


def peer(container, cluster, generation, state, pid=20, seen=T0, **kw):
    return handoff.PeerStatus(container=container, cluster=cluster, generation=generation, state=state, pid=pid,
                              seen=seen, **kw)


@pytest.fixture
def log():
    return SimpleNamespace(warnings=[], notes=[])


@pytest.fixture
def gens(log):
    return generations.Generations(ME, log.warnings.append, lambda kind, text: log.notes.append(kind), now=T0)


def frame(stamp_ns, lost_before=0):
    """A camera inbox item: (image, meta, frames DDS lost just before it)."""
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return (SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec))), None,
            lost_before)


@pytest.mark.parametrize('plan,cluster,head,tail', [
    (('big', 'little'), 'big', True, False),
    (('big', 'little'), 'little', False, True),
    (('big', 'little'), '*', True, True),
    (('little', 'big', 'little'), 'little', True, True),
    (('big', 'big'), 'little', False, False),
], ids=['head', 'tail', 'single', 'both-ends', 'none'])
def test_hosts_head_and_tail(plan, cluster, head, tail):
    p = plan_of(*plan)
    assert (generations.hosts_head(p, cluster), generations.hosts_tail(p, cluster)) == (head, tail)


def test_running_peers_raise_the_started_generation_and_silent_ones_are_forgotten(gens):
    gens.heard(peer('a', 'little', 3, 'ready'))
    assert gens.started_gen == 0
    gens.heard(peer('a', 'little', 3, 'running'))
    gens.heard(peer('b', 'little', 2, 'running'))
    assert gens.started_gen == 3
    gens.heard(peer(ME[0], 'big', 3, 'idle', pid=ME[1], seen=T0 + 3))
    assert [p.container for p in gens.others(T0 + 1)] == ['a', 'b']
    assert gens.heard_from(T0 + 1) == 'a (generation 3, running), b (generation 2, running)'
    assert [p.container for p in gens.live(T0 + handoff.STALE_S + 1)] == [ME[0]]


def test_a_container_going_to_sleep_is_no_peer(gens):
    """Its last status must not hold the others' next generation (may_build) until it goes stale."""
    gens.heard(peer('a', 'little', 3, 'idle'))
    assert not gens.may_build(4, T0)
    gens.heard(peer('a', 'little', 3, 'sleeping'))
    assert gens.others(T0) == [] and gens.may_build(4, T0)


@pytest.mark.parametrize('current,latest,failed,started,now,expected,warned', [
    (None, None, False, 0, T0, False, False),
    (None, 1, False, 0, T0, True, False),
    (1, 1, False, 0, T0, False, False),
    (1, 2, False, 1, T0, True, False),
    (1, 2, False, 0, T0 + 1, False, False),
    (1, 2, True, 0, T0 + 1, True, False),
    (1, 2, False, 0, T0 + 31, True, True),
], ids=['no-plan', 'first-plan', 'same-generation', 'current-started', 'holds', 'current-failed', 'timed-out'])
def test_move_on(gens, log, current, latest, failed, started, now, expected, warned):
    gens.started(started)
    current, latest = (None if g is None else msg_of(g, 'big') for g in (current, latest))
    assert gens.move_on(current, latest, failed, 30.0, now=now) is expected
    assert bool(log.warnings) is warned


@pytest.mark.parametrize('reported,waited,idle_s,expected', [
    (True, 0.1, 0.0, 5_000),
    (False, 0.1, 9.0, None),
    (False, generations.HANDOFF_WAIT_S + 0.1, 0.0, None),
    (False, generations.HANDOFF_WAIT_S + 0.1, handoff.CUT_IDLE_S + 0.1, handoff.CUT_NOW),
    (False, 31.0, 0.0, handoff.CUT_NOW),
], ids=['new-head-stamp', 'early', 'frames-still-coming', 'camera-stopped', 'timed-out'])
def test_old_head_cut(gens, log, reported, waited, idle_s, expected):
    gens.begin(now=T0)
    msg = msg_of(4, 'little', 'big')
    if reported:
        gens.heard(peer('n', 'little', 4, 'idle', first_stamp_ns=5_000, seen=T0 + waited))
    assert gens.cut(msg, idle_s, 30.0, now=T0 + waited) == expected
    assert bool(log.warnings) is (expected == handoff.CUT_NOW)


def test_an_unstarted_head_books_what_it_held_but_another_head_took(gens, log):
    # the old head in container 'o' took stamps 20..30 for generation 5; this head's cut is 40
    gens.heard(peer('o', 'little', 5, 'idle', handoff_generation=5, first_taken_ns=20, last_stamp_ns=30))
    inbox = handoff.Inbox(10)
    for item in (frame(10, lost_before=2), frame(25), frame(35), frame(40), frame(50)):
        inbox.put(item)
    evicted = deque([(5, 1), (22, 4), (40, 0), (45, 0)])    # (stamp, lost before) the full inbox dropped
    ledger = FrameLedger()
    assert gens.book_unstarted(ledger, 5, False, 40, inbox, evicted, now=T0) == 2     # stamps 10 and 35
    assert [handoff.stamp_ns(item[0].header.stamp) for item in inbox.clear()] == [40, 50]
    assert not evicted
    # took: 2 replan + 1 queue (stamp 5) + 3 dds (2 before stamp 10, 1 before stamp 5)
    assert ledger.snapshot() == {'in': 6, 'received': 0, 'sent': 0, 'out': 0,
                                 'dropped': {'dds': 3, 'queue': 1, 'replan': 2}}
    assert len(log.warnings) == 1 and 'generation 5 never started' in log.warnings[0]


@pytest.mark.parametrize('went,cut', [(True, 40), (False, None)], ids=['started', 'no-hand-off'])
def test_a_head_that_started_or_kept_the_input_books_nothing(gens, log, went, cut):
    inbox = handoff.Inbox(10)
    inbox.put(frame(10))
    ledger = FrameLedger()
    assert gens.book_unstarted(ledger, 5, went, cut, inbox, deque([(5, 0)]), now=T0) == 0
    assert len(inbox) == 1 and ledger.snapshot()['in'] == 0 and not log.warnings


def test_the_new_head_builds_and_admits_once_every_peer_is_on_its_generation(gens):
    plan = plan_of('big', 'little')
    gens.heard(peer(ME[0], 'big', 6, 'ready', pid=ME[1]))
    gens.heard(peer('l', 'little', 5, 'draining'))
    assert not gens.may_build(6, now=T0)
    why, skip, first_seq = gens.admit(6, plan, now=T0)
    assert (why, skip, first_seq) == ('container(s) l still on another generation', (), 0)
    gens.heard(peer('l', 'little', 6, 'ready', handoff_generation=6, first_taken_ns=7, last_stamp_ns=9,
                    last_seq=41))
    assert gens.may_build(6, now=T0) and not gens.running(6, now=T0)
    assert gens.admit(6, plan, now=T0) == ('', [(7, 9)], 42)
    gens.heard(peer('l', 'little', 6, 'running'))
    assert gens.running(6, now=T0)


def test_waits_are_noted_only_once_overdue(gens, log):
    gens.wait_note('no_plan', 'no plan yet', now=T0 + generations.WAIT_NOTE_S)
    assert not log.notes
    gens.wait_note('no_plan', 'no plan yet', now=T0 + generations.WAIT_NOTE_S + 0.1)
    assert log.notes == ['no_plan']
    gens.begin(now=T0 + 10)
    gens.head_ended(7, 1, 2, 3)
    gens.wait_note('waiting', 'frames wait', now=T0 + 11)
    assert log.notes == ['no_plan']
    assert gens.handed_over == {'generation': 7, 'first_stamp_ns': 1, 'last_stamp_ns': 2, 'last_seq': 3}


def test_a_wait_line_is_built_only_when_it_is_noted(gens, log):
    built = []

    def line():
        built.append(1)
        return 'heard from: nobody'
    gens.wait_note('waiting', line, now=T0 + 1)
    assert not built and not log.notes
    gens.wait_note('waiting', line, now=T0 + generations.WAIT_NOTE_S + 0.1)
    assert built == [1] and log.notes == ['waiting']
