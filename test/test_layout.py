"""The process layout (pipeit_ros.app.layout) for every shipped topology, and the launch file that maps it."""
import os
import py_compile
import re
import sys
import types
import xml.etree.ElementTree as ET

import pytest
import yaml

from pipeit_ros.app import dds_profile, layout
from pipeit_ros.app.planner_state import PARAM_SPECS
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import topology as topology_mod

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_FILE = os.path.join(REPO, 'launch', 'pipeline.launch.py')
CONFIG = os.path.join(REPO, 'config', 'pipeline.yaml')
SHIPPED = topology_mod.shipped_topologies()
NODE_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


@pytest.fixture(scope='module')
def params():
    return layout.load_params_file(CONFIG)


def test_some_topologies_are_shipped():
    assert {'emulated-2x1', 'rk3588'} <= set(SHIPPED)


@pytest.mark.parametrize('name', sorted(SHIPPED), ids=sorted(SHIPPED))
def test_layout_per_cluster(params, name):
    topo = topology_mod.load_yaml(SHIPPED[name], check_cpus=False)
    specs = layout.build_layout(params, topo, with_camera='pattern')
    roles = [s.role for s in specs]
    assert roles == ['planner'] + ['container'] * len(topo.clusters) + ['camera']
    containers = specs[1:-1]
    assert [s.parameters['cluster'] for s in containers] == [c.name for c in topo.clusters]
    assert [s.cpus for s in containers] == [c.cpus for c in topo.clusters]
    assert sorted(cpu for s in containers for cpu in s.cpus) == sorted(topo.cpus)     # every CPU, once
    names = [s.name for s in specs]
    assert len(set(names)) == len(names) and all(NODE_NAME_RE.match(n) for n in names)
    assert all(s.env == dds_profile.dds_profile_env(s.role) for s in specs)
    planner = specs[0]
    assert planner.cpus is None and planner.parameters['topology'] == SHIPPED[name]
    assert topology_mod.load_yaml(planner.parameters['topology'], check_cpus=False) == topo
    assert all(c.parameters['image_topic'] == 'image_raw' for c in containers)   # pipeit_container section
    assert all(c.parameters['topology'] == SHIPPED[name] for c in containers)
    assert planner.parameters['containers'] == 'per_cluster'     # the planner predicts hops between them


@pytest.mark.parametrize('name', sorted(SHIPPED), ids=sorted(SHIPPED))
def test_layout_single_container(params, name):
    topo = topology_mod.load_yaml(SHIPPED[name], check_cpus=False)
    specs = layout.build_layout(params, topo, single_container=True)
    assert [s.role for s in specs] == ['planner', 'container']
    assert specs[1].name == 'pipeit_container' and specs[1].parameters['cluster'] == '*'
    assert specs[1].cpus == topo.cpus
    assert specs[0].parameters['containers'] == 'one'             # every cut in one process


def test_auto_topology_is_resolved_at_launch(params):
    here = topology_mod.resolve('auto')
    specs = layout.build_layout(params, 'auto')
    assert [s.cpus for s in specs if s.role == 'container'] == [c.cpus for c in here.clusters]
    assert specs[0].parameters['topology'] == 'auto'


def test_topology_defaults_to_the_planner_section(tmp_path):
    p = tmp_path / 'p.yaml'
    p.write_text('pipeit_planner:\n  ros__parameters:\n    topology: emulated-2x1\n')
    specs = layout.build_layout(layout.load_params_file(p), None)
    assert [s.parameters.get('cluster') for s in specs] == [None, 'c0', 'c1']
    assert specs[0].parameters['topology'] == 'emulated-2x1'


def test_overrides_and_sections(tmp_path):
    p = tmp_path / 'p.yaml'
    p.write_text(yaml.safe_dump({
        '/**': {'ros__parameters': {'use_sim_time': False}},
        'pipeit_planner': {'ros__parameters': {'max_latency_ms': 50, 'memory_mb': 200, 'topology': 'auto'}},
        'pipeit_container': {'ros__parameters': {'queue_size': 2, 'image_topic': 'cam/image'}},
        '/robot/pipeit_container_c1': {'ros__parameters': {'queue_size': 4}},
        'pipeit_camera': {'ros__parameters': {'rate_hz': 15, 'count': 10}},
    }))
    params = layout.load_params_file(p)
    specs = layout.build_layout(params, 'emulated-2x1', with_camera='pattern', model='tiny', namespace='robot')
    planner, c0, c1, camera = specs
    assert planner.parameters['max_latency_ms'] == 50.0 and isinstance(planner.parameters['max_latency_ms'], float)
    assert planner.parameters['memory_mb'] == 200 and planner.parameters['model_path'] == 'tiny'
    assert all(s.parameters['use_sim_time'] is False for s in specs)     # '/**' reaches every node
    assert (c0.parameters['queue_size'], c1.parameters['queue_size']) == (2, 4)
    assert camera.parameters['rate_hz'] == 15.0 and isinstance(camera.parameters['rate_hz'], float)
    assert camera.remappings == {'image_raw': 'cam/image'} and camera.exit_ok
    assert all(s.namespace == 'robot' for s in specs)
    args = camera.ros_args('/tmp/x.yaml')
    assert args == ['--ros-args', '-r', '__node:=pipeit_camera', '-r', '__ns:=/robot', '-r',
                    'image_raw:=cam/image', '--params-file', '/tmp/x.yaml']


def test_image_topic_argument_wins(params):
    specs = layout.build_layout(params, topology_mod.resolve('emulated-2x1'), with_camera='pattern',
                                image_topic='front/image')
    assert {s.parameters['image_topic'] for s in specs if s.role == 'container'} == {'front/image'}
    assert specs[-1].remappings == {'image_raw': 'front/image'}


@pytest.mark.parametrize('content,match', [
    ('pipeit_planner:\n  ros__parameters:\n    objective: fastest\n', 'objective must be one of'),
    ('pipeit_planner:\n  ros__parameters:\n    objectiv: latency\n', "unknown planner parameter 'objectiv'"),
    ('pipeit_planner:\n  ros__parameters:\n    adapt_threshold: -1.0\n', r'adapt_threshold must be in'),
    ('pipeit_planner:\n  objective: latency\n', 'expected exactly one key ros__parameters'),
    ('- a\n- b\n', 'maps node names'),
    ('a: [unclosed\n', 'not valid YAML'),
], ids=['bad-enum', 'unknown-name', 'out-of-range', 'no-ros-parameters', 'not-a-mapping', 'bad-yaml'])
def test_bad_parameter_files(tmp_path, content, match):
    p = tmp_path / 'bad.yaml'
    p.write_text(content)
    with pytest.raises(PipeitError, match=match):
        layout.build_layout(layout.load_params_file(p), 'emulated-2x1')


def test_missing_parameter_file():
    with pytest.raises(PipeitError, match='cannot read parameter file'):
        layout.load_params_file('/nonexistent/pipeline.yaml')


def test_shipped_config_matches_the_planner_parameters(params):
    planner = params['pipeit_planner']
    assert set(planner) == set(PARAM_SPECS)
    for name, value in planner.items():
        assert type(value) is type(PARAM_SPECS[name].default), name      # typed as the node declares it
    assert layout.default_params_file() == CONFIG


def test_params_file_round_trip(tmp_path, params):
    specs = layout.build_layout(params, 'emulated-2x1', with_camera='pattern')
    for spec in specs:
        path = layout.write_params_file(spec, tmp_path / f'{spec.name}.yaml')
        assert layout.load_params_file(path) == {'/**': spec.parameters}


@pytest.mark.parametrize('cpus,expected', [((0, 1, 4), 'taskset -c 0,1,4'), (None, None)], ids=['pinned', 'free'])
def test_taskset_prefix(cpus, expected):
    assert layout.taskset_prefix(cpus) == expected


# ------------------------------------------------------------------------------------------ launch file

def test_launch_file_compiles(tmp_path):
    py_compile.compile(LAUNCH_FILE, cfile=str(tmp_path / 'launch.pyc'), doraise=True)


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def test_launch_file_maps_the_layout(monkeypatch, params):
    """launch/launch_ros are not installable here: stand-ins that record their arguments check that every
    argument has a description and that each ProcessSpec becomes one Node with its parameters and CPUs."""
    given = {'model': 'tiny', 'topology': 'emulated-2x1', 'image_topic': '', 'params_file': CONFIG,
             'single_container': 'false', 'camera': 'pattern', 'namespace': '', 'input_shape': ''}

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return given[self.name]

    modules = {
        'launch': types.SimpleNamespace(LaunchDescription=lambda actions: actions),
        'launch.actions': types.SimpleNamespace(DeclareLaunchArgument=_Recorder, OpaqueFunction=_Recorder,
                                                Shutdown=_Recorder),
        'launch.substitutions': types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        'launch_ros': types.SimpleNamespace(),
        'launch_ros.actions': types.SimpleNamespace(Node=_Recorder),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    namespace = {}
    exec(compile(open(LAUNCH_FILE).read(), LAUNCH_FILE, 'exec'), namespace)   # noqa: S102 - our own file
    actions = namespace['generate_launch_description']()
    declared = [a for a in actions if 'default_value' in a.kwargs]
    assert {a.args[0] for a in declared} == set(given)
    assert all(a.kwargs['description'] for a in declared)
    nodes = actions[-1].kwargs['function'](None)
    expected = layout.build_layout(params, 'emulated-2x1', with_camera='pattern', model='tiny')
    assert [n.kwargs['name'] for n in nodes] == [s.name for s in expected]
    graphs = {n.kwargs['parameters'][0].pop(layout.GRAPH_PARAM, None) for n in nodes if n.kwargs['name'] != 'pipeit_camera'}
    assert len(graphs) == 1 and None not in graphs          # one graph id for the planner and the containers
    for s in expected:
        s.parameters.pop(layout.GRAPH_PARAM, None)
    assert [n.kwargs['parameters'] for n in nodes] == [[s.parameters] for s in expected]
    assert [n.kwargs['prefix'] for n in nodes] == [None, 'taskset -c 0', 'taskset -c 1', None]
    assert [n.kwargs['additional_env'] for n in nodes] == [s.env for s in expected]      # a profile per role
    assert [n.kwargs['exec_name'] for n in nodes] == [s.name for s in expected]     # [pipeit_container_c0-2]


def test_our_fastdds_profile_unless_the_user_has_one(params, monkeypatch):
    """Every process gets the shipped profile (shared memory next to UDP, whose discovery every default participant
    shares; a short heartbeat); the camera with its 32 MiB segment, the planner and the containers, which publish
    only reliable samples, the same profile with an 8 MiB one. A user's own profile file wins; ours in the
    environment (as the tests and dds_note's advice set it) is replaced by each role's."""
    for var in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE', 'RMW_FASTRTPS_USE_QOS_FROM_XML'):
        monkeypatch.delenv(var, raising=False)
    ns = {'d': 'http://www.eprosima.com'}

    def shm(path):
        root = ET.parse(path).getroot()
        t = next(t for t in root.iterfind('.//d:transport_descriptor', ns) if t.findtext('d:type', namespaces=ns) == 'SHM')
        return int(t.findtext('d:segment_size', namespaces=ns)), int(t.findtext('d:maxMessageSize', namespaces=ns))

    def without_shm_sizes(path):
        root = ET.parse(path).getroot()
        for t in root.iterfind('.//d:transport_descriptor', ns):
            for tag in ('segment_size', 'maxMessageSize'):
                for e in t.findall(f'd:{tag}', ns):
                    t.remove(e)
        return ET.tostring(root)

    for environ in ({}, {'FASTDDS_DEFAULT_PROFILES_FILE': dds_profile.DDS_PROFILES}):
        for var, value in environ.items():
            monkeypatch.setenv(var, value)
        specs = layout.build_layout(params, 'emulated-2x1', model='tiny', with_camera='pattern')
        files = {s.role: s.env['FASTDDS_DEFAULT_PROFILES_FILE'] for s in specs}
        assert all(set(s.env) == {'FASTDDS_DEFAULT_PROFILES_FILE'} for s in specs)
        assert files['camera'] == dds_profile.DDS_PROFILES and files['planner'] == files['container']
        assert shm(files['camera']) == (32 << 20, 16 << 20)
        assert shm(files['container']) == (dds_profile.NODE_SEGMENT_BYTES, dds_profile.NODE_SEGMENT_BYTES // 2)
        assert without_shm_sizes(files['container']) == without_shm_sizes(files['camera'])   # nothing else differs
    period = ET.parse(dds_profile.DDS_PROFILES).getroot().find('.//{http://www.eprosima.com}heartbeat_period')
    assert period is not None and int(period.findtext('{http://www.eprosima.com}nanosec')) == 100_000_000
    root = ET.parse(dds_profile.DDS_PROFILES).getroot()
    kinds = {t.findtext('d:transport_id', namespaces=ns): t.findtext('d:type', namespaces=ns)
             for t in root.iterfind('.//d:transport_descriptor', ns)}
    participant = root.find('.//d:participant', ns)
    used = [t.text for t in participant.iterfind('.//d:userTransports/d:transport_id', ns)]
    assert sorted(kinds[t] for t in used) == ['SHM', 'UDPv4']          # UDP: default participants discover us
    assert participant.findtext('.//d:useBuiltinTransports', namespaces=ns) == 'false'
    assert participant.get('is_default_profile') == 'true'
    monkeypatch.delenv('FASTDDS_DEFAULT_PROFILES_FILE')
    monkeypatch.setenv('FASTRTPS_DEFAULT_PROFILES_FILE', '/etc/robot/dds.xml')
    specs = layout.build_layout(params, 'emulated-2x1', model='tiny', with_camera='pattern')
    assert all(s.env == {} for s in specs)
    assert dds_profile.dds_profile_env(environ={'RMW_FASTRTPS_USE_QOS_FROM_XML': '1'}) == {}
    assert dds_profile.dds_profile_env(environ={'RMW_FASTRTPS_USE_QOS_FROM_XML': '0'}) == {
        'FASTDDS_DEFAULT_PROFILES_FILE': dds_profile.DDS_PROFILES}


def test_dds_note_names_the_profile_a_camera_driver_needs():
    for ours in (dds_profile.DDS_PROFILES, dds_profile.profile_file(dds_profile.NODE_SEGMENT_BYTES)):
        note = dds_profile.dds_note({'FASTDDS_DEFAULT_PROFILES_FILE': ours})
        assert f'FASTDDS_DEFAULT_PROFILES_FILE={dds_profile.DDS_PROFILES}' in note      # the camera's, large frames
    assert dds_profile.dds_note({'FASTRTPS_DEFAULT_PROFILES_FILE': '/etc/dds.xml'}) == \
        'Fast DDS profile /etc/dds.xml (yours)'
    assert 'default transports' in dds_profile.dds_note({})
    assert {'emulated-2x1', 'rk3588'} <= set(SHIPPED)
