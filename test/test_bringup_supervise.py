"""Child-process supervision of `pipeit bringup` (pipeit_ros.app.supervise) with stand-in nodes, without ROS."""
import signal
import time

import pytest

from pipeit_ros.app import supervise
from pipeit_ros.app.layout import ProcessSpec

FAKE_NODE = '''
import signal, sys, time, yaml
def main():
    args = sys.argv[sys.argv.index('--ros-args'):]
    params = yaml.safe_load(open(args[args.index('--params-file') + 1]))['/**']['ros__parameters']
    name = [a for a in args if a.startswith('__node:=')][0].split(':=')[1]
    print(f'{name} up', params, flush=True)
    ignore = params.get('ignore', [])
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a node does, also when started in background
    for sig in ignore:
        signal.signal(getattr(signal, sig), signal.SIG_IGN)
    deadline = time.monotonic() + params.get('exit_after', 60)
    try:
        while time.monotonic() < deadline:
            time.sleep(0.02)
    except KeyboardInterrupt:
        print(f'{name} interrupted', flush=True)
        return 0
    return params.get('code', 0)
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    (tmp_path / 'fakenode.py').write_text(FAKE_NODE)
    monkeypatch.setitem(supervise.ENTRY_POINTS, 'fake', 'fakenode')

    def make(name, role='container', exit_ok=False, cpus=None, **params):
        return ProcessSpec(name=name, executable='fake', role=role, parameters=params, cpus=cpus,
                           exit_ok=exit_ok, env={'FAKE_ENV': name})
    return make


def supervisor(tmp_path, specs, lines=None):
    return supervise.Supervisor(specs, str(tmp_path), echo=None if lines is None else lines.append,
                                extra_env={'PYTHONPATH': str(tmp_path)}).start()


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.02)


def cpus_allowed(pid):
    with open(f'/proc/{pid}/status') as f:
        return next(line.split(':')[1].strip() for line in f if line.startswith('Cpus_allowed_list'))


def test_start_pin_echo_and_clean_stop(tmp_path, fake):
    lines = []
    sup = supervisor(tmp_path, [fake('planner', role='planner', level=3), fake('container_c0', cpus=(0,))], lines)
    wait_until(lambda: sum(' up ' in line for line in lines) == 2)
    assert "[planner] planner up {'level': 3}" in lines
    assert cpus_allowed(sup.children[1].proc.pid) == '0'
    assert sup.failed() is None and len(sup.running()) == 2
    ends = sup.stop(timeout=10.0)
    assert ends == {'planner': 'exited with code 0', 'container_c0': 'exited with code 0'}
    assert '[container_c0] container_c0 interrupted' in lines


@pytest.mark.parametrize('params,exit_ok,expected', [
    ({'exit_after': 0.2, 'code': 3}, False, 'exited with code 3'),
    ({'exit_after': 0.2, 'code': 0}, False, 'exited with code 0'),
    ({'exit_after': 0.2, 'code': 0}, True, None),
], ids=['crash', 'unexpected-exit', 'camera-done'])
def test_a_dead_node_is_named(tmp_path, fake, params, exit_ok, expected):
    sup = supervisor(tmp_path, [fake('keeper'), fake('victim', exit_ok=exit_ok, **params)])
    wait_until(lambda: sup.children[1].proc.poll() is not None)
    dead = sup.failed()
    try:
        if expected is None:
            assert dead is None
        else:
            assert dead.name == 'victim' and dead.describe_exit() == expected
            assert any('victim up' in line for line in dead.tail)
    finally:
        sup.stop(timeout=10.0)


def test_killed_node_names_the_signal(tmp_path, fake):
    sup = supervisor(tmp_path, [fake('c1')])
    sup.children[0].proc.send_signal(signal.SIGKILL)
    wait_until(lambda: sup.failed() is not None)
    assert sup.failed().describe_exit() == 'killed by SIGKILL'


def test_stubborn_nodes_are_escalated(tmp_path, fake):
    lines = []
    sup = supervisor(tmp_path, [fake('polite'), fake('deaf', ignore=['SIGINT']),
                                fake('deafer', ignore=['SIGINT', 'SIGTERM'])], lines)
    wait_until(lambda: sum(' up ' in line for line in lines) == 3)
    t0 = time.monotonic()
    ends = sup.stop(timeout=0.5, term_timeout=0.5)
    assert ends == {'polite': 'exited with code 0', 'deaf': 'killed by SIGTERM', 'deafer': 'killed by SIGKILL'}
    assert time.monotonic() - t0 < 10.0          # every wait bounded (generous: a shared machine)
