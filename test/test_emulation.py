"""Emulated big.LITTLE: the share arithmetic, the co-runners' placement, and that none survives us."""
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import emulation
from pipeit_ros.hw.emulation import CFS_WEIGHTS, corunner_spec, emulated, find_corunners, weight_share
from pipeit_ros.hw.topology import Cluster, Topology

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
needs_two_cpus = pytest.mark.skipif(not TWO_CPUS, reason='needs 2 CPUs in our affinity mask')


def big_little(share, little_cpu=None):
    cpus = sorted(os.sched_getaffinity(0))
    little = cpus[-1] if little_cpu is None else little_cpu
    return Topology(clusters=(Cluster('big', (cpus[0],), 'host', 1.0),
                              Cluster('little', (little,), 'host', share, emulate_share=share)),
                    name=f'test-share-{share:g}', source='test')


def wait_gone(marker, timeout=5.0):
    deadline = time.monotonic() + timeout
    while find_corunners(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    return find_corunners(marker)


def our_corunners():
    """Co-runners started by this process: another session's emulation on the machine is not ours to count."""
    return [p for p in find_corunners() if proc_field(p, 'PPid') == str(os.getpid())]


def proc_field(pid, name):
    with open(f'/proc/{pid}/status', encoding='ascii') as f:
        for line in f:
            if line.startswith(name + ':'):
                return line.split(':', 1)[1].strip()
    raise KeyError(name)


# ---------------------------------------------------------------- arithmetic

@pytest.mark.parametrize('share, count, nice', [
    (0.5, 1, 0), (1 / 3, 2, 0), (0.25, 3, 0), (0.1, 9, 0),
    (weight_share(1, 5), 1, 5), (weight_share(1, 10), 1, 10), (weight_share(3, 1), 3, 1),
], ids=['half', 'third', 'quarter', 'tenth', 'one-at-nice5', 'one-at-nice10', 'three-at-nice1'])
def test_exact_weight_shares_are_found(share, count, nice):
    spec = corunner_spec(share)
    assert (spec.count, spec.nice) == (count, nice)
    assert spec.share == pytest.approx(share)


def test_weight_share_follows_the_cfs_table():
    assert weight_share(1, 0) == 0.5
    assert weight_share(1, 1) == pytest.approx(1024 / (1024 + 820))
    assert list(CFS_WEIGHTS) == sorted(CFS_WEIGHTS, reverse=True)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.07, max_value=0.98))
def test_chosen_pair_is_the_fewest_co_runners_within_tolerance(share):
    spec = corunner_spec(share)
    pairs = [(c, n) for c in range(1, emulation.MAX_PER_CPU + 1) for n in range(len(CFS_WEIGHTS))]
    best_error = min(abs(weight_share(*p) - share) for p in pairs)
    error = abs(spec.share - share)
    assert error <= max(0.01, best_error) + 1e-12
    fewer = [p for p in pairs if p[0] < spec.count and abs(weight_share(*p) - share) <= 0.01]
    assert not fewer or error > 0.01


@pytest.mark.parametrize('share', [0.01, 0.999], ids=['too-small', 'too-close-to-one'])
def test_unreachable_share_is_a_user_error(share):
    with pytest.raises(PipeitError, match='cannot be emulated'):
        corunner_spec(share)


# ---------------------------------------------------------------- co-runners in this process

def test_topology_without_emulation_is_a_silent_no_op():
    said = []
    topo = Topology(clusters=(Cluster('all', tuple(sorted(os.sched_getaffinity(0))), 'host', 1.0),), name='plain')
    with emulated(topo, log=said.append) as emu:
        assert emu is None
        assert our_corunners() == []
    assert said == []


@needs_two_cpus
@pytest.mark.parametrize('share', [0.5, 0.75, 0.25], ids=['one-at-nice0', 'one-at-nice5', 'three-at-nice0'])
def test_co_runners_are_pinned_niced_marked_and_stopped(share):
    said = []
    topo = big_little(share)
    little = topo.cluster('little').cpus[0]
    spec = corunner_spec(share)
    previous = signal.getsignal(signal.SIGTERM)
    our_nice = os.getpriority(os.PRIO_PROCESS, 0)
    with emulated(topo, log=said.append) as emu:
        assert os.getpriority(os.PRIO_PROCESS, 0) == our_nice                  # our threads keep their level
        assert len(emu.pids) == spec.count
        assert find_corunners(emu.marker) == sorted(emu.pids)
        for pid in emu.pids:
            assert proc_field(pid, 'Cpus_allowed_list') == str(little)
            assert os.getpriority(os.PRIO_PROCESS, pid) - os.getpriority(os.PRIO_PROCESS, 0) == spec.nice
            with open(f'/proc/{pid}/stat', encoding='ascii') as f:
                assert int(f.read().rsplit(')', 1)[1].split()[1]) == os.getpid()   # ppid
            assert int(proc_field(pid, 'VmRSS').split()[0]) < 4096                   # kB: a shell, not python
        pid_file = os.path.basename(emu.pid_file)
        assert pid_file in os.listdir(emulation.run_dir())
        assert signal.getsignal(signal.SIGTERM) is not previous
        marker = emu.marker
    assert wait_gone(marker) == []
    assert signal.getsignal(signal.SIGTERM) is previous
    assert pid_file not in os.listdir(emulation.run_dir())
    assert said == [f'emulating big.LITTLE: cluster little cpus [{little}] at share {share:g} '
                    f'({spec.describe()})']
    if share == 0.5:
        assert said[0].endswith('at share 0.5 (1 co-runner per CPU at nice 0)')


@needs_two_cpus
def test_exception_inside_the_block_stops_co_runners():
    with pytest.raises(ZeroDivisionError):
        with emulated(big_little(0.5), log=lambda _: None) as emu:
            marker = emu.marker
            1 / 0
    assert wait_gone(marker) == []


@needs_two_cpus
def test_nested_use_reuses_and_another_emulation_is_refused():
    said = []
    with emulated(big_little(0.5), log=said.append) as outer:
        with emulated(big_little(0.5), log=said.append) as inner:
            assert inner is outer
        assert find_corunners(outer.marker) == sorted(outer.pids)      # the inner exit did not stop them
        with pytest.raises(PipeitError, match='cannot start while'):
            with emulated(big_little(0.25), log=said.append):
                pass
    assert wait_gone(outer.marker) == []
    assert len(said) == 1


def test_cpu_outside_our_affinity_is_refused():
    missing = max(os.sched_getaffinity(0)) + 1
    topo = big_little(0.5, little_cpu=missing)
    with pytest.raises(PipeitError, match=f'cpu {missing}'):
        with emulated(topo, log=lambda _: None):
            pass
    assert our_corunners() == []


# ---------------------------------------------------------------- a child process that ends badly

CHILD = textwrap.dedent('''
    import os, signal, sys, time
    from pipeit_ros.hw.emulation import emulated
    from pipeit_ros.hw.topology import Cluster, Topology
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also when started in background
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # also under nohup
    cpus = sorted(os.sched_getaffinity(0))
    topo = Topology(clusters=(Cluster('big', (cpus[0],), 'host', 1.0),
                              Cluster('little', (cpus[-1],), 'host', 0.5, emulate_share=0.5)), name='child')
    with emulated(topo, log=lambda line: None) as emu:
        print(emu.marker, *emu.pids, flush=True)
        sys.stdin.readline()  # the test has seen the co-runners
        if sys.argv[1] == 'raise':
            raise RuntimeError('boom')
        if sys.argv[1] == 'exit':
            sys.exit(3)
        for _ in range(600):  # short sleeps: CPython runs a handler for a signal that arrived just before a
            time.sleep(0.1)   # sleep only once that sleep ends (seen: 1 run in 4 waited out a 60 s sleep)
''')


@needs_two_cpus
@pytest.mark.parametrize('ending, expect_rc', [
    ('SIGTERM', -signal.SIGTERM), ('SIGINT', -signal.SIGINT), ('SIGHUP', -signal.SIGHUP), ('SIGKILL', -signal.SIGKILL),
    ('raise', 1), ('exit', 3),
], ids=['sigterm', 'sigint', 'sighup', 'sigkill-parent-death-signal', 'exception', 'sys-exit'])
def test_no_co_runner_survives_the_process(ending, expect_rc, tmp_path):
    env = {**os.environ, 'PYTHONPATH': REPO}
    proc = subprocess.Popen([sys.executable, '-c', CHILD, 'raise' if ending == 'raise' else
                             'exit' if ending == 'exit' else 'wait'],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=str(tmp_path))
    try:
        marker, *pids = proc.stdout.readline().split()
        assert marker.startswith(emulation.MARKER_PREFIX), proc.stderr.read()
        assert pids and set(find_corunners(marker)) == {int(p) for p in pids}
        proc.stdin.write('go\n')
        proc.stdin.flush()
        if ending.startswith('SIG'):
            os.kill(proc.pid, getattr(signal, ending))
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == expect_rc
    assert wait_gone(marker) == []


# ---------------------------------------------------------------- leftovers of a crash

def orphan(marker):
    """A process with ``marker`` in its command line whose parent has exited (as after a crash). Sleeps."""
    out = subprocess.run(['sh', '-c', f"sh -c 'while :; do sleep 1; done' {marker} >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    pid = int(out)
    deadline = time.monotonic() + 5
    while marker not in emulation._proc_cmdline(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pid


def write_pid_file(directory, owner, owner_start, marker, pids):
    record = {'owner': owner, 'owner_start': owner_start, 'marker': marker, 'topology': 't',
              'corunners': [{'pid': p, 'start': emulation._proc_start(p)} for p in pids]}
    path = os.path.join(directory, f'emulation-{owner}-{marker}.json')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(record, f)
    return path


def dead_pid():
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize('case', ['dead-owner', 'live-owner', 'wrong-marker', 'no-pid-file'])
def test_reap_leftovers_kills_only_what_it_can_identify(case, tmp_path):
    marker = emulation.MARKER_PREFIX + f'test{os.getpid()}{case.replace("-", "")}'
    pid = orphan(marker)
    try:
        if case == 'dead-owner':
            path = write_pid_file(tmp_path, dead_pid(), 12345, marker, [pid])
        elif case == 'live-owner':
            path = write_pid_file(tmp_path, os.getpid(), emulation._proc_start(os.getpid()), marker, [pid])
        elif case == 'wrong-marker':
            path = write_pid_file(tmp_path, dead_pid(), 12345, emulation.MARKER_PREFIX + 'other', [pid])
        else:
            path = None
        said = []
        killed = emulation.reap_leftovers(log=said.append, directory=str(tmp_path))
        if case == 'dead-owner':
            assert killed == [pid] and wait_gone(marker) == []
            assert said and f'{pid}' in said[0]
        else:
            assert killed == [] and find_corunners(marker) == [pid] and said == []
        assert os.path.exists(path) == (case == 'live-owner') if path else True
    finally:
        if emulation._proc_start(pid) is not None:
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- the share, measured

def cpu_seconds(pids):
    """CPU time (user + system) the processes ``pids`` have used, from /proc (clock ticks)."""
    total = 0
    for pid in pids:
        with open(f'/proc/{pid}/stat', encoding='ascii') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf('SC_CLK_TCK')


def loop_run(session, feed, cpu, seconds, corunners=()):
    """A 1-thread ORT loop in a fresh thread pinned to ``cpu``: (frames, wall s, CPU s of the core's time).

    The core's time is our thread's CPU time plus what the co-runners used in the same window: frames per
    second of it is the speed of an emulated core, whatever other processes of this shared machine take.
    """
    from pipeit_ros.hw.cpus import pin_current_thread
    out = {}

    def work():
        pin_current_thread([cpu])
        session.run(None, feed)
        n, t0, c0, r0 = 0, time.perf_counter(), time.thread_time(), cpu_seconds(corunners)
        while time.perf_counter() - t0 < seconds:
            session.run(None, feed)
            n += 1
        out['run'] = (n, time.perf_counter() - t0, time.thread_time() - c0 + cpu_seconds(corunners) - r0)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return out['run']


@pytest.mark.slow
@needs_two_cpus
@pytest.mark.parametrize('share', [0.5, 0.25], ids=['half', 'quarter'])
def test_emulated_little_core_runs_at_its_share(share, zoo_model):
    """Big and little loops alternate in 1 s windows. Speed = frames per second of the core's time (our thread's
    CPU time, plus the co-runners' on the little core): on a quiet machine that is frames per wall second, and
    it stays right while other processes of this shared machine take some of either core."""
    from pipeit_ros.engine.sessions import make_session
    topo = big_little(share)
    big, little = topo.cluster('big').cpus[0], topo.cluster('little').cpus[0]
    model = zoo_model('mobilenet_v2')
    sessions = {cpu: make_session(model, [cpu], threads=1) for cpu in (big, little)}
    feed = {sessions[big].get_inputs()[0].name: np.random.default_rng(0).standard_normal(
        (1, 3, 224, 224)).astype(np.float32)}

    def ratios(rounds, corunners=()):
        core, wall = [], []
        for _ in range(rounds):
            (nb, wb, cb), (nl, wl, cl) = (loop_run(sessions[big], feed, big, 1.0),
                                          loop_run(sessions[little], feed, little, 1.0, corunners))
            core.append((nl / cl) / (nb / cb))
            wall.append((nl / wl) / (nb / wb))
        return statistics.median(core), statistics.median(wall)
    control, _ = ratios(2)
    with emulated(topo, log=lambda _: None) as emu:
        measured, wall = ratios(4, emu.pids)
    print(f'share {share:g}: little/big {measured:.3f} per core second, {wall:.3f} per wall second '
          f'(weights {corunner_spec(share).share:.3f}); without co-runners {control:.3f}')
    assert control > 0.75, f'without co-runners the little core ran at {control:.2f} of the big one'
    assert measured == pytest.approx(corunner_spec(share).share, abs=0.15)


@needs_two_cpus
def test_another_live_emulation_on_our_cpus_is_reported():
    sleeper = subprocess.Popen(['sleep', '30'])
    topo = big_little(0.5)
    path = os.path.join(emulation.run_dir(), f'emulation-{sleeper.pid}-test.json')
    try:
        with open(path, 'w', encoding='utf-8') as f:
            json.dump({'owner': sleeper.pid, 'owner_start': emulation._proc_start(sleeper.pid),
                       'marker': emulation.MARKER_PREFIX + 'test', 'cpus': list(topo.cluster('little').cpus),
                       'corunners': []}, f)
        said = []
        with emulated(topo, log=said.append):
            pass
        assert [line for line in said if f'process {sleeper.pid} also runs co-runners' in line]
        assert os.path.exists(path)          # a live owner's file is left alone
    finally:
        sleeper.kill()
        sleeper.wait()
        os.remove(path)


# ---------------------------------------------------------------- the speed the emulation gave

def test_measured_speeds_compare_the_emulated_cpus_with_the_others():
    topo = Topology(clusters=(Cluster('big', (0, 1), 'host', 1.0), Cluster('little', (2, 3), 'host', 0.5,
                                                                            emulate_share=0.5)), name='t', source='test')
    assert emulation.measured_speeds(topo, {0: 0.9, 1: 0.7, 2: 0.4, 3: 0.4}) == pytest.approx({'little': 0.5})
    assert emulation.measured_speeds(topo, {0: 0.8, 2: 0.8}) == pytest.approx({'little': 1.0})
    assert emulation.measured_speeds(topo, {2: 0.5}) == {} and emulation.measured_speeds(topo, {0: 1.0}) == {}
    assert emulation.speed_warnings(topo, [{'little': 0.47}, {'little': 0.54}]) == []
    [line] = emulation.speed_warnings(topo, [{'little': 0.5}, {'little': 0.9}], where='x: ')
    assert line.startswith('warning: x: emulated cluster little ran at 0.50-0.90') and '2 windows' in line


@needs_two_cpus
def test_held_shares_of_pinned_threads():
    """A thread pinned to one CPU shows up under that CPU, with a share in (0, 1]; unpinned ones do not."""
    from pipeit_ros.hw.threads import held_shares, pinned_run_wait, run_wait_delta
    cpu = sorted(os.sched_getaffinity(0))[-1]
    before, after = {}, {}

    def spin():
        os.sched_setaffinity(threading.get_native_id(), {cpu})
        before.update(pinned_run_wait())
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        after.update(pinned_run_wait())
    t = threading.Thread(target=spin)
    t.start()
    t.join()
    delta = run_wait_delta(before, after)
    assert delta[cpu][0] >= 0.04e9 and set(delta) <= set(os.sched_getaffinity(0))
    assert 0 < held_shares(delta)[cpu] <= 1
    assert held_shares({cpu: (10, 0)}) == {}    # ran less than the minimum: not a measurement
