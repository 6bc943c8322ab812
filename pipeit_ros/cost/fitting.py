"""From a profile's raw times to the cost table's numbers (:mod:`pipeit_ros.cost.profiler` measures, this fits):
an emulated configuration's times scaled to the share its topology sets, and the cuts' own costs fitted so
that the model as one stage costs what it measured."""
from dataclasses import replace

import numpy as np

from pipeit_ros.hw.emulation import SPEED_TOLERANCE

LOAD_LIMITS = (1.0, 4.0)   # a load factor below 1 is noise; above 4 a broken measurement
CORRECTION_TOLERANCE = 0.2  # an emulation correction further from 1 while the emulation held: a warning
FLOOR_MS = 1e-3            # a segment never costs less than this once the overhead is taken off


def emulation_correction(configs, whole_ms, limits=LOAD_LIMITS):
    """Per configuration, the factor its measured times are scaled by so that an emulated cluster is as much
    slower than the others as the topology says: ``whole_ms`` (the whole model's time on each configuration,
    measured in the same interleaved rounds) of the reference configuration with as many cores on a cluster
    without emulation, / ``emulate_share``, / its own (within ``limits``, a broken measurement beyond them: a
    little core that ran at the big one's speed, 1.0 against 0.5, is timed twice as slow); 1 for the others and
    where there is no reference. The co-runners' share of a CPU moves with other sessions' load
    (hw.emulation): a profile in which the little core ran at the big one's speed would otherwise plan for a
    machine without a little core. The run-queue shares (``meta['emulated_speed']``) say the same where the
    threads run back to back, but a worker woken for a short burst waits up to a time slice first: one profile
    put the little core at 0.17 of the big one by its shares where the whole model's times said 0.42."""
    reference = {}
    for cfg, ms in zip(configs, whole_ms):
        if cfg.emulate_share is None and ms > 0:
            reference.setdefault(cfg.cores, ms)
    out = []
    for cfg, ms in zip(configs, whole_ms):
        ref = reference.get(cfg.cores)
        out.append(1.0 if cfg.emulate_share is None or not ref or not ms > 0
                   else float(np.clip(ref / (cfg.emulate_share * ms), 1 / limits[1], limits[1])))
    return out


def emulated_samples(samples, limits=LOAD_LIMITS):
    """``samples`` (:class:`pipeit_ros.cost.synth.Samples`) with each emulated configuration's times scaled by
    the median over its groups (probes, networks) of :func:`emulation_correction` of the group's summed layer
    times. Short kernels mostly finish inside the time slice the co-runners leave, so the sweep's minimum times
    put the emulated little core near the big one's speed; a predictor trained on them planned for a machine
    without a little core (leave-one-network-out on emulated-biglittle-1+1: every net's whole time on the
    little core predicted 41-57 % too fast). Scaled, they match what the profiler's correction does to a whole
    model. The measured times stay in the cache; this is applied where they are read."""
    configs = samples.configs
    if all(c.emulate_share is None for c in configs) or samples.layer_ms.shape[1] == 0:
        return samples
    groups = {}
    for row, g in enumerate(samples.groups):
        groups.setdefault(g, []).append(row)
    per_group = np.array([emulation_correction(configs, samples.layer_ms[:, rows].sum(axis=1), limits)
                          for rows in groups.values()])
    factor = np.median(per_group, axis=0)
    meta = dict(samples.meta, emulation_correction=[float(f) for f in factor])
    return replace(samples, layer_ms=samples.layer_ms * factor[:, None],
                   unit_wall_ms=None if samples.unit_wall_ms is None else samples.unit_wall_ms * factor[:, None],
                   overhead_ms=None if samples.overhead_ms is None else np.asarray(samples.overhead_ms) * factor,
                   meta=meta)


def correction_warnings(configs, factors, speeds, tolerance=CORRECTION_TOLERANCE):
    """One line per emulated configuration whose :func:`emulation_correction` left 1 by more than ``tolerance``
    while its cluster's measured speed (``speeds``, :func:`pipeit_ros.hw.emulation.measured_speeds`) held the
    share set: the emulation held, so the whole model's times disagree for another reason, a slow spell on one of
    the CPUs while it was timed (one YOLOv8n profile here: the big core's whole model at 175 ms where the bench
    measured 117, a x1.49 correction; profiled again, 115.6 ms and x0.97). The profile is then worth taking again."""
    lines = []
    for cfg, f in zip(configs, factors):
        speed = speeds.get(cfg.cluster)
        if (cfg.emulate_share is None or speed is None or abs(f - 1) <= tolerance
                or abs(speed / cfg.emulate_share - 1) > SPEED_TOLERANCE):
            continue
        lines.append(f'warning: profile: {cfg.cluster}:{cfg.cores} ran at {speed:.2f} of the others\' speed as set, '
                     f'yet its whole-model time needs x{f:.2f} to match: another CPU had a slow spell while '
                     'timed; profile again (--no-cache) before trusting plans that use it')
    return lines


def fit_segments(alone, pairs, whole):
    """(seg_ms, cut_ms, scale) of one configuration from its segments alone, adjacent pairs alone and the whole
    model (overhead excluded): the cuts of :func:`split_cuts` fitted by :func:`fit_cuts`, each segment less half
    of the cut at either end. Where the whole model ran slower than its segments added up, cuts cannot make up
    the difference, so the segments (and pairs) are scaled up by ``scale`` = whole / their sum first: a run of a
    few ms is preempted by other processes where a 0.1 ms one mostly finishes within its slice (hw.emulation),
    and a stage runs long like the whole model. Under another session's load LR-ASPP's segments added up to
    120 ms on the big core against 230 for the whole model, while the little core's (timed by their mean, see
    ``summarise``) matched it; the table without this put the big core 3.4x ahead where the whole model said 1.6x.
    Where the segments, less every cut they can hold (each within its two segments), still add up to more than
    the whole model, they are scaled down to it (``scale`` < 1): on an emulated core a short run waits for the
    co-runner more than a long one does, and YOLOv8n's little core added up to 334 ms against 218 for the whole
    model, so data parallelism measured 1.32x its prediction (docs/architecture.md, "Measured facts")."""
    alone, pairs = np.asarray(alone, float), np.asarray(pairs, float)
    total = float(alone.sum())
    scale = whole / total if 0 < total < whole else 1.0
    alone, pairs = alone * scale, pairs * scale
    cut = fit_cuts(split_cuts(alone, pairs), alone, whole)
    table = float(alone.sum() - cut.sum())
    if whole > 0 and table > whole * (1 + 1e-9):
        shrink = whole / table     # the cuts, each within its segments, cannot make up the rest: scale down
        alone, cut, scale = alone * shrink, cut * shrink, scale * shrink
    after = np.append(cut[1:], 0.0)
    return np.maximum(alone - (cut + after) / 2, FLOOR_MS), cut, scale


def split_cuts(alone, pairs):
    """Cost of each cut from segment times alone and adjacent pairs alone (overhead excluded): what the pair
    saves, kept within [0, the smaller of its two segments] so that noise never makes a segment negative."""
    alone, pairs = np.asarray(alone, float), np.asarray(pairs, float)
    saved = alone[:-1] + alone[1:] - pairs
    return np.concatenate([[0.0], np.clip(saved, 0.0, np.minimum(alone[:-1], alone[1:]))])


def fit_cuts(cut, alone, whole):
    """The pair estimates of the cut costs scaled so that the model as one stage costs what it measured
    (``whole``, overhead excluded): one stage = sum of segments alone - sum of cuts. Pairs see only what two
    neighbours save; on MobileNet v1 the table without this came out 8 % above the whole model. Each cut stays
    within [0, the smaller of its two segments]."""
    cut = np.asarray(cut, float)
    want, have = float(np.sum(alone) - whole), float(cut.sum())
    if have <= 0 or len(cut) < 2:
        return cut
    bound = np.concatenate([[0.0], np.minimum(alone[:-1], alone[1:])])
    return np.clip(cut * max(want, 0.0) / have, 0.0, bound)
