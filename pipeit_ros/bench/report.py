"""What a benchmark run's figures say: ratios paired by round, candidates of one spec measured apart (the run's
noise), and the human table and method lines that ``pipeit bench`` prints (:mod:`pipeit_ros.bench.benchmark`
measures)."""
import numpy as np

NOISE_SPREAD = 0.05     # candidates of one spec measured further apart than this (max / min - 1): a noisy run


def same_spec_spread(fps, specs, limit=NOISE_SPREAD):
    """Candidates that are the same plan (equal ``specs[name]``) but measured more than ``limit`` apart in one run:
    [{'spec', 'candidates', 'fps', 'spread'}], spread = max / min - 1. The same plan measured twice differs only
    by the machine's noise, so this says how far the run's other ratios can be trusted."""
    groups = {}
    for name, spec in specs.items():
        if spec and fps.get(name):
            groups.setdefault(spec, []).append(name)
    out = []
    for spec, names in groups.items():
        values = [fps[n] for n in names]
        if len(names) > 1 and max(values) / min(values) - 1 > limit:
            out.append({'spec': spec, 'candidates': names, 'fps': values, 'spread': max(values) / min(values) - 1})
    return out


def paired_ratio(rounds_a, rounds_b):
    """a's frames/s over b's, round by round (both measured in the same round, close in time):
    {'median', 'min', 'max', 'rounds'}; None when no round measured both."""
    got = [a / b for a, b in zip(rounds_a, rounds_b) if a and b]
    if not got:
        return None
    return {'median': float(np.median(got)), 'min': min(got), 'max': max(got), 'rounds': got}


def round_ratio(rounds_a, rounds_b):
    """The median of :func:`paired_ratio` (None when no round measured both)."""
    got = paired_ratio(rounds_a, rounds_b)
    return None if got is None else got['median']


def noise_warnings(noise, where=''):
    """One line per same_spec_spread() entry, for printing next to a table."""
    return [f'warning: {where}{" and ".join(item["candidates"])} are the same plan ({item["spec"]}) but measured '
            + ' and '.join(f'{v:.1f}' for v in item['fps'])
            + f' frames/s ({item["spread"] * 100:.0f}% apart): this run is noisy beyond {NOISE_SPREAD * 100:.0f}%'
            for item in noise]


def format_table(result):
    """The human table: one line per candidate, ratios to ort_all_cores and to the best baseline."""
    def ratio(v):
        return f'{v:6.2f}x' if v is not None else '      -'
    width = max(len(n) for n in result.candidates)
    lines = [f'{"candidate":<{width}}  {"frames/s":>9} {"x ort":>7} {"x best":>7} {"p50 ms":>8} {"p99 ms":>8} '
             f'{"MiB pred/PSS":>12}  stage utilisation / spec']
    for name, c in result.candidates.items():
        util = ' '.join(f'{s["utilisation"] * 100:3.0f}%' for s in c.stages)
        spec = c.spec if len(c.spec) <= 48 else c.spec[:45] + '...'
        lines.append(f'{name:<{width}}  {c.fps:9.1f} {ratio(c.ratio_ort)} {ratio(c.ratio_best)} {c.p50_ms:8.2f} '
                     f'{c.p99_ms:8.2f} {_mib(c.predicted_mb):>5}/{_mib(c.memory_mb):<6}  {util + "  " if util else ""}{spec}')
    for name, c in result.candidates.items():
        predicted = (c.plan or {}).get('predicted_fps')
        if predicted and c.fps:
            lines.append(f'{name}: predicted {predicted:.1f} frames/s, measured {c.fps:.1f} '
                         f'(measured / predicted {c.fps / predicted:.2f})')
    for name, stages in result.stage_alone.items():
        bound = min(s['fps_bound'] for s in stages)
        fps = result.candidates[name].fps
        lines.append(f'{name}: stages alone ' + ', '.join(f'{s["stage"]} {s["ms"]:.3f} ms'
                                                          + (f' x{s["replicas"]}' if s['replicas'] > 1 else '')
                                                          for s in stages)
                     + _predicted_stages(result.candidates[name].plan)
                     + f' -> bound {bound:.1f} frames/s; pipeline efficiency {fps / bound * 100:.0f}%')
    ref = result.method.get('bare_reference')
    if 'bare' in result.candidates and ref in result.candidates:
        eng, bare = result.candidates[ref].fps, result.candidates['bare'].fps
        stages = result.candidates[ref].plan['stages']
        if len(stages) > 1 or stages[0]['replicas'] > 1:
            lines.append(f'bare ran on the cores of {ref}\'s first stage only: the engine overhead is measured '
                         f'with a one-stage, one-replica plan (e.g. --stages 0-{result.model["layers"] - 1}@CLUSTER)')
        elif eng and bare:
            lines.append(f'engine overhead: {ref} {eng:.1f} vs bare {bare:.1f} frames/s '
                         f'(throughput {(eng / bare - 1) * 100:+.1f}%, {1e3 / eng - 1e3 / bare:+.3f} ms per frame)')
    for name, ratios in result.paired.items():
        got = [f'{b} {r["median"]:.2f} ({r["min"]:.2f}-{r["max"]:.2f})' for b, r in ratios.items() if r]
        if got:
            lines.append(f'{name} / baseline, median of per-round ratios (range): ' + ', '.join(got))
    speeds = {}
    for c in result.candidates.values():
        for s in c.speeds:
            for cluster, v in s.items():
                speeds.setdefault(cluster, []).append(v)
    for cluster, got in speeds.items():
        lines.append(f'emulated {cluster}: measured speed {np.median(got):.2f} of the others\' (median of '
                     f'{len(got)} windows, {min(got):.2f}-{max(got):.2f})')
    lines += noise_warnings(result.noise)
    lines += result.emulation
    return '\n'.join(lines)


def _mib(value):
    return '-' if value is None else f'{value:.0f}'


def _predicted_stages(plan):
    ms = [s.get('predicted_ms') for s in (plan or {}).get('stages', [])]
    return f' (predicted {", ".join(f"{m:.3f}" for m in ms)} ms)' if ms and None not in ms else ''


def format_method(result):
    m, mc, t = result.method, result.machine, result.topology
    emulated = [f'{c["name"]} share {c["emulate"]["share"]:g}' for c in t['clusters'] if c.get('emulate')]
    return '\n'.join([
        f'topology: {t["name"]} ({t["fingerprint"]}): '
        + ', '.join(f'{c["name"]} cpus {c["cpus"]}' for c in t['clusters'])
        + (f'; emulated: {", ".join(emulated)}' if emulated else ''),
        f'machine: {mc["cpu_model"]}, {mc["cpus_online"]} CPUs online, allowed {mc["cpus_allowed"]}, '
        f'onnxruntime {mc["onnxruntime"]}, Python {mc["python"]}, kernel {mc["kernel"]}',
        f'method: {m["rounds"]} rounds x {m["seconds_per_round"]:.2f} s per candidate, {m["warmup_frames"]} warm-up '
        f'frames; {m["order"]}',
        f'  frames/s: {m["fps"]}; latency: {m["latency"]}',
        f'  memory: {m["memory"]}; utilisation: {m["utilisation"]}'])
