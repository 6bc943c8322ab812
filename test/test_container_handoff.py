"""The container's plumbing without ROS: hosted runs, the inbox, the re-plan handshake's decisions."""
import threading
import time

import pytest

from pipeit_ros.app import handoff
from pipeit_ros.plan import Plan, Stage


def plan_of(*clusters):
    return Plan(stages=tuple(Stage(i, i, c, (i,)) for i, c in enumerate(clusters)))


@pytest.mark.parametrize('clusters,cluster,expected', [
    (('big', 'big', 'little'), 'big', [[0, 1]]),
    (('big', 'big', 'little'), 'little', [[2]]),
    (('big', 'little', 'big'), 'big', [[0], [2]]),
    (('big', 'little', 'big'), 'mid', []),
    (('big', 'little', 'big'), '*', [[0, 1, 2]]),
    (('big', 'little', 'big'), '', [[0, 1, 2]]),
    (('big+little', 'little'), 'big', [[0]]),
    (('big+little', 'little'), 'little', [[1]]),
], ids=['consecutive', 'tail', 'split', 'unused', 'single', 'single-empty-name', 'spanning-first',
        'spanning-other'])
def test_hosted_runs(clusters, cluster, expected):
    assert handoff.hosted_runs(plan_of(*clusters), cluster) == expected


def test_head_and_plan_clusters():
    p = plan_of('little+big', 'big')
    assert handoff.head_cluster(p) == 'little' and handoff.plan_clusters(p) == {'little', 'big'}


def test_inbox_drop_oldest_keeps_latest_and_counts():
    box = handoff.Inbox(2, 'drop_oldest')
    assert [box.put(i) for i in range(5)] == [None, None, 0, 1, 2]
    assert box.dropped == 3 and [box.get(0), box.get(0), box.get(0)] == [3, 4, None]


def test_inbox_block_waits_for_room_then_times_out():
    box = handoff.Inbox(1, 'block')
    box.put('a')
    got = []
    t = threading.Thread(target=lambda: (time.sleep(0.2), got.append(box.get(1))))
    t.start()
    t0 = time.monotonic()
    assert box.put('b', timeout=5) is None          # waited for the reader, dropped nothing
    assert time.monotonic() - t0 >= 0.15
    t.join()
    assert got == ['a'] and box.dropped == 0
    assert box.put('c', timeout=0.05) == 'b' and box.dropped == 1   # deadline passed: drop rather than hang


def test_inbox_unget_and_close():
    box = handoff.Inbox(3)
    box.put(1)
    box.put(2)
    first = box.get(0)
    box.unget(first)
    assert box.get(0) == 1
    box.close()
    assert box.get(0) == 2                          # what is inside can still be taken
    with pytest.raises(handoff.Closed):
        box.get(0)
    with pytest.raises(handoff.Closed):
        box.put(3)


def test_inbox_close_wakes_a_blocked_writer():
    box = handoff.Inbox(1, 'block')
    box.put(0)
    errors = []

    def writer():
        try:
            box.put(1)
        except handoff.Closed:
            errors.append('closed')
    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.1)
    box.close()
    t.join(2)
    assert errors == ['closed']


def peer(name, cluster, generation, state, **kw):
    return handoff.PeerStatus(container=name, cluster=cluster, generation=generation, state=state, **kw)


@pytest.mark.parametrize('peers,ok,why', [
    ([peer('a', 'big', 2, 'ready'), peer('b', 'little', 2, 'ready')], True, ''),
    ([peer('a', 'big', 2, 'ready'), peer('b', 'little', 1, 'running')], False, 'another generation'),
    ([peer('a', 'big', 2, 'ready'), peer('b', 'little', 2, 'draining')], False, 'draining'),
    ([peer('a', 'big', 2, 'ready'), peer('b', 'little', 2, 'idle')], False, 'cluster(s) little'),
    ([peer('a', 'big', 2, 'ready')], False, 'cluster(s) little'),
    ([peer('a', '*', 2, 'ready')], True, ''),
    ([peer('a', 'big', 2, 'ready'), peer('b', 'little', 2, 'running'), peer('c', 'mid', 2, 'idle')], True, ''),
], ids=['all-ready', 'behind', 'draining', 'not-built', 'missing', 'single', 'unused-idle'])
def test_may_admit(peers, ok, why):
    got, reason = handoff.may_admit(2, {'big', 'little'}, peers)
    assert got is ok and why in reason


def test_status_round_trip_and_handoff_stamps():
    d = {'container': 'c1', 'cluster': 'little', 'generation': 3, 'state': 'draining', 'stages': [0], 'pid': 9,
         'first_stamp': {'sec': 2, 'nanosec': 5}, 'handoff': {'generation': 3, 'last_stamp_ns': 1_999}}
    p = handoff.PeerStatus.from_dict(d, seen=1.0)
    assert (p.key, p.first_stamp_ns, p.handoff_generation, p.last_stamp_ns) == (('c1', 9), 2_000_000_005, 3,
                                                                                  1_999)
    assert handoff.handoff_stamp(3, 'little', [p]) == 2_000_000_005
    assert handoff.handoff_stamp(3, 'big', [p]) is None and handoff.handoff_stamp(4, 'little', [p]) is None
    other = peer('c0', 'big', 3, 'idle', handoff_generation=3, last_stamp_ns=2_500)
    assert handoff.skip_until(3, [p, other]) == 2_500 and handoff.skip_until(2, [p, other]) is None
    bare = handoff.PeerStatus.from_dict({'container': 'x', 'cluster': '*', 'generation': 0, 'state': 'idle'}, 0)
    assert bare.first_stamp_ns is None and bare.last_stamp_ns is None


def test_live_peers_forgets_silent_ones():
    peers = {('a', 1): peer('a', 'big', 1, 'running', seen=10.0), ('b', 2): peer('b', 'big', 1, 'idle', seen=1.0)}
    assert [p.container for p in handoff.live_peers(peers, now=12.0, stale_s=3.5)] == ['a']


def test_check_runnable_against_the_running_containers():
    from pipeit_ros.errors import PipeitError
    running = [peer('c0', 'c0', 1, 'running', cpus=[0]), peer('c1', 'c1', 1, 'running', cpus=[1])]
    handoff.check_runnable(plan_of('c0', 'c1'), running)
    handoff.check_runnable(plan_of('big', 'little'), [])                 # nobody heard: nothing to check
    handoff.check_runnable(plan_of('big', 'little'), [peer('all', '*', 1, 'running', cpus=[0, 1])])
    with pytest.raises(PipeitError, match="cluster 'big', which no running container hosts"):
        handoff.check_runnable(plan_of('big', 'little'), running)
    with pytest.raises(PipeitError, match='outside its running containers'):
        handoff.check_runnable(plan_of('c1', 'c0'), running)           # stage 0 on cpu 0 but c1 runs on cpu 1


def test_skip_ranges_and_next_seq():
    old = peer('c0', 'c0', 3, 'idle', handoff_generation=3, first_taken_ns=100, last_stamp_ns=200, last_seq=41)
    stale = peer('c1', 'c1', 3, 'idle', handoff_generation=2, first_taken_ns=10, last_stamp_ns=90, last_seq=7)
    assert handoff.skip_ranges(3, [old, stale]) == [(100, 200)]        # only what was handed over to generation 3
    assert handoff.next_seq([old, stale]) == 42 and handoff.next_seq([]) == 0
    assert handoff.generation_started(3, []) and not handoff.generation_started(3, [old])
    assert handoff.generation_started(3, [peer('c0', 'c0', 3, 'running')])


def test_ledger_snapshot_and_its_diagnostic_values():
    from pipeit_ros.app.ledger import FrameLedger
    from pipeit_ros.app.wire import diagnostics
    ledger = FrameLedger()
    ledger.count('took', 5)
    ledger.count('sent', 3)
    ledger.drop('queue')
    ledger.drop('bad_frame')
    snap = ledger.snapshot({'queue': 2})
    assert snap == {'in': 5, 'received': 0, 'sent': 3, 'out': 0, 'dropped': {'bad_frame': 1, 'queue': 3}}
    assert ledger.inside() == 0                          # 5 in = 3 sent + 2 dropped (the engine's 2 not booked)
    values = dict(diagnostics.ledger_values({**snap, 'camera_received': 6, 'camera_dropped': {'input': 1}}))
    assert values['ledger_in'] == '5' and values['ledger_dropped_queue'] == '3' and values['camera_dropped_input'] == '1'
    back = diagnostics.ledger_of(values)
    assert (back['in'], back['dropped'], back['camera_received']) == (5, {'bad_frame': 1, 'queue': 3}, 6)


def test_sequence_gaps_count_frames_lost_per_publisher():
    gaps = handoff.SequenceGaps()
    assert [gaps.lost('a', s) for s in (7, 8, 11, 11, 10, 12)] == [0, 0, 2, 0, 0, 0]   # joined late at 7
    assert [gaps.lost('b', s) for s in (1, 4)] == [0, 2]                              # its own counter


def test_inbox_take_if_keeps_the_others_in_order():
    box = handoff.Inbox(8)
    for i in range(6):
        box.put(i)
    assert box.take_if(lambda i: i % 2) == [1, 3, 5]
    assert [box.get(0) for _ in range(3)] == [0, 2, 4]
