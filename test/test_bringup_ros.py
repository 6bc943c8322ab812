"""`pipeit bringup` end to end: planner + containers + camera as real processes on the tiny net, each test on
its own ROS domain. The plan is forced (planner parameter `stages`) so no profiling runs."""
import os
import signal

from planner_helpers import (
    domain_id,
    finish,
    is_alive,
    last_json,
    plan_seen,
    results_seen,
    start_cli,
    stop_process,
    wait_for,
)
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PARAMS = """
pipeit_planner:
  ros__parameters:
    stages: '{stages}'
pipeit_container:
  ros__parameters:
    image_qos: reliable
pipeit_camera:
  ros__parameters:
    rate_hz: 20.0
    width: 64
    height: 48
    qos: reliable
"""


@pytest.fixture
def params_file(tmp_path):
    def write(stages='0-3@c0,4-8@c1'):
        path = tmp_path / 'params.yaml'
        path.write_text(PARAMS.format(stages=stages))
        return path
    return write


def bringup(params_file, zoo_model, *extra):
    return start_cli(['bringup', '--params-file', params_file, '--model', zoo_model('tiny'), '--topology',
                      'emulated-2x1', '--with-camera', 'pattern', *extra], domain_id())


def child_pid(parent, node_name):
    """The pid of the child process of `parent` that runs node `node_name`."""
    with open(f'/proc/{parent}/task/{parent}/children') as f:
        for pid in f.read().split():
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as c:
                    if f'__node:={node_name}'.encode() in c.read():
                        return int(pid)
            except OSError:
                continue
    return None


def test_tiny_net_with_camera_runs_for_duration(params_file, zoo_model):
    # 8 s as in test_vision_msgs: results flowed from the 2nd second here (forced plan, no profiling)
    code, text = finish(*bringup(params_file(), zoo_model, '--duration', 8, '--json'), 50)
    assert code == 0, text
    summary = last_json(text)
    assert summary['frames'] > 0 and summary['generations'] == [1], text
    assert summary['plan'] == '0-3@c0,4-8@c1'
    assert summary['stopped'] == 'duration reached'
    assert set(summary['nodes'].values()) == {'exited with code 0'}
    assert set(summary['nodes']) == {'pipeit_planner', 'pipeit_container_c0', 'pipeit_container_c1',
                                     'pipeit_camera'}
    assert summary['latency_p50_ms'] > 0


def test_killed_container_fails_bringup_naming_it(params_file, zoo_model):
    """The plan leaves c1 without a stage: while the graph runs, that container has loaded no onnxruntime, onnx or
    OpenCV (c0, which hosts every stage, has) and, like the planner, holds no 32 MiB Fast DDS segment (the
    camera, whose best-effort frames need one, does; pipeit_ros.app.dds_profile). Then c1 is killed."""
    proc, out = bringup(params_file('0-8@c0'), zoo_model, '--duration', 50)
    try:
        wait_for(lambda: results_seen(out) > 0 or proc.poll() is not None, 40, what='results', output=out)
        assert proc.poll() is None, out.text()
        victim = child_pid(proc.pid, 'pipeit_container_c1')
        assert victim is not None
        maps = {n: _maps(child_pid(proc.pid, n)) for n in ('pipeit_container_c0', 'pipeit_planner', 'pipeit_camera')}
        maps['pipeit_container_c1'] = _maps(victim)
        heavy = {n: {lib for lib in ('onnxruntime', 'onnx_cpp2py_export', '/cv2/') if any(lib in p for p, _ in m)}
                 for n, m in maps.items()}
        assert heavy['pipeit_container_c1'] == set() and len(heavy['pipeit_container_c0']) == 3, heavy
        segment = {n: max((rss for p, rss in m if os.path.basename(p).startswith('fastdds_')), default=0)
                   for n, m in maps.items()}      # its own segment is resident whole, others' where read
        assert segment['pipeit_camera'] >= 32 << 20, segment
        assert max(segment['pipeit_container_c1'], segment['pipeit_planner']) < 16 << 20, segment    # 8 MiB
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(timeout=30)
    finally:
        stop_process(proc)
    out.join()
    assert code == 1, out.text()
    assert 'pipeit: error: node pipeit_container_c1 killed by SIGKILL' in out.text()


def test_ctrl_c_stops_every_node_cleanly(params_file, zoo_model):
    """One container for both clusters this time; SIGINT to bringup alone (as from `kill -INT`)."""
    proc, out = bringup(params_file(), zoo_model, '--single-container', '--json')
    try:
        wait_for(lambda: results_seen(out) > 0 or proc.poll() is not None, 40, what='results', output=out)
        assert proc.poll() is None, out.text()
        children = [child_pid(proc.pid, n) for n in ('pipeit_planner', 'pipeit_container', 'pipeit_camera')]
        assert None not in children
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        stop_process(proc)
    out.join()
    assert code == 0, out.text()
    summary = last_json(out.text())
    assert summary['stopped'] == 'interrupted' and summary['frames'] > 0
    assert set(summary['nodes'].values()) == {'exited with code 0'}, summary['nodes']
    assert not any(os.path.exists(f'/proc/{pid}') and is_alive(pid) for pid in children)


def _maps(pid):
    """[(path, resident bytes)] of a process's file mappings (/proc/PID/smaps)."""
    out = []
    with open(f'/proc/{pid}/smaps') as f:
        for line in f:
            parts = line.split()
            if '-' in parts[0] and not parts[0].endswith(':'):
                out.append([parts[5] if len(parts) >= 6 else '', 0])
            elif parts[0] == 'Rss:' and out:
                out[-1][1] = int(parts[1]) * 1024
    return [tuple(m) for m in out]


def _running_graph(tmp_path, params_text, zoo_model):
    """`pipeit bringup --json` of tiny on emulated-2x1 with these parameters, on a domain of its own, once results
    and the plan are out (or it ended): (process, its output, the domain)."""
    params = tmp_path / 'params.yaml'
    params.write_text(params_text)
    domain = domain_id()
    proc, out = start_cli(['bringup', '--params-file', params, '--model', zoo_model('tiny'), '--topology',
                           'emulated-2x1', '--with-camera', 'pattern', '--json'], domain)
    try:
        wait_for(lambda: (results_seen(out) > 0 and plan_seen(out)) or proc.poll() is not None, 60,
                 what='results and the plan', output=out)
    except BaseException:
        _end(proc, None, out)
        raise
    return proc, out, domain


def _planner_param(ros, node, name, value):
    """Set one parameter of the graph's planner through its service, as `ros2 param set` does; the result."""
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    client = AsyncParameterClient(node, 'pipeit_planner')
    ros.wait(client.services_are_ready, 10, 'the planner parameter services')
    future = client.set_parameters([Parameter(name, value=value)])
    ros.wait(future.done, 20, f'set_parameters {name}')
    return future.result().results[0]


def _end(proc, ros, out):
    """Stop bringup if it still runs, close the test's ROS graph, collect the output."""
    stop_process(proc)
    if ros is not None:
        ros.close()
    out.join()


BUDGET_PARAMS = """
pipeit_planner:
  ros__parameters:
    memory_mb: {memory_mb}
"""


def test_a_ros_layout_runs_within_its_memory_budget(tmp_path, zoo_model):
    """``memory_mb`` on the planner bounds what the layout's containers hold: their peaks (PSS + VmHWM - RSS,
    as engine/footprint and docs/memory.md define it) summed, with the camera's default 640x480 frames, stay
    within a budget 5 % above the smallest plan's figure (so within it where the figure is within 5 % of what is
    measured). A budget under that figure is refused, naming it. The container figures the planner sizes the
    layout with (pipeit_ros.ros.footprint) are measured once, then read from the cache, by the planner too."""
    import json
    import math
    import re

    from planner_helpers import RosGraph
    from rclpy.node import Node

    from pipeit_ros.app import planner_state
    from pipeit_ros.errors import PlanError
    from pipeit_ros.hw import memory as procmem
    from pipeit_ros.ros import footprint
    path = footprint.cache_path()
    if os.path.exists(path):
        os.remove(path)
    logged = []
    figures = footprint.container_memory(logged.append)
    assert figures is not None and len(logged) == 1, logged
    with open(path, encoding='utf-8') as f:
        probe = json.load(f)
    assert 0 < probe['idle_pss_bytes'] < probe['hosting_pss_bytes'] <= probe['hosting_rss_bytes'], probe
    assert probe['frames'] >= footprint.WARM_FRAMES, probe
    assert 0 < probe['sleeping_pss_bytes'] < probe['idle_pss_bytes'] / 4, probe    # app/sleeper.py
    assert footprint.container_memory(logged.append) == figures and len(logged) == 1   # no second probe
    # the smallest plan's figure, sized as the planner sizes a layout of emulated-2x1's two containers
    inputs = planner_state.PlanInputs(log=lambda *_: None, layout=lambda topology, measure, containers: (
        len(topology.clusters), figures.idle_bytes, figures.host_bytes))
    cfg = planner_state.PlannerConfig(model_path=zoo_model('tiny'), topology='emulated-2x1', memory_mb=1)
    with pytest.raises(PlanError, match='no plan fits --memory-mb 1') as refused:
        planner_state.make_plan(cfg, inputs)
    smallest = float(re.search(r'the smallest needs ([0-9.]+) MiB', str(refused.value)).group(1))
    budget = math.ceil(smallest * 1.05)
    proc, out, domain = _running_graph(tmp_path, BUDGET_PARAMS.format(memory_mb=budget), zoo_model)
    ros = None
    try:
        assert proc.poll() is None, out.text()
        ros = RosGraph(domain)
        answer = _planner_param(ros, ros.add(Node('budget_client', context=ros.context)), 'memory_mb',
                                math.floor(smallest) - 1)
        pids = [child_pid(proc.pid, f'pipeit_container_{c}') for c in ('c0', 'c1')]
        use = [procmem.usage(pid) for pid in pids if pid is not None]
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        _end(proc, ros, out)
    assert code == 0, out.text()
    assert not answer.successful and f'the smallest needs {smallest:.2f} MiB' in answer.reason, answer.reason
    summary = last_json(out.text())
    assert summary['generations'] == [1] and summary['frames'] > 0, summary   # the refused budget changed nothing
    assert len(use) == 2 and all(u.pss > 0 for u in use), use
    peak = sum(u.pss + max(u.hwm - u.rss, 0) for u in use) / procmem.MIB
    print(f'BUDGET plan {summary["plan"]}: smallest {smallest:.1f} MiB, budget {budget} MiB, containers\' peak '
          f'{peak:.1f} MiB ({", ".join(f"PSS {u.pss / procmem.MIB:.1f}" for u in use)})')
    assert peak <= budget, (summary['plan'], smallest, budget, [u.mib() for u in use])
    assert 'measured once' not in out.text()     # the planner read the container figures from the cache


SLEEP_PARAMS = """
pipeit_planner:
  ros__parameters:
    stages: '0-8@c0'
pipeit_container:
  ros__parameters:
    sleep_after_s: 1.0
pipeit_camera:
  ros__parameters:
    width: 64
    height: 48
"""


def _cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().decode(errors='replace')
    except OSError:
        return ''


def test_a_container_the_plan_leaves_idle_sleeps_and_a_plan_that_needs_it_wakes_it(tmp_path, zoo_model):
    """c1 hosts nothing: after ``sleep_after_s`` its process (same pid) becomes pipeit_ros.app.sleeper, which the
    planner reports on /diagnostics as 'sleeping' with its few MiB of PSS. A plan giving c1 stages is accepted
    (the sleeping container counts as running) and wakes it: frames of the new generation flow through it."""
    from diagnostic_msgs.msg import DiagnosticArray
    from planner_helpers import RosGraph
    from rclpy.node import Node

    proc, out, domain = _running_graph(tmp_path, SLEEP_PARAMS, zoo_model)
    ros = None
    try:
        c1 = child_pid(proc.pid, 'pipeit_container_c1')
        assert c1 is not None, out.text()
        wait_for(lambda: 'sleeper.py' in _cmdline(c1) or proc.poll() is not None, 30, what='c1 asleep', output=out)
        assert proc.poll() is None, out.text()
        ros = RosGraph(domain)
        node = ros.add(Node('sleep_client', context=ros.context))
        verdicts = {}

        def on_diagnostics(msg):
            for s in msg.status:
                if s.name.endswith('pipeit/pipeit_container_c1'):
                    verdicts[s.message] = {kv.key: kv.value for kv in s.values}
        node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
        ros.wait(lambda: 'sleeping' in verdicts, 15, 'the planner reporting c1 sleeping', output=out)
        assert int(verdicts['sleeping']['process_pid']) == c1
        assert 0 < float(verdicts['sleeping']['process_pss_mb']) < 16, verdicts
        answer = _planner_param(ros, node, 'stages', '0-3@c0,4-8@c1')
        assert answer.successful, answer.reason
        wait_for(lambda: 'sleeper.py' not in _cmdline(c1), 15, what='c1 awake', output=out)
        wait_for(lambda: 'plan gen 2 0-3@c0,4-8@c1' in out.text(), 30, what='generation 2', output=out)
        before = results_seen(out)
        wait_for(lambda: results_seen(out) >= before + 20, 30, what='results of generation 2', output=out)
        assert child_pid(proc.pid, 'pipeit_container_c1') == c1 and is_alive(c1)   # woken, not restarted
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        _end(proc, ros, out)
    assert code == 0, out.text()
    summary = last_json(out.text())
    assert summary['generations'] == [1, 2] and summary['plan'] == '0-3@c0,4-8@c1', summary
    assert 'woke container pipeit_container_c1' in out.text()
    assert not is_alive(c1)
