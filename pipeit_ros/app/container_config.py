"""The container's parameters, checked without rclpy, and whole-process CPU pinning."""
from dataclasses import dataclass
import math
import os

from pipeit_ros.app.results import load_labels
from pipeit_ros.app.wire.plan_msg import INTERPOLATIONS
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import topology as topology_mod

ALL = '*'
POLICIES = ('drop_oldest', 'block')
IMAGE_QOS_CHOICES = ('sensor_data', 'reliable')


@dataclass
class ContainerSettings:
    """The container's parameters (defaults = config/pipeline.yaml's pipeit_container section)."""

    cluster: str = '*'
    topology: str = 'auto'
    image_topic: str = 'image_raw'
    image_qos: str = 'sensor_data'
    policy: str = 'drop_oldest'
    queue_size: int = 2
    labels_file: str = ''
    top_k: int = 5
    mean: list = None
    std: list = None
    interpolation: str = 'linear'
    replan_timeout_s: float = 10.0
    sleep_after_s: float = 10.0
    pin: bool = True
    graph_id: str = ''

    def check(self):
        if self.image_qos not in IMAGE_QOS_CHOICES:
            raise PipeitError(f'image_qos {self.image_qos!r} is not one of {", ".join(IMAGE_QOS_CHOICES)}')
        if self.policy not in POLICIES:
            raise PipeitError(f'policy {self.policy!r} is not one of {", ".join(POLICIES)}')
        if self.queue_size < 1:
            raise PipeitError(f'queue_size must be >= 1, got {self.queue_size}')
        if self.top_k < 0:
            raise PipeitError(f'top_k must be >= 0, got {self.top_k}')
        if self.interpolation not in INTERPOLATIONS:
            raise PipeitError(f'interpolation {self.interpolation!r} is not one of {", ".join(INTERPOLATIONS)}')
        if self.replan_timeout_s <= 0:
            raise PipeitError(f'replan_timeout_s must be > 0, got {self.replan_timeout_s}')
        if not (math.isfinite(self.sleep_after_s) and self.sleep_after_s >= 0):
            raise PipeitError(f'sleep_after_s must be a finite number >= 0 (0: never sleep), got {self.sleep_after_s}')
        self.cluster = self.cluster or ALL
        return self


DESCRIPTIONS = {
    'cluster': "cluster whose stages this container hosts; '*' (or '') hosts every stage (single container)",
    'topology': "'auto', a topology YAML or a shipped name; gives the cluster's CPUs to pin the process to",
    'image_topic': 'sensor_msgs/Image input of stage 0',
    'image_qos': "'sensor_data' (best effort) or 'reliable' (with policy block: no frame lost)",
    'policy': "'drop_oldest' keeps the latest frames when input outruns the pipeline; 'block' loses none",
    'queue_size': 'frames waiting before each stage',
    'labels_file': 'class labels, one per line, for pipeit/classification',
    'top_k': 'classes in each classification summary',
    'mean': 'per-channel mean override (default: from the plan message)',
    'std': 'per-channel std override (default: from the plan message)',
    'interpolation': "image resize: 'linear', 'area' or 'nearest'",
    'replan_timeout_s': 'longest wait without progress while draining a generation',
    'sleep_after_s': 'a container the running plan gives no stage sleeps after this long (its process becomes a '
                     '7 MiB script until a plan gives it a stage; app/sleeper.py); 0: never',
    'pin': "pin the process to the cluster's CPUs",
    'graph_id': "the graph this container belongs to: plans and peers of another graph are ignored ('': any)",
}
RUNTIME_PARAMETERS = ('top_k', 'labels_file')


def runtime_refusal(name, value):
    """Why the running container refuses ``name`` := ``value`` (``ros2 param set``), or None where it takes it."""
    if name not in RUNTIME_PARAMETERS:
        return f'{name} is read at start only; restart the container to change it'
    try:
        if name == 'top_k' and int(value) < 0:
            raise PipeitError(f'top_k must be >= 0, got {value}')
        if name == 'labels_file' and value:
            load_labels(value)
    except (PipeitError, TypeError, ValueError) as exc:
        return str(exc)
    return None


def cluster_cpus(settings):
    """The CPUs of ``settings.cluster`` in ``settings.topology`` (every CPU for '*'); 'auto' detects the clusters
    among every online CPU, since a launcher may have pinned this process already."""
    if settings.topology == 'auto':
        topology = topology_mod.detect(allowed_cpus=topology_mod.online_cpus())
    else:
        topology = topology_mod.resolve(settings.topology, check_cpus=False)
    if settings.cluster == ALL:
        return tuple(topology.cpus)
    try:
        return tuple(topology.cluster(settings.cluster).cpus)
    except (KeyError, PipeitError):
        names = ', '.join(c.name for c in topology.clusters)
        raise PipeitError(f'cluster {settings.cluster!r} is not in topology {topology.name} ({names})') from None


def pin_process(cpus):
    """Pin every thread of this process (and so the threads it starts later) to ``cpus``."""
    for tid in os.listdir('/proc/self/task'):
        try:
            os.sched_setaffinity(int(tid), set(cpus))
        except (ProcessLookupError, PermissionError):
            continue


