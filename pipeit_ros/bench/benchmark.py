"""Measure plans against the baselines on the same engine, alternating between them to cancel machine drift.

How it measures (also printed by ``pipeit bench`` and stored in :attr:`BenchResult.method`):
- every candidate is built once (sessions in pinned threads) and warmed up with ``warmup`` frames; all stay alive
  until the end, so no candidate reuses memory another one freed;
- ``rounds`` rounds; each runs every candidate for ``seconds / rounds`` s, the order rotated by one each round;
  a producer submits the same input array as fast as the pipeline takes it ('block' policy);
- frames/s of a round = (n - 1) / (t_done of last - t_done of first) over the n frames that came out inside the
  round's window (steady state: the pipeline's fill time is left out); a candidate's figure is the median over
  rounds (min and max kept too);
- ratios between candidates are paired by round: the median over rounds of (a's frames/s / b's) in the same
  round, so that drift between rounds cancels (:func:`pipeit_ros.bench.report.round_ratio`); a plan's ratio to
  every baseline is kept with its range over rounds (:attr:`BenchResult.paired`);
- the speed each emulated cluster gave: in every candidate's window, the run-queue share our pinned threads got
  on each CPU (:func:`pipeit_ros.hw.threads.held_shares`), as the emulated cluster's speed relative to the
  others (:func:`pipeit_ros.hw.emulation.measured_speeds`); a window that left the share set by more than 10 %
  is a warning next to the table (other sessions' load moves it, see the emulation module);
- latency = first stage start -> in-order output, per frame (the wait in the input queue is left out: it
  depends on the producer); p50/p99 over all frames of all rounds. Saturated, a frame also waits in the queues
  before the first bottleneck stage (the plan's ``notes['saturated_latency_ms']``, :mod:`pipeit_ros.planning.
  saturated`: YOLOv8n little 0-18 then big, 380 ms predicted, p50 383); ``rate`` paces the producer as a camera
  would (then the plain ``predicted_latency_ms``), and latencies at one rate compare plans as a robot sees them;
- memory: each candidate runs first in a fresh process of its own (:mod:`pipeit_ros.engine.footprint`), one after
  another, before any is built here: its PSS after a few frames (and peak RSS) does not depend on the order;
  shown next to the plan's predicted memory;
- stage utilisation = busy time / (round wall time x replicas), summed over rounds.
``--bare`` adds a plain onnxruntime loop of the whole model (no engine, no queues) on the CPUs of the first
replica of the reference candidate's first stage: the engine's own overhead is the difference. This module does
not start the emulation co-runners: the caller wraps it in ``emulation.emulated(topology)`` (the CLI does).
"""
from dataclasses import dataclass, field
import os
import platform
import queue
import sys
import threading
import time

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from pipeit_ros.bench.report import paired_ratio, round_ratio, same_spec_spread
from pipeit_ros.engine import footprint
from pipeit_ros.engine.parts import QUEUE_SIZE
from pipeit_ros.engine.pipeline import Pipeline
from pipeit_ros.engine.sessions import make_session
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw.cpus import allowed_cpus, cpuinfo, pin_current_thread
from pipeit_ros.hw.emulation import measured_speeds, speed_warnings
from pipeit_ros.hw.threads import held_shares, pinned_run_wait, run_wait_delta
from pipeit_ros.planning.baselines import NAMES as BASELINE_NAMES

TIMELINE_FRAMES = 400   # frames per replica recorded in the last round for the Gantt chart
MIN_RUN_SHARE = 0.05    # a CPU counts in a window's measured speed where our pinned threads ran this much of it


@dataclass
class CandidateResult:
    name: str
    spec: str
    fps: float = 0.0                   # median over rounds
    fps_rounds: list = field(default_factory=list)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    frames: int = 0
    memory_mb: float | None = None     # measured in a fresh process, weights counted whole (engine.footprint)
    pss_mb: float | None = None        # its plain PSS
    peak_rss_mb: float | None = None
    predicted_mb: float | None = None  # the plan's notes['memory_mib']
    memory_error: str | None = None
    stages: list = field(default_factory=list)     # StageStats dicts (summed over rounds) + 'utilisation'
    ratio_ort: float | None = None     # median over rounds of the per-round ratio (round_ratio)
    ratio_best: float | None = None
    speeds: list = field(default_factory=list)     # per round {emulated cluster: measured speed} (its window)
    plan: dict | None = None
    timeline: list = field(default_factory=list)   # (stage, replica, seq, t_start_s, t_end_s) of the last round

    def to_dict(self, timeline=False):
        d = {k: v for k, v in self.__dict__.items() if k != 'timeline'}
        if timeline:
            d['timeline'] = self.timeline
        return d


@dataclass
class BenchResult:
    candidates: dict                   # name -> CandidateResult, in the order given (bare last)
    seconds: float
    rounds: int
    warmup: int
    method: dict
    machine: dict
    topology: dict
    model: dict
    best_baseline: str | None = None
    stage_alone: dict = field(default_factory=dict)   # candidate -> [{stage, ms, replicas, fps_bound}]
    noise: list = field(default_factory=list)         # same_spec_spread() of the candidates
    paired: dict = field(default_factory=dict)        # plan -> baseline -> paired_ratio()
    emulation: list = field(default_factory=list)     # speed_warnings() of the candidates' windows

    def to_dict(self, timeline=False):
        return {'model': self.model, 'machine': self.machine, 'topology': self.topology, 'method': self.method,
                'seconds': self.seconds, 'rounds': self.rounds, 'warmup': self.warmup,
                'best_baseline': self.best_baseline, 'stage_alone': self.stage_alone, 'noise': self.noise,
                'paired': self.paired, 'emulation': self.emulation,
                'candidates': {k: c.to_dict(timeline) for k, c in self.candidates.items()}}


def machine_info():
    cpu_model = cpuinfo('model name', 'hardware', 'cpu model') or platform.processor() or platform.machine()
    return {'cpu_model': cpu_model, 'cpus_online': os.cpu_count(), 'cpus_allowed': list(allowed_cpus()),
            'onnxruntime': ort.__version__, 'python': platform.python_version(), 'kernel': platform.release()}


def input_array(graph, seed=0):
    """The benchmark's model input: seeded, in the model's input dtype (LayerGraph.sample_input)."""
    return graph.sample_input(seed)


class LoopWorker:
    """A pinned thread owning one session, running it in a plain loop on request (no engine, no queues)."""

    def __init__(self, model, cpus, threads, feed, out_names=None, pinned=True, name='loop', weights=None):
        self._cmd, self._res = queue.SimpleQueue(), queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True,
                                        args=(model, tuple(cpus), threads, pinned, feed, out_names, weights))
        self._thread.start()
        self._take()

    def _take(self):
        r = self._res.get()
        if isinstance(r, BaseException):
            raise r
        return r

    def _main(self, model, cpus, threads, pinned, feed, out_names, weights):
        try:
            if pinned:
                pin_current_thread(cpus[:1])
            run = make_session(model, cpus, threads=threads, pinned=pinned, weights=weights).run
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            self._res.put(exc)
            return
        self._res.put(True)
        clock = time.perf_counter
        while (cmd := self._cmd.get()) is not None:
            seconds, min_runs = cmd
            times = []
            try:
                end = clock() + seconds
                while True:
                    t0 = clock()
                    out = run(out_names, feed)
                    t1 = clock()
                    times.append((t0, t1))
                    if t1 >= end and len(times) >= min_runs:
                        break
                self._res.put((times, out))
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                self._res.put(exc)

    def loop(self, seconds, min_runs=1):
        """[(t_start, t_end)] of each run, and the last outputs."""
        self._cmd.put((seconds, min_runs))
        return self._take()

    def close(self):
        self._cmd.put(None)
        self._thread.join(5.0)


class _EngineCandidate:
    def __init__(self, graph, plan, x, warmup, queue_size, rate=None):
        self.plan = plan
        self.period = 1.0 / rate if rate else 0.0
        self.replicas = [s.replicas for s in plan.stages]
        self.done = []
        self.lat = []
        self.x = x
        self.pipe = Pipeline(graph, plan, queue_size=queue_size, on_output=self._out, name=plan.name or 'plan')
        self.pipe.start()
        for _ in range(warmup):
            self.pipe.submit(x)
        self.pipe.drain()
        self.done.clear()
        self.lat.clear()

    def _out(self, frame):
        self.done.append(frame.t_done)
        self.lat.append(frame.t_done - frame.t_start)

    def round(self, seconds, timeline):
        pipe, x = self.pipe, self.x
        self.done.clear()
        self.lat.clear()
        if timeline:
            pipe.reset_timeline(TIMELINE_FRAMES)
        before = pipe.stats()
        clock = time.perf_counter
        t0 = clock()
        end = t0 + seconds
        if self.period:       # paced: one frame per period, as a camera would send them
            due = t0
            while due < end:
                time.sleep(max(0.0, due - clock()))
                pipe.submit(x)
                due = max(due + self.period, clock())   # behind (a full queue): no burst to catch up
        else:
            while clock() < end:
                pipe.submit(x)
        pipe.drain()
        wall = clock() - t0
        after = pipe.stats()
        n = sum(1 for t in self.done if t <= end)
        tl = []
        if timeline:
            tl = [(s, r, q, a - t0, b - t0) for s, r, q, a, b in pipe.timeline()]
            pipe.reset_timeline(0)
        return self.done[:n], self.lat[:n], (before, after, wall), tl

    def close(self):
        self.pipe.stop()


class _BareCandidate:
    def __init__(self, graph, cpus, threads, x, warmup):
        self.worker = LoopWorker(graph.extract_bytes(0, len(graph.layers) - 1), cpus, threads,
                                 {graph.input_name: x}, name='bare', weights=graph.weights)
        self.worker.loop(0.0, warmup)

    def round(self, seconds, timeline):
        times, _ = self.worker.loop(seconds)
        end = times[0][0] + seconds
        times = [t for t in times if t[1] <= end] or times[:1]
        tl = [('bare', 0, i, a - times[0][0], b - times[0][0]) for i, (a, b) in
              enumerate(times[:TIMELINE_FRAMES])] if timeline else []
        return [b for _, b in times], [b - a for a, b in times], None, tl

    def close(self):
        self.worker.close()


def _round_fps(done):
    return (len(done) - 1) / (done[-1] - done[0]) if len(done) >= 2 and done[-1] > done[0] else 0.0


def _add_stats(acc, delta, replicas):
    before, after, wall = delta
    if not acc:
        acc.extend({'name': a.name, 'cluster': a.cluster, 'cpus': list(a.cpus), 'replicas': a.replicas,
                    'frames': 0, 'busy_s': 0.0, 'wait_in_s': 0.0, 'wait_out_s': 0.0, 'wall_s': 0.0}
                   for a in after)
    for d, b, a in zip(acc, before, after):
        d['frames'] += a.frames - b.frames
        d['busy_s'] += a.busy_s - b.busy_s
        d['wait_in_s'] += a.wait_in_s - b.wait_in_s
        d['wait_out_s'] += a.wait_out_s - b.wait_out_s
        d['wall_s'] += wall
        d['queue_high_water'] = a.queue_high_water
        d['drops'] = a.drops
        d['mean_ms'] = d['busy_s'] / d['frames'] * 1e3 if d['frames'] else 0.0
        d['utilisation'] = d['busy_s'] / (d['wall_s'] * d['replicas']) if d['wall_s'] else 0.0


def stage_alone(graph, plan, seconds=1.0, warmup=5, x=None):
    """Each stage of ``plan`` measured alone in a plain loop on its first replica's CPUs, fed the tensor the
    previous stages produce: [{stage, ms (median), replicas, fps_bound = replicas * 1000 / ms}]."""
    feed_arrays = [input_array(graph) if x is None else x]
    out = []
    per_stage = seconds / max(1, len(plan.stages))
    for i, s in enumerate(plan.stages):
        names = graph.boundary(s.first)
        w = LoopWorker(graph.extract_bytes(s.first, s.last), s.replica_cpus()[0], s.threads,
                       dict(zip(names, feed_arrays)), pinned=s.pinned, name=f'alone.stage_{i}',
                       weights=graph.weights)
        try:
            w.loop(0.0, warmup)
            times, feed_arrays = w.loop(per_stage, 3)
        finally:
            w.close()
        ms = float(np.median([b - a for a, b in times])) * 1e3
        out.append({'stage': f'stage_{i}', 'ms': ms, 'replicas': s.replicas,
                    'fps_bound': s.replicas * 1e3 / ms if ms > 0 else 0.0})
    return out


def run_benchmark(graph, topology, candidates, seconds=10.0, rounds=5, warmup=20, bare=False, progress=True,
                  stage_alone_for=(), queue_size=QUEUE_SIZE, log=None, rate=None):
    """Measure every plan of ``candidates`` ({name: Plan}) and, with ``bare``, the plain loop; see the module
    docstring for how. ``stage_alone_for``: candidate names whose stages are also measured alone. ``rate``:
    frames/s the producer sends at (a camera's rate), instead of as fast as the first stage takes them; the
    latency then leaves out the waits in the queues between stages that saturation puts there."""
    if not candidates:
        raise PipeitError('nothing to benchmark: no candidate plan')
    rounds = max(1, int(rounds))
    x = input_array(graph)
    results = {name: CandidateResult(name, plan.to_spec(), plan=plan.to_dict()) for name, plan in candidates.items()}
    runners = {}
    reference = next((n for n in candidates if n not in BASELINE_NAMES), None) or \
        ('best_cluster' if 'best_cluster' in candidates else next(iter(candidates)))
    for name, plan in candidates.items():
        if log:
            log(f'measuring the memory of {name} in a fresh process')
        mem = footprint.measure(graph, plan)
        res = results[name]
        res.predicted_mb = plan.notes.get('memory_mib')
        res.memory_mb, res.pss_mb = mem.get('memory_mb'), mem.get('pss_mb')
        res.peak_rss_mb, res.memory_error = mem.get('peak_rss_mb'), mem.get('error')
    try:
        for name, plan in candidates.items():
            runners[name] = _EngineCandidate(graph, plan, x, warmup, queue_size, rate)
        if bare:
            s = candidates[reference].stages[0]
            cpus = s.replica_cpus()[0]
            runners['bare'] = _BareCandidate(graph, cpus, s.threads, x, warmup)
            results['bare'] = CandidateResult('bare', f'plain ORT loop on cpus {list(cpus)} ({s.threads} threads, '
                                                      f'cores of {reference})')
        names = list(runners)
        lats = {n: [] for n in names}
        bar = tqdm(total=rounds * len(names), desc='bench', unit='run', file=sys.stderr, disable=not progress,
                   leave=False)
        with bar:
            for r in range(rounds):
                last = r == rounds - 1
                for j in range(len(names)):
                    name = names[(j + r) % len(names)]
                    bar.set_postfix_str(name)
                    before = pinned_run_wait()
                    done, lat, delta, tl = runners[name].round(seconds / rounds, last)
                    res = results[name]
                    shares = held_shares(run_wait_delta(before, pinned_run_wait()), min_run_ns=MIN_RUN_SHARE * seconds / rounds * 1e9)
                    res.speeds.append(measured_speeds(topology, shares))
                    res.fps_rounds.append(_round_fps(done))
                    res.frames += len(done)
                    lats[name].extend(lat)
                    if delta is not None:
                        _add_stats(res.stages, delta, runners[name].replicas)
                    if last:
                        res.timeline = tl
                    bar.update()
        for name in names:
            res = results[name]
            res.fps = float(np.median(res.fps_rounds))
            if lats[name]:
                res.p50_ms, res.p99_ms = (float(v) * 1e3 for v in np.percentile(lats[name], [50, 99]))
        alone = {}
        for name in stage_alone_for:
            if log:
                log(f'measuring each stage of {name} alone')
            alone[name] = stage_alone(graph, candidates[name], seconds / rounds, warmup, x)
    finally:
        for runner in runners.values():
            runner.close()
    base = {n: results[n].fps for n in results if n in BASELINE_NAMES}
    best = max(base, key=base.get) if base else None
    for res in results.values():
        if base.get('ort_all_cores'):
            res.ratio_ort = round_ratio(res.fps_rounds, results['ort_all_cores'].fps_rounds)
        if best and base[best]:
            res.ratio_best = round_ratio(res.fps_rounds, results[best].fps_rounds)
    paired = {p: {b: paired_ratio(results[p].fps_rounds, results[b].fps_rounds) for b in base}
              for p in results if p not in BASELINE_NAMES and p != 'bare'}
    method = {'rounds': rounds, 'seconds_per_round': seconds / rounds, 'warmup_frames': warmup,
              'order': 'all candidates alive; each round runs every candidate once, order rotated per round',
              'fps': 'median over rounds of steady-state (n-1)/(last-first output) inside the round window',
              'latency': 'p50/p99 over all frames of first-stage start -> in-order output (input queue excluded)',
              'memory': 'PSS of a fresh process running only the candidate, after a few frames, its weight '
                        'pages counted whole (MiB); predicted: the plan\'s memory model',
              'utilisation': 'stage busy time / (round wall time x replicas)', 'queue_size': queue_size,
              'rate': rate,
              'bare_reference': reference if bare else None}
    return BenchResult(candidates=results, seconds=seconds, rounds=rounds, warmup=warmup, method=method,
                       machine=machine_info(), topology=topology.to_dict(),
                       model={'path': graph.path, 'hash': graph.model_hash, 'layers': len(graph.layers)},
                       best_baseline=best, stage_alone=alone,
                       noise=same_spec_spread({n: r.fps for n, r in results.items()},
                                              {n: r.spec for n, r in results.items()}),
                       paired=paired, emulation=speed_warnings(topology, [s for r in results.values() for s in r.speeds]))
