"""What a given plan is predicted to do under a cost table: frames/s, latency (plain and saturated), memory and
each stage's time. The same model the search (:mod:`pipeit_ros.planning.dse`) optimises, for any plan: the
DSE's own, forced ones and the baselines."""
from dataclasses import replace

from pipeit_ros.engine.parts import frames_in_flight, reorder_width
from pipeit_ros.errors import PlanError
from pipeit_ros.hw.memory import MIB
from pipeit_ros.planning import saturated


def stage_segments(cost, stage, where='stage'):
    """(first, last) segment of a stage; PlanError when its layers do not start and end at segment ends."""
    try:
        fs, ls = cost.segment_of_layer(stage.first), cost.segment_of_layer(stage.last)
    except Exception as exc:  # noqa: BLE001 - PipeitError from the table: say which stage
        raise PlanError(f'{where}: {exc}') from None
    if cost.segments[fs][0] != stage.first or cost.segments[ls][1] != stage.last:
        raise PlanError(f'{where}: layers {stage.first}-{stage.last} do not start and end at segment '
                        f'boundaries of the cost table')
    return fs, ls


def replica_clusters(stage, topology=None, where='stage'):
    """The cluster of each replica of a stage; a stage over several clusters needs the topology."""
    names = stage.cluster.split('+')
    if len(names) == 1:
        return names * stage.replicas
    if topology is None:
        raise PlanError(f'{where} spans clusters {stage.cluster}: predicting it needs the topology')
    out = []
    for group in stage.replica_cpus():
        owner = [n for n in names if set(group) <= set(topology.cluster(n).cpus)]
        if not owner:
            raise PlanError(f'{where}: CPUs {list(group)} are not inside one of {stage.cluster}')
        out.append(owner[0])
    return out


def predict(plan, cost, topology=None):
    """(fps, latency_ms) of ``plan`` under ``cost``: the same model as the search, for any plan (baselines too).

    An unpinned stage over several clusters (the ``ort_all_cores`` baseline: onnxruntime places its threads
    itself, across clusters) is outside what per-cluster configurations can predict: (None, None). An unpinned
    stage inside one cluster is predicted as if pinned. ``topology`` is needed for stages spanning clusters.
    """
    times = replica_times(plan, cost, topology)
    if times is None:
        return None, None
    return 1000.0 / max(_period(t) for t in times), sum(max(t) for t in times)


def predict_saturated(plan, cost, topology=None):
    """The saturated latency (ms) of ``plan`` (:mod:`pipeit_ros.planning.saturated`), the figure
    ``objective='latency'`` minimises; None where :func:`predict` gives None."""
    times = replica_times(plan, cost, topology)
    if times is None:
        return None
    return saturated.latency([1.0 / _period(t) for t in times], [max(t) for t in times], [len(t) for t in times])


def _period(times):
    return 1.0 / sum(1.0 / max(t, 1e-9) for t in times)


def replica_times(plan, cost, topology=None):
    """Each stage's replica times (ms) under ``cost`` as the search counts them, or None for an unpinned stage
    over several clusters (see :func:`predict`)."""
    out = []
    cost = cost.for_groups(sum(s.replicas for s in plan.stages))
    for n, s in enumerate(plan.stages):
        where = f'stage {n} ({s.first}-{s.last}@{s.cluster})'
        if not s.pinned and '+' in s.cluster:
            return None
        fs, ls = stage_segments(cost, s, where)
        times = []
        for c in replica_clusters(s, topology, where):
            if (c, s.threads) not in cost.configs:
                raise PlanError(f'{where}: the cost table has no configuration {c}:{s.threads}')
            times.append(cost.stage_ms(fs, ls, c, s.threads, **hops(plan, n)))
        out.append(times)
    return out


def hops(plan, n):
    """{'cross_in', 'cross_out'}: whether stage ``n``'s input comes from / its output goes to a stage hosted
    by another cluster's container (counted by a table predicting ``containers='per_cluster'``)."""
    host = plan.stages[n].host_cluster
    return {'cross_in': n > 0 and plan.stages[n - 1].host_cluster != host,
            'cross_out': n + 1 < len(plan.stages) and plan.stages[n + 1].host_cluster != host}


def predict_memory(plan, cost, topology=None):
    """Bytes ``plan`` uses run in one process, the same model as the search (cost module docstring): the
    base (a ROS layout's: its containers', and ``host_bytes`` per run of stages one hosts), what a plan of its
    shape holds beyond that (build temporaries, and what its probe held beyond the model:
    ``CostTable.plan_shape_bytes``; the search bounds them by the larger shape's, except for plans of one
    stage), the weights of its segments once, each replica's session memory on its configuration. None for a
    stage without a configuration in the table (an unpinned stage over several clusters)."""
    groups = sum(s.replicas for s in plan.stages)
    total = (cost.base_bytes + cost.plan_shape_bytes(len(plan.stages), groups)
             + cost.host_bytes * cost.plan_runs(s.host_cluster for s in plan.stages))
    timed = cost.for_groups(groups)     # the times the search weighs a plan of this many groups with
    for n, s in enumerate(plan.stages):
        where = f'stage {n} ({s.first}-{s.last}@{s.cluster})'
        if not s.pinned and '+' in s.cluster:
            return None
        fs, ls = stage_segments(cost, s, where)
        private = cost.private_bytes(fs, ls)
        total += sum(cost.held_bytes[fs:ls + 1])
        clusters = replica_clusters(s, topology, where)
        for c in clusters:
            if (c, s.threads) not in cost.configs:
                return None
            total += private[cost.config_index(c, s.threads)]
        ms = [timed.stage_ms(fs, ls, c, s.threads, **hops(plan, n)) for c in clusters]
        total += cost.flight_bytes(ls, cost.frames_in_flight(ms), len(ms))
    return float(total)


def with_predictions(plan, cost, topology=None):
    """``plan`` with predicted fps/latency, per-stage predicted_ms (slowest replica), the last stage's reorder
    ``window`` where it is replicated,
    ``notes['memory_mib']`` (:func:`predict_memory`) and ``notes['saturated_latency_ms']``
    (:func:`predict_saturated`) filled in."""
    fps, lat = predict(plan, cost, topology)
    if fps is None:
        return plan
    notes = {**plan.notes, 'saturated_latency_ms': predict_saturated(plan, cost, topology)}
    mem = predict_memory(plan, cost, topology)
    if mem is not None:
        notes['memory_mib'] = round(mem / MIB, 3)
    plan = replace(plan, notes=notes)
    cost = cost.for_groups(sum(s.replicas for s in plan.stages))
    stages = []
    for n, s in enumerate(plan.stages):
        fs, ls = stage_segments(cost, s, f'stage {n}')
        times = [cost.stage_ms(fs, ls, c, s.threads, **hops(plan, n)) for c in replica_clusters(s, topology)]
        window = None
        if n == len(plan.stages) - 1 and s.replicas > 1:     # CostTable.reordered_outputs counts it
            window = reorder_width(frames_in_flight(times))
        stages.append(replace(s, predicted_ms=max(times), window=window))
    return replace(plan, stages=tuple(stages), predicted_fps=fps, predicted_latency_ms=lat)
