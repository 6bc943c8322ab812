"""How long a user waits: from ``pipeit bringup`` to the first result, and from ``ros2 param set`` on the
planner to the first result of the new plan (the README's two start-up figures).

    python tools/startbench tiny --topology emulated-2x1 --set stages=0-6@c0,7-8@c1 --runs 3

Each run starts ``pipeit bringup --with-camera pattern`` as a child process on its own ROS domain, takes the
results in this process, sets the parameter through the planner's parameter service (what ``ros2 param set``
calls) once results flow (again, while the planner refuses it because a container the plan needs has not
reported yet; the figure counts from the accepted set), and stops the bringup with Ctrl-C. The new plan's first result is the first one that
says it is of the new generation (JSON results), or, with vision_msgs results that carry no generation, the
first one that arrives after a container reported running the new generation. The planner's own time to plan is
part of both figures (a cached profile makes it short: run once to warm the cache first).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from std_msgs.msg import String

from pipeit_ros.app.wire import topics
from pipeit_ros.ros import messages
from pipeit_ros.testing import harness

NOT_HEARD = 'which no running container hosts'   # pipeit_ros.app.handoff.check_runnable: the container may start later


class _Watch(Node):
    """Arrival times of the results, of each plan generation and of containers running a generation."""

    def __init__(self, context):
        super().__init__('pipeit_startbench', context=context)
        self.results = []           # (monotonic, generation or None)
        self.running = {}           # generation -> monotonic of the first 'running' status
        self.create_subscription(messages.classification_type(), topics.CLASSIFICATION, self._on_result,
                                 messages.RESULT_QOS)
        self.create_subscription(String, topics.STATUS, self._on_status, messages.STATUS_QOS)

    def _on_result(self, msg):
        self.results.append((time.monotonic(), messages.classification_dict(msg).get('generation')))

    def _on_status(self, msg):
        s = json.loads(msg.data)
        if s.get('state') == 'running':
            self.running.setdefault(s['generation'], time.monotonic())

    def first_of(self, generation, after):
        for t, gen in self.results:
            if t >= after and (gen == generation if gen is not None
                               else generation in self.running and t >= self.running[generation]):
                return t
        return None


def _spin_until(executor, predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        executor.spin_once(timeout_sec=0.05)
    return True


def one_run(args, domain_id):
    """(seconds to the first result, seconds from the parameter set to the new plan's first result)."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)   # default transports: bringup's nodes are visible to it
    watch = _Watch(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(watch)
    client = AsyncParameterClient(watch, 'pipeit_planner')
    cmd = [sys.executable, '-m', 'pipeit_ros', 'bringup', '--model', args.model, '--topology', args.topology,
           '--with-camera', 'pattern'] + (['--params-file', args.params_file] if args.params_file else [])
    env = {**os.environ, 'ROS_DOMAIN_ID': str(domain_id)}
    log = open(args.log, 'a+') if args.log else tempfile.TemporaryFile('w+')
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        if not _spin_until(executor, lambda: watch.results or proc.poll() is not None, args.timeout):
            raise RuntimeError(f'no result within {args.timeout:g} s')
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f'bringup exited with {proc.returncode}: {log.read()[-500:]}')
        first = watch.results[0][0] - t0
        _spin_until(executor, lambda: False, 1.0)              # let results flow on the first plan
        if not _spin_until(executor, client.services_are_ready, 10):
            raise RuntimeError('the planner\'s parameter services did not appear')
        name, value = args.set
        deadline = time.monotonic() + args.timeout
        while True:
            t_set = time.monotonic()
            future = client.set_parameters([Parameter(name, value=value)])
            _spin_until(executor, future.done, 10)
            result = future.result().results[0]
            if result.successful or NOT_HEARD not in result.reason or time.monotonic() > deadline:
                break
            _spin_until(executor, lambda: False, 0.5)   # a container the plan needs has not reported yet
        if not result.successful:
            raise RuntimeError(f'the planner refused {name}={value!r}: {result.reason}')
        if not _spin_until(executor, lambda: watch.first_of(2, t_set) is not None, args.timeout):
            raise RuntimeError(f'no result of the new plan within {args.timeout:g} s')
        return first, watch.first_of(2, t_set) - t_set
    finally:
        harness.stop_process(proc, timeout=15)
        log.close()
        executor.shutdown()
        watch.destroy_node()
        context.try_shutdown()


def _parameter(text):
    name, sep, value = text.partition('=')
    if not sep or not name:
        raise argparse.ArgumentTypeError(f'--set wants NAME=VALUE, got {text!r}')
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def main(argv=None):
    ap = argparse.ArgumentParser(prog='python tools/startbench', description=__doc__.split('\n\n')[0])
    ap.add_argument('model', help='ONNX model or zoo network name')
    ap.add_argument('--topology', default='auto')
    ap.add_argument('--params-file', help='passed on to pipeit bringup')
    ap.add_argument('--set', type=_parameter, default=('objective', 'latency'), metavar='NAME=VALUE',
                    help='the planner parameter to set once results flow (default objective=latency)')
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--timeout', type=float, default=120.0, metavar='S')
    ap.add_argument('--log', metavar='FILE', help='append the bringups\' output (every node\'s log) to FILE')
    args = ap.parse_args(argv)
    print(f'# {platform.node()}: {os.cpu_count()} CPUs; {args.runs} runs of pipeit bringup {args.model} '
          f'--topology {args.topology} --with-camera pattern, then {args.set[0]}={args.set[1]!r}; median of runs')
    starts, replans = [], []
    for i in range(args.runs):
        try:
            first, replan = one_run(args, harness.domain_id_for_process(base=i))
        except RuntimeError as exc:
            print(f'startbench: run {i + 1}: {exc}', file=sys.stderr)
            return 1
        starts.append(first)
        replans.append(replan)
        print(f'run {i + 1}: bringup -> first result {first:.2f} s; param set -> first result on the new plan '
              f'{replan:.2f} s', flush=True)
    print(f'median: {statistics.median(starts):.2f} s and {statistics.median(replans):.2f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
