"""How good is the predictor on real networks it never saw? (`pipeit train --report`)

Leave-one-network-out: for each zoo network of ``nets``, a predictor is trained on the synthetic sweep plus
the per-layer times of the *other* networks of ``nets``, then predicts the held-out one. Compared per core
configuration:

- per layer: against onnxruntime's profiler (kernel time of each layer's nodes, the only way to time layers
  inside residual/inception blocks, which are not cuttable; see measure.trace_layer_times);
- per segment: against the profiler's measured segment times (pipeit_ros.cost.profiler.profile, cached);
- whole network: predicted sum of segments + overhead against the measured whole-model run.

Also a 5-fold cross-validation on the sweep alone, grouped by probe. All of it for each model form
(linear / gbr / hybrid), which is the evidence for the default form in pipeit_ros.cost.predictor.
"""
import os

import joblib
import numpy as np
from sklearn.model_selection import GroupKFold

from pipeit_ros import cache
from pipeit_ros.cost import profiler, synth
from pipeit_ros.cost import timing as measure
from pipeit_ros.cost.fitting import emulated_samples
from pipeit_ros.cost.predictor import KINDS, LayerTimePredictor, design_matrix, fit_samples, mape
from pipeit_ros.cost.synth import Samples
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import zoo

LAYER_FLOOR_MS = 1e-3   # layers the optimiser removed (0 kernel time) are left out of the layer MAPE
MAPE_FLOOR_MS = 0.05    # MAPE only over items measured >= this (a 1 us segment makes any MAPE meaningless);
                        # WAPE (sum |error| / sum measured, i.e. time-weighted) covers everything


def net_samples(graph, name, topology, *, runs=10, log=print, use_cache=True):
    """Per-layer ORT-profiler times of a whole network on every configuration of ``topology`` (cached as
    measured; emulated configurations scaled as the sweep's, :func:`pipeit_ros.cost.fitting.emulated_samples`)."""
    path = cache.entry_path('layer_times', graph.model_hash, topology.fingerprint(), runs, 'min', 'no-layout', suffix='.joblib')
    if use_cache and os.path.exists(path):
        try:
            times = joblib.load(path)
            log(f'report: reusing cached layer times of {name} {path}')
            return emulated_samples(times)
        except Exception as exc:  # noqa: BLE001 - pickle, EOF, zlib errors of a damaged file
            cache.move_aside(path, f'{type(exc).__name__}: {exc}', log=log)
    configs = measure.core_configs(topology)
    lookup = measure.layer_lookup(graph.model, graph.layers)
    blob = graph.model.SerializeToString()
    with measure.emulation(topology, log):
        times = [measure.trace_layer_times(blob, c, lookup, len(graph.layers), runs=runs, stat='min',
                                           weights=graph.weights)[0]
                 for c in configs]
    n = len(graph.layers)
    samples = Samples(configs, list(graph.layers), [name] * n, np.array(times), [name], [list(range(n))],
                      [0], np.zeros((len(configs), 1)), None, {'net': name})
    joblib.dump(samples, path)
    return emulated_samples(samples)


def _mape(predicted, measured):
    measured = np.asarray(measured, float)
    keep = measured >= MAPE_FLOOR_MS
    return mape(np.asarray(predicted, float)[keep], measured[keep]) if keep.any() else float('nan')


def wape(predicted, measured):
    """Time-weighted absolute percentage error: sum |predicted - measured| / sum measured, in percent."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    return float(np.abs(predicted - measured).sum() / max(measured.sum(), 1e-9) * 100)


def sweep_cv(samples, kinds=KINDS, folds=5, seed=0):
    """Layer MAPE (%) per kind of a grouped k-fold CV on the sweep (groups = probes)."""
    n_cfg = len(samples.configs)
    X = design_matrix(samples.descriptors, samples.configs)
    y = np.maximum(samples.layer_ms.reshape(-1), LAYER_FLOOR_MS)
    groups = np.tile(np.array(samples.groups), n_cfg)
    out = {}
    for kind in kinds:
        pred = np.empty_like(y)
        for train, test in GroupKFold(n_splits=folds).split(X, y, groups):
            pred[test] = LayerTimePredictor(kind=kind, random_state=seed).fit(X[train], y[train]).predict(X[test])
        out[kind] = mape(pred, y)
    return out


def report(topology, nets, *, quick=False, kinds=KINDS, progress=True, log=print, use_cache=True):
    """Accuracy numbers (dict) of every model form on every held-out network of ``nets``."""
    sweep = synth.sweep(topology, 'quick' if quick else 'full', progress=progress, log=log, use_cache=use_cache)
    with measure.emulation(topology, log):
        handover = profiler.measure_handover(topology, log=log, use_cache=use_cache)
    graphs, per_net, profiles = {}, {}, {}
    for name in nets:
        graphs[name] = graph_mod.load(zoo.zoo_path(name))
        per_net[name] = net_samples(graphs[name], name, topology, log=log, use_cache=use_cache)
        profiles[name] = profiler.profile(graphs[name], topology, progress=progress, log=log, use_cache=use_cache)
    configs = [str(c) for c in sweep.configs]
    result = {'configs': configs, 'sweep_layers': len(sweep.descriptors), 'sweep_cv_layer_mape': sweep_cv(sweep, kinds),
              'nets': {}, 'quick': quick}
    for held in nets:
        train = synth.Samples.concat([sweep] + [per_net[n] for n in nets if n != held])
        g, truth, prof = graphs[held], per_net[held], profiles[held]
        keep = truth.layer_ms >= LAYER_FLOOR_MS
        entry = {}
        for kind in kinds:
            p = fit_samples(train, kind).calibrate(sweep, topology, handover)
            layers = p.layer_ms(g, topology)
            table = p.cost_table(g, topology)
            whole_pred = table.seg_ms.sum(axis=1) + table.overhead_ms
            alone = prof.alone_ms()     # segments as the profiler ran them: each a model of its own
            whole_meas = np.asarray(prof.meta.get('whole_ms', prof.seg_ms.sum(axis=1) + prof.overhead_ms))
            meas_whole = [float(w) for w in whole_meas]
            entry[kind] = {
                'layer_mape': [_mape(layers[i][keep[i]], truth.layer_ms[i][keep[i]]) for i in range(len(configs))],
                'layer_wape': [wape(layers[i], truth.layer_ms[i]) for i in range(len(configs))],
                'segment_mape': [_mape(table.alone_ms()[i], alone[i]) for i in range(len(configs))],
                'segment_wape': [wape(table.alone_ms()[i], alone[i]) for i in range(len(configs))],
                'whole_error_pct': [float((whole_pred[i] / meas_whole[i] - 1) * 100) for i in range(len(configs))],
                'whole_ms_pred_meas': [[float(whole_pred[i]), meas_whole[i]] for i in range(len(configs))]}
        result['nets'][held] = entry
    return result


def format_report(result):
    """Human-readable lines of :func:`report`'s dict."""
    configs = result['configs']
    lines = [f'sweep: {result["sweep_layers"]} layers ({"quick" if result["quick"] else "full"}); '
             f'grouped 5-fold CV layer MAPE: '
             + ', '.join(f'{k} {v:.1f}%' for k, v in result['sweep_cv_layer_mape'].items()),
             'leave-one-network-out (train: sweep + the other nets listed); per core configuration:',
             f'  MAPE over layers/segments measured >= {MAPE_FLOOR_MS} ms, WAPE = sum|err|/sum(measured), '
             f'whole = signed error of the whole network (%)',
             f'{"net":<14} {"model":<7} {"config":<10} {"layer MAPE":>10} {"layer WAPE":>10} {"seg MAPE":>9} '
             f'{"seg WAPE":>9} {"whole":>7}  whole ms pred/meas']
    for net, entry in result['nets'].items():
        for kind, e in entry.items():
            for i, c in enumerate(configs):
                pm = e['whole_ms_pred_meas'][i]
                lines.append(f'{net:<14} {kind:<7} {c:<10} {e["layer_mape"][i]:>10.1f} {e["layer_wape"][i]:>10.1f} '
                             f'{e["segment_mape"][i]:>9.1f} {e["segment_wape"][i]:>9.1f} '
                             f'{e["whole_error_pct"][i]:>+7.1f}  {pm[0]:.2f}/{pm[1]:.2f}')
    means = {}
    for entry in result['nets'].values():
        for kind, e in entry.items():
            means.setdefault(kind, []).append(np.mean(e['segment_wape']))
    lines.append('mean segment WAPE over nets and configurations: '
                 + ', '.join(f'{k} {np.mean(v):.1f}%' for k, v in means.items()))
    return lines
