"""The saturated latency, and the exact search for the plan that minimises it (``objective='latency'``).

Saturated, frames come as fast as the pipeline takes them (``pipeit bench`` without ``--rate``; its latency runs
from the first stage's start to the in-order output). Stage ``k`` has rate ``rho_k`` (the sum over its replicas
of 1 / time), time ``t_k`` (its slowest replica) and ``r_k`` replicas; the pipeline runs at ``R = min rho_k``,
period ``P = 1 / R``. The bottleneck ``b`` is the first stage whose rate is within ``TIE`` of ``R``. Every stage
before it is blocked on a full queue of ``q`` frames (:data:`pipeit_ros.engine.parts.QUEUE_SIZE`): it holds
``r_k`` frames and the queue after it ``q``, all leaving at the period, so by Little's law a frame spends
``max(t_k, r_k P) + q P`` from the start of stage ``k`` to the start of ``k + 1``; from ``b`` on nothing waits::

    L = sum_{k < b} (max(t_k, r_k P) + q P) + sum_{k >= b} t_k

``L`` is the plain latency ``sum t_k`` when the first stage is the bottleneck, so it prefers the slow stage
first. (YOLOv8n on emulated-biglittle-1+1, little 0-18 then big 19-110: ``L`` = 380 ms, 383 measured, against
139 ms plain.)

The search is exact for ``L``: for a candidate bottleneck rate ``R`` (every stage rate is one), :class:`Banded`
is the DP's space with a phase in each state, before or after the bottleneck; a stage before it must be faster
than ``R (1 + TIE)`` and costs ``max(t, r / R) + q / R``, the bottleneck's rate lies in ``[R, R (1 + TIE)]``,
the stages after it are at least ``R``. Its least cost is exact for plans whose bottleneck is ``R`` and never
below ``L`` for the others, so the least over candidates is the optimum. Candidates are tried in the order of a
lower bound (a first-stage bottleneck: its time + the least plain latency of the rest at the floor; a later
one: ``q / R`` + the least plain latency, and ``(2 + q) / R``) until the bound passes the best found.
"""
import numpy as np

from pipeit_ros.engine.parts import QUEUE_SIZE
from pipeit_ros.planning.dp import Space

TIE = 1e-9      # relative: throughputs this close are equal, and the tie-breaks decide (dse.solve)


def latency(rates, times, replicas, queue_size=QUEUE_SIZE):
    """The saturated latency (module docstring) of stages with these rates (per ms), times (ms) and replicas."""
    low = min(rates)
    b = next(k for k, r in enumerate(rates) if r <= low * (1 + TIE))
    period = 1.0 / low
    return (sum(max(t, r * period) + queue_size * period for t, r in zip(times[:b], replicas[:b]))
            + sum(times[b:]))


class Banded(Space):
    """``space`` at bottleneck rate ``rate``: states (budget, hop mode) x phase (0: the bottleneck is still to
    come, 1: placed); extended option ``kind * E + e`` for kind 0 before, 1 the bottleneck, 2 after (E extended
    options of ``space``). A stage outside its kind's rate band has rate -inf, so every floor >= 0 drops it."""

    def __init__(self, space, rate, queue_size=QUEUE_SIZE):   # noqa: PLW0231 - a view of space, not a new one
        self.base, self.rate, self.queue_size = space, float(rate), queue_size
        self.n, n_u, self.n_e = space.n, space.n_u, space.n_var * space.n_opt
        self.n_u = 2 * n_u
        self.n_opt, self.cost, self.clusters = space.n_opt, space.cost, space.clusters
        u, e, v = space.pair_u, space.pair_o, space.pair_v   # before -> before, before -> after, after -> after
        pu = np.concatenate([u, u, u + n_u])
        pe = np.concatenate([e, e + self.n_e, e + 2 * self.n_e])
        pv = np.concatenate([v, v + n_u, v + n_u])
        order = np.argsort(pu, kind='stable')
        self.pair_u, self.pair_o, self.pair_v = pu[order], pe[order], pv[order]
        self.has_pair = np.bincount(self.pair_u, minlength=self.n_u) > 0
        self.starts = np.minimum(np.searchsorted(self.pair_u, np.arange(self.n_u)), len(self.pair_u) - 1)
        none = np.zeros(n_u, bool)
        self.end_ok = np.concatenate([none, space.end_ok])
        self.start_state = np.concatenate([space.start_state, none])
        self.cores = np.tile(space.cores, 2)
        self.budget = np.tile(space.budget, (2, 1))
        self.full = space.full
        self._reps = np.tile(space.reps, space.n_var)[:, None]
        self._arrays = [None] * self.n

    def arrays(self, i):
        if self._arrays[i] is None:
            rate, lat, mem = self.base.arrays(i)
            top = self.rate * (1 + TIE)
            before = np.where(rate > top, rate, -np.inf)
            at = np.where((rate >= self.rate) & (rate <= top), rate, -np.inf)
            after = np.where(rate >= self.rate, rate, -np.inf)
            waits = np.maximum(lat, self._reps / self.rate) + self.queue_size / self.rate
            self._arrays[i] = (np.concatenate([before, at, after]), np.concatenate([waits, lat, lat]),
                               np.concatenate([mem, mem, mem]))
        return self._arrays[i]

    @staticmethod
    def base_stages(space, stages):
        """A stage list of a Banded view of ``space`` in the options of ``space``."""
        return [(i, j, o % (space.n_var * space.n_opt)) for i, j, o in stages]


def stage_latency(space, stages, queue_size=QUEUE_SIZE):
    """The saturated latency of a stage list [(i, j, option)] of ``space`` (a :class:`Space`)."""
    figures = [(a[0][o, j - i], a[1][o, j - i]) for i, j, o in stages for a in [space.arrays(i)]]
    return latency([r for r, _ in figures], [t for _, t in figures],
                   [int(space.reps[o % space.n_opt]) for _, _, o in stages], queue_size)


def least(space, floor, top, plain, choose, bound=np.inf, queue_size=QUEUE_SIZE):
    """The stage list of ``space`` with the least saturated latency at rates >= ``floor`` (per ms; ``top`` the
    highest rate of any plan), ties to the higher rate, then fewer cores, then less latency; None when no plan
    meets the bounds that ``choose`` applies (``bound``: the one on the saturated latency; it ends the scan).
    ``plain``: the least plain latency at ``floor`` per state (``Space.min_cost('lat', floor)[0]``).
    ``choose(banded, bound, latency_first)``: the best stage list of a :class:`Banded` space within saturated
    latency ``bound`` (fewest cores first unless ``latency_first``)."""
    q = queue_size
    rates = space.candidate_rates(max(floor, np.nextafter(0.0, 1.0)), top)    # rate 0: a last stage that sends
    if not len(rates):
        return None
    lb = np.maximum(q / rates + plain[space.full, 0], (1 + q) / rates + 1 / (rates * (1 + TIE)))  # b > 0
    first = np.flatnonzero(space.pair_u == space.full)        # b = 0: the first stage from every core
    r0, t0, _ = space.arrays(0)
    o, v = space.pair_o[first], space.pair_v[first]
    head, rho = (t0[o] + plain[v, 1:]).ravel(), r0[o].ravel()   # first stages x their ends j
    keep = np.isfinite(head) & (rho >= floor)
    head, rho = head[keep], rho[keep]
    lo = np.searchsorted(rates, rho / (1 + TIE), 'left')      # the candidates whose band holds rho
    hi = np.searchsorted(rates, rho, 'right')
    for w in range(int((hi - lo).max(initial=0))):
        at = lo + w < hi
        np.minimum.at(lb, lo[at] + w, head[at])
    best, found = np.inf, {}
    for c in np.argsort(lb, kind='stable'):
        if not lb[c] <= min(best, bound) * (1 + TIE) + 1e-12:
            break
        stages = choose(Banded(space, rates[c], q), np.inf, True)
        if stages is not None:
            found[c] = stage_latency(space, Banded.base_stages(space, stages), q)
            best = min(best, found[c])
    if not found:
        return None
    bound = best * (1 + TIE) + 1e-12
    top_rate = max(rates[c] for c, lat in found.items() if lat <= bound)
    picks = []
    for c, lat in found.items():
        if lat <= bound and rates[c] >= top_rate * (1 - TIE):
            banded = Banded(space, rates[c], q)
            stages = choose(banded, bound, False)
            if stages is None:      # its plan is over the bound here, counted at its own bottleneck rate
                continue
            stages = Banded.base_stages(space, stages)
            picks.append((space.cores[space.full] - _left(space, stages), stage_latency(space, stages, q),
                          stages))
    return min(picks, key=lambda p: p[:2])[2]


def _left(space, stages):
    """Cores a stage list leaves idle from the full budget."""
    u = space.full
    for _, _, o in stages:
        u = space._after(u, o)
    return int(space.cores[u])
