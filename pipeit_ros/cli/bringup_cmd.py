"""Start the ROS 2 graph of a pipeline without ros2 launch: the planner, one container per cluster (or one for
all) and optionally a camera — the layout launch/pipeline.launch.py starts — as child processes, each pinned,
under the topology's emulation, with the package's Fast DDS profile. Prints live frames/s and latency once a
second. Ctrl-C, SIGTERM, SIGHUP (or --duration) stop every node: SIGINT, then SIGTERM, then SIGKILL, each with
a deadline. A node that dies stops the rest and ends the command with exit code 1 naming it (no restart). The
nodes end by themselves when bringup is killed (pipeit_ros.app.lifecycle); what a killed run left in /tmp and
/dev/shm is cleaned at the next start."""
import os
import shutil
import signal
import time

import rclpy
from rclpy.exceptions import InvalidNamespaceException, InvalidTopicNameException
from rclpy.executors import SingleThreadedExecutor
from rclpy.expand_topic_name import expand_topic_name
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_full_topic_name import validate_full_topic_name
from rclpy.validate_namespace import validate_namespace

from pipeit_ros.app import camera_frames, layout
from pipeit_ros.app.lifecycle import clean_leftovers, work_dir
from pipeit_ros.app.planner_state import resolve_model_path
from pipeit_ros.app.supervise import Supervisor
from pipeit_ros.cli import error
from pipeit_ros.cli.common import add_input_shape_flag, add_json_flag, check_number, note, print_json
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import topology as topology_mod
from pipeit_ros.hw.emulation import ACTIVE_ENV, emulated
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.ros.monitor import Monitor


def add_arguments(parser):
    parser.add_argument('--params-file', metavar='FILE',
                        help='ROS 2 parameter file (default: the package\'s config/pipeline.yaml)')
    parser.add_argument('--with-camera', metavar='SOURCE',
                        help="also start pipeit_camera on SOURCE: 'pattern', a video file or an image folder")
    parser.add_argument('--topology', default=None, metavar='FILE|NAME|auto',
                        help='topology YAML, shipped name or auto (default: the planner\'s parameter, else auto)')
    parser.add_argument('--model', metavar='FILE|NAME', help='ONNX model or zoo network name (e.g. tiny)')
    add_input_shape_flag(parser)
    parser.add_argument('--image-topic', metavar='TOPIC', help='image topic the first container subscribes to')
    parser.add_argument('--single-container', action='store_true',
                        help='one container process for all clusters instead of one per cluster')
    parser.add_argument('--namespace', default='', metavar='NS', help='ROS namespace of every node')
    parser.add_argument('--duration', type=float, metavar='S', help='stop by itself after S seconds')
    parser.add_argument('--stop-timeout', type=float, default=5.0, metavar='S',
                        help='seconds a node gets to exit after SIGINT before SIGTERM (default 5)')
    parser.add_argument('--quiet', action='store_true', help='do not echo the nodes\' output')
    add_json_flag(parser)


class _Stop(Exception):
    """SIGTERM: stop like Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Stop()


def run(args):
    check_number('--duration', args.duration, 0, 1e9, low_open=True)
    check_number('--stop-timeout', args.stop_timeout, 0, 3600)
    params = layout.load_params_file(args.params_file or layout.default_params_file())
    spec = args.topology or layout.section(params, layout.PLANNER).get('topology', 'auto')
    topology = topology_mod.resolve(spec)
    if args.image_topic is not None and not args.image_topic:
        raise PipeitError('--image-topic: give a topic name (or leave the option out)')
    specs = layout.build_layout(params, topology, args.single_container, args.with_camera, model=args.model,
                                image_topic=args.image_topic, namespace=args.namespace,
                                input_shape=args.input_shape)
    check_before_start(specs, args.namespace, args.with_camera)
    note(topology.describe())
    for s in specs:
        note(f'node {s.name}: cpus {list(s.cpus) if s.cpus else "any"}')
    clean_leftovers(log=note)
    # SIGTERM and SIGHUP (a closed terminal) stop like Ctrl-C; before the emulation chains its own handler
    previous = {sig: signal.signal(sig, _on_sigterm) for sig in (signal.SIGTERM, signal.SIGHUP)}
    workdir = work_dir('bringup')
    try:
        with emulated(topology, log=note):
            return _supervise(args, specs, workdir, topology)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_before_start(specs, namespace, camera):
    """What would make a node die at start, refused here (exit 2, one line) before any process starts: the
    namespace and topic names (rclpy's own validation), the model, the camera source."""
    absolute = '/' + namespace.strip('/') if namespace else '/'
    try:
        validate_namespace(absolute)
        for s in specs:
            topic = s.parameters.get('image_topic')
            if topic is not None:
                validate_full_topic_name(expand_topic_name(str(topic), s.name, absolute))
    except (InvalidNamespaceException, InvalidTopicNameException) as exc:
        lines = str(exc).splitlines()
        raise PipeitError(f'{lines[0].rstrip(":")} ({lines[1].strip() if len(lines) > 1 else ""})') from None
    except ValueError as exc:           # rcl's expand_topic_name: "..., at /path/expand_topic_name.c:73"
        raise PipeitError(str(exc).split(', at /')[0]) from None
    planner = next(s for s in specs if s.role == 'planner')
    graph_mod.load(resolve_model_path(planner.parameters.get('model_path', '')))
    if camera and camera != 'pattern':
        camera_frames.open_source(camera).close()


def _supervise(args, specs, workdir, topology):

    echo = None if args.quiet else note
    # Children run inside our emulation; a node that measures (the planner profiling) must not start a second
    # one on top (proposed contract: emulation.emulated() is a no-op when this names the same topology).
    extra = {ACTIVE_ENV: topology.fingerprint()} if topology.has_emulation() else {}
    supervisor = Supervisor(specs, workdir, echo=echo, extra_env=extra).start()
    os.environ.update(specs[0].env)         # our monitor talks to them with the same transports
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    graph_id = next((s.parameters.get(layout.GRAPH_PARAM, '') for s in specs if s.role == 'planner'), '')
    monitor = Monitor(args.namespace, graph_id=graph_id, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(monitor)
    dead, why = None, 'duration reached'
    start = time.monotonic()
    next_line = start + 1.0
    reported_stalls = 0
    # Ctrl-C / SIGTERM only set a flag while rclpy runs: an exception raised inside one of its calls comes out
    # as pybind11's RuntimeError ("Unable to convert call argument"), seen once in the tests
    stopping = []
    handlers = {sig: signal.signal(sig, lambda signum, frame: stopping.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            executor.spin_once(timeout_sec=0.1)
            if stopping:
                why = 'interrupted'
                break
            dead = supervisor.failed()
            if dead is not None:
                break
            now = time.monotonic()
            if args.duration is not None and now - start >= args.duration:
                break
            for name, message in monitor.stall_events[reported_stalls:]:
                note(f'container {name} {message}')
            reported_stalls = len(monitor.stall_events)
            if now >= next_line:
                note(f'[{now - start:5.0f} s] {monitor.line()}')
                next_line += 1.0
    except (KeyboardInterrupt, _Stop):
        why = 'interrupted'
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        ends = supervisor.stop(timeout=args.stop_timeout)
        summary = {**monitor.summary(), 'stopped': why if dead is None else f'{dead.name} died',
                   'nodes': ends}
        executor.shutdown(timeout_sec=1.0)
        monitor.destroy_node()
        context.try_shutdown()
    if args.json:
        print_json(summary)
    else:
        print(f'{summary["frames"]} results, {summary["fps"]:.1f} frames/s'
              + (f', latency p50 {summary["latency_p50_ms"]:.1f} ms p99 {summary["latency_p99_ms"]:.1f} ms'
                 if summary['latency_p50_ms'] is not None else '')
              + f'; stopped: {summary["stopped"]}')
    if dead is not None:
        if dead.proc.returncode == 2:   # it refused its input (parameters, another graph in the namespace): one line
            last = next((line for line in reversed(dead.tail) if line.strip()), '')
            return error(f'node {dead.name} {dead.describe_exit()}: {last.split("]: ", 1)[-1]}', 2)
        tail = '\n'.join(f'  {line}' for line in list(dead.tail)[-8:])
        return error(f'node {dead.name} {dead.describe_exit()}' + (f'; its last output:\n{tail}' if tail else ''), 1)
    return 0
