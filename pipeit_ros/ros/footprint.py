"""The memory of a container process, idle and hosting a stage, measured once per machine and cached.

A ROS layout runs a plan in several processes, each a container with its own Python, rclpy, Fast DDS
participant (and its shared-memory segment), OpenCV and onnxruntime (docs/memory.md). The planner's memory
figure for the layout is the sum over its containers (:meth:`pipeit_ros.cost.table.CostTable.for_processes`):
every container's idle figure, for each run of stages a container hosts (``app.handoff.hosted_runs``) what
hosting adds, the weights once (one memory-mapped file, so the containers' PSS splits them) and every stage
replica's session memory.

The probe (``python -m pipeit_ros.ros.footprint``, in a ROS domain of its own, so it hears no planner) is what
those containers are: a container (``cluster: '*'``) in the probe process, a camera (``pipeit_camera``: the
pattern at its default 640x480 rgb8, 30 Hz, as ``pipeit bringup --with-camera pattern`` starts it) in a second
process, both with the layout's Fast DDS profile (``app.layout.dds_profile_env``).

- **idle**: its PSS once the camera is heard, before any plan: a container that hosts no stage.
- **hosting**: then the probe publishes a plan that puts the zoo's ``tiny`` net, whole, in that container; once
  it has answered ``WARM_FRAMES`` camera frames (the stage node, the image subscription and its share of the
  camera's segment, pre-processing, frames in flight, the engine's threads, the code pages running touches),
  its PSS less what the memory model counts for ``tiny`` itself (weights and largest activation, 0.1 MiB).

The cache key holds the interpreter, the package, onnxruntime's version and the Fast DDS profile, which decide
both figures; the probe is bounded by ``TIMEOUT_S``.
"""
from dataclasses import dataclass
import json
import os
import subprocess
import sys
import time

import rclpy
from std_msgs.msg import String

from pipeit_ros import cache, paths
from pipeit_ros.app.layout import PROFILE_VARS, dds_profile_env
from pipeit_ros.app.wire import topics
from pipeit_ros.hw import memory as procmem
from pipeit_ros.ros import messages

PROBE_S = 2.0          # settling time before each reading
STEP_TIMEOUT_S = 30.0  # the camera heard / the frames answered, each within this
TIMEOUT_S = 90.0       # the whole probe
PROBE_FORMAT = 'idle+hosting'  # bump when what the probe runs changes, so an older measurement is not reused
WARM_MODEL = 'tiny'    # zoo network the hosting container runs
WARM_FRAMES = 30       # camera frames it answers before it is measured


@dataclass(frozen=True)
class ContainerMemory:
    """PSS in bytes of a container on this machine: ``idle_bytes`` hosting no stage, ``hosting_bytes`` hosting a
    run of stages, less what the memory model counts for the run's model (its weights, sessions and arenas)."""

    idle_bytes: float
    hosting_bytes: float

    @property
    def host_bytes(self):
        """What hosting a run of stages adds to an idle container."""
        return self.hosting_bytes - self.idle_bytes


def probe_env(environ=None):
    """The environment the probe runs in: the layout's Fast DDS profile, as every container of a layout gets it."""
    environ = dict(os.environ if environ is None else environ)
    return {**environ, **dds_profile_env(environ)}


def cache_path():
    env = probe_env()
    return cache.entry_path('memory', 'container', PROBE_FORMAT, sys.executable, paths.DATA_DIR,
                            *(env.get(v, '') for v in PROFILE_VARS))


def cached_memory():
    """The cached :class:`ContainerMemory`, None where there is none."""
    try:
        with open(cache_path(), encoding='utf-8') as f:
            d = json.load(f)
        return ContainerMemory(float(d['idle_pss_bytes']), float(d['hosting_pss_bytes'] - d['model_bytes']))
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
        done = subprocess.run([sys.executable, '-m', __name__], capture_output=True, text=True, timeout=TIMEOUT_S,
                              env=env, check=False)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        if done.returncode != 0 or 'error' in measured:
            raise ValueError(measured.get('error', f'exit {done.returncode}'))
    except (subprocess.SubprocessError, OSError, ValueError, IndexError, AttributeError) as exc:
        log(f'memory: the container probe failed ({type(exc).__name__}: {exc}); the layout figure counts one '
            'engine process')
        return None
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(measured, f)
    known = cached_memory()
    log(f'memory: a container holds {known.idle_bytes / procmem.MIB:.1f} MiB idle, '
        f'{known.hosting_bytes / procmem.MIB:.1f} MiB hosting a stage (PSS; measured once, cached as {path})')
    return known


# -- the probe process ---------------------------------------------------------------------------------------
def _wait(predicate, what):
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f'{what} within {STEP_TIMEOUT_S:g} s')
        time.sleep(0.05)


def _settled():
    time.sleep(PROBE_S)
    procmem.trim()
    return procmem.usage()


def _warm_plan():
    """(plan message text, model bytes the memory model counts) of :data:`WARM_MODEL`, whole, on one CPU."""
    # imported here: the idle reading above must hold what an idle container imports, no more
    from pipeit_ros.app.wire.plan_msg import default_preprocess, encode_plan_message  # noqa: PLC0415
    from pipeit_ros.hw.topology import resolve  # noqa: PLC0415
    from pipeit_ros.model import graph, zoo  # noqa: PLC0415
    from pipeit_ros.plan import Plan, Stage  # noqa: PLC0415
    g = graph.load(zoo.zoo_path(WARM_MODEL))
    topology = resolve('auto')
    cluster = topology.clusters[0]
    plan = Plan(stages=(Stage(0, len(g.layers) - 1, cluster.name, (cluster.cpus[0],)),))
    text = encode_plan_message(plan, generation=1, reason='start', model_path=g.path, model_hash=g.model_hash,
                               topology=topology, preprocess=default_preprocess(g.input_shape))
    return text, g.total_weight_bytes + max(layer.output_bytes for layer in g.layers)


def _probe(container, publisher):
    node = container.node
    _wait(lambda: node.count_publishers(node.settings.image_topic) > 0, 'no camera heard')
    idle = _settled()
    text, model = _warm_plan()
    publisher.publish(String(data=text))
    _wait(lambda: node.status_dict()['done'] >= WARM_FRAMES,
          f'the container did not answer {WARM_FRAMES} frames (state {node.state}, error {node.error})')
    hosting = _settled()
    return {'idle_pss_bytes': idle.pss, 'idle_rss_bytes': idle.rss, 'hosting_pss_bytes': hosting.pss,
            'hosting_rss_bytes': hosting.rss, 'model_bytes': model, 'frames': node.status_dict()['done']}


def main():
    """Print one JSON line: the readings (:func:`_probe`), or ``{'error': why}`` and exit 1."""
    from pipeit_ros.ros.container import Container  # noqa: PLC0415 - the planner imports this module, not it
    camera = subprocess.Popen([sys.executable, '-m', 'pipeit_ros.ros.camera_node'], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    rclpy.init()
    try:
        with Container(parameters={'cluster': '*'}) as container:
            node = rclpy.create_node('pipeit_footprint')
            try:
                result = _probe(container, node.create_publisher(String, topics.PLAN, messages.PLAN_QOS))
            except TimeoutError as exc:
                result = {'error': str(exc)}
            finally:
                node.destroy_node()
    finally:
        rclpy.try_shutdown()
        camera.terminate()
        try:
            camera.wait(timeout=10)
        except subprocess.TimeoutExpired:
            camera.kill()
            camera.wait()
    print(json.dumps(result))
    return 1 if 'error' in result else 0


if __name__ == '__main__':
    sys.exit(main())
