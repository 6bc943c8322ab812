"""Timing primitives shared by the profiler and the predictor's sweep: measure exactly as the engine runs.

A *core configuration* is (cluster, k cores): the first k CPUs of one cluster. The engine runs a stage in a
worker thread pinned to the group's first CPU with an ORT session whose pool threads are pinned to the rest
(:mod:`pipeit_ros.engine.sessions`); :func:`run_pinned` reproduces that: sessions are built and run inside a fresh
thread pinned the same way, and the caller's own affinity is never touched.

Timing is adaptive (:func:`time_calls`): the calls are run round-robin, so a burst of noise from other
processes hits every item of a round alike, until the medians stop moving (relative change <= rtol between
two checks) or the time budget is spent. Several core configurations are timed interleaved
(:func:`time_interleaved`): each has its sessions in its own pinned thread (:class:`PinnedWorker`), and every
repetition runs one round of each, so load that drifts during the profile hits them alike. Per-layer times of real networks, whose layers are mostly not
cuttable, come from onnxruntime's own profiler (:func:`trace_layer_times`): ``enable_profiling`` writes one
JSON event per executed node with its duration; node names of the optimised graph are mapped back to the
model's layers.
"""
import array
from dataclasses import dataclass
import json
import os
import queue
import tempfile
import threading
import time

import numpy as np
from onnx import TensorProto, helper

from pipeit_ros.engine.sessions import make_session
from pipeit_ros.hw.cpus import pin_current_thread
from pipeit_ros.hw.emulation import emulated
from pipeit_ros.model import load as graph_load


@dataclass(frozen=True)
class CoreConfig:
    """(cluster, k cores): the unit the cost table and the predictor have one column/row for."""

    cluster: str
    cores: int
    cpus: tuple
    capacity: float = 1.0
    emulate_share: float | None = None
    core_type: str = 'host'

    @property
    def key(self):
        return (self.cluster, self.cores)

    def __str__(self):
        return f'{self.cluster}:{self.cores}'


def core_configs(topology):
    """Every (cluster, k) for k = 1..cluster size, clusters fastest first (the CostTable's order)."""
    return [CoreConfig(c.name, k, tuple(c.cpus[:k]), c.capacity, c.emulate_share, c.core_type)
            for c in topology.clusters for k in range(1, c.size + 1)]


def emulation(topology, log=print):
    """The context that emulates ``topology``'s slower clusters (:func:`pipeit_ros.hw.emulation.emulated`)."""
    return emulated(topology, log)


class PinnedWorker:
    """A thread pinned to cpus[0] as an engine worker, kept alive to run the functions handed to it
    (:meth:`call`), one at a time; between calls it waits on its queue, idle. Sessions built through it keep
    running on its CPUs, so several configurations' sessions can live at once and be timed in turn
    (:func:`time_interleaved`)."""

    def __init__(self, cpus):
        self.cpus = tuple(cpus)
        self._jobs, self._results = queue.Queue(), queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=f'pipeit-measure-{self.cpus[0]}', daemon=True)
        self._thread.start()
        try:
            self.call(pin_current_thread, self.cpus[:1])
        except BaseException:
            self.close()
            raise

    def _serve(self):
        while (job := self._jobs.get()) is not None:
            fn, args, kwargs = job
            try:
                self._results.put((True, fn(*args, **kwargs)))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._results.put((False, exc))

    def call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` run in the pinned thread: its result, or its exception raised here."""
        self._jobs.put((fn, args, kwargs))
        while True:
            try:
                ok, value = self._results.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError(f'measuring thread on CPU {self.cpus[0]} ended') from None
        if not ok:
            raise value
        return value

    def close(self):
        self._jobs.put(None)
        self._thread.join(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Here:
    """The calling thread as a worker (:func:`time_calls`)."""

    @staticmethod
    def call(fn, *args, **kwargs):
        return fn(*args, **kwargs)


def run_pinned(cpus, fn, *args, **kwargs):
    """Run ``fn`` in a new thread pinned to cpus[0] (as an engine worker) and return its result or raise."""
    with PinnedWorker(cpus) as worker:
        return worker.call(fn, *args, **kwargs)


def _warm(calls, warmup):
    for _ in range(warmup):
        for call in calls:
            call()


def _round(calls, burst):
    """Times (s) of one round: per call, one untimed run first when ``burst > 1``, then ``burst`` timed runs."""
    times = []
    for call in calls:
        if burst > 1:
            call()
        row = []
        for _ in range(burst):
            t0 = time.perf_counter()
            call()
            row.append(time.perf_counter() - t0)
        times.append(row)
    return times


def time_calls(calls, *, warmup=2, min_reps=5, max_reps=100, budget_s=2.0, rtol=0.02, check_every=4,
               tick=None, burst=1):
    """Times (ms) of each zero-argument call, shape (n_calls, reps * burst); adaptive, round-robin (see module
    doc), in the calling thread.

    ``burst > 1``: in each round a call first runs once untimed, then ``burst`` times timed, back to back. A
    stage runs back to back on its cores, its weights warm in cache; a lone run after the other calls of the
    round finds them evicted (MobileNetV2's first 9 segments: 5.9 ms interleaved vs 4.1 ms in bursts).
    ``tick(seconds)`` is called after each round (progress bars).
    """
    return time_interleaved([(_Here, calls)], warmup=warmup, min_reps=min_reps, max_reps=max_reps,
                            budget_s=budget_s, rtol=rtol, check_every=check_every, tick=tick, burst=burst)[0]


def time_interleaved(groups, *, warmup=2, min_reps=5, max_reps=100, budget_s=2.0, rtol=0.02, check_every=4,
                     tick=None, burst=1, schedule=None):
    """:func:`time_calls` over several groups of calls at once: [(worker, calls)], each group run by its own
    :class:`PinnedWorker` (one per core configuration), one group at a time so the others' threads are idle.

    Each group warms up first. Then repetition r runs one round of every group, starting at group
    (r - 1) mod n (two groups: A B, B A, A B, ...), so load that drifts while the profile runs (other
    processes; on a board, thermal throttling) reaches every group alike instead of the ones measured last.
    Stops when every group's medians are stable (relative change <= rtol between two checks), after
    ``max_reps``, or once the groups' rounds took ``budget_s`` per group in all (at least 3 repetitions).
    Returns one array of times (ms, shape (n_calls, reps * burst)) per group; ``schedule`` (a list) receives
    (group, repetition) in the order run. ``tick(seconds)`` is called after each group's round.
    """
    for worker, calls in groups:
        worker.call(_warm, calls, warmup)
    times = [[[] for _ in calls] for _, calls in groups]
    n, spent, previous = len(groups), 0.0, None
    for rep in range(1, max_reps + 1):
        for j in range(n):
            g = (rep - 1 + j) % n
            worker, calls = groups[g]
            t0 = time.perf_counter()
            got = worker.call(_round, calls, burst)
            dt = time.perf_counter() - t0
            spent += dt
            for row, t in zip(times[g], got):
                row.extend(t)
            if schedule is not None:
                schedule.append((g, rep))
            if tick:
                tick(dt)
        if rep >= min_reps and (rep - min_reps) % check_every == 0:
            medians = [np.median(t, axis=1) for t in times]
            if previous is not None and all(np.all(np.abs(m - p) <= rtol * p) for m, p in zip(medians, previous)):
                break
            previous = medians
        if spent > budget_s * n and rep >= 3:
            break
    return [np.asarray(t) * 1e3 for t in times]


MAX_LOAD_SESSIONS = 8      # load CPUs beyond this share sessions (weights in memory once per session)


def time_under_load(model, cfg, feeds, load_cpus, *, budget_s=3.0, min_reps=4, max_reps=100, weights=None):
    """(times alone, times under load) in ms of ``model`` on ``cfg`` (pinned as a stage), alternating: under
    load each of ``load_cpus`` runs the model in a loop on a pinned one-thread session (the slowdown a stage
    sees when the other cores work: shared cache, memory bandwidth); alone they pause. Alternating run by run
    keeps this VM's slow spells (20-40 % for seconds) out of the ratio."""
    sessions = [make_session(model, [cpu], weights=weights) for cpu in load_cpus[:MAX_LOAD_SESSIONS]]
    go, stop = threading.Event(), threading.Event()
    lock, running, errors = threading.Lock(), [0], []

    def load(n, cpu):
        session = sessions[n % len(sessions)]
        try:
            pin_current_thread([cpu])
            while not stop.is_set():
                if not go.wait(0.05):
                    continue
                with lock:
                    running[0] += 1
                try:
                    session.run(None, feeds)
                finally:
                    with lock:
                        running[0] -= 1
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    def settle(want):
        while not errors and (running[0] != want):
            time.sleep(0.0005)

    def body():
        session = make_session(model, cfg.cpus, weights=weights)
        alone, loaded = [], []
        for _ in range(2):
            session.run(None, feeds)
        started = time.perf_counter()
        while len(alone) < max_reps:
            for state, out in ((False, alone), (True, loaded)):
                if state:
                    go.set()
                    settle(len(load_cpus))
                else:
                    go.clear()
                    settle(0)
                if errors:
                    raise errors[0]
                t0 = time.perf_counter()
                session.run(None, feeds)
                out.append(time.perf_counter() - t0)
            if len(alone) >= min_reps and time.perf_counter() - started > budget_s:
                break
        go.clear()
        return np.asarray(alone) * 1e3, np.asarray(loaded) * 1e3

    threads = [threading.Thread(target=load, args=(n, cpu), name=f'pipeit-load-{cpu}', daemon=True)
               for n, cpu in enumerate(load_cpus)]
    for t in threads:
        t.start()
    try:
        return run_pinned(cfg.cpus, body)
    finally:
        stop.set()
        go.set()
        for t in threads:
            t.join(timeout=60)


def summarise(times_ms, stat='median'):
    """(typical time, relative spread = IQR / median) per row of a (n, reps) array.

    ``stat='mean'`` for emulated clusters: a co-runner takes the core in scheduler ticks (4 ms at HZ=250), so
    a short run mostly finishes untouched and the median misses the slowdown that the mean over many runs
    (and a pipeline stage running back to back) does see: measured 0.99x median vs 2.04x mean for a 0.1 ms
    segment at share 0.5.
    """
    q1, med, q3 = np.percentile(times_ms, [25, 50, 75], axis=1)
    typical = np.mean(times_ms, axis=1) if stat == 'mean' else med
    return typical, (q3 - q1) / np.maximum(med, 1e-9)


def identity_model():
    """The trivial model whose run time is a configuration's fixed per-run overhead."""
    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'identity',
                              [value('x', TensorProto.FLOAT, [1])], [value('y', TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    return model.SerializeToString()


def feeds_for(session, rng):
    """Random inputs in each input's own type for every input of ``session`` (symbolic dims -> 1; a uint8
    image input gets pixels 0..255): model.load.session_feeds."""
    return graph_load.session_feeds(session, rng)


# ------------------------------------------------------------------ per-layer times from ORT's profiler

def layer_lookup(model, layers):
    """Original node and tensor names -> layer index, to map the optimised graph's node names back."""
    by_node = {name: layer.index for layer in layers for name in layer.nodes}
    lookup = dict(by_node)
    for node in model.graph.node:
        if node.name in by_node:
            for out in node.output:
                lookup.setdefault(out, by_node[node.name])
    return lookup


LAYOUT_OPS = {'ReorderInput', 'ReorderOutput'}


def _candidates(name):
    name = name.removesuffix('_kernel_time')
    yield name
    for prefix in ('fused ',):
        name = name.removeprefix(prefix)
    yield name
    yield name.removesuffix('_nchwc')
    yield name.removesuffix('_nchwc').removesuffix('_fused')


def trace_layer_times(model_bytes, cfg, lookup, n_layers, *, runs=10, warmup=2, rng=None, stat='median',
                      weights=None):
    """Per-layer kernel time (ms, shape (n_layers,)) and run wall time from ORT's profiler.

    ``stat``: 'median' over runs, or 'min' — the time undisturbed by other processes, which the predictor's
    training data use (on a shared machine a co-runner slows whole runs, so the median drifts with the load).

    Optimised nodes are mapped by name (ORT keeps the original node name, or the output tensor name with an
    ``_nchwc`` suffix, or ``fused <name>``); other nodes it invents go to the layer executed just before them
    (the first mapped layer when none ran before). Layout reorders (NCHW <-> NCHWc) are left out: ORT puts
    them only where a (sub-)model starts or ends, so they belong to the segment term, not to a layer — a
    single-layer probe would otherwise charge both to its one layer (measured: +85 % on MobileNetV2's
    depthwise layers). Runs inside a thread pinned as
    the engine pins (see :func:`run_pinned`).
    """
    rng = rng or np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix='pipeit-trace-') as tmp:
        def body():
            def tracing(so):
                so.enable_profiling = True
                so.profile_file_prefix = os.path.join(tmp, 'trace')
            # as given, not optimised into the cache: the trace maps onnxruntime's node names to layers itself
            session = make_session(model_bytes, cfg.cpus, weights=weights, optimize=False, configure=tracing)
            feeds = feeds_for(session, rng)
            for _ in range(warmup + runs):
                session.run(None, feeds)
            return session.end_profiling()
        path = run_pinned(cfg.cpus, body)
        with open(path, encoding='utf-8') as f:
            events = json.load(f)
    run_events = sorted((e for e in events if e.get('name') == 'model_run'), key=lambda e: e['ts'])[warmup:]
    node_events = sorted((e for e in events if e.get('cat') == 'Node'), key=lambda e: e['ts'])
    per_run = np.zeros((len(run_events), n_layers))
    r = 0
    last_layer = None
    for e in node_events:
        while r < len(run_events) and e['ts'] > run_events[r]['ts'] + run_events[r]['dur']:
            r += 1
            last_layer = None
        if r >= len(run_events):
            break
        if e['ts'] < run_events[r]['ts'] or e.get('args', {}).get('op_name') in LAYOUT_OPS:
            continue  # a warm-up run, or a layout reorder (see the docstring)
        layer = next((lookup[c] for c in _candidates(e['name']) if c in lookup), last_layer)
        if layer is None:
            layer = min(lookup.values()) if lookup else 0
        per_run[r, layer] += e['dur'] / 1e3
        last_layer = layer
    reduce = {'median': np.median, 'min': np.min}[stat]
    wall = reduce([e['dur'] for e in run_events]) / 1e3 if run_events else float('nan')
    return reduce(per_run, axis=0), float(wall)


# ------------------------------------------------------------------ hand-over between stages

HANDOVER_SIZES = (4_096, 262_144, 1_605_632, 6_422_528)  # bytes: small, 256 KB, a 224x224 image, 4x that


def _fit_line(mb, ms):
    """(fixed ms, ms per MB) of a least-squares line, both clamped at 0."""
    slope, intercept = np.polyfit(np.asarray(mb, float), np.asarray(ms, float), 1)
    return max(float(intercept), 0.0), max(float(slope), 0.0)


def measure_in_process(src_cpu, dst_cpu, sizes=HANDOVER_SIZES, reps=15):
    """Queue hand-over from a thread on ``src_cpu`` to one on ``dst_cpu`` as the engine does it.

    The producer writes the array (dirty in its cache) and puts it; the time counted is the queue's wake-up
    latency plus the extra time the consumer needs to read data that another core wrote (a read of the
    same array once it is local is subtracted). Returns (fixed_ms, ms_per_mb, points).
    """
    to_dst, back = queue.Queue(maxsize=1), queue.Queue(maxsize=1)
    results = []

    def consumer():
        pin_current_thread((dst_cpu,))
        while True:
            item = to_dst.get(timeout=10)
            if item is None:
                return
            t_put, arr = item
            t_got = time.perf_counter()
            arr.sum()                       # first read: lines come from the producer's core
            t_remote = time.perf_counter()
            arr.sum()                       # second read: local
            t_local = time.perf_counter()
            back.put((t_got - t_put) + max((t_remote - t_got) - (t_local - t_remote), 0.0))

    def producer():
        for nbytes in sizes:
            arr = np.zeros(nbytes // 4, dtype=np.float32)
            for rep in range(reps + 2):
                arr.fill(rep)
                to_dst.put((time.perf_counter(), arr), timeout=10)
                dt = back.get(timeout=10)
                if rep >= 2:
                    results.append((nbytes / 1e6, dt * 1e3))
        to_dst.put(None, timeout=10)

    worker = threading.Thread(target=consumer, name='pipeit-handover-dst', daemon=True)
    worker.start()
    run_pinned((src_cpu,), producer)
    worker.join(timeout=10)
    points = _median_points(results)
    return (*_fit_line(*zip(*points)), points)


def measure_cross_process_copy(sizes=HANDOVER_SIZES, reps=15):
    """The copy path of a cross-process hand-over (docs/architecture.md, measured facts): ndarray -> array('f') via memoryview on
    the sender, ``np.frombuffer`` on the receiver. The DDS transport itself is not included (docs/architecture.md, measured facts
    measured ~4 ms for 1.6 MB with LARGE_DATA). Returns (fixed_ms, ms_per_mb, points)."""
    results = []
    for nbytes in sizes:
        arr = np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32)
        for rep in range(reps + 2):
            t0 = time.perf_counter()
            a = array.array('f')
            a.frombytes(memoryview(arr).cast('B'))
            back = np.frombuffer(a, dtype=np.float32)
            dt = time.perf_counter() - t0
            if rep >= 2:
                results.append((nbytes / 1e6, dt * 1e3))
        del back
    points = _median_points(results)
    return (*_fit_line(*zip(*points)), points)


def _median_points(results):
    by_size = {}
    for mb, ms in results:
        by_size.setdefault(mb, []).append(ms)
    return [(mb, float(np.median(v))) for mb, v in sorted(by_size.items())]
