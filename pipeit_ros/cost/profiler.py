"""Measure every segment of a model on every core configuration: the 'profile' source of a CostTable.

A segment is the layer range between two consecutive legal cut points (``graph.segments()``); a stage is a
run of segments, so the DSE needs each segment's time on each (cluster, k cores). Each segment is extracted
as its own ONNX model and run as a stage runs it (:func:`pipeit_ros.cost.timing.run_pinned`: a thread pinned to
the configuration's first CPU, the ORT pool pinned to the others, built by ``make_session``).

Each call runs in short bursts (one untimed run, then timed ones back to back), round-robin over the calls:
a stage runs back to back with its weights in cache, so a lone cold run would overstate it.

The configurations are timed interleaved, not one after the other (:func:`_measure_configs`): each has its
sessions built in its own pinned thread, and every repetition runs one round of each configuration in turn
(the others' threads idle meanwhile), so load that drifts during the profile (other processes; on a board,
thermal throttling) slows every configuration alike and leaves their ratio alone. Profiled one after the
other, YOLOv8n on emulated-biglittle-1+1 once came out with the big core at 352 ms and the little one at 387 ms
(README: other processes loaded CPU 0 while the big core was measured); profiled again, 239 and 470. All
configurations' sessions live at once where memory allows, else in waves (``WAVE_MEMORY_MARGIN``);
``meta['schedule']`` records the order run.

What an emulated cluster gave is measured too: the run-queue shares our pinned threads got on each CPU while
timed (:func:`pipeit_ros.hw.emulation.measured_speeds`, ``meta['emulated_speed']``, a warning when it strayed
by more than 10 %). Other sessions' load moves it (once the little core of emulated-biglittle-1+1 ran at the big
one's speed for a whole profile), so an emulated configuration's times are scaled so that its whole-model time
is the reference configuration's / the share the topology sets (:func:`pipeit_ros.cost.fitting.emulation_correction`,
``meta['emulation_correction']``).

A cut has a cost of its own (layout conversions at a model's ends, see :mod:`pipeit_ros.cost.table`): every pair of
adjacent segments is also timed as one model, and ``cut_ms`` at the cut between them is what the pair saves
against its two segments run apart, scaled so that the whole model as one stage costs what it measured. ``seg_ms`` then holds each segment's time inside a stage.

Load: a core is slower while the other cores work (shared caches, memory bandwidth). After its rounds, each
configuration times the whole model again, run by run alternately alone and while every other CPU of the
topology runs the model in a loop (one single-thread session each, as data-parallel replicas would);
``load_factor`` = time under load / time alone (at least 1), see :mod:`pipeit_ros.cost.table`. Alternating matters
on a shared VM: timed apart, the two windows once gave ResNet-50 a factor of 1.8 that was a slow spell.

A session run has a fixed cost whatever the model (binding, executor set-up, output allocation): measured
as the run time of a one-element Identity model on the same configuration, it is subtracted from each
segment (``seg_ms``) and kept once per configuration (``overhead_ms``), so a stage of several segments pays it
once. The whole model is timed in the same rounds; ``meta['overhead_regression_ms']`` = (sum of raw segment
times - whole-model time) / (segments - 1) is the same overhead estimated the other way, as a check.

Hand-over between stages (:func:`measure_handover`, cached per topology): the in-process queue hand-over
(fixed + per MB) goes into the table; the cross-process copy path (memoryview -> array, docs/architecture.md, measured facts) is kept
in ``meta['handover_cross_process']``.

Memory (see :mod:`pipeit_ros.cost.table`): each segment's session is built, then run once, with the process's
anonymous memory read (after ``malloc_trim``) around each (other configurations' sessions, already built, stay
idle meanwhile): ``session_bytes`` and ``arena_bytes`` per
configuration. ``base_bytes`` and ``build_bytes`` come from the whole model run in a fresh engine process
(:func:`pipeit_ros.cost.memory_probes.process_memory`), under the topology's emulation like the timing: replicas
of unequal speed hold outputs back to put them in order, and what that costs in their arenas shows only where
they run at their clusters' speeds.

Results are cached under ``cache.entry_path('profiles', model hash, topology fingerprint, options)`` (the
ORT version is part of every key); a rerun says that it reused the file.
"""
import json
import math
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from pipeit_ros import cache
from pipeit_ros.cost import timing as measure
from pipeit_ros.cost.fitting import FLOOR_MS, LOAD_LIMITS, correction_warnings, emulation_correction, fit_segments
from pipeit_ros.cost.memory_probes import process_memory
from pipeit_ros.cost.table import DEFAULT_BASE_BYTES, CostTable
from pipeit_ros.engine.sessions import drop_resident, make_session
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import memory as procmem
from pipeit_ros.hw.emulation import measured_speeds, speed_warnings
from pipeit_ros.hw.threads import held_shares, pinned_run_wait, run_wait_delta

DEFAULT_BUDGET_S = 6.0     # per core configuration; MobileNetV2 on 2 configurations stays well under a minute
DEFAULT_WARMUP = 3
BURST = 2                  # timed runs per call per round, after one untimed run
LOAD_BUDGET_S = 3.0        # per configuration: the whole model timed alone and while the other CPUs run it
MIN_REPS, MAX_REPS = 7, 200
PROFILE_FORMAT = 'v19-probes-emulated'  # bump when the measure changes, so old cached profiles are not reused
WAVE_MEMORY_MARGIN = 2.0   # a configuration's sessions join the others' while this x what one took is available


def cache_path(graph, topology, *, reps=None, warmup=DEFAULT_WARMUP, budget_s=DEFAULT_BUDGET_S):
    return cache.entry_path('profiles', PROFILE_FORMAT, graph.model_hash, topology.fingerprint(),
                            f'cuts={graph.max_cut_tensors}', f'reps={reps}', f'warmup={warmup}',
                            f'budget={budget_s:g}')


def cached_profile(graph, topology, log=None, **options):
    """The cached profile of ``graph`` on ``topology`` (or None) and its path."""
    path = cache_path(graph, topology, **options)
    if not os.path.exists(path):
        return None, path
    try:
        return CostTable.load(path), path
    except PipeitError as exc:
        cache.move_aside(path, str(exc).removeprefix(f'{path}: '), log=log)
        return None, path


def profile(graph, topology, *, reps=None, warmup=DEFAULT_WARMUP, budget_s=DEFAULT_BUDGET_S, progress=True,
            log=print, use_cache=True, seed=0):
    """Measured CostTable (source 'profile') of ``graph`` on every core configuration of ``topology``.

    ``reps`` fixes the repetitions per segment; without it they are adaptive (7..200 rounds, until the
    medians of every configuration move < 2 % or ``budget_s`` seconds per configuration are spent in all; the
    configurations are interleaved, see the module doc). Runs inside
    ``emulation.emulated(topology)`` when the topology emulates slow clusters.
    """
    if reps is not None and reps < 1:
        raise PipeitError(f'reps must be >= 1, got {reps}')
    if budget_s <= 0:
        raise PipeitError(f'budget must be > 0 seconds, got {budget_s:g}')
    table, path = cached_profile(graph, topology, log=log, reps=reps, warmup=warmup, budget_s=budget_s)
    if use_cache and table is not None:
        log(f'profile: reusing cached profile {path} (model {graph.model_hash[:12]}, '
            f'topology {topology.fingerprint()})')
        return table
    configs = measure.core_configs(topology)
    segments = [tuple(s) for s in graph.segments()]
    started = time.perf_counter()
    log(f'profile: {len(segments)} segments x {len(configs)} core configurations '
        f'({", ".join(map(str, configs))}); extracting segments')
    blobs = [graph.extract_bytes(a, b) for a, b in segments]
    pairs = [graph.extract_bytes(segments[s - 1][0], segments[s][1]) for s in range(1, len(segments))]
    whole = graph.model.SerializeToString()
    tail = graph.extract_bytes(segments[len(segments) // 2][0], segments[-1][1]) if len(segments) > 1 else None
    timing = dict(warmup=warmup, budget_s=float('inf') if reps else budget_s,
                  min_reps=reps or MIN_REPS, max_reps=reps or MAX_REPS)
    rng = np.random.default_rng(seed)
    with measure.emulation(topology, log):
        handover = measure_handover(topology, log=log, use_cache=use_cache)
        per_config = reps or budget_s     # the bar counts rounds with fixed reps, else seconds of budget
        total = len(configs) * per_config
        with _progress_bar(total, 'round' if reps else 's', progress) as bar:
            bar.set_description_str('profile')
            done = [0.0]

            def tick(dt):
                step = min(1 if reps else dt, total - done[0])
                if step > 0:
                    bar.update(step)
                    done[0] += step
            results, feeds, schedule, shares = _measure_configs(configs, blobs, pairs, whole, tail, rng, timing, tick,
                                                                graph.weights, log)
            bar.update(max(total - done[0], 0))
            for cfg, res in zip(configs, results):
                bar.set_description_str(f'profile {cfg} under load')
                others = [c for c in topology.cpus if c not in cfg.cpus]
                res['loaded'] = (measure.time_under_load(whole, cfg, feeds[0], others, budget_s=LOAD_BUDGET_S,
                                                         weights=graph.weights)
                                 if others else None)
    speeds = measured_speeds(topology, held_shares(shares))
    for line in speed_warnings(topology, [speeds], where='profile: '):
        log(line)
    n = len(segments)
    factors = emulation_correction(configs, [float(measure.summarise(r['times'], stat='mean' if c.emulate_share
                                                                      else 'median')[0][n + 1])
                                             for c, r in zip(configs, results)])
    for line in correction_warnings(configs, factors, speeds):
        log(line)
    for res, f in zip(results, factors):
        res['times'] = res['times'] * f
    table = _assemble(graph, topology, segments, configs, results, feeds, handover, DEFAULT_BASE_BYTES,
                      dict(timing, budget_s=None if reps else budget_s, reps=reps, schedule=schedule))
    table.meta['emulated_speed'] = speeds    # what each emulated cluster gave while timed (hw.emulation)
    table.meta['emulation_correction'] = factors
    with measure.emulation(topology, log):    # the probes' replicas at the speeds the plans will run them
        table = process_memory(table, graph, topology, configs, log)
    table.meta['wall_s'] = round(time.perf_counter() - started, 2)
    table.save(path)
    log(f'profile: measured in {time.perf_counter() - started:.1f} s; cached as {path}')
    return table


def _progress_bar(total, unit, enabled):
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=not enabled, leave=False, dynamic_ncols=True,
                bar_format='{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining} left]')


def chain_feeds(sessions, first_feeds):
    """Inputs of every segment, produced by running the segments in a chain from the model input."""
    feeds = [first_feeds]
    for s, session in enumerate(sessions[:-1]):
        feeds.append(next_feeds(s, session, session.run(None, feeds[-1]), sessions[s + 1]))
    return feeds


def next_feeds(s, session, results, following):
    """The inputs of segment s + 1 (session ``following``) from ``results`` of segment s."""
    outputs = dict(zip([o.name for o in session.get_outputs()], results))
    wanted = [i.name for i in following.get_inputs()]
    missing = [n for n in wanted if n not in outputs]
    if missing:
        raise PipeitError(f'segment {s + 1} needs {missing}, which segment {s} does not produce')
    return {n: outputs[n] for n in wanted}


def _measure_configs(configs, blobs, pairs, whole, tail, rng, timing, tick, weights, log):
    """Build every configuration's sessions, each in its own pinned thread, then time them all interleaved
    (:func:`pipeit_ros.cost.timing.time_interleaved`).

    All configurations' sessions live at once when memory allows: a configuration joins the current wave
    only while the machine's available memory is at least ``WAVE_MEMORY_MARGIN`` times the most that one
    configuration's sessions took; otherwise the wave is timed and its sessions freed first, and the next
    wave starts. Returns (per configuration {'times', 'session_bytes', 'arena_bytes', 'held_bytes',
    'footprint'}, every segment's input, the schedule: per wave and repetition the configuration indices in
    the order run, and {cpu: (run ns, run-queue wait ns)} of the pinned threads while timed, hw.threads).
    """
    results, feeds, schedule, footprint, shares = [None] * len(configs), None, [], 0, {}
    pending = list(range(len(configs)))
    while pending:
        wave, workers = [], []     # (configuration index, its worker, what _build_config returned)
        try:
            for i in list(pending):
                available = procmem.available_bytes()
                if wave and available is not None and available < WAVE_MEMORY_MARGIN * footprint:
                    break
                workers.append(measure.PinnedWorker(configs[i].cpus))
                wave.append((i, workers[-1], workers[-1].call(_build_config, blobs, pairs, whole, tail, configs[i],
                                                               feeds, rng, weights)))
                feeds, footprint = wave[-1][2]['feeds'], max(footprint, wave[-1][2]['footprint'])
                pending.remove(i)
            if pending:
                log(f'profile: {len(wave)} of {len(configs)} configurations\' sessions fit in memory '
                    f'({footprint / procmem.MIB:.0f} MiB each); the rest are timed in further waves')
            order, first = [], len(schedule)
            before = pinned_run_wait()
            times = measure.time_interleaved([(worker, built['calls']) for _, worker, built in wave], tick=tick,
                                             burst=BURST, schedule=order, **timing)
            for cpu, (run, wait) in run_wait_delta(before, pinned_run_wait()).items():
                shares[cpu] = (shares.get(cpu, (0, 0))[0] + run, shares.get(cpu, (0, 0))[1] + wait)
            for (i, _, built), t in zip(wave, times):
                results[i] = dict({k: built[k] for k in ('session_bytes', 'arena_bytes', 'held_bytes', 'footprint',
                                                         'pair_arena_bytes', 'tail_arena_bytes')},
                                  times=t)
            for g, rep in order:
                if rep > len(schedule) - first:
                    schedule.append([])
                schedule[-1].append(wave[g][0])
        finally:
            for worker in workers:
                worker.close()
            wave, built = [], None     # the sessions go with the last references to them
    return results, feeds, schedule, shares


def _build_config(blobs, pairs, whole, tail, cfg, feeds, rng, weights):
    """In ``cfg``'s pinned thread: build its sessions, measuring memory (module doc), and return the calls to
    time (identity, segments, whole model, pairs) with the memory measured and ``footprint``, the anonymous
    memory all its sessions hold."""
    folder = os.path.dirname(weights.path) if weights is not None else None

    def mapped():      # the prepared weights and the segments' optimised ones (engine.optimized)
        return procmem.mapped_bytes(folder, under=True) if folder is not None else 0

    start = procmem.anonymous_now()
    sessions, built, ran, held = [], [], [], []
    if folder is not None:
        drop_resident(folder)   # pages this process touched before would not count as this segment's
    for b in blobs:
        before, before_mapped = procmem.anonymous_now(), mapped()
        sessions.append(make_session(b, cfg.cpus, weights=weights))
        built.append(max(procmem.anonymous_now() - before, 0))   # < 0: an older block was given back
        held.append(mapped() - before_mapped)
    chain = feeds is None      # the first configuration makes every segment's input on the way
    feeds = [measure.feeds_for(sessions[0], rng)] if chain else feeds
    for s, session in enumerate(sessions):
        before, before_mapped = procmem.anonymous_now(), mapped()
        results = session.run(None, feeds[s])
        ran.append(max(procmem.anonymous_now() - before, 0))
        held[s] += mapped() - before_mapped
        if chain and s + 1 < len(sessions):
            feeds.append(next_feeds(s, session, results, sessions[s + 1]))
    # timed only, their memory not measured: built as given, so no optimised model is stored for each of them
    pair_sessions = [make_session(b, cfg.cpus, weights=weights, optimize=False) for b in pairs]
    whole_session = make_session(whole, cfg.cpus, weights=weights, optimize=False)
    identity = make_session(measure.identity_model(), cfg.cpus)
    one = {'x': np.zeros(1, np.float32)}
    calls = [lambda: identity.run(None, one)]
    calls += [lambda s=s, f=f: s.run(None, f) for s, f in zip(sessions, feeds)]
    calls.append(lambda: whole_session.run(None, feeds[0]))
    pair_ran = [0]     # a pair's session, first run (with its outputs held): per segment s, of segments s-1..s
    for s, session in enumerate(pair_sessions):
        pair_feeds = {i.name: feeds[s][i.name] for i in session.get_inputs()}
        calls.append(lambda session=session, f=pair_feeds: session.run(None, f))
        before = procmem.anonymous_now()
        results = calls[-1]()
        pair_ran.append(max(procmem.anonymous_now() - before, 0))
        results = None
    tail_ran = 0      # the second half of the model as one session, first run (CostTable.tail_arena_bytes)
    if tail is not None:
        session = make_session(tail, cfg.cpus, weights=weights, optimize=False)
        before = procmem.anonymous_now()
        results = session.run(None, {i.name: feeds[len(sessions) // 2][i.name] for i in session.get_inputs()})
        tail_ran = max(procmem.anonymous_now() - before, 0)
        session = results = None
    for call in (calls[0], calls[len(sessions) + 1]):
        call()       # the identity's and the whole model's arenas count in the footprint too
    return {'calls': calls, 'feeds': feeds, 'session_bytes': built, 'arena_bytes': ran, 'held_bytes': held,
            'pair_arena_bytes': pair_ran, 'tail_arena_bytes': tail_ran, 'footprint': max(procmem.anonymous_now() - start, 0)}


def _assemble(graph, topology, segments, configs, results, feeds, handover, base_bytes, options):
    n = len(segments)
    overhead, seg_ms, cut_ms, spread, whole_ms, raw_sum, regression, reps = [], [], [], [], [], [], [], []
    loaded_ms, load_factor, segment_scale = [], [], []
    for cfg, res in zip(configs, results):
        stat = 'mean' if cfg.emulate_share else 'median'
        med, rel = measure.summarise(res['times'], stat=stat)
        overhead.append(med[0])
        seg, cut, scale = fit_segments(np.maximum(med[1:n + 1] - med[0], FLOOR_MS), med[n + 2:] - med[0],
                                       med[n + 1] - med[0])
        seg_ms.append(seg)
        cut_ms.append(cut)
        segment_scale.append(scale)
        spread.append(rel[1:n + 1])
        whole_ms.append(med[n + 1])
        raw_sum.append(float(med[1:n + 1].sum()))
        regression.append((raw_sum[-1] - med[n + 1]) / (n - 1) if n > 1 else None)
        reps.append(int(res['times'].shape[1]))
        if res.get('loaded') is None:
            loaded_ms.append(None)
            load_factor.append(1.0)
        else:
            alone_w, loaded_w = (float(measure.summarise(t[None], stat)[0][0]) for t in res['loaded'])
            loaded_ms.append(loaded_w)
            load_factor.append(float(np.clip(loaded_w / alone_w, *LOAD_LIMITS)))
    layers = graph.layers
    in_bytes = [int(sum(v.nbytes for v in f.values())) for f in feeds]
    weight_bytes = [int(sum(layers[i].weight_bytes for i in range(a, b + 1))) for a, b in segments]
    act_bytes = [int(max([in_bytes[s]] + [layers[i].output_bytes for i in range(a, b + 1)]))
                 for s, (a, b) in enumerate(segments)]
    out_bytes = in_bytes[1:] + [int(layers[segments[-1][1]].output_bytes)]
    in_proc = handover['in_process']
    meta = dict(options, memory_source='profile', reps_done=reps, whole_ms=whole_ms, sum_segments_raw_ms=raw_sum,
                overhead_regression_ms=regression, handover=handover,
                handover_cross_process=handover['cross_process_copy'], ort_version=cache.ort_version(),
                measured_at=time.strftime('%Y-%m-%dT%H:%M:%S'), emulated=topology.has_emulation(),
                model_path=str(getattr(graph, 'path', '')))
    meta['whole_from_table_ms'] = [float(s.sum() + o) for s, o in zip(seg_ms, overhead)]
    meta['whole_under_load_ms'] = loaded_ms
    meta['segment_scale'] = segment_scale     # fit_segments: > 1 where the whole model ran slower than its segments
    meta['sessions_footprint_bytes'] = [int(r['footprint']) for r in results]   # all of a configuration's, run once
    return CostTable(segments=segments, configs=[c.key for c in configs], seg_ms=np.array(seg_ms),
                     cut_ms=np.array(cut_ms), load_factor=np.array(load_factor), overhead_ms=np.array(overhead),
                     in_bytes=in_bytes, weight_bytes=weight_bytes, out_bytes=out_bytes,
                     act_bytes=act_bytes, handover_fixed_ms=in_proc['fixed_ms'],
                     handover_ms_per_mb=in_proc['ms_per_mb'], source='profile', model_hash=graph.model_hash,
                     topology_fingerprint=topology.fingerprint(), spread=np.array(spread), meta=meta,
                     session_bytes=np.array([r['session_bytes'] for r in results], dtype=float),
                     arena_bytes=np.array([r['arena_bytes'] for r in results], dtype=float), base_bytes=base_bytes,
                     pair_arena_bytes=np.array([r['pair_arena_bytes'] for r in results], dtype=float),
                     tail_arena_bytes=tail_extra([r['tail_arena_bytes'] for r in results], results, n),
                     held_bytes=[int(b) for b in np.max([r['held_bytes'] for r in results], axis=0)])


def tail_extra(tail, results, n):
    """Per configuration, what the second half of the model run as one session (``tail``: its first run) held
    beyond the most any of its segments or pairs held alone, at least 0 (CostTable.tail_arena_bytes)."""
    parts = [max(max(r['arena_bytes'][n // 2:]), max(r['pair_arena_bytes'][n // 2 + 1:], default=0)) for r in results]
    return np.maximum(np.asarray(tail, float) - np.asarray(parts, float), 0.0)


def measure_handover(topology, *, log=print, use_cache=True):
    """Hand-over cost between stages on ``topology`` (cached per topology fingerprint).

    ``in_process``: a queue hand-over from the first CPU of the fastest cluster to the first CPU of the
    slowest (or the cluster's last CPU when there is one cluster) — what the table uses.
    ``cross_process_copy``: the memoryview/array copy of a cross-process hand-over, transport excluded.
    """
    path = cache.entry_path('handover', topology.fingerprint())
    if use_cache and os.path.exists(path):
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
            for part in ('in_process', 'cross_process_copy'):
                if not all(math.isfinite(data[part][k]) and data[part][k] >= 0 for k in ('fixed_ms', 'ms_per_mb')):
                    raise ValueError(f'{part} holds negative or non-finite times')
            log(f'profile: reusing cached hand-over costs {path}')
            return data
        except (OSError, ValueError, KeyError, TypeError) as exc:
            cache.move_aside(path, f'{type(exc).__name__}: {exc}', log=log)
    src = topology.clusters[0].cpus[0]
    dst = topology.clusters[-1].cpus[0] if len(topology.clusters) > 1 else topology.clusters[0].cpus[-1]
    fixed, per_mb, points = measure.measure_in_process(src, dst)
    x_fixed, x_per_mb, x_points = measure.measure_cross_process_copy()
    data = {'in_process': {'fixed_ms': fixed, 'ms_per_mb': per_mb, 'src_cpu': src, 'dst_cpu': dst,
                           'points_mb_ms': points},
            'cross_process_copy': {'fixed_ms': x_fixed, 'ms_per_mb': x_per_mb, 'points_mb_ms': x_points,
                                   'what': 'ndarray -> array(f) via memoryview + np.frombuffer; '
                                           'DDS transport not included'}}
    data = json.loads(json.dumps(data))  # the same lists a cached read gives
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f)
    log(f'profile: hand-over {fixed:.3f} ms + {per_mb:.3f} ms/MB in process (cpu {src} -> {dst}), '
        f'cross-process copy {x_fixed:.3f} ms + {x_per_mb:.3f} ms/MB')
    return data


def describe(table):
    """Human-readable lines of a CostTable: one row per segment, one column per core configuration."""
    head = ['segment', 'layers'] + [f'{c}:{k}' for c, k in table.configs]
    rows = [[str(s), f'{a}-{b}'] + [f'{table.seg_ms[i, s]:.3f}' for i in range(len(table.configs))]
            for s, (a, b) in enumerate(table.segments)]
    rows.append(['overhead', ''] + [f'{v:.3f}' for v in table.overhead_ms])
    rows.append(['one stage', ''] + [f'{v:.3f}' for v in table.seg_ms.sum(axis=1) + table.overhead_ms])
    rows.append(['all cuts', ''] + [f'{v:.3f}' for v in table.cut_ms.sum(axis=1)])
    if table.load_factor is not None:
        rows.append(['under load', ''] + [f'x{v:.3f}' for v in table.load_factor])
    if 'whole_ms' in table.meta:
        rows.append(['whole', ''] + [f'{v:.3f}' for v in table.meta['whole_ms']])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ['  '.join(v.rjust(w) for v, w in zip(r, widths)) for r in [head] + rows]
    lines.append(f'times in ms ({table.source}) of each segment inside a stage; a cut between stages adds its '
                 f'own cost (sum over all cuts above) and a hand-over of {table.handover_fixed_ms:.3f} ms + '
                 f'{table.handover_ms_per_mb:.3f} ms/MB in one process; between two containers the sender pays '
                 f'{table.hop_send_fixed_ms:.3f} ms + {table.hop_send_ms_per_mb:.3f} ms/MB and the receiver '
                 f'{table.hop_recv_fixed_ms:.3f} ms + {table.hop_recv_ms_per_mb:.3f} ms/MB')
    factors = dict(zip([f'{c}:{k}' for c, k in table.configs], table.meta.get('emulation_correction') or []))
    for cluster, speed in (table.meta.get('emulated_speed') or {}).items():
        scaled = ', '.join(f'{k} x{f:.2f}' for k, f in factors.items() if k.startswith(f'{cluster}:'))
        lines.append(f'emulated cluster {cluster} ran at {speed:.2f} of the others\' speed while profiled; its '
                     f'times are scaled to the share the topology sets ({scaled})')
    return lines
