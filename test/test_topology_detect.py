"""Topology detection from sysfs: fixture trees of real chips, synthetic edge cases, this machine."""
import glob
import json
import os
from pathlib import Path

import pytest

from pipeit_ros.errors import TopologyError
from pipeit_ros.hw.topology import detect, load_yaml, shipped_topologies

SYSFS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'sysfs')

# tree -> [(name, cpus, core_type, max_freq_khz)], fastest first
EXPECTED = {
    'rk3588': [('big', [4, 5, 6, 7], 'Cortex-A76', 2400000),
               ('little', [0, 1, 2, 3], 'Cortex-A55', 1800000)],
    'hikey970': [('big', [4, 5, 6, 7], 'Cortex-A73', 2362000),
                 ('little', [0, 1, 2, 3], 'Cortex-A53', 1844000)],
    'snapdragon-8gen2': [('prime', [7], 'Cortex-X3', 3187200),
                         ('mid', [3, 4, 5, 6], 'Cortex-A715/Cortex-A710', 2803200),
                         ('little', [0, 1, 2], 'Cortex-A510', 2016000)],
    'alderlake-i7-12700': [('p', list(range(16)), 'P-core', 4800000),
                           ('e', [16, 17, 18, 19], 'E-core', 3600000)],
    'x86-i5-8250u-nosmt': [('cpu', [0, 1, 2, 3], 'x86_64', 3400000)],
}
# fixture tree -> shipped YAML describing the same chip (same fingerprint expected)
SAME_CHIP = {'rk3588': 'rk3588', 'hikey970': 'hikey970', 'snapdragon-8gen2': 'snapdragon-8gen2',
             'alderlake-i7-12700': 'i7-12700'}


@pytest.mark.parametrize('tree', sorted(EXPECTED), ids=sorted(EXPECTED))
def test_cli_detects_fixture_tree(run_cli, tree):
    code, out, err = run_cli('topology', '--sysfs-root', os.path.join(SYSFS, tree), '--json')
    assert code == 0, err
    data = json.loads(out)
    got = [(c['name'], c['cpus'], c['core_type'], c['max_freq_khz']) for c in data['clusters']]
    assert got == [tuple(e) for e in EXPECTED[tree]]
    caps = [c['capacity'] for c in data['clusters']]
    assert caps[0] == 1.0 and caps == sorted(caps, reverse=True)
    assert len(set(caps)) == len(caps), 'clusters of different speed must differ in capacity'
    assert data['source'].startswith('sysfs:') and len(data['fingerprint']) == 16


@pytest.mark.parametrize('tree', sorted(SAME_CHIP), ids=sorted(SAME_CHIP))
def test_shipped_yaml_matches_detection(tree):
    detected = detect(os.path.join(SYSFS, tree))
    shipped = load_yaml(shipped_topologies()[SAME_CHIP[tree]], check_cpus=False)
    assert [(c.name, c.cpus, c.core_type) for c in shipped.clusters] == \
           [(c.name, c.cpus, c.core_type) for c in detected.clusters]
    assert [c.capacity for c in shipped.clusters] == pytest.approx([c.capacity for c in detected.clusters],
                                                                   abs=0.002)


def test_other_root_ignores_this_process_affinity():
    # the fixture machine has 20 CPUs; this process may use far fewer, yet all are reported
    assert detect(os.path.join(SYSFS, 'alderlake-i7-12700')).cpus == tuple(range(20))


def test_allowed_cpus_filter_and_drop_empty_clusters():
    t = detect(os.path.join(SYSFS, 'snapdragon-8gen2'), allowed_cpus={0, 1, 3})
    assert [(c.name, c.cpus) for c in t.clusters] == [('big', (3,)), ('little', (0, 1))]


@pytest.mark.parametrize('root,allowed', [('does-not-exist', None), ('rk3588', set())],
                         ids=['missing', 'none-allowed'])
def test_no_cpus_is_a_topology_error(tmp_path, root, allowed):
    path = os.path.join(SYSFS, root) if root == 'rk3588' else str(tmp_path / root)
    with pytest.raises(TopologyError, match='no usable CPUs'):
        detect(path, allowed_cpus=allowed)


def test_cli_bad_sysfs_root_exits_2(run_cli, tmp_path):
    code, out, err = run_cli('topology', '--sysfs-root', tmp_path / 'nothing')
    assert code == 2 and out == ''
    assert err.startswith('pipeit: error: no usable CPUs') and err.count('\n') == 1


# ---------------------------------------------------------------- synthetic trees

def make_tree(root, cpus, *, midr=None, capacity=None, policies=(), online_list=True, offline=(), extra=None):
    """A minimal sysfs tree; policies: [(cpus, max_freq_khz)]; extra: {relative path: text}."""
    def put(rel, text):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'{text}\n')
    base = 'devices/system/cpu'
    if online_list:
        put(f'{base}/online', ','.join(map(str, cpus)))
    put(f'{base}/modalias', 'cpu:type:aarch64:feature:,0000,0001')
    for cpu in list(cpus) + list(offline):
        put(f'{base}/cpu{cpu}/online', '0' if cpu in offline else '1')
        if cpu in offline:
            continue
        put(f'{base}/cpu{cpu}/topology/physical_package_id', 0)
        if midr:
            put(f'{base}/cpu{cpu}/regs/identification/midr_el1', f'0x{midr[cpu]:016x}')
        if capacity:
            put(f'{base}/cpu{cpu}/cpu_capacity', capacity[cpu])
    for pcpus, freq in policies:
        put(f'{base}/cpufreq/policy{pcpus[0]}/related_cpus', ' '.join(map(str, pcpus)))
        put(f'{base}/cpufreq/policy{pcpus[0]}/cpuinfo_max_freq', freq)
    for rel, text in (extra or {}).items():
        put(rel, text)
    return str(root)


A53, A73, A78, A55 = 0x410fd034, 0x410fd092, 0x411fd410, 0x412fd050


def test_equal_cpu_capacity_with_different_cores_is_estimated(tmp_path):
    """Device trees without capacity-dmips-mhz give 1024 everywhere; core type x clock decides then."""
    root = make_tree(tmp_path, range(8), midr={c: A53 if c < 4 else A73 for c in range(8)},
                     capacity={c: 1024 for c in range(8)},
                     policies=[([0, 1, 2, 3], 1844000), ([4, 5, 6, 7], 2362000)])
    big, little = detect(root).clusters
    assert (big.name, big.core_type, little.core_type) == ('big', 'Cortex-A73', 'Cortex-A53')
    assert 0.2 < little.capacity < 0.8


def test_same_core_type_at_different_speeds_stays_apart(tmp_path):
    """Dimensity-1200-like: 1x A78 @ 3.0 GHz + 3x A78 @ 2.6 GHz + 4x A55 -> three clusters."""
    midr = {c: A55 if c < 4 else A78 for c in range(8)}
    root = make_tree(tmp_path, range(8), midr=midr, capacity={c: 290 if c < 4 else 887 if c < 7 else 1024
                                                              for c in range(8)},
                     policies=[([0, 1, 2, 3], 2000000), ([4, 5, 6], 2600000), ([7], 3000000)])
    assert [(c.name, c.cpus, c.core_type) for c in detect(root).clusters] == [
        ('prime', (7,), 'Cortex-A78'), ('mid', (4, 5, 6), 'Cortex-A78'), ('little', (0, 1, 2, 3), 'Cortex-A55')]


def test_without_online_list_or_cpufreq(tmp_path):
    """No `online` file: cpuN/online decides; no cpufreq: grouping by core type and capacity."""
    root = make_tree(tmp_path, [0, 1, 2], offline=[3], online_list=False,
                     midr={0: A53, 1: A53, 2: A73}, capacity={0: 446, 1: 446, 2: 1024})
    t = detect(root)
    assert [(c.name, c.cpus, c.max_freq_khz) for c in t.clusters] == [('big', (2,), None), ('little', (0, 1), None)]
    assert t.cluster('little').capacity == pytest.approx(446 / 1024, abs=1e-3)


def test_this_machine_is_one_cluster_of_our_affinity():
    t = detect()
    assert t.cpus == tuple(sorted(os.sched_getaffinity(0)))
    capacities = {Path(p).read_text() for p in glob.glob('/sys/devices/system/cpu/cpu[0-9]*/cpu_capacity')}
    heterogeneous = os.path.exists('/sys/devices/cpu_core') or len(capacities) > 1
    if heterogeneous:
        pytest.skip('this machine is heterogeneous')
    assert len(t.clusters) == 1 and t.clusters[0].capacity == 1.0
    assert t.source == 'sysfs:/sys'



def test_hybrid_with_low_power_e_cores(tmp_path):
    """Meteor-Lake-like: P-cores, E-cores and slower low-power E-cores (all in cpu_atom) -> p, e, e1."""
    root = make_tree(tmp_path, range(12), policies=[([c], 4800000 if c < 4 else 3800000 if c < 10 else 2500000)
                                                    for c in range(12)],
                     extra={'devices/cpu_core/cpus': '0-3', 'devices/cpu_atom/cpus': '4-11',
                            'devices/system/cpu/modalias': 'cpu:type:x86,ven0000fam0006mod00AA:feature:,0000'})
    assert [(c.name, c.cpus, c.core_type) for c in detect(root).clusters] == [
        ('p', (0, 1, 2, 3), 'P-core'), ('e', tuple(range(4, 10)), 'E-core'), ('e1', (10, 11), 'E-core')]
