"""Run a layout's processes as children: start them pinned, notice one dying, stop them all in order.

``pipeit bringup`` does what ``ros2 launch`` would, without launch: each :class:`~pipeit_ros.app.layout.ProcessSpec`
becomes a subprocess of this interpreter (its parameters in a per-process ROS parameter file, its environment
added to ours, its CPU affinity set right after the start, before it has made a thread). Children stay in our
session and process group: the emulation's co-runners weigh against them only inside one session
(autogroup), and a terminal's Ctrl-C reaches them directly as well.

A child that dies ends the whole run (no restart: a pipeline missing a container would silently stall, and
the cause belongs in front of the user): :meth:`Supervisor.failed` names it with the end of its output.
Stopping sends SIGINT (rclpy nodes shut down cleanly on it), waits up to a deadline, then SIGTERM, then
SIGKILL — every wait bounded.
"""
from collections import deque
from dataclasses import dataclass, field
import os
import signal
import subprocess
import sys
import threading
import time

from pipeit_ros.app.layout import write_params_file

ENTRY_POINTS = {
    'pipeit_planner': 'pipeit_ros.ros.planner_node',
    'pipeit_container': 'pipeit_ros.ros.container',
    'pipeit_camera': 'pipeit_ros.ros.camera_node',
}
TAIL_LINES = 20


def command(spec, params_file):
    """This interpreter running the node's main() with its ROS arguments (no PATH lookup: the same venv)."""
    module = ENTRY_POINTS[spec.executable]
    code = f'import sys; from {module} import main; sys.exit(main())'
    return [sys.executable, '-c', code, *spec.ros_args(params_file)]


@dataclass
class Child:
    spec: object
    proc: subprocess.Popen
    tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    reader: threading.Thread | None = None

    @property
    def name(self):
        return self.spec.name

    def describe_exit(self):
        code = self.proc.returncode
        if code is None:
            return 'running'
        if code < 0:
            try:
                return f'killed by {signal.Signals(-code).name}'
            except ValueError:
                return f'killed by signal {-code}'
        return f'exited with code {code}'


class Supervisor:
    """Children of one layout. ``echo`` gets every output line prefixed with the node name (or None)."""

    def __init__(self, specs, workdir, echo=None, extra_env=None):
        self.specs = list(specs)
        self.workdir = workdir
        self.echo = echo
        self.extra_env = dict(extra_env or {})
        self.children = []

    def start(self):
        """Start every process (all first, then the output readers: no thread exists while forking)."""
        for spec in self.specs:
            params_file = write_params_file(spec, os.path.join(self.workdir, f'{spec.name}.params.yaml'))
            env = {**os.environ, **self.extra_env, **spec.env, 'PYTHONUNBUFFERED': '1'}
            proc = subprocess.Popen(command(spec, params_file), env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors='replace', bufsize=1)
            child = Child(spec=spec, proc=proc)
            self.children.append(child)
            if spec.cpus:
                try:
                    os.sched_setaffinity(proc.pid, set(spec.cpus))
                except ProcessLookupError:
                    pass               # died at once: failed() reports it
        for child in self.children:
            child.reader = threading.Thread(target=self._read, args=(child,), name=f'out-{child.name}',
                                            daemon=True)
            child.reader.start()
        return self

    def _read(self, child):
        for line in child.proc.stdout:
            line = line.rstrip('\n')
            child.tail.append(line)
            if self.echo is not None:
                self.echo(f'[{child.name}] {line}')

    def failed(self):
        """The first child that died (non-zero, a signal, or any exit when its spec does not allow one)."""
        for child in self.children:
            code = child.proc.poll()
            if code is not None and (code != 0 or not child.spec.exit_ok):
                return child
        return None

    def running(self):
        return [c for c in self.children if c.proc.poll() is None]

    def stop(self, timeout=5.0, term_timeout=2.0):
        """SIGINT every child (cameras first, the planner last), wait, then SIGTERM, then SIGKILL.

        Returns {name: description of its end}.
        """
        order = {'camera': 0, 'container': 1, 'planner': 2}
        for sig, wait_s in ((signal.SIGINT, timeout), (signal.SIGTERM, term_timeout), (signal.SIGKILL, 2.0)):
            alive = sorted(self.running(), key=lambda c: order.get(c.spec.role, 1))
            if not alive:
                break
            for child in alive:
                try:
                    child.proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            for child in alive:
                try:
                    child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for child in self.children:
            if child.reader is not None:
                child.reader.join(timeout=1.0)
        return {c.name: c.describe_exit() for c in self.children}
