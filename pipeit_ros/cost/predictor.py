"""Pipe-it's performance model: a layer's time on each core configuration from its descriptors alone.

So a network never profiled on this machine can be planned: ``LayerTimePredictor.cost_table(graph,
topology)`` predicts every layer on every (cluster, k cores), sums them per segment and adds the fitted
segment term, and returns the CostTable the DSE reads (source 'predictor').

Features (:data:`FEATURES`): the layer type (one-hot), log10 of MACs, input/output/weight bytes and of the
convolution's output elements before a fused pool, channels, spatial size, kernel, stride, groups, fused
pool flags, and the core configuration (k cores, cluster capacity, emulated share). One model covers all
configurations of the topology it was trained on.

Model forms (``kind``), all scikit-learn estimators following its contract:

- ``linear`` — the paper's form: per layer type and configuration a non-negative least-squares line of the
  time on MACs, input, output and weight bytes (weighted 1/y^2, i.e. relative error); convolutions are split
  into k x k, 1 x 1 and stems with <= 16 input channels (different ORT kernels);
- ``gbr`` — gradient boosting (HistGradientBoostingRegressor) on log time with all features;
- ``hybrid`` — the linear form as a base, gradient boosting on the log of measured/base: extrapolates like
  the linear form beyond the sweep (AlexNet's 151 MB fc6), corrects its shape errors inside it.

Evidence (``pipeit train --report --nets mobilenet_v2,squeezenet1_1,resnet50,googlenet``, full sweep of
730 probes / 938 layers, 2-core machine shared with the rest of the team, load average 2-4, so noisy):

=======================================  ==========  ==========  ==========
on core configuration cpu:1              linear      gbr         hybrid
=======================================  ==========  ==========  ==========
sweep, grouped 5-fold CV, layer MAPE     **20.3 %**  22.4 %      20.7 %
held-out nets, layer MAPE (mean of 4)    **10.8 %**  11.0 %      10.2 %
held-out nets, segment WAPE (mean of 4)  **10.0 %**  11.1 %      10.9 %
  mobilenet_v2 / squeezenet1_1           22.4 / 7.7  18.5 / 10.9 21.1 / 7.7
  resnet50 / googlenet                   7.5 / 2.3   8.8 / 6.2   9.9 / 5.1
held-out nets, whole-network error       -8 .. +14 % -7 .. +20 % -10 .. +19 %
=======================================  ==========  ==========  ==========

(Segment WAPE = sum |error| / sum measured; MAPE over segments is dominated by segments the optimiser
reduced to ~1 us.) Rerun on a quiet machine with cut costs in the tables (``pipeit train --topology
emulated-2x1 --report``, all six nets, c0:1 / c1:1): mean segment WAPE linear 13.1 %, gbr 15.3 %, hybrid
10.5 %; per net (linear) AlexNet 35 / 34, GoogLeNet 6.0 / 3.7, MobileNet v1 8.5 / 8.2, MobileNetV2
13.0 / 10.8, ResNet-50 7.2 / 4.4, SqueezeNet 14.5 / 11.7 %. Hybrid's lead comes from AlexNet (14 %: its
151 MB fc6 is where the linear form's memory-bound line is off); elsewhere the three are within a few points. The three forms are within the noise of each other; ``linear`` is the default: best on
the sweep's cross-validation, as good as the others on unseen networks, 5 numbers per layer type and
configuration, and it extrapolates beyond the sweep (trees flatten out). On cpu:2 the measured truths
themselves were unusable while the team's tests ran on the second CPU (ResNet-50 whole model 770 ms on 2
threads vs 110 ms on 1), so they are not used for the choice.

On ``emulated-biglittle-1+1`` (``pipeit train --topology emulated-biglittle-1+1 --report --nets`` all eight zoo
nets, 2026-12-01, sweep and layer times cached from a quiet run), linear, whole network, big / little:
YOLOv8n -3.5 / -0.2 %, LR-ASPP -16.2 / -16.7 %, the others -23 .. +4 % (AlexNet lowest); layer MAPE YOLOv8n
24.6 / 34.9 %, LR-ASPP 23.8 / 30.2 %. The emulated core's times are scaled as the profiler scales a whole model
(:func:`pipeit_ros.cost.fitting.emulated_samples`); unscaled, every net's little-core time came out 41-57 % fast.

A run of layers as one model costs the sum of its layers' predictions + a per-configuration term a + b *
layers + c * MB of input+output (layout reorders at its ends, per-node executor cost), fitted on the sweep's
probes (wall - per-run overhead - sum of ORT kernel times); the per-run overhead (Identity model) goes to
``overhead_ms`` as in a profile. In the cost table a + c * MB is paid at a stage's ends only: at a cut,
``cut_ms`` = a + 2 c * MB of the tensor there, so a merged stage does not pay its inner boundaries.
"""
import os

import joblib
import numpy as np
from scipy.optimize import nnls
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from pipeit_ros import cache
from pipeit_ros.cost import profiler, synth
from pipeit_ros.cost import timing as measure
from pipeit_ros.cost.table import DEFAULT_BASE_BYTES, CostTable
from pipeit_ros.errors import PipeitError, check_regular_file

OP_TYPES = ('conv', 'dwconv', 'gconv', 'fc', 'pool', 'gpool', 'eltwise', 'concat', 'other', 'deconv', 'matmul',
            'resize')
FEATURES = tuple(f'op_{o}' for o in OP_TYPES) + (
    'log_macs', 'log_in_bytes', 'log_out_bytes', 'log_weight_bytes', 'log_conv_out', 'log2_in_c', 'log2_out_c',
    'log2_in_hw', 'kernel', 'stride', 'log2_groups', 'fused_pool', 'fused_gpool',
    'cores', 'capacity', 'share')
KINDS = ('linear', 'gbr', 'hybrid')
DEFAULT_KIND = 'linear'
FORMAT_VERSION = 3   # 2: deconv, matmul and resize layer types; 3: emulated configurations scaled (fitting.emulated_samples)
_POOLS = {'MaxPool', 'AveragePool', 'LpPool'}
_GPOOLS = {'GlobalAveragePool', 'GlobalMaxPool', 'GlobalLpPool'}


def _first(v):
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def layer_row(d):
    """The configuration-independent features of one LayerDescriptor (dict of FEATURES names)."""
    in_elems = max(int(np.prod(d.in_shape)), 1)
    kh, kw = (tuple(d.kernel) + (1, 1))[:2] if isinstance(d.kernel, (tuple, list)) else (d.kernel, d.kernel)
    groups = max(int(d.groups or 1), 1)
    conv_out = d.macs / max(d.in_shape[0] / groups * kh * kw, 1) if d.op_type in ('conv', 'dwconv', 'gconv') \
        else np.prod(d.out_shape)    # deconv: no fused pool, so the output
    row = {f'op_{o}': float(d.op_type == o) for o in OP_TYPES}
    if d.op_type not in OP_TYPES:
        row['op_other'] = 1.0
    row.update(log_macs=np.log10(d.macs + 1), log_in_bytes=np.log10(4 * in_elems + 1),
               log_out_bytes=np.log10(d.output_bytes + 1), log_weight_bytes=np.log10(d.weight_bytes + 1),
               log_conv_out=np.log10(conv_out + 1), log2_in_c=np.log2(max(d.in_shape[0], 1)),
               log2_out_c=np.log2(max(d.out_shape[0], 1)), log2_in_hw=np.log2(max(d.in_shape[1] * d.in_shape[2], 1)),
               kernel=float(kh), stride=float(_first(d.stride)), log2_groups=np.log2(groups),
               fused_pool=float(any(f in _POOLS for f in d.fused)),
               fused_gpool=float(any(f in _GPOOLS for f in d.fused)))
    return row


def config_row(cfg):
    return {'cores': float(cfg.cores), 'capacity': float(cfg.capacity), 'share': float(cfg.emulate_share or 1.0)}


def design_matrix(descriptors, configs):
    """X of every (configuration, layer) pair, configurations outermost: shape (n_configs * n_layers, F)."""
    base = np.array([[r[f] for f in FEATURES[:-3]] for r in map(layer_row, descriptors)]).reshape(-1, len(FEATURES) - 3)
    blocks = [np.hstack([base, np.tile([[config_row(c)[f] for f in FEATURES[-3:]]], (len(base), 1))])
              for c in configs]
    return np.vstack(blocks)


class LayerTimePredictor(RegressorMixin, BaseEstimator):
    """Layer time (ms) from descriptor + core configuration features (:data:`FEATURES` columns).

    Parameters
    ----------
    kind : {'linear', 'gbr', 'hybrid'}
    max_iter, learning_rate, max_leaf_nodes : gradient-boosting settings (``gbr``, ``hybrid``).
    random_state : int, seed of the boosting.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.zeros((60, len(FEATURES))); X[:, 0] = 1; X[:, FEATURES.index('log_macs')] = rng.uniform(5, 8, 60)
    >>> X[:, FEATURES.index('cores')] = 1
    >>> y = 10 ** X[:, FEATURES.index('log_macs')] / 1e6
    >>> p = LayerTimePredictor(kind='linear').fit(X, y)
    >>> bool(np.allclose(p.predict(X), y, rtol=0.05))
    True
    """

    def __init__(self, kind=DEFAULT_KIND, max_iter=300, learning_rate=0.08, max_leaf_nodes=15, random_state=0):
        self.kind = kind
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.random_state = random_state

    # -- the scikit-learn part ----------------------------------------------------------------------------
    def fit(self, X, y):
        if self.kind not in KINDS:
            raise ValueError(f'kind must be one of {KINDS}, got {self.kind!r}')
        X, y = check_X_y(X, y, y_numeric=True)
        if X.shape[1] != len(FEATURES):
            raise ValueError(f'X has {X.shape[1]} columns, expected {len(FEATURES)} (FEATURES)')
        if np.any(y <= 0):
            raise ValueError('layer times must be > 0 ms')
        self.n_features_in_ = X.shape[1]
        self.linear_ = self._fit_linear(X, y) if self.kind in ('linear', 'hybrid') else None
        self.booster_ = None
        if self.kind in ('gbr', 'hybrid'):
            target = np.log(y) - (np.log(self._predict_linear(X)) if self.kind == 'hybrid' else 0.0)
            self.booster_ = HistGradientBoostingRegressor(
                max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=8, l2_regularization=1.0, random_state=self.random_state).fit(X, target)
        return self

    def predict(self, X):
        check_is_fitted(self, 'n_features_in_')
        X = check_array(X)
        if self.kind == 'linear':
            return self._predict_linear(X)
        log_t = self.booster_.predict(X)
        if self.kind == 'hybrid':
            log_t = log_t + np.log(self._predict_linear(X))
        return np.exp(log_t)

    @staticmethod
    def _groups(X):
        """Linear class of each row (layer type; conv split into kxk, 1x1 and few-channel stems, which run
        different kernels: NCHWc direct, GEMM, NCHW-input) and its configuration."""
        ops = np.argmax(X[:, :len(OP_TYPES)], axis=1)
        conv = ops == OP_TYPES.index('conv')
        ops = np.where(conv & (X[:, FEATURES.index('kernel')] == 1), len(OP_TYPES), ops)
        ops = np.where(conv & (X[:, FEATURES.index('log2_in_c')] <= 4), len(OP_TYPES) + 1, ops)
        cfg = [tuple(r) for r in X[:, -3:]]
        return ops, cfg

    @staticmethod
    def _terms(X):
        col = FEATURES.index
        macs = 10 ** X[:, col('log_macs')] - 1
        in_b, out_b = 10 ** X[:, col('log_in_bytes')] - 1, 10 ** X[:, col('log_out_bytes')] - 1
        w_b = 10 ** X[:, col('log_weight_bytes')] - 1
        return np.column_stack([macs, in_b, out_b, w_b]) / 1e6

    def _fit_linear(self, X, y):
        """{(op, config) or ('*', config): (coef, intercept)}; a pooled line per config backs up rare types."""
        ops, cfg = self._groups(X)
        T = self._terms(X)
        models = {}
        keys = set(zip(ops.tolist(), cfg)) | {('*', c) for c in set(cfg)}
        for key in keys:
            mask = np.array([(o == key[0] or key[0] == '*') and c == key[1] for o, c in zip(ops.tolist(), cfg)])
            if mask.sum() < 4:
                continue
            lr = LinearRegression(positive=True).fit(T[mask], y[mask], sample_weight=1 / y[mask] ** 2)
            models[key] = (lr.coef_.copy(), max(float(lr.intercept_), 1e-4))
        return models

    def _predict_linear(self, X):
        ops, cfg = self._groups(X)
        T = self._terms(X)
        out = np.empty(len(X))
        for i, (o, c) in enumerate(zip(ops.tolist(), cfg)):
            coef, icpt = self.linear_.get((o, c)) or self.linear_.get(('*', c)) or next(iter(self.linear_.values()))
            out[i] = T[i] @ coef + icpt
        return np.maximum(out, 1e-4)

    # -- planning: calibration, cost tables, persistence ------------------------------------------------------
    def calibrate(self, samples, topology, handover=None):
        """Fit the segment term and store what ``cost_table`` needs (configs, overhead, hand-over, topology).

        ``samples``: :class:`pipeit_ros.cost.synth.Samples` with per-probe wall times.
        """
        check_is_fitted(self, 'n_features_in_')
        configs = measure.core_configs(topology)
        if [c.key for c in configs] != [c.key for c in samples.configs]:
            raise PipeitError('the samples were measured on other core configurations than this topology has')
        coefs = []
        for i in range(len(configs)):
            extra = (samples.unit_wall_ms[i] - samples.overhead_ms[i]
                     - np.array([samples.layer_ms[i, rows].sum() for rows in samples.unit_layers]))
            A = np.column_stack([np.ones(len(extra)), [len(r) for r in samples.unit_layers],
                                 np.array(samples.unit_io_bytes) / 1e6])
            coefs.append(nnls(A, np.maximum(extra, 0.0))[0].tolist() if len(extra) >= 3 else [0.0, 0.0, 0.0])
        self.configs_ = [c.key for c in configs]
        self.config_rows_ = configs
        self.overhead_ms_ = np.asarray(samples.overhead_ms, float)
        self.segment_coef_ = np.asarray(coefs)
        handover = handover or {'in_process': {'fixed_ms': 0.0, 'ms_per_mb': 0.0}}
        self.handover_ = handover
        self.topology_fingerprint_ = topology.fingerprint()
        self.meta_ = {'ort_version': cache.ort_version(), 'features': list(FEATURES), 'configs': self.configs_,
                      'topology': topology.to_dict(), 'sweep': dict(samples.meta), 'kind': self.kind,
                      'format': FORMAT_VERSION}
        return self

    def layer_ms(self, graph, topology):
        """(n_configs, n_layers) predicted layer times on ``topology``'s configurations."""
        configs = measure.core_configs(topology)
        return self.predict(design_matrix(graph.layers, configs)).reshape(len(configs), len(graph.layers))

    def cost_table(self, graph, topology):
        """CostTable (source 'predictor') of ``graph`` on ``topology`` (the one it was trained on)."""
        check_is_fitted(self, 'topology_fingerprint_')
        check_topology(self.topology_fingerprint_, topology, 'this predictor')
        return table_from_layers(graph, topology, self.layer_ms(graph, topology), self.overhead_ms_,
                                 self.segment_coef_, self.handover_, source='predictor',
                                 meta={'predictor_kind': self.kind, 'prediction': True})

    def save(self, path):
        check_is_fitted(self, 'topology_fingerprint_')
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        joblib.dump({'format': FORMAT_VERSION, 'meta': self.meta_, 'estimator': self}, path)
        return path


def check_topology(fingerprint, topology, what):
    if fingerprint != topology.fingerprint():
        raise PipeitError(f'{what} was trained for topology fingerprint {fingerprint}, not for '
                          f'{topology.name!r} ({topology.fingerprint()}); run `pipeit train --topology ...` '
                          f'for this topology')


def segment_bytes(graph, segments):
    """(in_bytes, out_bytes, weight_bytes, act_bytes) per segment from the graph's cut points."""
    cuts = {c.index: c.bytes for c in graph.cut_points}
    layers = graph.layers
    in_bytes = [int(graph.input_bytes) if a == 0 else int(cuts.get(a, layers[a - 1].output_bytes))
                for a, _ in segments]
    out_bytes = [int(cuts.get(b + 1, layers[b].output_bytes)) for _, b in segments]
    weights = [int(sum(layers[i].weight_bytes for i in range(a, b + 1))) for a, b in segments]
    acts = [int(max([in_bytes[s]] + [layers[i].output_bytes for i in range(a, b + 1)]))
            for s, (a, b) in enumerate(segments)]
    return in_bytes, out_bytes, weights, acts


def table_from_layers(graph, topology, layer_ms, overhead_ms, segment_coef, handover, source, meta=None):
    """CostTable from per-layer times (n_configs, n_layers) + the fitted segment term."""
    segments = [tuple(s) for s in graph.segments()]
    in_b, out_b, weights, acts = segment_bytes(graph, segments)
    n_layers = np.array([b - a + 1 for a, b in segments])
    seg_ms = np.array([[layer_ms[i, a:b + 1].sum() for a, b in segments] for i in range(len(layer_ms))])
    coef = np.asarray(segment_coef, dtype=float).reshape(len(layer_ms), 3)
    seg_ms += coef[:, 1:2] * n_layers
    # a run's fixed part a and its end conversions c * MB are paid once per stage: at the model's ends by the
    # first and last segment, at a cut by the two stages it separates (CostTable.cut_ms, half each)
    seg_ms[:, 0] += coef[:, 0] / 2 + coef[:, 2] * in_b[0] / 1e6
    seg_ms[:, -1] += coef[:, 0] / 2 + coef[:, 2] * out_b[-1] / 1e6
    cut_ms = coef[:, 0:1] + 2 * coef[:, 2:3] * np.array(in_b, dtype=float)[None] / 1e6
    in_proc = handover['in_process']
    return CostTable(segments=segments, configs=[c.key for c in measure.core_configs(topology)],
                     seg_ms=np.maximum(seg_ms, 1e-3), cut_ms=cut_ms, overhead_ms=np.asarray(overhead_ms, float),
                     in_bytes=in_b,
                     weight_bytes=weights, act_bytes=acts, handover_fixed_ms=float(in_proc['fixed_ms']),
                     handover_ms_per_mb=float(in_proc['ms_per_mb']), source=source, model_hash=graph.model_hash,
                     topology_fingerprint=topology.fingerprint(), base_bytes=DEFAULT_BASE_BYTES,
                     meta=dict(meta or {}, handover_cross_process=handover.get('cross_process_copy'),
                               memory_source='estimate'))


def default_path(topology, quick=False):
    return cache.entry_path('predictors', topology.fingerprint(), 'quick' if quick else 'full', suffix='.joblib')


def load(path, topology):
    """The predictor saved at ``path``; PipeitError when it was trained for another topology or ORT."""
    check_regular_file(path, 'predictor file')
    try:
        data = joblib.load(path)
    except FileNotFoundError:
        raise PipeitError(f'{path}: no such predictor file (train one with `pipeit train`)') from None
    except Exception as exc:  # noqa: BLE001 - pickle/joblib raise many types for a bad file
        raise PipeitError(f'{path}: not a pipeit predictor file ({type(exc).__name__}: {exc})') from None
    if not isinstance(data, dict) or not isinstance(data.get('estimator'), LayerTimePredictor):
        raise PipeitError(f'{path}: not a pipeit predictor file')
    if data.get('format') != FORMAT_VERSION or data['meta'].get('features') != list(FEATURES):
        raise PipeitError(f'{path}: predictor format/features of another pipeit version; train again')
    check_topology(data['estimator'].topology_fingerprint_, topology, f'{path}: the predictor')
    return data['estimator']


def fit_samples(samples, kind=DEFAULT_KIND, random_state=0):
    """A LayerTimePredictor fitted on all layer rows of ``samples`` (every configuration)."""
    X = design_matrix(samples.descriptors, samples.configs)
    y = np.maximum(samples.layer_ms.reshape(-1), 1e-4)
    return LayerTimePredictor(kind=kind, random_state=random_state).fit(X, y)


def train(topology, quick=False, *, path=None, kind=DEFAULT_KIND, progress=True, log=print, use_cache=True):
    """Train (or reuse) the predictor of ``topology`` on the synthetic sweep; saved under ``path``."""
    path = path or default_path(topology, quick)
    if use_cache and os.path.exists(path):
        try:
            predictor = load(path, topology)
        except PipeitError as exc:
            log(f'train: not reusing {path}: {exc}')
        else:
            if predictor.kind == kind:
                log(f'train: reusing cached predictor {path}')
                return predictor
    samples = synth.sweep(topology, 'quick' if quick else 'full', progress=progress, log=log,
                          use_cache=use_cache)
    with measure.emulation(topology, log):
        handover = profiler.measure_handover(topology, log=log, use_cache=use_cache)
    predictor = fit_samples(samples, kind).calibrate(samples, topology, handover)
    predictor.save(path)
    log(f'train: predictor ({kind}, {len(samples.descriptors)} layers x {len(samples.configs)} configurations) '
        f'saved as {path}')
    return predictor


def mape(predicted, measured):
    """Mean absolute percentage error, in percent."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    return float(np.mean(np.abs(predicted - measured) / np.maximum(measured, 1e-9)) * 100)
