"""CPU topology: the clusters of a big.LITTLE-style CPU that Pipe-it gives its stages to.

A :class:`Topology` is a tuple of :class:`Cluster` s, fastest first. It comes from Linux sysfs
(:func:`detect`, see :mod:`pipeit_ros.hw.sysfs`) or from a YAML file (:func:`load_yaml`), which
overrides detection. Shipped files live in ``config/topologies/``; :func:`resolve` accepts a file, a
shipped name (``rk3588``, ``emulated-2x1``) or ``auto``.

YAML schema (every key but ``clusters`` and a cluster's ``name``/``cpus`` is optional)::

    name: rk3588
    description: free text
    clusters:
      - name: big                 # letters, digits, '_', '-', '.'; used in plans ('big+little')
        cpus: 4-7                 # cpulist string or list of ints
        core_type: Cortex-A76     # default 'host' (whatever CPU runs it)
        capacity: 1.0             # relative per-core speed; all clusters or none; rescaled so max = 1.0
        max_freq_khz: 2400000
        emulate: {share: 0.5}     # our work gets this fraction of each core (co-runners, hw/emulation.py)

Without capacities a cluster's capacity is its emulation share (1.0 without one). A share of 1.0 means
no emulation and is stored as ``None``. SMT siblings are ordinary logical CPUs of their core's cluster.
"""
from dataclasses import dataclass, field
import hashlib
import json
import math
import os
import re

from pipeit_ros import paths
from pipeit_ros.errors import TopologyError
from pipeit_ros.hw import sysfs
from pipeit_ros.hw.cluster import Cluster
from pipeit_ros.hw.cpus import CPU_LIMIT, format_cpu_list, parse_cpu_list
from pipeit_ros.yamlfile import read_yaml

CLUSTER_KEYS = {'name', 'cpus', 'core_type', 'capacity', 'max_freq_khz', 'emulate'}
DERIVED_CLUSTER_KEYS = {'size'}  # written by to_dict, ignored on reading
TOPOLOGY_KEYS = {'name', 'description', 'clusters'}
DERIVED_TOPOLOGY_KEYS = {'source', 'fingerprint', 'cpus'}
EMULATE_KEYS = {'share'}
_NAME_RE = re.compile(r'^[A-Za-z0-9_.-]+$')


def _speed_key(c):
    return (-c.capacity, -(c.max_freq_khz or 0), c.cpus[:1])


@dataclass(frozen=True)
class Topology:
    """The clusters of one machine (detected or described), fastest first."""

    clusters: tuple
    name: str = 'detected'
    source: str = ''
    description: str = field(default='', compare=False)

    def __post_init__(self):
        object.__setattr__(self, 'clusters', tuple(sorted(self.clusters, key=_speed_key)))
        names = [c.name for c in self.clusters]
        cpus = [cpu for c in self.clusters for cpu in c.cpus]
        if not self.clusters or not all(c.cpus for c in self.clusters):
            raise TopologyError(f'topology {self.name!r}: needs at least one cluster and no empty one')
        if len(set(names)) != len(names) or len(set(cpus)) != len(cpus):
            raise TopologyError(f'topology {self.name!r}: cluster names and CPUs must be unique ({names})')

    @property
    def cpus(self):
        return tuple(sorted(c for cl in self.clusters for c in cl.cpus))

    def cluster(self, name):
        for c in self.clusters:
            if c.name == name:
                return c
        known = ', '.join(c.name for c in self.clusters)
        raise TopologyError(f'no cluster {name!r} in topology {self.name!r} (clusters: {known})')

    def fingerprint(self):
        """16 hex digits that change when anything a measurement depends on changes (not name/source)."""
        parts = [[c.name, list(c.cpus), c.core_type, round(c.capacity, 4), c.emulate_share]
                 for c in self.clusters]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def has_emulation(self):
        return any(c.emulate_share is not None for c in self.clusters)

    def to_dict(self):
        d = {'name': self.name, 'source': self.source, 'fingerprint': self.fingerprint(),
             'cpus': list(self.cpus), 'clusters': [c.to_dict() for c in self.clusters]}
        if self.description:
            d['description'] = self.description
        return d

    @classmethod
    def from_dict(cls, d, source=''):
        """Inverse of :meth:`to_dict`; also the YAML schema. Bad input -> TopologyError naming `source`."""
        source = source or (d.get('source', '') if isinstance(d, dict) else '')
        return _from_mapping(d, where=source or 'topology', source=source)

    def describe(self):
        head = (f'topology {self.name}' + (f' ({self.source})' if self.source else '')
                + f': {len(self.cpus)} CPUs in {len(self.clusters)} cluster(s), fingerprint {self.fingerprint()}')
        rows = [(c.name, format_cpu_list(c.cpus), f'{c.size} x {c.core_type}') for c in self.clusters]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [head]
        for c, row in zip(self.clusters, rows):
            line = '  ' + '  '.join(f'{v:<{w}}' for v, w in zip(row, widths))
            line += f'  capacity {c.capacity:.3f}'
            line += f'  max {c.max_freq_khz / 1000:.0f} MHz' if c.max_freq_khz else '  max ? MHz'
            if c.emulate_share is not None:
                line += f'  emulated: our share {c.emulate_share:g} of each core'
            lines.append(line)
        return '\n'.join(lines)


# ---------------------------------------------------------------- validation (YAML and dicts)

def _number(value, what, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TopologyError(f'{where}: {what} must be a number, got {value!r}')
    if not math.isfinite(value):
        raise TopologyError(f'{where}: {what} must be a finite number, got {value!r}')
    return float(value)


def _cluster_from(raw, index, where):
    if not isinstance(raw, dict):
        raise TopologyError(f'{where}: clusters[{index}] must be a mapping, got {type(raw).__name__}')
    unknown = set(raw) - CLUSTER_KEYS - DERIVED_CLUSTER_KEYS
    if unknown:
        raise TopologyError(f'{where}: clusters[{index}]: unknown key(s) {", ".join(sorted(map(str, unknown)))}'
                            f' (allowed: {", ".join(sorted(CLUSTER_KEYS))})')
    name = raw.get('name')
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise TopologyError(f'{where}: clusters[{index}]: name must be a word of letters, digits, "_.-",'
                            f' got {name!r}')
    what = f'{where}: cluster {name!r}'
    cpus = raw.get('cpus')
    try:
        if isinstance(cpus, str):
            cpus = parse_cpu_list(cpus)
        elif isinstance(cpus, int) and not isinstance(cpus, bool):
            cpus = (cpus,)
        elif isinstance(cpus, list) and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < CPU_LIMIT
                                            for c in cpus):
            if len(set(cpus)) != len(cpus):
                raise ValueError(f'a CPU is listed twice in {cpus}')
            cpus = tuple(sorted(cpus))
        else:
            raise ValueError(f'cpus must be a CPU list like "0-3" or [0, 1], got {cpus!r}')
    except ValueError as exc:
        raise TopologyError(f'{what}: {exc}') from None
    if not cpus:
        raise TopologyError(f'{what}: empty cluster (no cpus)')
    core_type = raw.get('core_type', 'host')
    if not isinstance(core_type, str) or not core_type.strip():
        raise TopologyError(f'{what}: core_type must be a non-empty string, got {core_type!r}')
    capacity = raw.get('capacity')
    if capacity is not None and _number(capacity, 'capacity', what) <= 0:
        raise TopologyError(f'{what}: capacity must be > 0, got {capacity!r}')
    freq = raw.get('max_freq_khz')
    if freq is not None and (isinstance(freq, bool) or not isinstance(freq, int) or freq <= 0):
        raise TopologyError(f'{what}: max_freq_khz must be a positive integer, got {freq!r}')
    share = None
    emulate = raw.get('emulate')
    if emulate is not None:
        if not isinstance(emulate, dict):
            raise TopologyError(f'{what}: emulate must be a mapping like {{share: 0.5}}, got {emulate!r}')
        if set(emulate) - EMULATE_KEYS:
            raise TopologyError(f'{what}: emulate: unknown key(s) '
                                f'{", ".join(sorted(map(str, set(emulate) - EMULATE_KEYS)))} (allowed: share)')
        share = _number(emulate.get('share'), 'emulate.share', what)
        if not 0 < share <= 1:
            raise TopologyError(f'{what}: emulate.share must be in (0, 1], got {share:g}')
        share = None if share == 1 else share
    if 'size' in raw and raw['size'] != len(cpus):
        raise TopologyError(f'{what}: size {raw["size"]!r} does not match its {len(cpus)} cpus')
    return dict(name=name, cpus=cpus, core_type=core_type.strip(), capacity=capacity,
                max_freq_khz=freq, emulate_share=share)


def _from_mapping(data, where, source=''):
    if not isinstance(data, dict):
        raise TopologyError(f'{where}: a topology must be a mapping with "clusters", got {type(data).__name__}')
    unknown = set(data) - TOPOLOGY_KEYS - DERIVED_TOPOLOGY_KEYS
    if unknown:
        raise TopologyError(f'{where}: unknown key(s) {", ".join(sorted(map(str, unknown)))}'
                            f' (allowed: {", ".join(sorted(TOPOLOGY_KEYS))})')
    raw_clusters = data.get('clusters')
    if not isinstance(raw_clusters, list) or not raw_clusters:
        raise TopologyError(f'{where}: "clusters" must be a non-empty list, got {raw_clusters!r}')
    name = data.get('name', os.path.splitext(os.path.basename(where))[0] if source else 'topology')
    description = data.get('description', '')
    if not isinstance(name, str) or not name or not isinstance(description, str):
        raise TopologyError(f'{where}: name and description must be strings')
    specs = [_cluster_from(raw, i, where) for i, raw in enumerate(raw_clusters)]
    owner = {}
    for s in specs:
        for cpu in s['cpus']:
            if cpu in owner:
                raise TopologyError(f'{where}: clusters overlap: cpu {cpu} is in {owner[cpu]!r} and {s["name"]!r}')
            owner[cpu] = s['name']
    names = [s['name'] for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TopologyError(f'{where}: cluster name {dup[0]!r} is used twice')
    if 'cpus' in data and data['cpus'] != sorted(owner):
        raise TopologyError(f'{where}: "cpus" {data["cpus"]!r} is not the union of the clusters\' cpus')
    given = [s['capacity'] is not None for s in specs]
    if any(given) and not all(given):
        raise TopologyError(f'{where}: give capacity for every cluster or for none')
    if not any(given):
        for s in specs:
            s['capacity'] = s['emulate_share'] or 1.0
    top = max(s['capacity'] for s in specs)
    clusters = [Cluster(**{**s, 'capacity': round(s['capacity'] / top, 4)}) for s in specs]
    return Topology(clusters=tuple(clusters), name=name, source=source, description=description)


# ---------------------------------------------------------------- files, names, detection

def load_yaml(path, *, check_cpus=True):
    """Read a topology YAML file; with `check_cpus` its CPUs must be online here and allowed to us."""

    path = os.fspath(path)
    data = read_yaml(path, 'topology YAML file', TopologyError)
    topology = _from_mapping(data, where=path, source=f'yaml:{path}')
    if check_cpus:
        check_cpus_here(topology, where=path)
    return topology


def online_cpus(sysfs_root='/sys'):
    """CPUs the kernel has online (devices/system/cpu/online), or None when that file is missing."""
    try:
        with open(os.path.join(sysfs_root, 'devices/system/cpu/online'), encoding='ascii') as f:
            return parse_cpu_list(f.read())
    except (OSError, ValueError):
        return None


def check_cpus_here(topology, where=None):
    """Raise TopologyError unless every CPU of `topology` is online here and in our affinity mask."""
    where = where or topology.source or topology.name
    online = online_cpus('/sys')
    allowed = set(os.sched_getaffinity(0))
    for c in topology.clusters:
        for cpu in c.cpus:
            if online is not None and cpu not in online:
                raise TopologyError(f'{where}: cpu {cpu} of cluster {c.name!r} is not online here '
                                    f'(online: {format_cpu_list(online)})')
            if cpu not in allowed:
                raise TopologyError(f'{where}: cpu {cpu} of cluster {c.name!r} is not in this process\'s '
                                    f'CPU affinity (allowed: {format_cpu_list(allowed)})')


def detect(sysfs_root='/sys', allowed_cpus=None):
    """Clusters of the machine that `sysfs_root` describes. For the real '/sys' only the CPUs this
    process may use count (``os.sched_getaffinity``) unless `allowed_cpus` says otherwise; another root
    describes another machine, so all of its online CPUs count."""
    root = os.path.normpath(os.fspath(sysfs_root))
    if allowed_cpus is None and os.path.realpath(root) == '/sys':
        allowed_cpus = os.sched_getaffinity(0)
    clusters = sysfs.detect_clusters(root, None if allowed_cpus is None else set(allowed_cpus))
    return Topology(clusters=tuple(clusters), name='detected', source=f'sysfs:{root}')


def _search_dirs():
    return paths.share_dirs('config', 'topologies')


def shipped_topologies():
    """name -> path of every shipped topology YAML (first search directory wins)."""
    found = {}
    for d in _search_dirs():
        if os.path.isdir(d):
            for fname in sorted(os.listdir(d)):
                stem, ext = os.path.splitext(fname)
                if ext in ('.yaml', '.yml'):
                    found.setdefault(stem, os.path.join(d, fname))
    return dict(sorted(found.items()))


def resolve(spec='auto', *, check_cpus=True):
    """'auto'/None -> detect(); a file -> load_yaml; a sysfs-like directory -> detect(dir); a shipped name."""
    if spec is None or spec == 'auto':
        return detect()
    spec = os.fspath(spec)
    if os.path.isfile(spec):
        return load_yaml(spec, check_cpus=check_cpus)
    if os.path.isdir(spec):
        return detect(spec)
    shipped = shipped_topologies()
    if spec in shipped:
        return load_yaml(shipped[spec], check_cpus=check_cpus)
    raise TopologyError(f'unknown topology {spec!r}: not a file and not a shipped name '
                        f'(shipped: {", ".join(shipped) or "none found"})')
