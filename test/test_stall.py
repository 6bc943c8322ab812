"""pipeit_ros.app.stall: which containers are stalled, from their status heartbeats."""
from pipeit_ros.app.stall import StallWatch


def status(name='pipeit_container_big', stages=(0,), done=0, waiting=0):
    return {'container': name, 'cluster': 'big', 'stages': list(stages), 'done': done, 'waiting': waiting}


def test_silent_container_hosting_stages_is_stalled_after_the_timeout():
    w = StallWatch(5.0)
    w.update(status(done=10), now=100.0)
    assert not w.verdicts(104.9)[0].stalled
    v = w.verdicts(105.0)[0]
    assert v.stalled and v.container == 'pipeit_container_big' and 'no status for 5.0 s' in v.message


def test_frames_waiting_without_progress_is_stalled_and_progress_clears_it():
    w = StallWatch(2.0)
    w.update(status(done=5, waiting=3), now=0.0)
    w.update(status(done=5, waiting=3), now=1.0)
    w.update(status(done=5, waiting=3), now=2.0)
    v = w.verdicts(2.0)[0]
    assert v.stalled and 'no frame done for 2.0 s with 3 waiting' in v.message
    w.update(status(done=6, waiting=3), now=3.0)
    assert not w.verdicts(3.0)[0].stalled


def test_idle_containers_are_never_stalled():
    w = StallWatch(1.0)
    w.update(status(name='pipeit_container_little', stages=(), done=0, waiting=0), now=0.0)
    w.update(status(done=4, waiting=0), now=0.0)
    w.update(status(done=4, waiting=0), now=5.0)         # nothing waits: no progress is no stall
    verdicts = {v.container: v for v in w.verdicts(5.5)}
    assert not verdicts['pipeit_container_big'].stalled
    assert not verdicts['pipeit_container_little'].stalled and verdicts['pipeit_container_little'].message == 'idle'


def test_a_sleeping_container_is_reported_sleeping_never_stalled():
    w = StallWatch(1.0)
    w.update({**status(name='pipeit_container_little', stages=()), 'state': 'sleeping'}, now=0.0)
    v = w.verdicts(10.0)[0]
    assert not v.stalled and v.message == 'sleeping'
