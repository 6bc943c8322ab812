"""The process layout of a running pipeline: which nodes, with which parameters, CPUs and environment.

One function decides it, :func:`build_layout`; ``launch/pipeline.launch.py`` maps its result onto launch_ros
``Node`` actions and ``pipeit bringup`` onto subprocesses, so both start the same graph. Containers are per
cluster, so the topology is resolved here, at launch: 'auto' becomes this machine's clusters.

Transports: every process gets our Fast DDS profile (``pipeit_ros/data/fastdds_profiles.xml``, see
:mod:`pipeit_ros.app.dds_profile`): shared memory plus UDPv4, the segment 32 MiB for the camera's frames and
8 MiB for the planner and the containers, which publish only reliable samples. With Fast DDS' default transports a
640x480 best-effort frame was lost (0 of 150 arrived); shared-memory-only builtin transports moved them, but
such participants neither discover nor are discovered by default ones, so no ``ros2`` command and no plain
rclpy client saw the graph. The profile keeps UDP discovery: any ROS client sees the nodes, and a default
reader still gets our large samples over shared memory (the writer's transports decide).

Parameters come from a ROS parameter file (``config/pipeline.yaml``): a section per node name
(``pipeit_planner``, ``pipeit_camera``, ``pipeit_container`` — applied to every container — and
``pipeit_container_<cluster>`` for one of them), plus ``/**`` for all; a key may carry a namespace
(``/robot/pipeit_planner``), which is ignored here (the layout's ``namespace`` applies to all nodes).
"""
from dataclasses import dataclass, field
import os
import re

import yaml

from pipeit_ros import paths
from pipeit_ros.app.dds_profile import dds_profile_env
from pipeit_ros.app.planner_state import PARAM_SPECS, check_value
from pipeit_ros.app.wire import topics
from pipeit_ros.app.wire.plan_msg import new_graph_id
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import topology as topology_mod
from pipeit_ros.yamlfile import read_yaml

PACKAGE = paths.PACKAGE
PLANNER, CONTAINER, CAMERA = topics.PLANNER, topics.CONTAINER, topics.CAMERA
_FLOAT_PARAMS = {CAMERA: {'rate_hz'}}
GRAPH_PARAM = 'graph_id'       # the planner's and the containers' parameter naming their graph
ROS_NODE_PARAMS = {'use_sim_time', 'start_type_description_service'}   # every rclpy node has these


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the layout (one node; a container hosts its stage nodes itself)."""

    name: str                      # node name, unique in the layout
    executable: str                # console script of the package (lib/pipeit_ros/<executable>)
    role: str                      # planner, container or camera
    parameters: dict = field(default_factory=dict)
    cpus: tuple | None = None      # CPUs the process is pinned to; None: not pinned
    env: dict = field(default_factory=dict)          # added to the inherited environment
    remappings: dict = field(default_factory=dict)   # topic remappings (from: to)
    namespace: str = ''
    exit_ok: bool = False          # exiting 0 is a normal end (the camera after `count` frames)
    package: str = PACKAGE

    def ros_args(self, params_file=None):
        """The ``--ros-args`` part of the command line (parameters through a file: typed, any value)."""
        args = ['--ros-args', '-r', f'__node:={self.name}']
        if self.namespace:
            args += ['-r', f'__ns:=/{self.namespace.strip("/")}']
        for src, dst in self.remappings.items():
            args += ['-r', f'{src}:={dst}']
        if params_file:
            args += ['--params-file', os.fspath(params_file)]
        return args


def node_name(text):
    """A valid ROS node name from a cluster name (clusters may hold '.' and '-')."""
    return re.sub(r'[^A-Za-z0-9_]', '_', text)


def default_params_file():
    """config/pipeline.yaml of the source tree, of a pip install's share/ or of the ament index; else None."""
    candidates = [os.path.join(d, 'pipeline.yaml') for d in paths.share_dirs('config')]
    return next((c for c in candidates if os.path.isfile(c)), None)


def load_params_file(path):
    """{node name: {parameter: value}} from a ROS 2 parameter file; PipeitError naming the file otherwise."""

    if path is None:
        return {}
    data = read_yaml(path, 'parameter file') or {}
    if not isinstance(data, dict):
        raise PipeitError(f'{path}: a parameter file maps node names to {{ros__parameters: ...}}')
    out = {}
    for key, section in data.items():
        if not isinstance(section, dict) or set(section) != {'ros__parameters'} \
                or not isinstance(section['ros__parameters'], dict):
            raise PipeitError(f'{path}: {key}: expected exactly one key ros__parameters holding a mapping')
        name = '/**' if key == '/**' else str(key).rstrip('/').rsplit('/', 1)[-1]
        out.setdefault(name, {}).update(section['ros__parameters'])
    return out


def section(params, role, name=None):
    """Parameters for one node: '/**', then its role's section, then its own name's section."""
    merged = dict(params.get('/**', {}))
    merged.update(params.get(role, {}))
    if name and name != role:
        merged.update(params.get(name, {}))
    return merged


def planner_parameters(values, where='planner parameters'):
    """Check planner parameters by name and value and give float parameters float values (a YAML ``50``
    for a double parameter would make the node refuse to start)."""

    out = {}
    for name, value in values.items():
        spec = PARAM_SPECS.get(name)
        if name in ROS_NODE_PARAMS or name.startswith('qos_overrides.'):
            out[name] = value
            continue
        if spec is None:
            raise PipeitError(f'{where}: unknown planner parameter {name!r} (known: {", ".join(PARAM_SPECS)})')
        if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        reason = check_value(name, value)
        if reason:
            raise PipeitError(f'{where}: {reason}')
        out[name] = value
    return out


def build_layout(params, topology, single_container=False, with_camera=None, *, model=None,
                 image_topic=None, namespace='', input_shape=None, graph_id=None):
    """The processes of a pipeline: the planner, one container per cluster (or one for all with
    ``single_container``), and a camera when ``with_camera`` names a source ('pattern', a video, a folder).

    ``params``: :func:`load_params_file`'s dict. ``topology``: a Topology, a spec ('auto', a YAML path, a
    shipped name) or None for the planner section's ``topology`` (default 'auto'). ``model``, ``input_shape``
    (text such as '1x3x480x640') and ``image_topic`` override the parameter file. The planner and the containers
    get one ``graph_id`` (default a new one, pipeit_ros.app.wire.plan_msg.new_graph_id): containers take plans only
    from their own graph's planner.
    """

    planner = section(params, PLANNER)
    graph_id = graph_id or new_graph_id()
    if topology is None:
        topology = planner.get('topology', 'auto')
    if isinstance(topology, str):
        planner['topology'] = topology
        topology = topology_mod.resolve(topology)
    else:
        planner['topology'] = _topology_spec(topology)
    if model:
        planner['model_path'] = os.path.abspath(model) if os.path.isfile(model) else model
    if input_shape:
        planner['input_shape'] = input_shape if isinstance(input_shape, str) else 'x'.join(map(str, input_shape))
    if single_container:         # every cut in one process: the plan is predicted without hops between containers
        planner['containers'] = 'one'
    specs = [ProcessSpec(name=PLANNER, executable=PLANNER, role='planner',
                         parameters={**planner_parameters(planner), GRAPH_PARAM: graph_id},
                         env=dds_profile_env('planner'),
                         namespace=namespace)]

    if single_container:
        groups = [(CONTAINER, '*', topology.cpus)]
    else:
        groups = [(f'{CONTAINER}_{node_name(c.name)}', c.name, c.cpus) for c in topology.clusters]
    for name, cluster, cpus in groups:
        values = section(params, CONTAINER, name)
        values['cluster'] = cluster
        values['topology'] = planner['topology']        # the container pins itself to its cluster's CPUs
        values[GRAPH_PARAM] = graph_id
        if image_topic:
            values['image_topic'] = image_topic
        specs.append(ProcessSpec(name=name, executable=CONTAINER, role='container', parameters=values,
                                 cpus=tuple(cpus), env=dds_profile_env('container'), namespace=namespace))

    if with_camera:
        values = section(params, CAMERA)
        values['source'] = with_camera if with_camera == 'pattern' else os.path.abspath(with_camera)
        values.update({k: float(values[k]) for k in _FLOAT_PARAMS[CAMERA] if isinstance(values.get(k), int)})
        topic = image_topic or section(params, CONTAINER).get('image_topic')
        remap = {'image_raw': topic} if topic and topic != 'image_raw' else {}
        specs.append(ProcessSpec(name=CAMERA, executable=CAMERA, role='camera', parameters=values,
                                 env=dds_profile_env('camera'), remappings=remap, namespace=namespace, exit_ok=True))
    return specs


def _topology_spec(topology):
    """The spec string a planner resolves to the same topology: its YAML file, else 'auto'."""
    source = getattr(topology, 'source', '') or ''
    if source.startswith('yaml:'):
        return source[len('yaml:'):]
    if source.startswith('sysfs:') and source != 'sysfs:/sys':
        return source[len('sysfs:'):]
    return 'auto'


def write_params_file(spec, path):
    """Write one process's parameters as a ROS 2 parameter file (``/**`` section) and return the path."""

    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump({'/**': {'ros__parameters': dict(spec.parameters)}}, f, sort_keys=True)
    return path


def taskset_prefix(cpus):
    """``taskset -c 0,1`` for launch_ros' ``prefix=`` (None when not pinned)."""
    if not cpus:
        return None
    return 'taskset -c ' + ','.join(str(c) for c in cpus)
