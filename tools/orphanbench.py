"""Orphans of killed launchers: how many nodes outlive a killed ``pipeit bringup`` (or ``ros2 launch``), and how
long each node takes to end once its parent is gone (target: every node within 2 s, pipeit_ros.app.lifecycle).

Each run starts a graph with its own camera on its own ROS domain, waits until results flow, kills the launcher
(``pipeit bringup``: SIGKILL and SIGHUP alternating; ``ros2 launch``: SIGTERM, which exits at once without
stopping its nodes, ros2/launch issue 666) and watches every node process it had started through a pidfd, so an
end is seen the moment it happens. Times are per node, from the launcher's death; a node that ends before its
launcher (bringup stops its nodes on SIGHUP) counts 0. A node still running 10 s after is an orphan (then killed)::

    python tools/orphanbench.py --runs 10                  # 10 bringups, SIGKILL / SIGHUP
    python tools/orphanbench.py --runs 0 --launch-runs 4   # 4 ros2 launch, SIGTERM (needs the ROS 2 tools)

Run under the bench lock for figures (see /work/helpers/COMMON.md); the load average is printed with them.
"""
import argparse
import json
import os
import re
import select
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.dirname(os.path.dirname(sys.executable))
ORPHAN_AFTER_S = 10.0
NODE_MARKERS = ('pipeit_ros.ros.', '/pipeit_planner', '/pipeit_container', '/pipeit_camera')


class Output:
    """A process' merged output, read on a thread (the pipe never fills)."""

    def __init__(self, proc):
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(line.rstrip('\n') for line in proc.stdout),
                         daemon=True).start()

    def text(self):
        return '\n'.join(self.lines)


def node_processes(pid):
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if any(m in ' '.join(p.cmdline()) for m in NODE_MARKERS):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_until(predicate, timeout, what, output):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f'timed out after {timeout:g} s waiting for {what}:\n{output.text()[-2000:]}')
        time.sleep(0.1)


class Lag:
    """The longest this process' 10 ms sleeps overslept while it ran: a machine that stalls every process
    (a loaded VM) shows here, not as the nodes' fault."""

    def __init__(self):
        self.worst, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            t = time.monotonic()
            time.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - t - 0.01)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.worst


def watch_ends(launcher, nodes, timeout):
    """Monotonic end times {pid: t} of the launcher and the nodes (pidfds: readable once a process has ended)."""
    fds = {}
    for pid in [launcher, *nodes]:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            pass
    ended = {pid: time.monotonic() for pid in [launcher, *nodes] if pid not in fds.values()}
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while fds and time.monotonic() < deadline:
        for fd, _ in poller.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            ended[fds.pop(fd)] = time.monotonic()
            poller.unregister(fd)
            os.close(fd)
    for fd in fds:
        os.close(fd)
    return ended


def one_run(kind, sig, domain, args):
    env = {**os.environ, 'ROS_DOMAIN_ID': str(domain), 'PYTHONUNBUFFERED': '1'}
    if kind == 'bringup':
        argv = [sys.executable, '-m', 'pipeit_ros', 'bringup', '--with-camera', 'pattern', '--model', args.model,
                '--topology', args.topology]
        ready = re.compile(r' [1-9]\d* results')
    else:
        env = {k: v for k, v in env.items() if not k.startswith(('FASTDDS_', 'FASTRTPS_', 'AMENT_', 'COLCON_'))}
        argv = ['bash', '-c', f'. {shlex.quote(os.path.join(VENV, "local_setup.sh"))} && '
                              f'. {shlex.quote(os.path.join(args.install, "setup.sh"))} && exec ros2 launch '
                              f'pipeit_ros pipeline.launch.py camera:=pattern model:={args.model} '
                              f'topology:={args.topology}']
        ready = re.compile(r'container\w*\]: generation 1 \(')      # a container took the first plan
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors='replace', start_new_session=True)
    out = Output(proc)
    try:
        wait_until(lambda: ready.search(out.text()) or proc.poll() is not None, 180, 'the graph to run', out)
        if proc.poll() is not None:
            raise RuntimeError(f'{kind} ended early:\n{out.text()[-2000:]}')
        wait_until(lambda: len(node_processes(proc.pid)) >= args.nodes, 60, f'{args.nodes} node processes', out)
        time.sleep(args.settle)         # frames flowing through every node
        nodes = [p.pid for p in node_processes(proc.pid)]
        lag = Lag()
        t_signal = time.monotonic()
        proc.send_signal(sig)
        ended = watch_ends(proc.pid, nodes, ORPHAN_AFTER_S + 30.0)
        worst_lag = lag.stop()
        proc.wait(30)
        t_parent = ended.get(proc.pid, time.monotonic())
        left = [pid for pid in nodes if pid not in ended or ended[pid] - t_parent > ORPHAN_AFTER_S]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        return {'kind': kind, 'signal': signal.Signals(sig).name, 'nodes': len(nodes), 'orphans': len(left),
                'bench_lag_s': worst_lag,
                'parent_end_s': t_parent - t_signal,
                'node_end_s': sorted(max(0.0, ended[pid] - t_parent) for pid in nodes if pid not in left),
                'node_end_from_signal_s': sorted(ended[pid] - t_signal for pid in nodes if pid not in left)}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def colcon_install(work):
    subprocess.run([os.path.join(VENV, 'bin', 'colcon'), '--log-base', os.path.join(work, 'log'), 'build',
                    '--base-paths', REPO, '--build-base', os.path.join(work, 'build'),
                    '--install-base', os.path.join(work, 'install'), '--event-handlers', 'console_direct-'],
                   cwd=work, check=True, capture_output=True, timeout=300)
    return os.path.join(work, 'install')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--runs', type=int, default=10, help='killed pipeit bringups (SIGKILL, SIGHUP alternating)')
    ap.add_argument('--launch-runs', type=int, default=0, help='killed ros2 launch (SIGTERM)')
    ap.add_argument('--install', help='a colcon install folder holding pipeit_ros (default: build one)')
    ap.add_argument('--model', default='tiny')
    ap.add_argument('--topology', default='emulated-2x1')
    ap.add_argument('--nodes', type=int, default=4, help='node processes of the graph (planner, containers, camera)')
    ap.add_argument('--settle', type=float, default=2.0, help='seconds of frames before the kill')
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args(argv)
    runs = []
    plan = [('bringup', signal.SIGKILL if i % 2 == 0 else signal.SIGHUP) for i in range(args.runs)]
    plan += [('launch', signal.SIGTERM)] * args.launch_runs
    with tempfile.TemporaryDirectory(prefix='orphanbench-') as work:
        if args.launch_runs and not args.install:
            args.install = colcon_install(work)
        for i, (kind, sig) in enumerate(plan):
            row = one_run(kind, sig, 1 + (os.getpid() + 7 * i) % 100, args)
            row['load'] = os.getloadavg()[0]
            runs.append(row)
            print(f'run {i + 1} {kind} {row["signal"]}: {row["nodes"]} nodes, {row["orphans"]} orphans, launcher '
                  f'ended {row["parent_end_s"]:.3f} s after the signal, nodes after it: '
                  + ' '.join(f'{t:.3f}' for t in row['node_end_s']) + ' s, after the signal: '
                  + ' '.join(f'{t:.3f}' for t in row['node_end_from_signal_s'])
                  + f' s (load {row["load"]:.1f}; this process overslept by up to {row["bench_lag_s"]:.3f} s)',
                  file=sys.stderr, flush=True)
    ends = [t for r in runs for t in r['node_end_s']]
    summary = {'runs': len(runs), 'nodes': sum(r['nodes'] for r in runs), 'orphans': sum(r['orphans'] for r in runs),
               'node_end_max_s': max(ends, default=None), 'node_end_median_s': statistics.median(ends) if ends else None,
               'over_2s': sum(t > 2.0 for t in ends), 'loadavg': os.getloadavg(), 'rows': runs}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f'{summary["runs"]} killed launchers, {summary["nodes"]} nodes: {summary["orphans"]} orphans; end after '
              f'the launcher died: median {summary["node_end_median_s"]:.3f} s, max {summary["node_end_max_s"]:.3f} s, '
              f'{summary["over_2s"]} over 2 s; load average {" ".join(f"{x:.2f}" for x in summary["loadavg"])}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
