"""The memory of a container process, idle and hosting a stage, measured once per machine and cached.

A ROS layout runs a plan in several processes, each a container with its own Python, rclpy, Fast DDS
participant (and its shared-memory segment), OpenCV and onnxruntime (docs/memory.md). The planner's memory
figure for the layout is the sum over its containers (:meth:`pipeit_ros.cost.table.CostTable.for_processes`):
every container's idle figure, for each run of stages a container hosts (``app.handoff.hosted_runs``) what
hosting adds, the weights once (one memory-mapped file, so the containers' PSS splits them) and every stage
replica's session memory.

The probe (``python -m pipeit_ros.ros.footprint``, in a ROS domain of its own) is a small graph of the processes
a layout has, each with its role's Fast DDS profile as a layout gives it (``app.dds_profile``): itself in the planner's place
(it imports the planner's planning core, so the libraries' pages the containers share with a planner are split as in
a layout: PSS divides a page among the processes that map it), a camera (``pipeit_camera``: the pattern at its
default 640x480 rgb8, 30 Hz, as ``pipeit bringup --with-camera pattern`` starts it) and two containers
(``pipeit_container``, ``cluster: '*'``), of graphs of their own:

- **idle**: one that the probe's plan is not for, so it hosts nothing;
- **hosting**: one that the plan puts the zoo's ``tiny`` net in, whole; once it has answered ``WARM_FRAMES``
  camera frames (the stage node, the image subscription and its share of the camera's segment,
  pre-processing, frames in flight, the engine's threads, the code pages running touches), its PSS less what
  the memory model counts for ``tiny`` itself (weights and largest activation, 0.1 MiB);
- **sleeping**: the script a container hosting nothing becomes (pipeit_ros.app.sleeper), once it answered a query.

Each is read ``PROBE_S`` later from ``/proc/PID/smaps_rollup``. The cache key holds the interpreter, the
package, onnxruntime's version and the Fast DDS profile, which decide the figures; the probe is bounded by
``TIMEOUT_S`` (each wait inside by ``STEP_TIMEOUT_S``).
"""
from dataclasses import dataclass
import json
import os
import signal
import subprocess
import sys
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from pipeit_ros import cache, paths
from pipeit_ros.app import sleeper
from pipeit_ros.app.dds_profile import PROFILE_VARS, dds_profile_env
from pipeit_ros.app.wire import topics
from pipeit_ros.hw import memory as procmem
from pipeit_ros.ros import messages

PROBE_S = 2.0          # settling time before each reading
STEP_TIMEOUT_S = 30.0  # the camera heard / the frames answered, each within this
TIMEOUT_S = 120.0      # the whole probe (its waits, then stopping its processes: 10 s each at most)
PROBE_FORMAT = 'idle+hosting+sleeping'  # bump when what the probe runs changes, so an older measurement is not reused
WARM_MODEL = 'tiny'    # zoo network the hosting container runs
WARM_FRAMES = 30       # camera frames it answers before it is measured
HOSTING, IDLE = 'pipeit_container', 'pipeit_container_idle'   # the probe's two containers
RESEND_S = 1.0         # the plan is sent again this often until the hosting container took it
GRAPHS = {HOSTING: 'footprint', IDLE: 'footprint-idle'}   # graph ids: the idle container ignores the plan and
#                                                          the hosting one the idle one's status


@dataclass(frozen=True)
class ContainerMemory:
    """PSS in bytes of a container on this machine: ``idle_bytes`` hosting no stage, ``hosting_bytes`` hosting a
    run of stages, less what the memory model counts for the run's model (its weights, sessions and arenas),
    ``sleeping_bytes`` asleep (pipeit_ros.app.sleeper)."""

    idle_bytes: float
    hosting_bytes: float
    sleeping_bytes: float

    @property
    def host_bytes(self):
        """What hosting a run of stages adds to an idle container."""
        return self.hosting_bytes - self.idle_bytes

    def figures(self, asleep):
        """(bytes of each container, bytes each run of stages adds), ``CostTable.for_processes``' figures: at the
        layout's peak (every container awake: before the plan's idle ones sleep, ``asleep`` False; the planner's
        figure), or ``asleep``, once they do (a run then wakes its container; an upper bound where one
        container hosts two runs, its waking counted twice)."""
        if not asleep:
            return self.idle_bytes, self.host_bytes
        return self.sleeping_bytes, self.hosting_bytes - self.sleeping_bytes


def probe_env(role='planner', environ=None):
    """The environment of the probe's process of ``role``: that role's Fast DDS profile, as a layout gives it."""
    environ = dict(os.environ if environ is None else environ)
    return {**environ, **dds_profile_env(role, environ)}


def cache_path():
    profiles = [probe_env(role).get(v, '') for role in ('planner', 'container', 'camera') for v in PROFILE_VARS]
    return cache.entry_path('memory', 'container', PROBE_FORMAT, sys.executable, paths.DATA_DIR, *profiles)


def cached_memory():
    """The cached :class:`ContainerMemory`, None where there is none."""
    try:
        with open(cache_path(), encoding='utf-8') as f:
            d = json.load(f)
        return ContainerMemory(float(d['idle_pss_bytes']), float(d['hosting_pss_bytes'] - d['model_bytes']),
                               float(d['sleeping_pss_bytes']))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def container_memory(log=print):
    """:class:`ContainerMemory` of this machine (measured once, then cached), or None where the probe fails
    (logged)."""
    known = cached_memory()
    if known is not None:
        return known
    path = cache_path()
    env = {**probe_env(), 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p),
           'ROS_DOMAIN_ID': str(100 + os.getpid() % 100)}
    try:
        # a session of its own: at the deadline the probe goes with the camera and containers it started
        proc = subprocess.Popen([sys.executable, '-m', __name__], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        lines = stdout.strip().splitlines()
        measured = json.loads(lines[-1]) if lines else {'error': (stderr.strip().splitlines() or ['no output'])[-1]}
        if proc.returncode != 0 or 'error' in measured:
            raise ValueError(measured.get('error', f'exit {proc.returncode}'))
    except (subprocess.SubprocessError, OSError, ValueError, IndexError, AttributeError) as exc:
        log(f'memory: the container probe failed ({type(exc).__name__}: {exc}); the layout figure counts one '
            'engine process')
        return None
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(measured, f)
    known = cached_memory()
    log(f'memory: a container holds {known.idle_bytes / procmem.MIB:.1f} MiB idle, '
        f'{known.hosting_bytes / procmem.MIB:.1f} MiB hosting a stage, {known.sleeping_bytes / procmem.MIB:.1f} MiB '
        f'asleep (PSS; measured once, cached as {path})')
    return known


# -- the probe process ---------------------------------------------------------------------------------------
class _Listener:
    """The probe's stand-in for the planner: publishes the plan, hears the containers' pipeit/status."""

    def __init__(self, node):
        self.node = node
        self.status = {}            # container name -> its last status dict
        self.plans = node.create_publisher(String, topics.PLAN, messages.PLAN_QOS)
        node.create_subscription(String, topics.STATUS, self._on_status, messages.STATUS_QOS)
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)

    def _on_status(self, msg):
        d = json.loads(msg.data)
        if d.get('graph') in GRAPHS.values():      # not a container of another graph on this domain
            self.status[d['container']] = d

    def wait(self, predicate, what, seconds=STEP_TIMEOUT_S):
        """Spin until ``predicate()``; TimeoutError saying ``what()`` after ``seconds``."""
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f'{what()} within {seconds:g} s')
            self.executor.spin_once(timeout_sec=0.05)

    def settle(self):
        deadline = time.monotonic() + PROBE_S
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)


def _warm_plan():
    """(plan message text, model bytes the memory model counts) of :data:`WARM_MODEL`, whole, on one CPU."""
    from pipeit_ros.app.wire.plan_msg import default_preprocess, encode_plan_message  # noqa: PLC0415
    from pipeit_ros.hw.topology import resolve  # noqa: PLC0415
    from pipeit_ros.model import graph, zoo  # noqa: PLC0415
    from pipeit_ros.plan import Plan, Stage  # noqa: PLC0415
    g = graph.load(zoo.zoo_path(WARM_MODEL))
    topology = resolve('auto')
    cluster = topology.clusters[0]
    plan = Plan(stages=(Stage(0, len(g.layers) - 1, cluster.name, (cluster.cpus[0],)),))
    text = encode_plan_message(plan, generation=1, reason='start', model_path=g.path, model_hash=g.model_hash,
                               topology=topology, preprocess=default_preprocess(g.input_shape),
                               graph=GRAPHS[HOSTING])
    return text, g.total_weight_bytes + max(layer.output_bytes for layer in g.layers)


def _spawn(module, role, *ros_args):
    return subprocess.Popen([sys.executable, '-m', module, '--ros-args', *ros_args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=probe_env(role))


def _stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _probe(listener, text):
    listener.wait(lambda: {HOSTING, IDLE} <= set(listener.status) and listener.node.count_publishers('image_raw'),
                  lambda: f'the camera and both containers not heard (containers heard: {sorted(listener.status)})')
    sent = [0.0]

    def answered():
        if listener.status[HOSTING]['generation'] == 0 and time.monotonic() - sent[0] > RESEND_S:
            listener.plans.publish(String(data=text))    # again, until the container took it
            sent[0] = time.monotonic()
        return listener.status[HOSTING]['done'] >= WARM_FRAMES
    listener.wait(answered, lambda: f'the container did not answer {WARM_FRAMES} frames ({listener.status[HOSTING]})')
    listener.settle()
    hosting, idle = (procmem.usage(listener.status[n]['pid']) for n in (HOSTING, IDLE))
    return {'idle_pss_bytes': idle.pss, 'idle_rss_bytes': idle.rss, 'hosting_pss_bytes': hosting.pss,
            'hosting_rss_bytes': hosting.rss, 'frames': listener.status[HOSTING]['done']}


def _probe_sleeper(listener):
    """The PSS of a sleeper (pipeit_ros.app.sleeper) serving a status, once it answered a query."""
    name = sleeper.socket_name(f'footprint-{os.getpid()}', 'probe')
    sock = sleeper.listen(name)
    proc = subprocess.Popen(sleeper.command(sock, {'state': sleeper.SLEEPING}, ['/bin/true'], parent=os.getpid()),
                            pass_fds=(sock.fileno(),))
    sock.close()
    try:
        listener.wait(lambda: sleeper.query(name) is not None, lambda: 'the sleeper did not answer')
        listener.settle()
        return {'sleeping_pss_bytes': procmem.usage(proc.pid).pss}
    finally:
        _stop(proc)


def main():
    """Print one JSON line: the readings (:func:`_probe`), or ``{'error': why}`` and exit 1."""
    # the planner's modules (its planning core: onnx, onnxruntime, OpenCV, numpy; rclpy above), mapped here as a
    # planner maps them: the libraries' pages the containers share with it count in their PSS as in a layout
    from pipeit_ros.app import planner_state  # noqa: F401, PLC0415
    text, model = _warm_plan()
    procs = [_spawn('pipeit_ros.ros.camera_node', 'camera')]
    procs += [_spawn('pipeit_ros.ros.container', 'container', '-r', f'__node:={name}', '-p', "cluster:='*'",
                     '-p', f'graph_id:={graph}') for name, graph in GRAPHS.items()]
    rclpy.init()
    try:
        node = rclpy.create_node('pipeit_footprint')
        try:
            listener = _Listener(node)
            result = {**_probe(listener, text), **_probe_sleeper(listener), 'model_bytes': model}
        except TimeoutError as exc:
            result = {'error': str(exc)}
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
        for proc in procs:
            _stop(proc)
    print(json.dumps(result))
    return 1 if 'error' in result else 0


if __name__ == '__main__':
    sys.exit(main())
