"""The package with the real ROS 2 tools, as a user runs it: `colcon build`, `ros2 launch pipeit_ros
pipeline.launch.py`, and `ros2 node list / topic hz / topic echo / param set / service call` from a shell with
no special environment (no Fast DDS variables: the nodes' profile keeps them visible to default participants).

Needs the launch system and the ros2 CLI in this venv (scripts/setup.sh installs ../shared/ros2-tools when it
exists; by hand: ``../shared/ros2-tools/install.sh .venv``); skipped otherwise.
"""
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time

from planner_helpers import OutputReader, domain_id, stop_process, wait_for
import psutil
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.dirname(os.path.dirname(sys.executable))
UNDERLAY = os.path.join(VENV, 'local_setup.sh')
HAVE_TOOLS = (os.path.isfile(UNDERLAY) and os.path.isfile(os.path.join(VENV, 'bin', 'ros2'))
              and importlib.util.find_spec('launch_ros') is not None)

pytestmark = [pytest.mark.ros, pytest.mark.slow,
              pytest.mark.skipif(not HAVE_TOOLS, reason='the ROS 2 launch system and CLI are not in this venv: '
                                 'run ../shared/ros2-tools/install.sh .venv (scripts/setup.sh does when that '
                                 'folder exists)')]


@pytest.fixture(scope='module')
def install(tmp_path_factory):
    work = tmp_path_factory.mktemp('ws')
    proc = subprocess.run([os.path.join(VENV, 'bin', 'colcon'), '--log-base', str(work / 'log'), 'build',
                           '--base-paths', REPO, '--build-base', str(work / 'build'),
                           '--install-base', str(work / 'install'), '--event-handlers', 'console_direct-'],
                          cwd=work, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work / 'install'


class Shell:
    """Commands as a user types them after sourcing the underlay and the workspace, on one ROS domain, with
    none of this test process' DDS settings."""

    def __init__(self, install, domain):
        self.install, self.domain = install, domain
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('FASTDDS_', 'FASTRTPS_', 'RMW_', 'ROS_', 'AMENT_', 'COLCON_', 'PYTHONPATH'))}
        # PYTHONFAULTHANDLER: a launch that does not stop is sent SIGABRT and prints every thread's stack
        self.env = {**env, 'ROS_DOMAIN_ID': str(domain), 'PYTHONUNBUFFERED': '1', 'PYTHONFAULTHANDLER': '1'}

    def argv(self, command):
        return ['bash', '-c', f'. {shlex.quote(UNDERLAY)} && . {shlex.quote(str(self.install / "setup.sh"))} && '
                              f'exec {command}']

    def run(self, command, timeout=60):
        proc = subprocess.run(self.argv(command), env=self.env, capture_output=True, text=True, timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr

    def start(self, command):
        # SIGINT at its default, as in a terminal: a test run started in the background (`./scripts/test &`) has
        # it ignored, children inherit that, and ros2 launch (which relies on Python's own SIGINT handler)
        # would then never see the SIGINT these tests send it
        proc = subprocess.Popen(self.argv(command), env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors='replace', preexec_fn=_default_sigint)
        return proc, OutputReader(proc)

    def poll(self, command, predicate, timeout, what):
        """Run ``command`` until predicate(output) holds; its last output."""
        deadline = time.monotonic() + timeout
        out = ''
        while time.monotonic() < deadline:
            _, out = self.run(command, timeout=max(5.0, deadline - time.monotonic()))
            if predicate(out):
                return out
            time.sleep(0.5)
        pytest.fail(f'timed out after {timeout:g} s waiting for {what}; last output of {command!r}:\n{out[-3000:]}')


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def descendants(proc):
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(procs):
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(procs, timeout):
    deadline = time.monotonic() + timeout
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(procs)


@pytest.fixture
def shell(install):
    sh = Shell(install, domain_id())
    yield sh
    sh.run('ros2 daemon stop', timeout=30)       # the daemon a `ros2 node list` started on this domain


def launch(shell, *args):
    proc, out = shell.start('ros2 launch pipeit_ros pipeline.launch.py camera:=pattern model:=tiny ' + ' '.join(args))
    return proc, out


def results_flow(shell, namespace=''):
    return shell.poll(f'ros2 topic echo --once {namespace}/pipeit/classification', lambda o: '"top_k"' in o, 120,
                      'a result on pipeit/classification')


def stop_launch(proc, out, sig=signal.SIGINT, timeout=30):
    """Send ``sig`` to ros2 launch; (its exit code, the processes it had started still running afterwards)."""
    nodes = descendants(proc)
    assert nodes, out.text()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
        proc.send_signal(signal.SIGABRT)     # its threads' stacks into the output (faulthandler), then it ends
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    left = wait_gone(nodes, 10.0)
    for p in left:
        p.kill()
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    out.join()
    return code, left


def test_launch_default_layout_with_the_ros2_cli(shell):
    proc, out = launch(shell)
    try:
        results_flow(shell)
        # the ros2 daemon (started by this first call) sees every node, the stage nodes inside the containers too
        # (the daemon hears the nodes one by one: wait for all of them, then check the list)
        nodes = shell.poll('ros2 node list', lambda o: all(n in o for n in ('/pipeit_planner', '/pipeit_camera',
                                                                             '/pipeit_container', '/stage_0')),
                           60, 'the nodes in ros2 node list').split()
        assert {'/pipeit_planner', '/pipeit_camera'} <= set(nodes) and any(
            n.startswith('/pipeit_container') for n in nodes), nodes
        container = next(n for n in nodes if n.startswith('/pipeit_container'))

        # until its first rate line (it prints one a second once it has a window), then Ctrl-C as a user would
        hz_proc, hz_out = shell.start('ros2 topic hz /pipeit/classification --window 10')
        try:
            wait_for(lambda: re.search(r'average rate: \d+\.\d+', hz_out.text()) or hz_proc.poll() is not None, 30,
                     what='a rate from ros2 topic hz', output=hz_out)
        finally:
            stop_process(hz_proc, timeout=10)
            hz_out.join()
        hz = hz_out.text()
        assert re.search(r'average rate: \d+\.\d+', hz), hz

        # composition_interfaces: the container lists the stage nodes it hosts
        code, listed = shell.run(f'ros2 service call {container}/_container/list_nodes '
                                 'composition_interfaces/srv/ListNodes')
        assert code == 0 and "'/stage_0'" in listed, listed
        code, refused = shell.run(f'ros2 service call {container}/_container/load_node '
                                  'composition_interfaces/srv/LoadNode "{package_name: x, plugin_name: y}"')
        assert code == 0 and 'success=False' in refused and 'change the plan' in refused, refused

        # accepted: a new plan generation on pipeit/plan; refused: the reason in the CLI's output, exit 0 anyway
        code, said = shell.run('ros2 param set /pipeit_planner objective latency')
        assert code == 0 and 'Set parameter successful' in said, said
        plan = shell.poll('ros2 topic echo --once --qos-durability transient_local --qos-reliability reliable '
                          '--field data /pipeit/plan std_msgs/msg/String',
                          lambda o: '"generation": 2' in o, 60, 'plan generation 2')
        assert '"reason": "param:objective"' in plan and '"graph": "' in plan, plan
        code, said = shell.run('ros2 param set /pipeit_planner objective bogus')
        assert code == 0 and 'Setting parameter failed' in said and 'throughput, latency' in said, said
    finally:
        code, left = stop_launch(proc, out)
    text = out.text()
    assert code == 0, text[-3000:]
    assert not left, f'still running after launch ended: {left}'
    assert re.search(r'\[pipeit_container\w*-\d+\]', text) and '[taskset-' not in text, text[-2000:]  # exec_name


def test_launch_single_container(shell):
    proc, out = launch(shell, 'single_container:=true')
    try:
        results_flow(shell)
        shell.poll('ros2 node list', lambda o: '/pipeit_container\n' in o, 60, '/pipeit_container in ros2 node list')
    finally:
        code, left = stop_launch(proc, out)
    assert code == 0 and not left, out.text()[-3000:]


SLEEP_PARAMS = """
pipeit_planner:
  ros__parameters:
    stages: '0-3@c0,4-8@c1'
pipeit_container:
  ros__parameters:
    sleep_after_s: 2.0
"""


def test_launch_emulated_topology_and_sigterm_leaves_no_node(shell, tmp_path):
    """Each container is a component container to the ros2 CLI: its list_nodes names the stage nodes it hosts;
    unload is refused (load is, in the default layout's test). A plan that leaves c1 idle makes it sleep
    (pipeit_ros.app.sleeper: it leaves the graph, its process stays), and `ros2 param set` of a plan that needs it
    wakes it. SIGTERM makes ros2 launch exit at once without stopping its nodes (ros2/launch issue 666): they end
    by themselves once their parent is gone (pipeit_ros.app.lifecycle)."""
    params = tmp_path / 'params.yaml'
    params.write_text(SLEEP_PARAMS)
    proc, out = launch(shell, 'topology:=emulated-2x1', f'params_file:={params}')
    containers = {'/pipeit_container_c0', '/pipeit_container_c1'}
    try:
        results_flow(shell)
        nodes = shell.poll('ros2 node list', lambda o: containers <= set(o.split()) and '/stage_0' in o, 60,
                           'both containers and the stage nodes in ros2 node list').split()
        stages = {n for n in nodes if re.fullmatch(r'/stage_\d+', n)}

        # what `ros2 component list` does (its ros2component is not among the tools): find every service of type
        # ListNodes named <container>/_container/list_nodes (hidden: a name part starts with '_'), and call it
        code, services = shell.run('ros2 service list -t --include-hidden-services')
        found = set(re.findall(r'^(\S+)/_container/list_nodes \[composition_interfaces/srv/ListNodes\]$', services,
                               re.M))
        assert code == 0 and found == containers, services
        hosted = {}
        for c in sorted(found):
            code, said = shell.run(f'ros2 service call {c}/_container/list_nodes composition_interfaces/srv/ListNodes')
            assert code == 0 and 'full_node_names=' in said, said
            hosted[c] = re.findall(r"'(/stage_\d+)'", said.split('full_node_names=', 1)[1].split(']', 1)[0])
        assert sorted(n for names in hosted.values() for n in names) == sorted(stages), (hosted, nodes)
        code, refused = shell.run('ros2 service call /pipeit_container_c1/_container/unload_node '
                                  'composition_interfaces/srv/UnloadNode "{unique_id: 1}"')
        assert code == 0 and 'success=False' in refused and 'change the plan' in refused, refused

        pids = {p.pid for p in descendants(proc)}
        code, said = shell.run("ros2 param set /pipeit_planner stages '0-8@c0'")
        assert code == 0 and 'Set parameter successful' in said, said
        shell.poll('ros2 node list', lambda o: '/pipeit_container_c1' not in o.split(), 60, 'c1 asleep, out of the graph')
        assert pids <= {p.pid for p in descendants(proc)}, out.text()[-3000:]      # asleep, not gone
        code, said = shell.run("ros2 param set /pipeit_planner stages '0-3@c0,4-8@c1'")
        assert code == 0 and 'Set parameter successful' in said, said          # the sleeping c1 counts as running
        shell.poll('ros2 service call /pipeit_container_c1/_container/list_nodes composition_interfaces/srv/ListNodes',
                   lambda o: "'/stage_1'" in o, 60, 'c1 woken, hosting stage 1')
        assert 'woke container pipeit_container_c1' in out.text(), out.text()[-3000:]
    finally:
        code, left = stop_launch(proc, out, sig=signal.SIGTERM)
    assert not left, f'nodes left running after SIGTERM to ros2 launch: {left}\n{out.text()[-3000:]}'
