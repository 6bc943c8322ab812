"""The Fast DDS profile of each process of the layout: shared memory sized for what the process publishes.

The shipped profile (``pipeit_ros/data/fastdds_profiles.xml``) gives shared memory with a 32 MiB segment plus
UDPv4 and a 100 ms heartbeat (see the file). Fast DDS makes a participant's segment resident whole when it
starts (32.6 MiB of PSS in every process, docs/memory.md), and only a writer's own segment carries its samples:
a process needs a large one only for the large samples it publishes itself. So:

- the camera publishes best-effort frames, which a segment smaller than a frame loses: it gets the shipped
  profile;
- the planner and the containers publish only reliable samples (plans, statuses, tensors between containers,
  results): they get the same profile with a :data:`NODE_SEGMENT_BYTES` segment (:func:`profile_file` writes it
  once into the cache). A reliable sample larger than the segment still arrives whole; docs/architecture.md,
  "Transports and the Fast DDS profile", has what it costs.

A profile file of the user's (``FASTDDS_DEFAULT_PROFILES_FILE``) wins over both, as does
``RMW_FASTRTPS_USE_QOS_FROM_XML``.
"""
import os
import xml.etree.ElementTree as ET

from pipeit_ros import cache, paths

DDS_PROFILES = os.path.join(paths.DATA_DIR, 'fastdds_profiles.xml')
PROFILE_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
NODE_SEGMENT_BYTES = 8 * 1024 * 1024   # a cut's tensors up to 6.4 MB cross as fast as with 32 MiB; with 4 MiB a 6.4 MB
# message took twice as long (tools/hopcost.py, docs/architecture.md "Measured facts")
ROLE_SEGMENT_BYTES = {'camera': None, 'planner': NODE_SEGMENT_BYTES, 'container': NODE_SEGMENT_BYTES}
_NS = 'http://www.eprosima.com'


def profile_file(segment_bytes=None):
    """The shipped profile with the shared-memory segment set to ``segment_bytes`` (the largest message half of
    it, as in the shipped one: a message that fills the segment can stall, eProsima/Fast-DDS#1666). None: the
    shipped file itself. Derived files are written once into the cache, named by size and shipped text."""
    if segment_bytes is None:
        return DDS_PROFILES
    with open(DDS_PROFILES, encoding='utf-8') as f:
        text = f.read()
    path = os.path.join(cache.cache_dir('dds'), f'fastdds_profiles-shm{int(segment_bytes)}-{cache.key(text)}.xml')
    if os.path.isfile(path):
        return path
    ET.register_namespace('', _NS)
    root = ET.fromstring(text)
    shm = next(t for t in root.iter(f'{{{_NS}}}transport_descriptor') if t.findtext(f'{{{_NS}}}type') == 'SHM')
    shm.find(f'{{{_NS}}}segment_size').text = str(int(segment_bytes))
    shm.find(f'{{{_NS}}}maxMessageSize').text = str(int(segment_bytes) // 2)
    root.insert(0, ET.Comment(f' {DDS_PROFILES} with a {int(segment_bytes)}-byte shared-memory segment, for '
                              f'processes that publish only reliable samples (pipeit_ros.app.dds_profile) '))
    tmp = f'{path}.{os.getpid()}.tmp'
    ET.ElementTree(root).write(tmp, encoding='UTF-8', xml_declaration=True)
    os.replace(tmp, path)
    return path


def is_ours(path):
    """True for the shipped profile and the ones :func:`profile_file` derives from it."""
    return path == DDS_PROFILES or (os.path.basename(path).startswith('fastdds_profiles-shm')
                                    and os.path.dirname(path) == cache.cache_dir('dds'))


def dds_profile_env(role=None, environ=None):
    """The environment that gives a process of ``role`` ('planner', 'container', 'camera'; None: the shipped
    profile, for a process that hosts every role, as a test's) its profile; {} when the user named a profile of
    their own or asked rmw_fastrtps to take every QoS from XML (ours sets no QoS: the nodes' own, e.g. the plan
    topic's transient_local, would be lost). A variable naming one of ours is replaced, not kept."""
    environ = os.environ if environ is None else environ
    given = [v for v in PROFILE_VARS if environ.get(v)]
    if any(not is_ours(environ[v]) for v in given) or environ.get('RMW_FASTRTPS_USE_QOS_FROM_XML', '0') != '0':
        return {}
    path = profile_file(ROLE_SEGMENT_BYTES[role] if role else None)
    return {v: path for v in {PROFILE_VARS[0], *given}}


def dds_note(environ=None):
    """What a node logs at start about its Fast DDS profile: the one setting a camera driver of the user's must
    match for camera-sized best-effort frames to arrive."""
    environ = os.environ if environ is None else environ
    path = next((environ[v] for v in PROFILE_VARS if environ.get(v)), None)
    if path and is_ours(path):
        return (f'Fast DDS profile {path}: start a camera driver of your own with FASTDDS_DEFAULT_PROFILES_FILE='
                f'{DDS_PROFILES} (Fast DDS\' default transports lost 640x480 best-effort frames)')
    if path:
        return f'Fast DDS profile {path} (yours)'
    return ('Fast DDS default transports: camera-sized best-effort frames may be lost; see the README, '
            '"Fast DDS transports"')
