"""Design-space exploration: the plan with the best predicted throughput (or latency) for a cost table.

The model (what "exact" is exact for): a plan is a chain of stages, each a contiguous run of segments (the
cost table's atoms) on ``replicas`` core groups of ``threads`` cores, every group inside one cluster (a cluster
may hold several groups of one or several stages, cores may stay idle, replicas of one stage may sit on
different clusters). A replica's time is ``CostTable.stage_ms`` (segments + per-run overhead + the hand-over of
the stage's input; where the table predicts one container per cluster, a cut between stages hosted by two
clusters costs the sender and the receiver their sides of a hop between containers instead). Predicted throughput = min over stages of the stage rate (sum of 1/replica time);
predicted latency = sum over stages of the slowest replica's time (a frame that waits nowhere); saturated latency
(frames come as fast as the pipeline takes them: :mod:`pipeit_ros.planning.saturated`) = that, plus the waits
of every stage before the first bottleneck stage behind full queues; memory = the cost table's model
(docs/memory.md: the process base and a shape term once, every segment's weights once, each replica's session
memory, the outputs in flight). A plan of several core groups is
predicted with the times under load (``CostTable.for_groups``), a plan of one group with the times alone: the
search runs on the loaded table and compares its optimum with the best one-group plan, which keeps it exact.
The memory of a plan of several groups carries a term for its shape, replicas or stages
(``CostTable.plan_shape_bytes``), which per-stage sums cannot tell apart: the search bounds it by the larger,
and under a memory bound compares the plans of one stage with replicas, and a search of chains without
replicas on the stages' own term, on their own figures.

:func:`solve` finds the exact optimum of that model (see :mod:`pipeit_ros.planning.dp` for the programmes):

- ``objective='throughput'``: the highest throughput; with ``max_latency_ms`` / ``memory_mb`` the highest whose
  plan stays within them (a binary search over every stage rate, each step a least-latency / least-memory DP
  with every stage at least that rate). Ties (throughput within a relative 1e-9) go to the plan with fewer
  cores, then to the one with lower latency.
- ``objective='latency'``: the lowest saturated latency that sustains ``min_fps`` (and the memory bound;
  ``max_latency_ms`` bounds the saturated latency here); ties go to the higher throughput, then fewer cores,
  then the lower saturated latency (:func:`pipeit_ros.planning.saturated.least`).

:func:`pipeit_paper` is the paper's own heuristic (:mod:`pipeit_ros.planning.paper_heuristic`), for comparison;
:mod:`pipeit_ros.planning.prediction` gives the same figures for any plan, baselines included.
"""
from dataclasses import replace
import time

import numpy as np

from pipeit_ros.errors import PlanError
from pipeit_ros.hw.memory import MIB
from pipeit_ros.plan import Plan, Stage, validate
from pipeit_ros.planning import paper_heuristic, saturated
from pipeit_ros.planning.dp import Space
from pipeit_ros.planning.prediction import with_predictions
from pipeit_ros.planning.saturated import TIE

OBJECTIVES = ('throughput', 'latency')


def _cost_check(cost, topology):
    if cost.topology_fingerprint and cost.topology_fingerprint != topology.fingerprint():
        raise PlanError(f'the cost table was made for topology {cost.topology_fingerprint}, this one is '
                        f'{topology.fingerprint()} ({topology.name})')


def solve(cost, topology, objective='throughput', max_latency_ms=None, min_fps=None, memory_mb=None,
          replicas=True):
    """The exact optimal Plan of ``cost`` on ``topology`` (see the module docstring); PlanError when no plan
    meets the constraints, saying what the best plan achieves."""
    if objective not in OBJECTIVES:
        raise PlanError(f'objective must be throughput or latency, got {objective!r}')
    for name, value in (('max-latency-ms', max_latency_ms), ('min-fps', min_fps), ('memory-mb', memory_mb)):
        if value is not None and not value > 0:
            raise PlanError(f'--{name} must be > 0, got {value}')
    _cost_check(cost, topology)
    started = time.perf_counter()
    several = cost.under_load(chains=not replicas)      # without replicas, every plan of several groups is a chain
    space = Space(several, topology, replicas=replicas)
    alone = _alone_plans(cost, topology) if several is not cost else []
    if memory_mb is not None:     # only a memory bound tells a data-parallel plan's own figure from the search's
        alone += _replicated_plans(space, cost, topology)
    figures = [(p.predicted_fps / 1000.0, p.predicted_latency_ms, p.notes['memory_mib'] * MIB) for p in alone]
    bounds = (max_latency_ms, min_fps, memory_mb)
    stages, failure, passes = _run(_Search(space, *bounds, figures), objective)
    others = list(alone)
    chains = cost.under_load(chains=True) if replicas and memory_mb is not None else several
    if chains.build_bytes < several.build_bytes:
        # the bound counts chains of stages with the replicas' larger shape term: search them on their own too
        chain_space = Space(chains, topology, replicas=False)
        found, _, more = _run(_Search(chain_space, *bounds, figures), objective)
        passes += more
        if found is not None:
            others.append(with_predictions(build_plan(chain_space, found, topology, 'exact'), cost, topology))
    notes = {'objective': objective, 'replicas_allowed': bool(replicas), 'containers': cost.containers,
             'constraints': {k: v for k, v in (('max_latency_ms', max_latency_ms), ('min_fps', min_fps),
                                               ('memory_mb', memory_mb)) if v is not None},
             'search_ms': round((time.perf_counter() - started) * 1000, 1), 'dp_passes': passes}
    plan = None if stages is None else with_predictions(build_plan(space, stages, topology, 'exact', notes),
                                                        cost, topology)
    for other in others:    # each predicted with its own figures (see _replicated_plans), so checked again here
        if ((max_latency_ms is None or _latency(other, objective) <= max_latency_ms)
                and (min_fps is None or other.predicted_fps >= min_fps * (1 - TIE))
                and (memory_mb is None or other.notes['memory_mib'] <= memory_mb)
                and (plan is None or _better(other, plan, objective))):
            plan = replace(other, notes={**notes, **other.notes})
    if plan is None:
        raise failure
    return plan


def _run(search, objective):
    """(stages, None, passes) of ``search``'s optimum, or (None, the PlanError saying why there is none, passes)."""
    try:
        stages = search.least_saturated() if objective == 'latency' else search.best_throughput()
        return stages, None, search.passes
    except PlanError as exc:
        return None, exc, search.passes


def _latency(plan, objective):
    """The latency ``objective`` minimises / bounds: saturated for 'latency', else the plain one."""
    return plan.notes['saturated_latency_ms'] if objective == 'latency' else plan.predicted_latency_ms


def _better(a, b, objective):
    """True when plan ``a`` beats ``b`` under the tie rules of :func:`solve` (relative TIE on the first figure)."""
    def close(x, y):
        return abs(x - y) <= TIE * max(abs(x), abs(y))
    cores_a, cores_b = (sum(len(s.cpus) for s in p.stages) for p in (a, b))
    if objective == 'latency':
        order = [(_latency(a, objective), _latency(b, objective)), (-a.predicted_fps, -b.predicted_fps),
                 (cores_a, cores_b), (_latency(a, objective), _latency(b, objective))]
    else:
        order = [(-a.predicted_fps, -b.predicted_fps), (cores_a, cores_b),
                 (a.predicted_latency_ms, b.predicted_latency_ms)]
    for x, y in order:
        if not close(x, y):
            return x < y
    return False


def _alone_plans(cost, topology):
    """Every plan of one stage on one core group, predicted alone."""
    n_layers = cost.segments[-1][1] + 1
    return [with_predictions(Plan(stages=(Stage(0, n_layers - 1, c.name, tuple(c.cpus[:k]), threads=k),),
                                  model_hash=cost.model_hash, topology_fingerprint=topology.fingerprint(),
                                  search='exact', name='exact plan',
                                  notes=dict(cores_used=k, cost_source=cost.source)), cost, topology)
            for c in topology.clusters for k in range(1, c.size + 1) if (c.name, k) in cost.configs]


def _replicated_plans(space, cost, topology):
    """Every plan of one stage on several core groups (data parallelism), predicted with its own memory figure.

    The search bounds the shape term of a plan of several groups by the larger of replicas' and stages'
    (``CostTable.under_load``): its per-stage sums cannot tell the shapes apart. A one-stage plan is all
    replicas, so its own figure can be smaller (YOLOv8n: 153 against 162 MiB); these few plans are compared
    on their exact figures, like the plans of one group, which keeps a memory bound exact for them."""
    last = space.n - 1
    plans = []
    for o in range(space.n_opt):
        if sum(space.option(o)[1].values()) < 2:
            continue
        plan = with_predictions(build_plan(space, [(0, last, o)], topology, 'exact'), cost, topology)
        if 'memory_mib' in plan.notes:
            plans.append(plan)
    return plans


class _Search:
    """The parametric search over the bottleneck rate, with the constraints of one solve() call."""

    def __init__(self, space, max_latency_ms, min_fps, memory_mb, alone=()):
        self.space = space
        self.alone = list(alone)   # (rate, latency, memory) of plans of one stage on their own figures: for messages
        self.lat_bound = np.inf if max_latency_ms is None else float(max_latency_ms)
        self.mem_bound = np.inf if memory_mb is None else float(memory_mb) * MIB
        self.floor = 0.0 if min_fps is None else float(min_fps) / 1000.0
        self.args = (max_latency_ms, min_fps, memory_mb)
        self.passes = 0

    def _min_cost(self, what, floor):
        self.passes += 1
        return self.space.min_cost(what, floor)

    def top_rate(self):
        """The highest bottleneck rate of any plan, bounds aside; PlanError when below --min-fps."""
        self.passes += 1
        top = float(self.space.max_rate()[self.space.full, 0])
        if top < self.floor:
            fastest = max([top] + [r for r, _, _ in self.alone])
            raise PlanError(f'no plan reaches --min-fps {self.args[1]:g}: the fastest has {fastest * 1000:.1f} '
                            f'frames/s')
        return top

    def best_throughput(self):
        top = self.top_rate()
        if np.isfinite(self.lat_bound) or np.isfinite(self.mem_bound):
            top = self.highest_feasible(self.at_floor(), top)
        return self.choose(top)

    def least_saturated(self):
        """The least saturated latency (:mod:`pipeit_ros.planning.saturated`); ``--max-latency-ms`` bounds it."""
        top = self.top_rate()
        floor = self.floor * (1 - TIE)
        plain = self._min_cost('lat', floor)[0]
        if np.isfinite(self.mem_bound) and self._min_cost('mem', floor)[0][self.space.full, 0] > self.mem_bound:
            self.lat_bound = np.inf             # nothing fits: say so (the plain latency is not the one bounded)
            self.explain_infeasible()
        stages = saturated.least(self.space, floor, top, plain, self._banded_choice, self.lat_bound)
        if stages is None:
            self.lat_bound = np.inf
            fastest = saturated.least(self.space, floor, top, plain, self._banded_choice)
            if fastest is None:
                self.explain_infeasible()
            max_lat, min_fps, memory_mb = self.args
            lat = min([saturated.stage_latency(self.space, fastest)]       # one stage alone: saturated = plain
                      + [lat for r, lat, mem in self.alone if r >= floor and mem <= self.mem_bound])
            at = f' at --min-fps {min_fps:g}' if min_fps is not None else ''
            said = (f'--max-latency-ms {max_lat:g}{at}:' if memory_mb is None else
                    f'both --max-latency-ms {max_lat:g} and --memory-mb {memory_mb:g}{at}: within the memory')
            raise PlanError(f'no plan meets {said} the fastest has {lat:.2f} ms saturated')
        return stages

    def _banded_choice(self, banded, bound, latency_first):
        """:meth:`choose` on a :class:`~pipeit_ros.planning.saturated.Banded` view, its latency within ``bound``."""
        search = _Search(banded, None, None, None)
        search.lat_bound, search.mem_bound = min(self.lat_bound, bound), self.mem_bound
        stages = search.choose(0.0, latency_first)
        self.passes += search.passes
        return stages

    def highest_feasible(self, known, top):
        """The highest stage rate <= top at which a plan within the bounds exists; ``known`` is one."""
        sp = self.space
        rates = sp.candidate_rates(sp.totals(known)[0], top)
        lo, hi = 0, len(rates)                 # rates[lo] feasible, rates[hi] (if any) not
        while hi - lo > 1:
            mid = (lo + hi) // 2 if hi < len(rates) else len(rates) - 1
            found = self.feasible(rates[mid])
            if found is None:
                hi = mid
            else:      # the plan found may be faster than asked for: jump to its bottleneck
                lo = max(mid, int(np.searchsorted(rates, sp.totals(found)[0], side='right')) - 1)
        return rates[lo]

    def at_floor(self):
        """The best plan at the --min-fps floor, or the PlanError that says why there is none."""
        best = self.choose(self.floor)
        if best is None:
            self.explain_infeasible()
        return best

    def feasible(self, rate):
        """Some plan with every stage rate >= rate (1 - TIE) within the bounds, or None."""
        sp, floor = self.space, rate * (1 - TIE)
        tables, plans = {}, []
        for what, bound in (('lat', self.lat_bound), ('mem', self.mem_bound)):
            if np.isfinite(bound):
                tables[what], end, opt = self._min_cost(what, floor)
                if tables[what][sp.full, 0] > bound:
                    return None
                plans.append(sp.walk(sp.full, end, opt))
        for stages in plans:
            if self._within(stages):
                return stages
        self.passes += 1                       # both bind and neither extreme fits both: exact fronts
        fronts = sp.pareto(floor, self.lat_bound, self.mem_bound, tables['lat'], tables['mem'])
        best = fronts.best(sp.full)
        return None if best is None else fronts.walk(best[1])

    def _within(self, stages):
        _, lat, mem = self.space.totals(stages)
        return lat <= self.lat_bound and mem <= self.mem_bound

    def choose(self, rate, latency_first=False):
        """The plan (stage list) with every stage rate >= rate (1 - TIE) within the bounds: fewest cores,
        then least latency (``latency_first``: least latency, then fewest cores); None when there is none.
        Per budget u the least-latency DP gives the answer unless its plan breaks the memory bound; then the
        budgets that can still win are settled by exact (latency, memory) fronts."""
        sp, floor = self.space, rate * (1 - TIE)
        C, end, opt = self._min_cost('lat', floor)
        lat = np.where(C[:, 0] <= self.lat_bound, C[:, 0], np.inf)
        plans = {u: (lambda u=u: sp.walk(u, end, opt)) for u in np.flatnonzero(np.isfinite(lat))}
        if np.isfinite(self.mem_bound):
            M, mend, mopt = self._min_cost('mem', floor)
            lat[M[:, 0] > self.mem_bound] = np.inf
            upper, open_, sure = {}, [], set()     # open_: lat[u] is only a lower bound
            for u in np.flatnonzero(np.isfinite(lat)):
                fast, small = sp.walk(u, end, opt), sp.walk(u, mend, mopt)
                if self._within(fast):
                    plans[u], upper[u] = (lambda s=fast: s), lat[u]
                    sure.add(u)
                    continue
                open_.append(u)
                upper[u] = self.lat_bound
                if self._within(small):
                    upper[u] = sp.totals(small)[1]
                    sure.add(u)
            if open_:
                if latency_first:              # nothing slower than a sure plan can win
                    bound = min([upper[u] for u in sure] + [self.lat_bound])
                    contenders = open_
                else:                          # nothing with more cores than a sure plan can win
                    level = min([sp.cores[u] for u in sure], default=np.inf)
                    contenders = [u for u in open_ if sp.cores[u] <= level]
                    bound = max([upper[u] for u in contenders], default=0.0)
                self.passes += 1               # (slack: the fronts add latencies in another order)
                fronts = sp.pareto(floor, min(bound * (1 + TIE), self.lat_bound), self.mem_bound, C, M)
                for u in open_:
                    best = fronts.best(u) if u in contenders else None
                    lat[u] = np.inf if best is None else best[0]
                    plans[u] = lambda x=(best or (0, -1))[1]: fronts.walk(x)
        ok = np.isfinite(lat)
        if not ok.any():
            return None
        cores = np.where(ok, sp.cores, np.iinfo(np.int64).max)
        u = int((np.lexsort((cores, lat)) if latency_first else np.lexsort((lat, cores)))[0])
        return plans[u]()

    def explain_infeasible(self):
        """Raise the PlanError that names the bound and the best value achievable under the others."""
        sp = self.space
        max_lat, min_fps, memory_mb = self.args
        at = f' at --min-fps {min_fps:g}' if min_fps is not None else ''
        alone = [(lat, mem) for r, lat, mem in self.alone if r >= self.floor * (1 - TIE)]
        C = self._min_cost('lat', self.floor)[0]
        fastest = min([C[sp.full, 0]] + [lat for lat, _ in alone])
        if fastest > self.lat_bound:
            raise PlanError(f'no plan meets --max-latency-ms {max_lat:g}{at}: the fastest has {fastest:.2f} ms')
        M = self._min_cost('mem', self.floor)[0]
        smallest = min([M[sp.full, 0]] + [mem for _, mem in alone])
        if smallest > self.mem_bound:
            raise PlanError(f'no plan fits --memory-mb {memory_mb:g}{at}: the smallest needs '
                            f'{smallest / MIB:.2f} MiB')
        if np.isfinite(self.lat_bound) and np.isfinite(self.mem_bound):
            fronts = sp.pareto(self.floor, np.inf, self.mem_bound, np.zeros_like(C), M)
            best = min([(fronts.best(sp.full) or (np.inf,))[0]]
                       + [lat for lat, mem in alone if mem <= self.mem_bound])
            raise PlanError(f'no plan meets both --max-latency-ms {max_lat:g} and --memory-mb {memory_mb:g}'
                            f'{at}: within the memory the fastest has {best:.2f} ms')
        if alone:   # only a one-group plan (run alone, so faster than in this table) meets the bounds
            raise PlanError('no plan of several core groups meets the bounds')
        raise AssertionError('no plan at the floor, yet no bound binds')


def build_plan(space, stages, topology, search, notes=None):
    """A Plan from a stage list [(first segment, last segment, option)]: CPUs handed out in each cluster's
    order, replicas on several clusters named 'a+b'; predictions filled in."""
    cost = space.cost
    taken = {c.name: 0 for c in space.clusters}
    out = []
    for i, j, o in stages:
        k, per_cluster = space.option(o)
        names, cpus = [], []
        for ci, r in per_cluster.items():
            c = space.clusters[ci]
            names.append(c.name)
            cpus += c.cpus[taken[c.name]:taken[c.name] + k * r]
            taken[c.name] += k * r
        lat = float(space.arrays(i)[1][o, j - i])
        out.append(Stage(first=cost.segments[i][0], last=cost.segments[j][1], cluster='+'.join(names),
                         cpus=tuple(cpus), threads=k, replicas=sum(per_cluster.values()), predicted_ms=lat))
    rate, lat, mem = space.totals(stages)
    notes = dict(notes or {}, cores_used=sum(taken.values()), memory_mib=round(float(mem) / MIB, 3),
                 cost_source=cost.source)
    plan = Plan(stages=tuple(out), model_hash=cost.model_hash, topology_fingerprint=topology.fingerprint(),
                predicted_fps=float(rate * 1000.0), predicted_latency_ms=float(lat), search=search,
                name=f'{search} plan', notes=notes)
    return validate(plan, topology, n_layers=cost.segments[-1][1] + 1,
                    cut_points=[a for a, _ in cost.segments])


def pipeit_paper(cost, topology):
    """The Pipe-it paper's DSE (enumerated pipeline configurations + greedy layer allocation), run on the
    times under load (its pipelines keep every core busy); the plan's figures as :func:`predict` gives them."""
    _cost_check(cost, topology)
    space, stages, notes = paper_heuristic.search(cost.under_load(), topology)
    return with_predictions(build_plan(space, stages, topology, 'pipeit-paper', notes), cost, topology)
