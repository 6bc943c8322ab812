"""Topology YAML files, dict round trips, shipped names, validation errors and the CLI around them."""
import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest
import yaml

from pipeit_ros.errors import TopologyError
from pipeit_ros.hw.cpus import format_cpu_list, parse_cpu_list
from pipeit_ros.hw.topology import Cluster, Topology, check_cpus_here, load_yaml, resolve, shipped_topologies

# shipped name -> [(cluster, size)] fastest first
SHIPPED = {
    'hikey970': [('big', 4), ('little', 4)],
    'odroid-xu4': [('big', 4), ('little', 4)],
    'rk3588': [('big', 4), ('little', 4)],
    'raspberry-pi5': [('cpu', 4)],
    'snapdragon-8gen2': [('prime', 1), ('mid', 4), ('little', 3)],
    'i7-12700': [('p', 16), ('e', 4)],
    'emulated-2x1': [('c0', 1), ('c1', 1)],
    'emulated-biglittle-1+1': [('big', 1), ('little', 1)],
    'emulated-biglittle-4+4': [('big', 4), ('little', 4)],
    'emulated-biglittle-8+8': [('big', 8), ('little', 8)],
}
ALLOWED = set(os.sched_getaffinity(0))


@pytest.mark.parametrize('name', sorted(SHIPPED), ids=sorted(SHIPPED))
def test_shipped_topology_loads_on_paper(name):
    t = resolve(name, check_cpus=False)
    assert [(c.name, c.size) for c in t.clusters] == SHIPPED[name]
    assert t.name == name and t.source == f'yaml:{shipped_topologies()[name]}'
    assert t.clusters[0].capacity == 1.0
    assert t.has_emulation() == ('biglittle' in name)
    if t.has_emulation():
        assert t.cluster('little').emulate_share == 0.5 == t.cluster('little').capacity


def test_emulated_2x1_runs_here():
    if not {0, 1} <= ALLOWED:
        pytest.skip('needs CPUs 0 and 1')
    assert resolve('emulated-2x1').cpus == (0, 1)


def test_affinity_is_checked():
    if not {0, 1} <= ALLOWED:
        pytest.skip('needs CPUs 0 and 1')
    t = resolve('emulated-2x1')
    os.sched_setaffinity(0, {0})
    try:
        with pytest.raises(TopologyError, match=r"cpu 1 of cluster 'c1' is not in this process's CPU affinity"):
            check_cpus_here(t)
    finally:
        os.sched_setaffinity(0, ALLOWED)


# ---------------------------------------------------------------- round trips and fingerprint

clusters_st = st.lists(
    st.tuples(st.sets(st.integers(0, 63), min_size=1, max_size=6), st.sampled_from(['Cortex-A76', 'host', 'E-core']),
              st.floats(0.05, 1.0), st.one_of(st.none(), st.integers(100000, 5000000)),
              st.one_of(st.none(), st.floats(0.05, 0.95))),
    min_size=1, max_size=4)


@settings(max_examples=25, deadline=None, database=None)
@given(clusters_st)
def test_dict_and_yaml_round_trip(tmp_path_factory, raw):
    used, clusters = set(), []
    for i, (cpus, ctype, cap, freq, share) in enumerate(raw):
        cpus = cpus - used
        if cpus:
            used |= cpus
            clusters.append(Cluster(f'c{i}', tuple(cpus), ctype, round(cap, 4), freq, share))
    if not clusters:
        return
    top = max(c.capacity for c in clusters)
    clusters = [Cluster(c.name, c.cpus, c.core_type, round(c.capacity / top, 4), c.max_freq_khz, c.emulate_share)
                for c in clusters]
    t = Topology(clusters=tuple(clusters), name='t', source='test')
    assert Topology.from_dict(json.loads(json.dumps(t.to_dict())), source='test') == t
    path = tmp_path_factory.mktemp('rt') / 't.yaml'
    path.write_text(yaml.safe_dump(t.to_dict()))
    back = load_yaml(path, check_cpus=False)
    assert back.clusters == t.clusters and back.fingerprint() == t.fingerprint()
    assert [c.capacity for c in t.clusters] == sorted((c.capacity for c in t.clusters), reverse=True)


@settings(max_examples=50, deadline=None, database=None)
@given(st.sets(st.integers(0, 300), max_size=40))
def test_cpu_list_format_round_trip(cpus):
    assert parse_cpu_list(format_cpu_list(cpus)) == tuple(sorted(cpus))


def test_fingerprint_tracks_what_measurements_depend_on():
    base = resolve('rk3588', check_cpus=False)
    fp = base.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    same = Topology(clusters=tuple(Cluster(c.name, c.cpus, c.core_type, c.capacity, None) for c in base.clusters),
                    name='other', source='elsewhere')
    assert same.fingerprint() == fp  # name, source, max frequency do not matter
    big, little = base.clusters
    variants = {
        'cpus': Cluster('big', (4, 5, 6), big.core_type, 1.0, big.max_freq_khz),
        'core_type': Cluster('big', big.cpus, 'Cortex-A78', 1.0, big.max_freq_khz),
        'emulate': Cluster('big', big.cpus, big.core_type, 1.0, big.max_freq_khz, 0.5),
        'name': Cluster('fast', big.cpus, big.core_type, 1.0, big.max_freq_khz),
    }
    for what, changed in variants.items():
        assert Topology(clusters=(changed, little)).fingerprint() != fp, what


@pytest.mark.parametrize('clusters', [(), (Cluster('a', (0, 1), 'x', 1.0), Cluster('b', (1,), 'x', 1.0)),
                                      (Cluster('a', (0,), 'x', 1.0), Cluster('a', (1,), 'x', 1.0))],
                         ids=['none', 'overlap', 'same-name'])
def test_constructor_refuses_inconsistent_clusters(clusters):
    with pytest.raises(TopologyError):
        Topology(clusters=clusters)


def test_cluster_lookup_and_describe():
    t = resolve('emulated-biglittle-1+1', check_cpus=False)
    with pytest.raises(TopologyError, match=r"no cluster 'prime' .*\(clusters: big, little\)"):
        t.cluster('prime')
    lines = t.describe().splitlines()
    assert len(lines) == 3 and t.fingerprint() in lines[0]
    assert 'share 0.5' in lines[2] and 'share' not in lines[1]


def test_resolve_forms(tmp_path):
    assert resolve(None).source == 'sysfs:/sys' == resolve('auto').source
    path = shipped_topologies()['hikey970']
    assert resolve(path, check_cpus=False) == resolve('hikey970', check_cpus=False)
    fixture = os.path.join(os.path.dirname(__file__), 'fixtures', 'sysfs', 'rk3588')
    assert resolve(fixture).fingerprint() == resolve('rk3588', check_cpus=False).fingerprint()
    with pytest.raises(TopologyError, match=r"unknown topology 'nope'.*shipped: .*rk3588"):
        resolve('nope')


# ---------------------------------------------------------------- bad files -> exit 2, one line

BAD = {
    'overlap': ('clusters: [{name: a, cpus: 0-1}, {name: b, cpus: [1]}]', 'clusters overlap: cpu 1'),
    'empty-cluster': ('clusters: [{name: a, cpus: []}]', 'empty cluster'),
    'cpu-not-online': ('clusters: [{name: a, cpus: [4000]}]', 'cpu 4000 of cluster'),
    'unknown-top-key': ('clusters: [{name: a, cpus: [0]}]\nboard: x', 'unknown key(s) board'),
    'unknown-cluster-key': ('clusters: [{name: a, cpus: [0], speed: 2}]', 'unknown key(s) speed'),
    'unknown-emulate-key': ('clusters: [{name: a, cpus: [0], emulate: {load: 1}}]', 'emulate: unknown key(s) load'),
    'cpus-bad-type': ('clusters: [{name: a, cpus: fast}]', "bad CPU list 'fast'"),
    'cpus-repeated': ('clusters: [{name: a, cpus: [0, 0]}]', 'listed twice'),
    'capacity-string': ('clusters: [{name: a, cpus: [0], capacity: high}]', 'capacity must be a number'),
    'capacity-bool': ('clusters: [{name: a, cpus: [0], capacity: true}]', 'capacity must be a number'),
    'capacity-partial': ('clusters: [{name: a, cpus: [0], capacity: 1}, {name: b, cpus: [1]}]',
                         'capacity for every cluster or for none'),
    'freq-float': ('clusters: [{name: a, cpus: [0], max_freq_khz: 1.5}]', 'max_freq_khz must be a positive'),
    'share-zero': ('clusters: [{name: a, cpus: [0], emulate: {share: 0}}]', 'share must be in (0, 1]'),
    'share-above-1': ('clusters: [{name: a, cpus: [0], emulate: {share: 1.5}}]', 'share must be in (0, 1]'),
    'share-missing': ('clusters: [{name: a, cpus: [0], emulate: {}}]', 'emulate.share must be a number'),
    'emulate-not-map': ('clusters: [{name: a, cpus: [0], emulate: 0.5}]', 'emulate must be a mapping'),
    'name-with-plus': ('clusters: [{name: a+b, cpus: [0]}]', 'name must be a word'),
    'name-twice': ('clusters: [{name: a, cpus: [0]}, {name: a, cpus: [1]}]', "'a' is used twice"),
    'no-clusters': ('name: x', '"clusters" must be a non-empty list'),
    'clusters-empty': ('clusters: []', '"clusters" must be a non-empty list'),
    'not-a-mapping': ('- 1\n- 2', 'must be a mapping'),
    'cluster-not-a-mapping': ('clusters: [3]', 'clusters[0] must be a mapping'),
    'size-mismatch': ('clusters: [{name: a, cpus: [0, 1], size: 3}]', 'size 3 does not match its 2 cpus'),
    'cpus-not-union': ('cpus: [0, 1]\nclusters: [{name: a, cpus: [0]}]', 'is not the union'),
    'yaml-syntax': ('clusters: [{name: a, cpus: [0]}\n  oops: : :', 'not valid YAML: line'),
}


@pytest.mark.parametrize('case', sorted(BAD), ids=sorted(BAD))
def test_bad_topology_file_is_one_line_exit_2(run_cli, tmp_path, case):
    text, expected = BAD[case]
    path = tmp_path / f'{case}.yaml'
    path.write_text(text + '\n')
    argv = ['topology', '--config', path] + ([] if case == 'cpu-not-online' else ['--offline'])
    code, out, err = run_cli(*argv)
    assert (code, out) == (2, '')
    assert err.startswith(f'pipeit: error: {path}: ') and err.count('\n') == 1, err
    assert expected in err and 'Traceback' not in err


def test_missing_file_and_library_error(run_cli, tmp_path):
    with pytest.raises(TopologyError, match='cannot read topology'):
        load_yaml(tmp_path / 'absent.yaml')
    code, _, err = run_cli('topology', '--config', 'no-such-board')
    assert code == 2 and "unknown topology 'no-such-board'" in err


def test_offline_cpu_is_refused_without_offline_flag(run_cli):
    if len(ALLOWED) >= 8:
        pytest.skip('this machine has 8 CPUs')
    code, _, err = run_cli('topology', '--config', 'rk3588')
    assert code == 2 and "cluster 'big'" in err and '--offline' in err
    code, out, _ = run_cli('topology', '--config', 'rk3588', '--offline', '--json')
    assert code == 0 and json.loads(out)['name'] == 'rk3588'


def test_cli_list_and_human_output(run_cli):
    code, out, _ = run_cli('topology', '--list', '--json')
    listed = json.loads(out)
    assert code == 0 and set(SHIPPED) <= set(listed) and all(os.path.isfile(p) for p in listed.values())
    code, out, _ = run_cli('topology', '--list')
    assert code == 0 and len(out.splitlines()) == len(listed)
    code, out, err = run_cli('topology', '--config', 'emulated-biglittle-8+8', '--offline')
    assert code == 0 and out.splitlines()[2].split()[:2] == ['little', '8-15'] and 'emulation' in err
