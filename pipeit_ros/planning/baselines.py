"""The plans a user would run instead of a pipeline, expressed as plans so the same engine measures them.

- ``ort_all_cores``: one session, intra-op threads = every CPU of the topology, nothing pinned — onnxruntime's
  own placement, what people do today.
- ``best_cluster``: one session pinned to the fastest cluster's cores.
- ``data_parallel_cluster``: one full-model replica per cluster (each with that cluster's cores). A stage has one
  thread count, so when the clusters differ in size every replica gets gcd(cluster sizes) cores and a cluster
  holds several replicas; plan.notes says so.
- ``data_parallel_core``: one single-thread replica per core.
Data-parallel replicas pull frames from one shared queue (a fast replica takes more) and outputs are reordered.
"""
from functools import reduce
from math import gcd

from pipeit_ros.plan import Plan, Stage

NAMES = ('ort_all_cores', 'best_cluster', 'data_parallel_cluster', 'data_parallel_core')


def _plan(graph, topology, name, stage, notes=None):
    return Plan(stages=(stage,), model_hash=graph.model_hash, topology_fingerprint=topology.fingerprint(),
                search=name, name=name, notes=notes or {})


def baselines(graph, topology):
    """{name: Plan} for every baseline in :data:`NAMES` order."""
    last = len(graph.layers) - 1
    every = '+'.join(c.name for c in topology.clusters)
    cpus = topology.cpus
    fastest = topology.clusters[0]
    chunk = reduce(gcd, (c.size for c in topology.clusters))
    by_cluster = tuple(cpu for c in topology.clusters for cpu in c.cpus)
    notes = {}
    if any(c.size != chunk for c in topology.clusters):
        notes['replicas'] = (f'clusters differ in size ({", ".join(f"{c.name} {c.size}" for c in topology.clusters)})'
                             f': {len(by_cluster) // chunk} replicas of {chunk} core(s)')
    return {
        'ort_all_cores': _plan(graph, topology, 'ort_all_cores', Stage(
            0, last, every, cpus, threads=len(cpus), replicas=1, pinned=False)),
        'best_cluster': _plan(graph, topology, 'best_cluster', Stage(
            0, last, fastest.name, fastest.cpus, threads=fastest.size, replicas=1)),
        'data_parallel_cluster': _plan(graph, topology, 'data_parallel_cluster', Stage(
            0, last, every, by_cluster, threads=chunk, replicas=len(by_cluster) // chunk), notes),
        'data_parallel_core': _plan(graph, topology, 'data_parallel_core', Stage(
            0, last, every, by_cluster, threads=1, replicas=len(by_cluster))),
    }
