"""Helpers of the planner engineer's ROS tests (test_planner_ros, test_camera_ros, test_bringup*)."""
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

_counter = itertools.count()


def domain_id():
    """A ROS_DOMAIN_ID for one test: from the pid (parallel runs differ) and a counter (tests differ).
    Fast DDS accepts 0-232; 1-200 stays clear of the default 0."""
    return 1 + (os.getpid() * 7 + next(_counter)) % 200


def wait_for(predicate, timeout, spin=None, step=0.05, what='condition', output=None):
    """Spin (or sleep) until predicate() is true; fail the test naming `what` at the deadline (with the end
    of an OutputReader's text when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if spin is not None:
            spin(step)
        else:
            time.sleep(step)
    if predicate():
        return
    tail = f'\n--- output ---\n{output.text()[-4000:]}' if output is not None else ''
    pytest.fail(f'timed out after {timeout:g} s waiting for {what}{tail}')


class RosGraph:
    """An rclpy context on its own domain with one SingleThreadedExecutor, spun from the test thread."""

    def __init__(self, domain):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        self.rclpy = rclpy
        self.domain = domain
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes = []

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def spin(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.executor.spin_once(timeout_sec=min(left, 0.05))

    def wait(self, predicate, timeout, what='condition', output=None):
        wait_for(predicate, timeout, spin=self.spin, what=what, output=output)

    def close(self):
        for node in self.nodes:
            stop = getattr(node, 'stop', None)
            if stop is not None:
                stop()
            self.executor.remove_node(node)
            node.destroy_node()
        self.executor.shutdown(timeout_sec=1.0)
        self.context.try_shutdown()


def plan_listener(graph, name='plan_listener', namespace=None):
    """A node collecting every plan message (decoded) it receives on pipeit/plan."""
    from rclpy.node import Node
    from std_msgs.msg import String

    from pipeit_ros.app.wire.plan_msg import decode_plan_message
    from pipeit_ros.ros.messages import PLAN_QOS

    kwargs = {'context': graph.context}
    if namespace:
        kwargs['namespace'] = namespace
    node = Node(name, **kwargs)
    node.plans = []
    node.create_subscription(String, 'pipeit/plan', lambda m: node.plans.append(decode_plan_message(m.data)),
                             PLAN_QOS)
    return graph.add(node)


class OutputReader:
    """Collects a subprocess' merged output lines on a thread (the pipe never fills)."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip('\n'))

    def text(self):
        return '\n'.join(self.lines)

    def join(self, timeout=5.0):
        self._thread.join(timeout)


def start_cli(argv, domain, extra_env=None):
    """`python -m pipeit_ros ARGV` on its own ROS domain, stdout and stderr merged into an OutputReader."""
    env = {**os.environ, 'ROS_DOMAIN_ID': str(domain), 'PYTHONUNBUFFERED': '1', **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, '-m', 'pipeit_ros', *map(str, argv)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors='replace')
    return proc, OutputReader(proc)


def stop_process(proc, timeout=15.0):
    """SIGINT, then SIGKILL at the deadline; the exit code."""
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)
    return proc.returncode


def finish(proc, out, timeout):
    """Wait up to ``timeout`` s for a CLI process that stops by itself (e.g. --duration), stop it otherwise;
    (exit code, everything it printed)."""
    try:
        code = proc.wait(timeout=timeout)
    finally:
        stop_process(proc)
    out.join()
    return code, out.text()


def last_json(text):
    """The last top-level JSON object printed in `text` (the --json summary after the log lines)."""
    start = text.rfind('\n{')
    start = 0 if start < 0 and text.startswith('{') else start + 1
    return json.loads(text[start:])


def results_seen(output):
    """The largest result count bringup's live status lines reported so far."""
    return max((int(n) for n in re.findall(r' (\d+) results ', output.text())), default=0)


def plan_seen(output):
    """Whether a live status line showed a plan generation: the monitor has heard the plan (its results can
    arrive first: it discovers the containers' writers and the planner's independently)."""
    return re.search(r' results  plan gen \d', output.text()) is not None


def is_alive(pid):
    """True while process ``pid`` runs (a zombie does not: it ended, its parent has not reaped it)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(') ')[1][0] != 'Z'
    except OSError:
        return False
