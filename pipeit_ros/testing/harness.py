"""Running containers inside one process: a private ROS context, a frame source, a result collector.

For the integration tests and for ``rosbench`` (and the bringup's tests): everything here is a plain node
spinning on its own thread, so a test drives a whole camera -> containers -> results graph without launch::

    with RosGraph(domain_id=42) as g:
        g.planner().publish(plan_text)                      # pipeit_ros.app.wire.plan_msg.encode_plan_message(...)
        container = g.container({'cluster': '*', 'policy': 'block', 'image_qos': 'reliable'})
        src, out = g.source(), g.collector()
        wait(lambda: out.running(1), 20)
        src.send(image_msg(synthetic_frame(0), 'rgb8', stamp_ns))
        out.wait_for(1, 10)

Containers in other processes: :func:`spawn_container`; both sides use :func:`dds_env` (the shipped Fast DDS
profile; a tool comparing transports wraps its own context in :func:`dds_transport`).
"""
from contextlib import contextmanager
import json
import os
import subprocess
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, String

from pipeit_ros.app import dds_profile
from pipeit_ros.app.wire import tensor_msg as tensormsg
from pipeit_ros.app.wire import topics
from pipeit_ros.ros import messages
from pipeit_ros.ros.container import Container
from pipeit_ros.ros.planner_node import PlannerNode
from pipeit_ros.ros.pump import Pump, pumped_node
from pipeit_ros.ros.stage_node import NodeThread

# Fast DDS for every process of a test or bench graph started here: the package's shipped profile (shared memory
# with a 32 MiB segment + UDPv4, pipeit_ros.app.dds_profile.dds_profile_env), what users get, unless the environment
# names a profile of its own. A profile file is read once per process, at its first participant: set it before
# any context exists (test/conftest.py does, for the test process). ``transport`` instead names Fast DDS builtin
# transports (a FASTDDS_BUILTIN_TRANSPORTS value such as SHM) with no profile, for comparisons (tools/hopbench.py):
# a participant given both talked neither to shared-memory-only participants nor to default ones (measured: 0
# messages either way).


def dds_env(transport=None, environ=None):
    """``environ`` (default os.environ) as a new dict with the Fast DDS settings of a test graph: the shipped
    profile, or with ``transport`` builtin transports and no profile file."""
    env = dict(os.environ if environ is None else environ)
    if transport:
        for var in dds_profile.PROFILE_VARS:
            env.pop(var, None)
        env['FASTDDS_BUILTIN_TRANSPORTS'] = transport
    else:
        env.pop('FASTDDS_BUILTIN_TRANSPORTS', None)
        env.update(dds_profile.dds_profile_env(environ=env))
    return env


def domain_id_for_process(base=0):
    """A ROS domain id unlikely to collide with a teammate's test run (from the pid; 1..100)."""
    return 1 + (os.getpid() + base) % 100


def image_msg(pixels, encoding, stamp_ns, frame_id='camera', step=None):
    """sensor_msgs/Image from an HxWxC (or HxW) uint8 array; ``step`` > row bytes pads each row."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = pixels.shape[:2]
    row = int(np.prod(pixels.shape[1:]))
    step = row if step is None else step
    if step > row:
        padded = np.zeros((h, step), np.uint8)
        padded[:, :row] = pixels.reshape(h, row)
        pixels = padded
    msg = Image(height=h, width=w, encoding=encoding, step=step, is_bigendian=0)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.data = tensormsg.byte_array(pixels)
    return msg


def synthetic_frame(index, width=640, height=480, seed=0):
    """A deterministic colour frame (a moving gradient plus seeded noise) for frame number ``index``."""
    rng = np.random.default_rng(seed * 100003 + index)
    x = np.arange(width, dtype=np.uint16)[None, :, None]
    y = np.arange(height, dtype=np.uint16)[:, None, None]
    c = np.array([0, 85, 170], np.uint16)[None, None, :]
    base = (x + y + c + 7 * index) % 256
    noise = rng.integers(0, 32, (height, width, 3), dtype=np.uint16)
    return ((base + noise) % 256).astype(np.uint8)


class Source(Node):
    """Publishes frames on ``image_raw``; each call of :meth:`send` publishes one and returns its stamp."""

    def __init__(self, *, context, topic='image_raw', qos='reliable'):
        super().__init__('pipeit_test_source', context=context)
        self.pub = self.create_publisher(Image, topic, messages.image_qos(qos))

    def send(self, msg):
        self.pub.publish(msg)

    def wait_for_subscriber(self, timeout=10.0):
        return wait(lambda: self.pub.get_subscription_count() > 0, timeout)


class Collector(Node):
    """Keeps every ``pipeit/classification`` (as :func:`messages.classification_dict`), ``pipeit/detections``
    (as :func:`messages.detections_dict`) and ``pipeit/output`` (array) it receives.

    The results come in on node ``pipeit_test_results`` taken by :attr:`pump` (start it, RosGraph does): a
    benchmark's consumer shares the CPUs with the stages, so it should cost what a lean consumer costs."""

    def __init__(self, *, context, outputs=True):
        super().__init__('pipeit_test_collector', context=context)
        self.with_outputs = outputs     # False: no pipeit/output reader, so the container publishes none
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)      # notified on every classification
        self.classifications, self.outputs, self.statuses, self.detections = [], [], [], []
        self.diagnostics = {}       # status name -> latest {key: value}
        results = pumped_node('pipeit_test_results', context=context)
        subs = [results.create_subscription(messages.classification_type(), topics.CLASSIFICATION,
                                            self._on_class, messages.RESULT_QOS),
                results.create_subscription(messages.detections_type(), topics.DETECTIONS,
                                            self._on_detections, messages.RESULT_QOS)]
        if outputs:
            subs.append(results.create_subscription(Float32MultiArray, topics.OUTPUT, self._on_output,
                                                    messages.RESULT_QOS))
        self.pump = Pump(results, subs, name='pump.results')
        self.create_subscription(String, topics.STATUS, self._on_status, messages.STATUS_QOS)
        self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, 10)

    def _on_class(self, msg):
        d = messages.classification_dict(msg)
        d['t_arrival_ns'] = time.time_ns()
        with self.lock:
            self.classifications.append(d)
            self.arrived.notify_all()

    def _on_detections(self, msg):
        d = messages.detections_dict(msg)
        with self.lock:
            self.detections.append(d)

    def _on_output(self, msg):
        shape = tuple(d.size for d in msg.layout.dim)
        with self.lock:
            self.outputs.append(np.frombuffer(msg.data, np.float32).reshape(shape).copy())

    def _on_status(self, msg):
        with self.lock:
            self.statuses.append(json.loads(msg.data))

    def _on_diagnostics(self, msg):
        with self.lock:
            for st in msg.status:
                self.diagnostics[st.name] = {kv.key: kv.value for kv in st.values}

    def wait_for(self, n, timeout):
        return wait(lambda: len(self.classifications) >= n and (len(self.outputs) >= n or not self.with_outputs),
                    timeout)

    def running(self, generation):
        """True once a container reported state running for ``generation``."""
        with self.lock:
            return any(s['generation'] == generation and s['state'] == 'running' for s in self.statuses)


class Planner(Node):
    """Publishes plan message texts, latched like the planner node does."""

    def __init__(self, *, context):
        super().__init__('pipeit_test_planner', context=context)
        self.pub = self.create_publisher(String, topics.PLAN, messages.PLAN_QOS)

    def publish(self, text):
        self.pub.publish(String(data=text))



@contextmanager
def dds_transport(transport=None):
    """:func:`dds_env` for the contexts created inside (os.environ restored on exit); every process of one graph
    needs the same: camera-sized messages over Fast DDS' default transports are slow or lost. The profile only
    takes effect if no participant exists in this process yet."""
    saved = dict(os.environ)
    env = dds_env(transport)
    os.environ.update(env)
    for var in set(saved) - set(env):
        del os.environ[var]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def spawn_container(cluster, parameters, domain_id, *, name=None, capture=True, transport=None):
    """A ``pipeit_container`` process (``python -m pipeit_ros.ros.container``) on ``domain_id`` with
    :func:`dds_env` (``transport``: builtin transports instead of the shipped profile); parameters as
    ``-p name:=value`` (strings, numbers, booleans)."""
    name = name or ('pipeit_container' if cluster in ('*', '') else f'pipeit_container_{cluster}')
    args = [sys.executable, '-m', 'pipeit_ros.ros.container', '--ros-args', '-r', f'__node:={name}']
    for key, value in {'cluster': cluster, **parameters}.items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, str):        # values are YAML: quote, or '*' would be an alias
            value = "'" + value.replace("'", "''") + "'"
        args += ['-p', f'{key}:={value}']
    env = {**dds_env(transport), 'ROS_DOMAIN_ID': str(domain_id)}
    out = subprocess.PIPE if capture else None
    return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT if capture else None, text=True)


def stop_process(proc, timeout=10.0):
    """SIGINT, then kill after ``timeout``; returns the exit code (None if it had to be killed)."""
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None
    return proc.returncode


def wait(predicate, timeout, period=0.02):
    """Poll ``predicate`` until true or ``timeout`` seconds; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(period)
    return True


class RosGraph:
    """A private rclpy context (own domain id) with helper nodes and in-process containers; ``close()`` (or
    the with-block) stops all of them."""

    def __init__(self, domain_id=None):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id if domain_id is not None
                   else domain_id_for_process())
        self._threads, self._containers, self._planners = [], [], []

    def _spin(self, node):
        self._threads.append(NodeThread(node).start())
        return node

    def source(self, **kwargs):
        return self._spin(Source(context=self.context, **kwargs))

    def collector(self, **kwargs):
        col = self._spin(Collector(context=self.context, **kwargs))
        self._threads.append(col.pump.start())
        return col

    def planner(self):
        return self._spin(Planner(context=self.context))

    def planner_node(self, **parameters):
        """The real planner node (pipeit_ros.ros.planner_node) with these parameters, started."""
        node = PlannerNode(context=self.context,
                           parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        self._planners.append(self._spin(node))
        node.start()
        return node

    def container(self, parameters, **kwargs):
        c = Container(context=self.context, parameters=parameters, **kwargs).start()
        self._containers.append(c)
        return c

    def close(self):
        for c in self._containers:
            c.stop()
        for p in self._planners:
            p.stop()
        for t in self._threads:
            t.stop()
        self._containers, self._threads, self._planners = [], [], []
        rclpy.try_shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
