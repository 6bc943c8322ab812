"""Live adaptation: notice when measured stage times drift from the plan's predictions, and re-plan from them.

Predictions go stale at run time: thermal throttling or DVFS slows a cluster, another process takes a core.
The containers report each stage's measured time per frame on /diagnostics once a second. The planner feeds
those reports to a :class:`DriftDetector`; when the *slowest* stage (the one that sets the throughput) stays
more than ``threshold`` (relative) away from its prediction for longer than ``window_s``, it fires.

The planner then calls :func:`scale_cost_table`: every cost-table row of a core configuration a stage ran on
is multiplied by measured / predicted for that configuration (time-weighted over its stages); configurations
of the same cluster that no stage used take the cluster's factor (throttling and co-runners hit a whole
cluster or its cores alike); clusters with no stage keep their rows. Factors compound over successive
adaptations because the planner keeps the scaled table: a cluster that was found slow stays slow in the
table even after the plan stops using it (we cannot see it recover without running something there).
The DSE then plans on the scaled table; a forced plan keeps its stages and only moves its cut points
(:func:`rebalance`).

Predicted and measured times are both per frame on one replica, session run only (no hand-over): the
container's ``measured_ms`` is the stage's busy time per frame, the planner's prediction comes from
``CostTable.stage_ms(..., include_handover=False)``.
"""
from collections import deque
from dataclasses import dataclass, field, replace
import math

import numpy as np

from pipeit_ros.app.wire import diagnostics as keys
from pipeit_ros.errors import PipeitError
from pipeit_ros.planning import prediction

FACTOR_LIMITS = (0.05, 20.0)      # one adaptation never scales a row by more than this


@dataclass(frozen=True)
class StageReport:
    """One stage's figures from one DiagnosticStatus (name ``pipeit/stage_<i>``)."""

    stage: int
    generation: int
    measured_ms: float
    predicted_ms: float
    fps: float
    cluster: str = ''


def parse_stage_status(name, values, hardware_id=''):
    """A StageReport from a DiagnosticStatus' name and its KeyValues as a dict; None when it is not a stage
    status or carries no measurement (no frame in the window)."""
    m = keys.STAGE_NAME_RE.search(str(name))
    if not m:
        return None
    try:
        generation = int(values[keys.GENERATION])
        measured = float(values[keys.MEASURED_MS])
    except (KeyError, ValueError):
        return None
    predicted = _float(values.get(keys.PREDICTED_MS))
    fps = _float(values.get(keys.FPS))
    if not math.isfinite(measured) or measured <= 0 or (math.isfinite(fps) and fps <= 0):
        return None
    return StageReport(stage=int(m.group(1)), generation=generation, measured_ms=measured,
                       predicted_ms=predicted, fps=fps, cluster=str(hardware_id))


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class Drift:
    """What the detector saw when it fired: the slowest stage's measured/predicted ratio and every stage's
    median measured time over the drift window."""

    generation: int
    stage: int
    ratio: float
    since: float
    measured_ms: dict = field(default_factory=dict)


class DriftDetector:
    """Fires when the slowest stage stays more than ``threshold`` off its prediction for ``window_s`` seconds.

    ``warmup`` reports per stage are ignored after each new plan (their window holds the session build).
    Reports older than ``stale_s`` do not count, so a stage that stops reporting does not hold a decision.
    """

    def __init__(self, threshold=0.25, window_s=3.0, warmup=1, stale_s=None):
        self.warmup = int(warmup)
        self.configure(threshold, window_s, stale_s)
        self.generation = None
        self.predicted_ms = []
        self._samples = {}
        self._skipped = {}
        self._since = None

    def configure(self, threshold, window_s, stale_s=None):
        """New settings (parameter change); the current window goes on."""
        if not threshold > 0:
            raise PipeitError(f'adapt_threshold must be > 0, got {threshold}')
        if not window_s > 0:
            raise PipeitError(f'adapt_window_s must be > 0, got {window_s}')
        self.threshold = float(threshold)
        self.window_s = float(window_s)
        self.stale_s = float(stale_s) if stale_s else max(2.5, self.window_s)

    def start(self, generation, predicted_ms):
        """A new plan is running: forget every sample, compare against these predictions from now on."""
        self.generation = int(generation)
        self.rebase(predicted_ms)
        self._skipped = {}

    def rebase(self, predicted_ms):
        """Same plan, new predictions (an adaptation that kept the plan): start a fresh window."""
        self.predicted_ms = [float(p) for p in predicted_ms]
        self._samples = {i: deque() for i in range(len(self.predicted_ms))}
        self._since = None

    def update(self, report, now):
        """Add one report (seconds on a monotonic clock); a :class:`Drift` when it is time to re-plan."""
        if self.generation is None or report.generation != self.generation:
            return None
        if not 0 <= report.stage < len(self.predicted_ms):
            return None
        if self._skipped.get(report.stage, 0) < self.warmup:
            self._skipped[report.stage] = self._skipped.get(report.stage, 0) + 1
            return None
        samples = self._samples[report.stage]
        samples.append((now, report.measured_ms))
        horizon = now - self.window_s - self.stale_s
        while samples and samples[0][0] < horizon:
            samples.popleft()
        return self._evaluate(now)

    def deviation(self, now):
        """(slowest stage, measured/predicted) from the freshest reports, or None while a stage is missing."""
        latest = {}
        for i, samples in self._samples.items():
            if not samples or now - samples[-1][0] > self.stale_s:
                return None
            latest[i] = samples[-1][1]
        slowest = max(latest, key=latest.get)
        predicted = self.predicted_ms[slowest]
        if not predicted > 0:
            return None
        return slowest, latest[slowest] / predicted

    def _evaluate(self, now):
        dev = self.deviation(now)
        if dev is None or abs(dev[1] - 1.0) <= self.threshold:
            self._since = None
            return None
        if self._since is None:
            self._since = now
            return None
        if now - self._since < self.window_s:
            return None
        measured = {i: float(np.median([m for t, m in s if t >= self._since])) for i, s in self._samples.items()}
        drift = Drift(generation=self.generation, stage=dev[0], ratio=dev[1], since=self._since,
                      measured_ms=measured)
        self._since = None
        return drift


# ------------------------------------------------------------------------------------------ cost table


def stage_segments(cost, stage):
    """(first segment, last segment) of a stage; PipeitError when its ends are not segment ends."""
    fs, ls = cost.segment_of_layer(stage.first), cost.segment_of_layer(stage.last)
    if cost.segments[fs][0] != stage.first or cost.segments[ls][1] != stage.last:
        raise PipeitError(f'stage {stage.first}-{stage.last} does not start and end at segment boundaries')
    return fs, ls


def predicted_stage_ms(cost, plan):
    """Per-frame time of each stage on one replica, session run only (what the containers measure)."""
    out = []
    cost = cost.for_groups(sum(s.replicas for s in plan.stages))
    for s in plan.stages:
        fs, ls = stage_segments(cost, s)
        out.append(cost.stage_ms(fs, ls, s.cluster.split('+')[0], s.threads, include_handover=False))
    return out


def scale_factors(cost, plan, measured_ms):
    """{(cluster, cores): measured/predicted} for every configuration of the table (1.0 where unknown);
    predicted as the plan runs (under load when it has several core groups), so the factors compound with the
    table's load factors instead of counting the load twice."""
    sums = {}
    cost = cost.for_groups(sum(s.replicas for s in plan.stages))
    for i, s in enumerate(plan.stages):
        m = measured_ms.get(i)
        if m is None or not s.pinned or '+' in s.cluster or not m > 0:
            continue
        fs, ls = stage_segments(cost, s)
        p = cost.stage_ms(fs, ls, s.cluster, s.threads, include_handover=False)
        acc = sums.setdefault((s.cluster, s.threads), [0.0, 0.0])
        acc[0] += m
        acc[1] += p
    by_cluster = {}
    for (cluster, _cores), (m, p) in sums.items():
        acc = by_cluster.setdefault(cluster, [0.0, 0.0])
        acc[0] += m
        acc[1] += p
    factors = {}
    for config in cost.configs:
        m_p = sums.get(config) or by_cluster.get(config[0])
        f = m_p[0] / m_p[1] if m_p and m_p[1] > 0 else 1.0
        factors[config] = float(np.clip(f, *FACTOR_LIMITS))
    return factors


def scale_cost_table(cost, plan, measured_ms):
    """A copy of ``cost`` with each configuration's rows (segments and per-run overhead) scaled by
    :func:`scale_factors`; the factors are kept in ``meta['adapt_factors']`` (compounded)."""
    factors = scale_factors(cost, plan, measured_ms)
    f = np.array([factors[c] for c in cost.configs])
    previous = dict(cost.meta.get('adapt_factors', {}))
    compounded = {f'{c}:{k}': previous.get(f'{c}:{k}', 1.0) * factors[(c, k)] for c, k in cost.configs}
    return replace(cost, seg_ms=cost.seg_ms * f[:, None], overhead_ms=cost.overhead_ms * f,
                   cut_ms=cost.cut_ms * f[:, None],
                   meta={**cost.meta, 'adapt_factors': compounded}), factors


# ------------------------------------------------------------------------------------------ rebalance


def _stage_period(cost, stage, clusters, fs, ls):
    """Period in ms of segments fs..ls on this stage's replicas (they share one queue: their rates add up),
    the model of ``prediction.predict``."""
    return 1.0 / sum(1.0 / max(cost.stage_ms(fs, ls, c, stage.threads), 1e-9) for c in clusters)


def rebalance(plan, cost, topology=None):
    """Keep every stage's cluster, CPUs, threads and replicas; move the cut points to minimise the slowest
    stage's period on ``cost`` (dynamic programming over the segments, each stage at least one segment).

    The DSE chooses structure and cuts together; this is for a plan the user fixed (the ``stages``
    parameter), which adaptation may re-cut but not re-shape.
    """

    n, k = cost.n_segments, len(plan.stages)
    if k > n:
        raise PipeitError(f'{k} stages cannot be cut from {n} segments')
    clusters = [prediction.replica_clusters(s, topology) for s in plan.stages]
    inf = math.inf
    # best[j][e]: minimal max period of stages 0..j covering segments 0..e-1; cut[j][e]: where stage j starts
    best = [[inf] * (n + 1) for _ in range(k)]
    cut = [[0] * (n + 1) for _ in range(k)]
    for e in range(1, n - k + 2):
        best[0][e] = _stage_period(cost, plan.stages[0], clusters[0], 0, e - 1)
    for j in range(1, k):
        for e in range(j + 1, n - (k - j - 1) + 1):
            for b in range(j, e):
                if best[j - 1][b] == inf:
                    continue
                t = max(best[j - 1][b], _stage_period(cost, plan.stages[j], clusters[j], b, e - 1))
                if t < best[j][e]:
                    best[j][e], cut[j][e] = t, b
    bounds, e = [], n
    for j in range(k - 1, -1, -1):
        b = cut[j][e] if j else 0
        bounds.append((b, e - 1))
        e = b
    bounds.reverse()
    stages = tuple(replace(s, first=cost.segments[fs][0], last=cost.segments[ls][1])
                   for s, (fs, ls) in zip(plan.stages, bounds))
    rebalanced = replace(plan, stages=stages, search='rebalance',
                         notes={**plan.notes, 'rebalanced_from': plan.to_spec()})
    return prediction.with_predictions(rebalanced, cost, topology)


def same_layout(a, b):
    """True when two plans run the same layers on the same CPUs the same way (predictions aside)."""
    key = [(s.first, s.last, s.cluster, s.cpus, s.threads, s.replicas, s.pinned) for s in a.stages]
    return key == [(s.first, s.last, s.cluster, s.cpus, s.threads, s.replicas, s.pinned) for s in b.stages]
