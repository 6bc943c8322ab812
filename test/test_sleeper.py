"""pipeit_ros.app.sleeper: the script a container hosting nothing becomes, as real processes (no ROS): it answers
its status, exec's the container's command again when woken (same pid), and ends on SIGINT, SIGTERM or its
parent's death."""
import os
import signal
import subprocess
import sys
import time

from planner_helpers import is_alive
import pytest

from pipeit_ros.app import sleeper
from pipeit_ros.hw import memory as procmem

STATUS = {'container': 'pipeit_container_little', 'cluster': 'little', 'graph': 'g', 'state': sleeper.SLEEPING,
          'generation': 3, 'stages': [], 'cpus': [1]}


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.02)


@pytest.fixture
def name(request):
    return sleeper.socket_name(f'test-{os.getpid()}-{request.node.name}', 'little')


def start(name, argv, **popen):
    """A sleeper child of this process serving STATUS on ``name``, then ``argv``; its Popen once it answers."""
    sock = sleeper.listen(name)
    try:
        proc = subprocess.Popen(sleeper.command(sock, STATUS, argv, parent=os.getpid()), pass_fds=(sock.fileno(),),
                                **popen)
    finally:
        sock.close()
    _wait(lambda: sleeper.query(name) is not None or proc.poll() is not None)
    return proc


def test_it_answers_its_status_and_wakes_into_the_command_with_the_same_pid(name, tmp_path):
    out = tmp_path / 'woken'
    proc = start(name, ['/bin/sh', '-c', f'echo $$ > {out}'])
    try:
        assert sleeper.query(name) == STATUS
        assert 'sleeper.py' in open(f'/proc/{proc.pid}/cmdline').read()
        assert sleeper.wake(name)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert int(out.read_text()) == proc.pid           # exec'd, not spawned: supervisors keep their pid
    assert sleeper.query(name) is None and not sleeper.wake(name)    # the socket went with the sleeper


def test_a_sleeper_holds_a_few_mib(name):
    """It imports neither rclpy nor numpy (``-I -S``): an awake idle container holds ~49 MiB (docs/memory.md)."""
    proc = start(name, ['/bin/true'])
    try:
        pss = procmem.usage(proc.pid).pss / procmem.MIB
    finally:
        proc.kill()
        proc.wait()
    assert 0 < pss < 16, pss


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_sigint_and_sigterm_end_it_cleanly(name, sig):
    proc = start(name, ['/bin/true'], stderr=subprocess.PIPE)
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == 0
    assert proc.stderr.read() == b''                    # no traceback


def test_a_hang_up_while_its_parent_lives_is_ignored(name):
    """As pipeit_ros.app.lifecycle.ParentWatch does: a terminal's or a launcher thread's SIGHUP is no stop."""
    proc = start(name, ['/bin/true'])
    try:
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert proc.poll() is None and sleeper.query(name) == STATUS
    finally:
        proc.kill()
        proc.wait()


def test_it_ends_when_its_parent_dies(name):
    """The container's PR_SET_PDEATHSIG (SIGHUP, pipeit_ros.app.lifecycle) outlives the exec into the sleeper."""
    code = f'''
import ctypes, os, signal, subprocess, sys
from pipeit_ros.app import sleeper
sock = sleeper.listen({name!r})
def orphan_signal():
    ctypes.CDLL(None).prctl(1, int(signal.SIGHUP), 0, 0, 0)
p = subprocess.Popen(sleeper.command(sock, {{}}, ['/bin/true'], parent=os.getpid()), pass_fds=(sock.fileno(),),
                     preexec_fn=orphan_signal)
print(p.pid, flush=True)
signal.pause()
'''
    parent = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        _wait(lambda: sleeper.query(name) is not None)
        parent.kill()
        parent.wait()
        _wait(lambda: not is_alive(child))
    finally:
        if is_alive(child):
            os.kill(child, signal.SIGKILL)
    assert sleeper.query(name) is None


def test_a_taken_name_is_refused_and_nobody_answers_an_empty_one(name):
    sock = sleeper.listen(name)
    try:
        with pytest.raises(OSError):
            sleeper.listen(name)                        # the container then stays awake, saying why
    finally:
        sock.close()
    assert sleeper.query(name) is None and not sleeper.wake(name)


def test_names_separate_graphs_and_clusters():
    names = {sleeper.socket_name(g, c) for g in ('g1', 'g2') for c in ('big', 'little')}
    assert len(names) == 4 and all(n.startswith('\0') for n in names)   # abstract: nothing left on disk
