"""Cluster detection from a Linux sysfs tree whose root is a parameter (tests use fixture trees).

What is read, all relative to the root (``/sys`` on the machine itself):
- ``devices/system/cpu/online``: which CPUs exist for us (offline ones are never reported);
- ``devices/system/cpu/modalias``: the architecture (``cpu:type:x86,...``, ``cpu:type:aarch64:...``);
- ``devices/system/cpu/cpuN/regs/identification/midr_el1``: ARM core names (Cortex-A55, X3, ...);
- ``devices/cpu_core/cpus`` + ``devices/cpu_atom/cpus``: Intel hybrid P-cores and E-cores;
- ``devices/system/cpu/cpufreq/policy*/related_cpus`` + ``cpuinfo_max_freq``: frequency domains;
- ``devices/system/cpu/cpuN/cpu_capacity``: the scheduler's relative capacity (1024 = fastest);
- ``devices/system/cpu/cpuN/topology/cluster_id`` (else ``physical_package_id``): groups without cpufreq.

Grouping: start from frequency domains (else cluster ids), then merge groups of the same core type
whose capacities agree within 5 % -- so RK3588's two A76 pairs are one cluster, while a 3.0 GHz A78
next to 2.6 GHz A78s stays apart (a pipeline stage runs at the speed of its slowest core). When
``cpu_capacity`` is missing, or equal everywhere although core types or clocks differ (kernels whose
device tree lacks ``capacity-dmips-mhz``), capacity is estimated as max frequency x a rough per-MHz
figure of the core type (:data:`PER_MHZ`); the profiler measures the truth later.
"""
import glob
import os

from pipeit_ros.errors import TopologyError
from pipeit_ros.hw.cluster import Cluster
from pipeit_ros.hw.cpus import parse_cpu_list

# MIDR implementer -> {part number -> core name}; Arm Ltd cores and the Qualcomm Kryo ids that still
# report Qualcomm as implementer (newer Snapdragons report Arm's ids).
MIDR_PARTS = {
    0x41: {0xc05: 'Cortex-A5', 0xc07: 'Cortex-A7', 0xc08: 'Cortex-A8', 0xc09: 'Cortex-A9',
           0xc0d: 'Cortex-A12', 0xc0e: 'Cortex-A17', 0xc0f: 'Cortex-A15', 0xd01: 'Cortex-A32',
           0xd03: 'Cortex-A53', 0xd04: 'Cortex-A35', 0xd05: 'Cortex-A55', 0xd06: 'Cortex-A65',
           0xd07: 'Cortex-A57', 0xd08: 'Cortex-A72', 0xd09: 'Cortex-A73', 0xd0a: 'Cortex-A75',
           0xd0b: 'Cortex-A76', 0xd0c: 'Neoverse-N1', 0xd0d: 'Cortex-A77', 0xd0e: 'Cortex-A76AE',
           0xd40: 'Neoverse-V1', 0xd41: 'Cortex-A78', 0xd42: 'Cortex-A78AE', 0xd44: 'Cortex-X1',
           0xd46: 'Cortex-A510', 0xd47: 'Cortex-A710', 0xd48: 'Cortex-X2', 0xd49: 'Neoverse-N2',
           0xd4b: 'Cortex-A78C', 0xd4c: 'Cortex-X1C', 0xd4d: 'Cortex-A715', 0xd4e: 'Cortex-X3',
           0xd4f: 'Neoverse-V2', 0xd80: 'Cortex-A520', 0xd81: 'Cortex-A720', 0xd82: 'Cortex-X4',
           0xd85: 'Cortex-X925', 0xd87: 'Cortex-A725'},
    0x51: {0x800: 'Kryo-2xx-Gold', 0x801: 'Kryo-2xx-Silver', 0x802: 'Kryo-3xx-Gold',
           0x803: 'Kryo-3xx-Silver', 0x804: 'Kryo-4xx-Gold', 0x805: 'Kryo-4xx-Silver'},
}

# Rough performance per MHz, relative to Cortex-A76, used only without a usable cpu_capacity. Ratios
# follow mainline device-tree capacity-dmips-mhz pairs (rk3588 A55:A76 = 530:1024, sm8550
# A510:A715:X3 = 1024:1792:1894, exynos5422 A7:A15 = 539:1024) and intel_pstate's hybrid scaling
# (P-core perf unit 78 vs E-core 100 per 100 MHz -> E-core ~0.78 of a P-core per MHz).
PER_MHZ = {
    'Cortex-A7': 0.3, 'Cortex-A15': 0.6, 'Cortex-A17': 0.65, 'Cortex-A35': 0.4, 'Cortex-A53': 0.48,
    'Cortex-A55': 0.52, 'Cortex-A57': 0.75, 'Cortex-A72': 0.8, 'Cortex-A73': 0.82, 'Cortex-A75': 0.9,
    'Cortex-A76': 1.0, 'Cortex-A77': 1.1, 'Cortex-A78': 1.2, 'Cortex-X1': 1.4, 'Cortex-A510': 0.6,
    'Cortex-A710': 1.05, 'Cortex-A715': 1.1, 'Cortex-X2': 1.45, 'Cortex-X3': 1.55, 'Cortex-A520': 0.62,
    'Cortex-A720': 1.2, 'Cortex-X4': 1.7, 'Kryo-2xx-Silver': 0.48, 'Kryo-2xx-Gold': 0.82,
    'Kryo-3xx-Silver': 0.52, 'Kryo-3xx-Gold': 0.9, 'Kryo-4xx-Silver': 0.52, 'Kryo-4xx-Gold': 1.0,
    'P-core': 1.0, 'E-core': 0.78,
}
MERGE_TOLERANCE = 0.05
CLUSTER_NAMES = {1: ('cpu',), 2: ('big', 'little'), 3: ('prime', 'mid', 'little'),
                 4: ('prime', 'big', 'mid', 'little')}
_ARCH_NAMES = {'x86': 'x86_64', 'aarch64': 'aarch64', 'arm': 'arm', 'riscv': 'riscv64'}


def _read(root, rel):
    """Stripped text of a sysfs file, or None when it is missing or unreadable (EBUSY on inactive
    cpufreq policies, EACCES, ...)."""
    try:
        with open(os.path.join(root, rel), encoding='ascii', errors='replace') as f:
            return f.read().strip()
    except OSError:
        return None


def _read_int(root, rel, base=10):
    text = _read(root, rel)
    try:
        return int(text, base) if text else None
    except ValueError:
        return None


def _cpu_list(root, rel):
    text = _read(root, rel)
    try:
        return set(parse_cpu_list(text)) if text is not None else None
    except ValueError:
        return None


def online(root):
    """Online CPUs: the `online` list, else every cpuN directory whose own `online` is not 0."""
    cpus = _cpu_list(root, 'devices/system/cpu/online')
    if cpus is not None:
        return cpus
    found = set()
    for path in glob.glob(os.path.join(root, 'devices/system/cpu/cpu[0-9]*')):
        n = os.path.basename(path)[3:]
        if n.isdigit() and _read(path, 'online') != '0':
            found.add(int(n))
    return found


def arch(root):
    """Architecture from devices/system/cpu/modalias ('cpu:type:x86,ven...' -> 'x86_64')."""
    text = _read(root, 'devices/system/cpu/modalias') or ''
    if text.startswith('cpu:type:'):
        kind = text[len('cpu:type:'):].split(',')[0].split(':')[0]
        return _ARCH_NAMES.get(kind, kind)
    return None


def core_name(root, cpu):
    """ARM core name from MIDR_EL1, or None where the file does not exist (x86, 32-bit ARM)."""
    midr = _read_int(root, f'devices/system/cpu/cpu{cpu}/regs/identification/midr_el1', 16)
    if midr is None:
        return None
    implementer, part = (midr >> 24) & 0xff, (midr >> 4) & 0xfff
    return MIDR_PARTS.get(implementer, {}).get(part, f'midr-{implementer:#04x}-{part:#05x}')


def freq_domains(root, cpus):
    """{cpu: (frozenset domain, max_freq_khz)} from cpufreq/policy*; CPUs without a policy are left out."""
    out = {}
    for policy in sorted(glob.glob(os.path.join(root, 'devices/system/cpu/cpufreq/policy[0-9]*'))):
        related = _cpu_list(policy, 'related_cpus') or _cpu_list(policy, 'affected_cpus')
        if not related:
            continue
        domain = frozenset(related & cpus)
        freq = _read_int(policy, 'cpuinfo_max_freq')
        for cpu in domain:
            out[cpu] = (domain, freq)
    return out


def _cluster_key(root, cpu):
    """Grouping key without cpufreq: cluster_id when the kernel knows one, else the package id."""
    topo = f'devices/system/cpu/cpu{cpu}/topology/'
    cid = _read_int(root, topo + 'cluster_id')
    if cid is not None and cid not in (-1, 0xffff, 0xffffffff):
        return ('cluster', cid)
    return ('package', _read_int(root, topo + 'physical_package_id'))


def _hybrid_types(root, cpus):
    """Intel hybrid: {cpu: 'P-core'/'E-core'} from the two core PMUs' cpu lists, or {}."""
    p_cores = _cpu_list(root, 'devices/cpu_core/cpus')
    e_cores = _cpu_list(root, 'devices/cpu_atom/cpus')
    if not p_cores or not e_cores:
        return {}
    return {cpu: 'P-core' if cpu in p_cores else 'E-core' for cpu in cpus if cpu in p_cores | e_cores}


def detect_clusters(root, allowed=None):
    """The clusters of the machine `root` describes, restricted to `allowed` CPUs when given."""
    cpus = online(root)
    if allowed is not None:
        cpus &= set(allowed)
    if not cpus:
        raise TopologyError(f'no usable CPUs found under {os.path.join(root, "devices/system/cpu")}'
                            + (' within the allowed CPUs' if allowed is not None else ''))
    hybrid = _hybrid_types(root, cpus)
    default_type = arch(root) or 'cpu'
    core_type = {cpu: hybrid.get(cpu) or core_name(root, cpu) or default_type for cpu in cpus}
    domains = freq_domains(root, cpus)
    raw_cap = {cpu: _read_int(root, f'devices/system/cpu/cpu{cpu}/cpu_capacity') for cpu in cpus}
    freq = {cpu: domains[cpu][1] if cpu in domains else None for cpu in cpus}

    # 1. groups: frequency domains (a domain may mix core types: SM8550's A715+A710), else cluster or
    #    package ids split by core type and kernel capacity (one DynamIQ cluster holds every core).
    groups = {}
    for cpu in sorted(cpus):
        key = (('domain', min(domains[cpu][0])) if cpu in domains else
               (_cluster_key(root, cpu), core_type[cpu], raw_cap[cpu]))
        groups.setdefault(key, []).append(cpu)

    # 2. per-CPU capacity: the kernel's when informative, else max freq x per-MHz figure.
    caps = set(raw_cap.values())
    differs = len(set(core_type.values())) > 1 or _spread(freq.values()) > MERGE_TOLERANCE
    if None in caps or (len(caps) == 1 and differs):
        cap = {cpu: (freq[cpu] or 1) * PER_MHZ.get(core_type[cpu], 1.0) for cpu in cpus}
    else:
        cap = {cpu: float(raw_cap[cpu]) for cpu in cpus}

    # 3. merge groups of the same core type and (within 5 %) the same capacity.
    merged = []  # [core type, reference capacity, cpus]
    described = [(_join(core_type[c] for c in g), min(cap[c] for c in g), g) for g in groups.values()]
    for ctype, gcap, g in sorted(described, key=lambda t: (-t[1], t[2][0])):
        for m in merged:
            if m[0] == ctype and abs(m[1] - gcap) <= MERGE_TOLERANCE * m[1]:
                m[2].extend(g)
                break
        else:
            merged.append([ctype, gcap, list(g)])

    top = max(min(cap[c] for c in m[2]) for m in merged)
    clusters = [Cluster(name='', cpus=tuple(m[2]), core_type=m[0],
                        capacity=round(min(cap[c] for c in m[2]) / top, 3),
                        max_freq_khz=min((freq[c] for c in m[2] if freq[c]), default=None))
                for m in merged]
    clusters.sort(key=lambda c: (-c.capacity, -(c.max_freq_khz or 0), c.cpus[0]))
    if hybrid:  # p, e; a second E-core tier (Meteor Lake's low-power E-cores) becomes e1
        names = [_numbered(c.core_type[0].lower() if c.core_type in ('P-core', 'E-core') else 'c',
                           [c2.core_type for c2 in clusters[:i]].count(c.core_type))
                 for i, c in enumerate(clusters)]
    else:
        names = CLUSTER_NAMES.get(len(clusters)) or [f'c{i}' for i in range(len(clusters))]
    return [Cluster(name=n, cpus=c.cpus, core_type=c.core_type, capacity=c.capacity,
                    max_freq_khz=c.max_freq_khz) for n, c in zip(names, clusters)]


def _numbered(prefix, index):
    return prefix if index == 0 else f'{prefix}{index}'


def _spread(values):
    values = [v for v in values if v]
    return (max(values) - min(values)) / max(values) if values else 0.0


def _join(names):
    """'Cortex-A715', 'Cortex-A710' -> 'Cortex-A715/Cortex-A710' (first-seen order, no repeats)."""
    return '/'.join(dict.fromkeys(names))
