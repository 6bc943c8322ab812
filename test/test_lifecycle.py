"""Process lifecycle: nodes end with their parent, killed runs' leftovers are cleaned, a stalled container is
reported, Ctrl-C while profiling ends the planner cleanly (pipeit_ros.app.lifecycle, pipeit_ros.app.stall)."""
import fcntl
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

from planner_helpers import OutputReader, domain_id, finish, start_cli, stop_process, wait_for
import psutil
import pytest

from pipeit_ros.app import lifecycle

CHILD = textwrap.dedent('''
    import os, sys, time
    from pipeit_ros.app.lifecycle import ParentWatch
    hang = sys.argv[2] == 'hang'
    def stop():
        raise KeyboardInterrupt
    ParentWatch(stop)
    print(os.getpid(), flush=True)
    try:
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:
        time.sleep(0.3)          # a stop that takes a while: no second interrupt cuts it (the kernel's and the watch's)
        with open(sys.argv[1], 'w') as f:
            f.write('stopped')
        if hang:
            while True:          # a clean stop that never ends: the watch ends the process
                time.sleep(0.05)
''')
PARENT = textwrap.dedent('''
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2], sys.argv[3]], stdout=subprocess.PIPE,
                             text=True)
    print(child.stdout.readline().strip(), flush=True)
    time.sleep(600)
''')


def gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize('mode', ['clean', 'hang'])
def test_a_process_ends_when_its_parent_is_killed(tmp_path, mode):
    mark = tmp_path / 'stopped'
    parent = subprocess.Popen([sys.executable, '-c', PARENT, CHILD, str(mark), mode], stdout=subprocess.PIPE,
                              text=True)
    child = int(parent.stdout.readline())
    try:
        assert not gone(child, 0.5)                    # alive while its parent is
        parent.kill()
        parent.wait(5)
        assert gone(child, 10.0), 'the child outlived its parent'
        assert mark.read_text() == 'stopped'          # its clean stop ran (and, for 'hang', the watch ended it)
    finally:
        parent.kill()
        if not gone(child, 0):
            os.kill(child, signal.SIGKILL)


def test_sighup_while_the_parent_lives_is_ignored(tmp_path):
    mark = tmp_path / 'stopped'
    parent = subprocess.Popen([sys.executable, '-c', PARENT, CHILD, str(mark), 'clean'], stdout=subprocess.PIPE,
                              text=True)
    child = int(parent.stdout.readline())
    try:
        os.kill(child, signal.SIGHUP)            # a terminal's hang-up: the parent stops its children itself
        assert not gone(child, 1.0) and not mark.exists()
    finally:
        parent.kill()
        parent.wait(5)
        assert gone(child, 10.0)


HOLDER = 'import fcntl, sys, time\nf = open(sys.argv[1], "ab")\nfcntl.flock(f, fcntl.LOCK_EX)\nprint(1, flush=True)\ntime.sleep(60)\n'


def test_clean_shm_removes_only_what_no_live_process_holds(tmp_path):
    dead_seg, live_seg = 'fastdds_0123456789abcdef', 'fastdds_fedcba9876543210'
    files = [dead_seg, dead_seg + '_el', live_seg, live_seg + '_el',
             'fastdds_port7011', 'fastdds_port7011_el', 'sem.fastdds_port7011_mutex', 'unrelated_file']
    for name in files:
        (tmp_path / name).write_bytes(b'x' * 4096)
    holder = subprocess.Popen([sys.executable, '-c', HOLDER, str(tmp_path / (live_seg + '_el'))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == '1'
        removed, freed = lifecycle.clean_shm(str(tmp_path))
        assert sorted(os.listdir(tmp_path)) == sorted([live_seg, live_seg + '_el', 'unrelated_file'])
        assert removed == 5 and freed > 0
    finally:
        holder.kill()
        holder.wait()
    with open(tmp_path / (live_seg + '_el'), 'ab') as f:      # its owner gone: now it is cleaned too
        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(f, fcntl.LOCK_UN)
    assert lifecycle.clean_shm(str(tmp_path))[0] == 2


def test_clean_work_dirs_removes_those_of_dead_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    (tmp_path / f'pipeit-bringup-{dead.pid}-abc').mkdir()
    (tmp_path / f'pipeit-bringup-{os.getpid()}-def').mkdir()
    (tmp_path / 'pipeit-other').mkdir()
    assert lifecycle.clean_work_dirs(str(tmp_path)) == [f'pipeit-bringup-{dead.pid}-abc']
    assert sorted(os.listdir(tmp_path)) == sorted([f'pipeit-bringup-{os.getpid()}-def', 'pipeit-other'])


# -- with the real nodes ------------------------------------------------------------------------------------

def node_children(pid):
    return [p for p in psutil.Process(pid).children() if 'pipeit_ros.ros.' in ' '.join(p.cmdline())]


def alive(procs):
    out = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGHUP], ids=['SIGKILL', 'SIGHUP'])
def test_killed_bringup_leaves_no_node_and_the_next_start_cleans_up(sig, tmp_path):
    dom = domain_id()
    proc, out = start_cli(['bringup', '--with-camera', 'pattern', '--model', 'tiny'], dom)
    try:
        wait_for(lambda: re.search(r' [1-9]\d* results', out.text()), 120, what='results', output=out)
        nodes = node_children(proc.pid)
        assert len(nodes) == 3, nodes
        workdirs = [d for d in os.listdir('/tmp') if d.startswith(f'pipeit-bringup-{proc.pid}-')]
        proc.send_signal(sig)
        proc.wait(30)
        deadline = time.monotonic() + 10.0
        while alive(nodes) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(nodes), f'left running: {alive(nodes)}\n{out.text()[-2000:]}'
    finally:
        stop_process(proc)
        for p in alive(node_children(proc.pid) if proc.poll() is None else []):
            p.kill()
    if sig == signal.SIGKILL:
        assert workdirs and all(os.path.isdir(os.path.join('/tmp', d)) for d in workdirs)   # left behind
        again, out2 = start_cli(['bringup', '--model', 'tiny', '--duration', '1'], dom)
        code, text = finish(again, out2, 120)
        assert code == 0, text
        assert not any(os.path.isdir(os.path.join('/tmp', d)) for d in workdirs)
        assert 'cleaned what killed runs left' in text


@pytest.mark.ros
@pytest.mark.slow
def test_stopped_container_is_reported_stalled_by_name(tmp_path):
    params = tmp_path / 'params.yaml'
    params.write_text('pipeit_planner:\n  ros__parameters:\n    stall_timeout_s: 1.0\n')
    proc, out = start_cli(['bringup', '--with-camera', 'pattern', '--model', 'tiny', '--single-container',
                           '--params-file', params], domain_id())
    container = None
    try:
        wait_for(lambda: re.search(r' [1-9]\d* results', out.text()), 120, what='results', output=out)
        container = next(p for p in node_children(proc.pid)          # not the path: a checkout may be named so
                         if 'from pipeit_ros.ros.container import' in ' '.join(p.cmdline()))
        container.suspend()
        wait_for(lambda: re.search(r'^container pipeit_container stalled: ', out.text(), re.M), 30,
                 what='bringup reporting the stall', output=out)
        container.resume()
        wait_for(lambda: 'container pipeit_container runs again' in out.text(), 30, what='recovery', output=out)
    finally:
        if container is not None:
            container.resume()
        code = stop_process(proc)
        out.join()
    assert code == 0, out.text()[-3000:]


@pytest.mark.ros
@pytest.mark.slow
def test_ctrl_c_while_profiling_ends_the_planner_cleanly():
    env = {**os.environ, 'ROS_DOMAIN_ID': str(domain_id()), 'PYTHONUNBUFFERED': '1'}
    proc = subprocess.Popen([sys.executable, '-m', 'pipeit_ros.ros.planner_node', '--ros-args', '-p',
                             'model_path:=mobilenet_v2', '-p', 'source:=profile'], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = OutputReader(proc)
    try:
        wait_for(lambda: 'extracting segments' in out.text(), 120, what='profiling to start', output=out)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.join()
    text = out.text()
    assert proc.returncode in (0, 130), text[-3000:]
    assert 'terminate called' not in text
    assert 'plan generation 1' in text or 'stopped while planning' in text, text[-3000:]
