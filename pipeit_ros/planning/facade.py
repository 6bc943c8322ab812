"""The one way from a model + topology to a plan: get a cost table, run the DSE, check the plan.

``pipeit plan``, ``pipeit bench --auto``, the planner node and the paper table all call :func:`auto_plan`
(or :func:`cost_table` + :mod:`pipeit_ros.planning.dse`), so they plan the same way.

Where stage times come from (``source``):

- ``profile``: measured on this machine (:func:`pipeit_ros.cost.profiler.profile`, cached by model hash, topology
  fingerprint and onnxruntime version) — only for a topology whose CPUs are here;
- ``predictor``: predicted from layer descriptors (:mod:`pipeit_ros.cost.predictor`): a given file, else the cached
  predictor of the topology, else a quick one trained now (seconds; ``pipeit train`` makes the full one);
- ``auto``: a given profile or predictor file, else a profile (cached or measured now).

A topology whose CPUs this machine does not have (``hikey970``, an emulated 4+4 on 2 cores) is planned *on
paper*: the host's predictor scaled for the board (:func:`pipeit_ros.cost.onpaper.scaled_for`); its figures
compare cuts, they do not promise frame rates.
"""
import os

from pipeit_ros.cost import profiler
from pipeit_ros.cost.table import CONTAINERS, CostTable
from pipeit_ros.errors import PipeitError, PlanError, TopologyError
from pipeit_ros.hw import topology as topo
from pipeit_ros.hw.topology import check_cpus_here
from pipeit_ros.plan import check_against, with_model
from pipeit_ros.planning import dse

SOURCES = ('auto', 'profile', 'predictor')
SEARCHES = ('exact', 'pipeit-paper')
OBJECTIVES = dse.OBJECTIVES


def runnable_here(topology):
    """True when every CPU of ``topology`` is online here and allowed to this process."""
    try:
        check_cpus_here(topology)
    except TopologyError:
        return False
    return True


def cost_table(graph, topology, *, source='auto', predictor_path=None, profile_path=None, log=print,
               progress=True):
    """The CostTable the DSE plans ``graph`` on ``topology`` with (see the module docstring)."""
    if source not in SOURCES:
        raise PipeitError(f'source must be one of {", ".join(SOURCES)}, got {source!r}')
    if profile_path and predictor_path:
        raise PipeitError('give a profile file or a predictor file, not both')
    if profile_path:
        if source == 'predictor':
            raise PipeitError(f'source predictor does not read a profile file ({profile_path})')
        return _saved_profile(profile_path, graph, topology, log)
    if predictor_path and source == 'profile':
        raise PipeitError(f'source profile does not read a predictor file ({predictor_path})')
    here = runnable_here(topology)
    if source == 'profile' and not here:
        raise PipeitError(f'cannot profile topology {topology.name!r} here: its CPUs {list(topology.cpus)} are '
                          f'not all online and allowed on this machine; plan it from a predictor (source '
                          f'predictor or auto)')
    if source == 'predictor' or predictor_path or not here:
        return _predicted(graph, topology, predictor_path, here, log)
    return profiler.profile(graph, topology, log=log, progress=progress)


def _saved_profile(path, graph, topology, log):
    table = CostTable.load(path)
    if table.model_hash and table.model_hash != graph.model_hash:
        raise PipeitError(f'{path}: the profile is of model {table.model_hash[:12]}, not of {graph.path} '
                          f'({graph.model_hash[:12]})')
    if table.topology_fingerprint and table.topology_fingerprint != topology.fingerprint():
        raise PipeitError(f'{path}: the profile was measured on topology {table.topology_fingerprint}, not on '
                          f'{topology.name!r} ({topology.fingerprint()})')
    log(f'planning: stage times from {path} ({table.source or "cost table"})')
    return table


def _predictor(topology, path, log):
    """The predictor of ``topology``: the file, the cached one (full, then quick) or a quick one trained now."""
    from pipeit_ros.cost import predictor as pred  # noqa: PLC0415 - scikit-learn costs seconds of every start-up
    if path:
        model = pred.load(path, topology)        # a bad file is refused before anything is said about it
        log(f'planning: predictor {path}')
        return model
    for quick in (False, True):
        cached = pred.default_path(topology, quick)
        if os.path.exists(cached):
            try:
                model = pred.load(cached, topology)
            except PipeitError as exc:
                log(f'planning: not reusing {cached}: {exc}')
                continue
            log(f'planning: reusing cached predictor {cached}')
            return model
    log(f'planning: no trained predictor for topology {topology.name!r}: training a quick one '
        f'(`pipeit train` trains the full one)')
    return pred.train(topology, quick=True, log=log)


def _predicted(graph, topology, predictor_path, here, log):
    if here:
        return _predictor(topology, predictor_path, log).cost_table(graph, topology)
    host = topo.detect()
    log(f'planning: topology {topology.name!r} is not this machine: planning on paper with the host '
        f'predictor scaled for it (predictions only)')
    from pipeit_ros.cost import onpaper  # noqa: PLC0415 - as in _predictor
    return onpaper.scaled_for(topology, _predictor(host, predictor_path, log)).cost_table(graph, topology)


def cli_option(name):
    """'max_latency_ms' -> '--max-latency-ms': how the CLI names a planning option."""
    return '--' + name.replace('_', '-')


def check_search(search, objective='throughput', max_latency_ms=None, min_fps=None, memory_mb=None,
                 replicas=True, option=cli_option):
    """PlanError unless ``search`` and ``objective`` are known and the search takes these options (the paper's
    takes none). ``option`` names an option in the message: the CLI's flags by default, the node's parameters
    with ``option=str``."""
    if search not in SEARCHES:
        raise PlanError(f'{option("search").lstrip("-")} must be one of {", ".join(SEARCHES)}, got {search!r}')
    if objective not in OBJECTIVES:
        raise PlanError(f'{option("objective").lstrip("-")} must be one of {", ".join(OBJECTIVES)}, '
                        f'got {objective!r}')
    if search == 'pipeit-paper':
        given = [option(n) for n, v in (('max_latency_ms', max_latency_ms), ('min_fps', min_fps),
                                        ('memory_mb', memory_mb)) if v is not None]
        if objective != 'throughput':
            given.append(f'{option("objective")} {objective}')
        if not replicas:
            given.append(option('no_replicas'))
        if given:
            raise PlanError(f'{option("search")} pipeit-paper maximises throughput without replicas or '
                            f'constraints; {", ".join(given)} need(s) {option("search")} exact')


def plan_from_cost(cost, graph, topology, *, objective='throughput', max_latency_ms=None, min_fps=None,
                   memory_mb=None, search='exact', replicas=True, containers=None):
    """Run the DSE named by ``search`` on ``cost`` and check the plan against ``graph`` and ``topology``.
    ``containers`` (one of CONTAINERS; None: the table's own) is the process layout the plan will run in: 'one'
    for the engine (``pipeit bench``, ``single_container``), 'per_cluster' for the ROS graph, where a cut
    between stages of two clusters is a hop between containers (pipeit_ros.cost.table)."""
    check_search(search, objective, max_latency_ms, min_fps, memory_mb, replicas)
    if containers is not None:
        if containers not in CONTAINERS:
            raise PlanError(f'containers must be one of {", ".join(CONTAINERS)}, got {containers!r}')
        cost = cost.in_containers(containers)
    if search == 'pipeit-paper':
        plan = dse.pipeit_paper(cost, topology)
    else:
        plan = dse.solve(cost, topology, objective=objective, max_latency_ms=max_latency_ms, min_fps=min_fps,
                         memory_mb=memory_mb, replicas=replicas)
    return check_against(with_model(plan, graph), graph, topology)


def auto_plan(graph, topology, *, source='auto', predictor_path=None, profile_path=None, objective='throughput',
              max_latency_ms=None, min_fps=None, memory_mb=None, search='exact', replicas=True, containers=None,
              log=print):
    """The plan for ``graph`` on ``topology``: :func:`cost_table` then the DSE (PlanError when infeasible);
    ``containers`` as in :func:`plan_from_cost`."""
    check_search(search, objective, max_latency_ms, min_fps, memory_mb, replicas)
    cost = cost_table(graph, topology, source=source, predictor_path=predictor_path, profile_path=profile_path,
                      log=log)
    return plan_from_cost(cost, graph, topology, objective=objective, max_latency_ms=max_latency_ms,
                          min_fps=min_fps, memory_mb=memory_mb, search=search, replicas=replicas,
                          containers=containers)
