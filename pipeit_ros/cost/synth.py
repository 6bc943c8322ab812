"""The predictor's training data: a sweep of synthetic layers timed on every core configuration.

Each *probe* is a tiny ONNX model built with the onnx helper API in the patterns the zoo networks use
(Conv + BatchNormalization + Relu/Clip/HardSwish/SiLU as Sigmoid * Mul, optionally a fused MaxPool or
GlobalAveragePool; depthwise and grouped convolutions; standalone pools; Flatten + Gemm; residual Add + Relu;
Concat of 2 or 4 branches) and those of detectors and segmenters (ConvTranspose; nearest and bilinear Resize;
Split into two, joined again by a Concat; Transpose; MatMul of two activations). Probe
shapes are drawn with a seeded generator: spatial size from the sizes real CNNs use (7 ... 224, including
AlexNet's/SqueezeNet's odd ones), channels log-uniform in a range that fits that size, kernel 1/3/5/7 (11
for the AlexNet-style stem), stride 1/2, capped in MACs so the sweep fits its time budget.

A probe is read back through :func:`pipeit_ros.model.graph.load`, so its layers and descriptors are exactly what
the predictor sees on a real network. On each core configuration a probe yields:

- per-layer times from onnxruntime's profiler (kernel time of the layer's nodes; see
  :func:`pipeit_ros.cost.timing.trace_layer_times`) — the same measure used for layers of real networks;
  the minimum over runs: the development machine is shared, and a co-runner slows whole runs (measured:
  the same conv shape at 9 to 45 GMAC/s within one median-based sweep), which the minimum mostly escapes;
- the probe's wall time on a plain session (as the profiler times a segment), so that
  wall - per-run overhead - sum of layer times (layout reorders at the boundary, per-node executor cost)
  can be fitted per configuration (the predictor's segment term).

Full sweep: ~10 minutes for 2 core configurations on the 2-core development machine; ``quick``: seconds.
"""
from dataclasses import dataclass, field
import math
import os
import sys
import tempfile
import time

import joblib
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tqdm import tqdm

from pipeit_ros import cache
from pipeit_ros.cost import timing as measure
from pipeit_ros.cost.fitting import emulated_samples
from pipeit_ros.engine.sessions import make_session
from pipeit_ros.model import graph as graph_mod

SWEEP_VERSION = 4
KINDS = ('conv', 'conv_pool', 'conv_gpool', 'dwconv', 'gconv', 'fc', 'pool', 'gpool', 'add', 'concat', 'deconv',
         'resize', 'split', 'transpose', 'matmul')
# probes per kind: (full, quick)
COUNTS = {'conv': (300, 8), 'conv_pool': (40, 2), 'conv_gpool': (20, 1), 'dwconv': (100, 3), 'gconv': (50, 2),
          'fc': (50, 2), 'pool': (50, 2), 'gpool': (20, 1), 'add': (50, 2), 'concat': (50, 2), 'deconv': (40, 2),
          'resize': (40, 2), 'split': (25, 1), 'transpose': (25, 1), 'matmul': (30, 2)}
ACTIVATIONS = ('Relu', 'Clip', 'HardSwish', 'SiLU', '')
# spatial size -> (min channels, max channels) as in real CNNs
SIZES = {224: (3, 16), 112: (16, 96), 56: (16, 256), 55: (16, 128), 28: (32, 512), 27: (32, 256),
         14: (64, 1024), 13: (64, 512), 7: (128, 2048)}
MAX_MACS = {'full': 6e8, 'quick': 2e7}
PROBE_BUDGET_S = {'full': 0.2, 'quick': 0.02}


@dataclass(frozen=True)
class ProbeSpec:
    kind: str
    cin: int
    hw: int
    cout: int = 0
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    act: str = 'Relu'
    branches: int = 2

    def __str__(self):
        return (f'{self.kind} {self.cin}x{self.hw}x{self.hw} -> {self.cout} k{self.kernel} s{self.stride}'
                f' g{self.groups}')


@dataclass
class Samples:
    """Per-layer and per-probe measurements on each core configuration (all arrays: configs first)."""

    configs: list                        # [CoreConfig]
    descriptors: list                    # LayerDescriptor per layer row
    groups: list                         # probe / network name of each layer row (for grouped CV)
    layer_ms: np.ndarray                 # (n_configs, n_layers) kernel times from the ORT profiler
    unit_groups: list = field(default_factory=list)   # per probe/segment: its group name
    unit_layers: list = field(default_factory=list)   # per probe/segment: its layer row indices
    unit_io_bytes: list = field(default_factory=list)  # per probe/segment: input + output bytes
    unit_wall_ms: np.ndarray | None = None   # (n_configs, n_units) plain-session wall time
    overhead_ms: np.ndarray | None = None    # (n_configs,) per-run overhead (identity model)
    meta: dict = field(default_factory=dict)

    def subset(self, keep):
        """Only the rows (layers and units) whose group satisfies ``keep(group)``."""
        rows = [i for i, g in enumerate(self.groups) if keep(g)]
        remap = {r: j for j, r in enumerate(rows)}
        units = [u for u, g in enumerate(self.unit_groups) if keep(g)]
        return Samples(self.configs, [self.descriptors[i] for i in rows], [self.groups[i] for i in rows],
                       self.layer_ms[:, rows], [self.unit_groups[u] for u in units],
                       [[remap[r] for r in self.unit_layers[u]] for u in units],
                       [self.unit_io_bytes[u] for u in units],
                       None if self.unit_wall_ms is None else self.unit_wall_ms[:, units], self.overhead_ms,
                       dict(self.meta))

    @staticmethod
    def concat(parts):
        parts = [p for p in parts if p is not None]
        first = parts[0]
        out = Samples(first.configs, [], [], np.zeros((len(first.configs), 0)), meta=dict(first.meta))
        walls = []
        for p in parts:
            base = len(out.descriptors)
            out.descriptors += p.descriptors
            out.groups += p.groups
            out.layer_ms = np.concatenate([out.layer_ms, p.layer_ms], axis=1)
            out.unit_groups += p.unit_groups
            out.unit_layers += [[base + r for r in u] for u in p.unit_layers]
            out.unit_io_bytes += p.unit_io_bytes
            walls.append(p.unit_wall_ms if p.unit_wall_ms is not None
                         else np.zeros((len(first.configs), len(p.unit_groups))))
            if out.overhead_ms is None:
                out.overhead_ms = p.overhead_ms
        out.unit_wall_ms = np.concatenate(walls, axis=1)
        return out


def sweep_specs(size='full', seed=0):
    """The probe specs of a sweep (seeded; ``size`` 'full' or 'quick')."""
    rng = np.random.default_rng(seed)
    col = 0 if size == 'full' else 1
    specs = []
    for kind in KINDS:
        n, tries = COUNTS[kind][col], 0
        while n > 0 and tries < 5000:
            tries += 1
            spec = _draw(kind, rng)
            if probe_macs(spec) <= MAX_MACS[size] and spec not in specs:
                specs.append(spec)
                n -= 1
    return specs


def _log_uniform(rng, lo, hi, multiple=8):
    value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return max(lo, int(round(value / multiple)) * multiple) if value > multiple else max(lo, int(round(value)))


def _draw(kind, rng):
    hw = int(rng.choice(list(SIZES)))
    lo, hi = SIZES[hw]
    cin = _log_uniform(rng, lo, hi)
    act = str(rng.choice(ACTIVATIONS))
    if kind in ('conv', 'conv_pool', 'conv_gpool'):
        cout = _log_uniform(rng, max(8, lo), hi * 4)
        k = int(rng.choice([1, 1, 3, 3, 5, 7] + ([11] if hw == 224 else [])))
        return ProbeSpec(kind, cin, hw, cout, k, int(rng.choice([1, 2])) if k > 1 or hw > 7 else 1, act=act)
    if kind == 'dwconv':
        cin = max(cin, 16)
        return ProbeSpec(kind, cin, hw, cin, int(rng.choice([3, 3, 5, 7])), int(rng.choice([1, 2])), cin, act)
    if kind == 'gconv':
        g = int(rng.choice([2, 4, 8]))
        cin, cout = max(g * 8, cin // g * g), max(g * 8, _log_uniform(rng, max(8, lo), hi * 2) // g * g)
        return ProbeSpec(kind, cin, hw, cout, int(rng.choice([1, 3])), int(rng.choice([1, 2])), g, act)
    if kind == 'fc':
        hw = int(rng.choice([1, 1, 1, 6]))
        cin = _log_uniform(rng, 256, 9216) if hw == 1 else _log_uniform(rng, 64, 256)
        return ProbeSpec(kind, cin, hw, _log_uniform(rng, 10, 4096), act=str(rng.choice(['Relu', ''])))
    if kind == 'pool':
        return ProbeSpec(kind, cin, hw, cin, int(rng.choice([2, 3])), int(rng.choice([1, 2, 2])),
                         act=str(rng.choice(['MaxPool', 'AveragePool'])))
    if kind == 'gpool':
        return ProbeSpec(kind, cin, hw, cin)
    if kind == 'add':
        return ProbeSpec(kind, cin, hw, cin, act=str(rng.choice(['Relu', ''])))
    if kind == 'deconv':   # upsampling by 2: kernel 2 or 4 (stride 2), as segmenters' decoders
        return ProbeSpec(kind, cin, hw, _log_uniform(rng, 8, max(8, cin)), int(rng.choice([2, 4])), 2, act=act)
    if kind == 'resize':
        return ProbeSpec(kind, cin, hw, cin, act=str(rng.choice(['nearest', 'linear'])))
    if kind == 'matmul':   # (C, H, W) x (C, W, H) per channel: attention-like, K = W
        hw = int(rng.choice([7, 13, 14, 27, 28, 55, 56]))
        return ProbeSpec(kind, _log_uniform(rng, 8, 256), hw, 0)
    if kind in ('split', 'transpose'):
        return ProbeSpec(kind, max(cin // 2 * 2, 2), hw, cin)
    return ProbeSpec(kind, cin, hw, cin, branches=int(rng.choice([2, 4])))


def probe_macs(spec):
    out = -(-spec.hw // spec.stride)
    if spec.kind in ('conv', 'conv_pool', 'conv_gpool', 'dwconv', 'gconv'):
        return out * out * spec.cout * spec.cin // spec.groups * spec.kernel ** 2
    if spec.kind == 'fc':
        return spec.cin * spec.hw * spec.hw * spec.cout
    if spec.kind == 'deconv':
        return spec.cin * spec.hw * spec.hw * spec.cout * spec.kernel ** 2
    if spec.kind == 'matmul':
        return spec.cin * spec.hw ** 3
    return spec.cin * spec.hw * spec.hw * max(spec.kernel, 1) ** 2


def build_probe(spec, seed=0):
    """The ONNX model of one probe (input 'input' 1 x cin x hw x hw)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def activation(x, act, name):
        if act == 'Relu':
            return node('Relu', [x], name)
        if act == 'Clip':
            return node('Clip', [x, init(name + '.lo', np.array(0.0)), init(name + '.hi', np.array(6.0))], name)
        if act == 'HardSwish':
            return node('HardSwish', [x], name)
        if act == 'SiLU':   # as exporters write it: x * Sigmoid(x)
            return node('Mul', [x, node('Sigmoid', [x], name + '.sigmoid')], name)
        return x

    x, s = 'input', spec
    if s.kind in ('conv', 'conv_pool', 'conv_gpool', 'dwconv', 'gconv'):
        fan_in = s.cin // s.groups * s.kernel ** 2
        w = init('conv.w', rng.standard_normal((s.cout, s.cin // s.groups, s.kernel, s.kernel)) * (2 / fan_in) ** .5)
        x = node('Conv', [x, w], 'conv', kernel_shape=[s.kernel] * 2, strides=[s.stride] * 2,
                 pads=[s.kernel // 2] * 4, group=s.groups)
        bn = [init(f'bn.{p}', v) for p, v in (('g', np.ones(s.cout)), ('b', np.zeros(s.cout)),
                                              ('m', np.zeros(s.cout)), ('v', np.ones(s.cout)))]
        x = activation(node('BatchNormalization', [x] + bn, 'bn'), s.act, 'act')
        if s.kind == 'conv_pool':
            x = node('MaxPool', [x], 'pool', kernel_shape=[3, 3], strides=[2, 2])
        if s.kind == 'conv_gpool':
            x = node('Flatten', [node('GlobalAveragePool', [x], 'gap')], 'flatten')
    elif s.kind == 'fc':
        k = s.cin * s.hw * s.hw
        x = node('Flatten', [x], 'flatten')
        x = node('Gemm', [x, init('fc.w', rng.standard_normal((s.cout, k)) * (2 / k) ** .5),
                          init('fc.b', np.zeros(s.cout))], 'fc', transB=1)
        x = activation(x, s.act, 'act')
    elif s.kind == 'pool':
        x = node(s.act, [x], 'pool', kernel_shape=[s.kernel] * 2, strides=[s.stride] * 2)
    elif s.kind == 'gpool':
        x = node('Flatten', [node('GlobalAveragePool', [x], 'gap')], 'flatten')
    elif s.kind == 'add':
        x = activation(node('Add', [x, node('Relu', [x], 'branch')], 'add'), s.act, 'act')
    elif s.kind == 'deconv':
        w = init('deconv.w', rng.standard_normal((s.cin, s.cout, s.kernel, s.kernel)) * (1 / s.cin) ** .5)
        pad = (s.kernel - s.stride) // 2
        x = node('ConvTranspose', [x, w], 'deconv', kernel_shape=[s.kernel] * 2, strides=[s.stride] * 2,
                 pads=[pad] * 4)
        bn = [init(f'bn.{p}', v) for p, v in (('g', np.ones(s.cout)), ('b', np.zeros(s.cout)),
                                              ('m', np.zeros(s.cout)), ('v', np.ones(s.cout)))]
        x = activation(node('BatchNormalization', [x] + bn, 'bn'), s.act, 'act')
    elif s.kind == 'resize':
        sizes = numpy_helper.from_array(np.array([1, s.cin, 2 * s.hw, 2 * s.hw], np.int64), 'resize.sizes')
        inits.append(sizes)
        x = node('Resize', [x, '', '', 'resize.sizes'], 'resize', mode=s.act,
                 coordinate_transformation_mode='asymmetric' if s.act == 'nearest' else 'half_pixel')
    elif s.kind == 'split':
        inits.append(numpy_helper.from_array(np.array([s.cin // 2] * 2, np.int64), 'split.sizes'))
        nodes.append(helper.make_node('Split', [x, 'split.sizes'], ['a', 'b'], name='split', axis=1))
        x = node('Concat', ['b', 'a'], 'concat', axis=1)
    elif s.kind == 'transpose':
        x = node('Transpose', [x], 'transpose', perm=[0, 2, 1, 3])
    elif s.kind == 'matmul':
        x = node('MatMul', [x, node('Transpose', [x], 'xt', perm=[0, 1, 3, 2])], 'matmul')
    else:  # concat
        branches = [x] + [node(op, [x], f'branch{i}') for i, op in
                          enumerate(['Relu', 'Sigmoid', 'Neg'][:s.branches - 1])]
        x = node('Concat', branches, 'concat', axis=1)
    nodes.append(helper.make_node('Identity', [x], ['output'], name='output'))
    inputs = [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, s.cin, s.hw, s.hw])]
    model = helper.make_model(helper.make_graph(nodes, f'probe_{s.kind}', inputs, [], inits),
                              opset_imports=[helper.make_opsetid('', 17)])
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.append(inferred['output'])
    model.ir_version = 8
    return model


def load_probe(spec, directory, index):
    """(LayerGraph, bytes) of a probe, read back through graph.load (the descriptors real nets get)."""
    path = os.path.join(directory, f'probe{index}.onnx')
    onnx.save(build_probe(spec, seed=index), path)
    g = graph_mod.load(path, store=False)   # a throw-away probe: not kept in the cache
    return g, g.model.SerializeToString()


def measure_units(units, configs, *, budget_s, trace_runs=5, progress=True, desc='sweep', log=print):
    """Measure ``units`` [(group name, LayerGraph, model bytes)] on each configuration -> Samples.

    Per unit and configuration: ORT-profiler per-layer times and the plain-session wall time; per
    configuration the per-run overhead (identity model). Configurations alternate per unit, so noise from
    other processes spreads over all of them.
    """
    rng = np.random.default_rng(0)
    overhead = np.array([measure.run_pinned(c.cpus, _overhead, c) for c in configs])
    descriptors, groups, unit_layers, io_bytes = [], [], [], []
    layer_ms, wall = [], []
    for name, g, blob in tqdm(units, desc=desc, unit='probe', file=sys.stderr, disable=not progress,
                              leave=False, dynamic_ncols=True):
        lookup = measure.layer_lookup(g.model, g.layers)
        base = len(descriptors)
        descriptors += g.layers
        groups += [name] * len(g.layers)
        unit_layers.append(list(range(base, base + len(g.layers))))
        io_bytes.append(g.input_bytes + g.layers[-1].output_bytes)
        per_cfg, walls = [], []
        for cfg in configs:
            times, _ = measure.trace_layer_times(blob, cfg, lookup, len(g.layers), runs=trace_runs, rng=rng,
                                                 stat='min')
            per_cfg.append(times)
            walls.append(measure.run_pinned(cfg.cpus, _wall, blob, cfg, budget_s, rng))
        layer_ms.append(np.array(per_cfg))
        wall.append(walls)
    return Samples(list(configs), descriptors, groups, np.concatenate(layer_ms, axis=1), [u[0] for u in units],
                   unit_layers, io_bytes, np.array(wall).T, overhead)


def _overhead(cfg):
    s = make_session(measure.identity_model(), cfg.cpus)
    one = {'x': np.zeros(1, np.float32)}
    return float(np.min(measure.time_calls([lambda: s.run(None, one)], min_reps=200, max_reps=2000,
                                           budget_s=0.5, warmup=20)))


def _wall(blob, cfg, budget_s, rng):
    s = make_session(blob, cfg.cpus)
    feeds = measure.feeds_for(s, rng)
    t = measure.time_calls([lambda: s.run(None, feeds)], warmup=1, min_reps=3, max_reps=25, budget_s=budget_s)
    return float(np.min(t))


def sweep_path(topology, size):
    return cache.entry_path('sweeps', topology.fingerprint(), size, f'v{SWEEP_VERSION}', suffix='.joblib')


def sweep(topology, size='full', *, progress=True, log=print, use_cache=True, seed=0):
    """Samples of the synthetic sweep on every core configuration of ``topology`` (cached as measured; returned
    with emulated configurations scaled by :func:`pipeit_ros.cost.fitting.emulated_samples`)."""
    path = sweep_path(topology, size)
    if use_cache and os.path.exists(path):
        try:
            samples = joblib.load(path)
            log(f'train: reusing cached {size} sweep {path}')
            return emulated_samples(samples)
        except Exception as exc:  # noqa: BLE001 - pickle, EOF, zlib errors of a damaged file
            cache.move_aside(path, f'{type(exc).__name__}: {exc}', log=log)
    specs = sweep_specs(size, seed)
    configs = measure.core_configs(topology)
    started = time.perf_counter()
    log(f'train: timing {len(specs)} synthetic probes on {len(configs)} core configurations '
        f'({", ".join(map(str, configs))}) [{size}]')
    with tempfile.TemporaryDirectory(prefix='pipeit-sweep-') as tmp, measure.emulation(topology, log):
        units = []
        for i, spec in enumerate(specs):
            g, blob = load_probe(spec, tmp, i)
            units.append((f'probe{i}:{spec.kind}', g, blob))
        samples = measure_units(units, configs, budget_s=PROBE_BUDGET_S[size],
                                trace_runs=7 if size == 'full' else 3, progress=progress, log=log)
    samples.meta = dict(size=size, seed=seed, probes=[str(s) for s in specs], version=SWEEP_VERSION,
                        seconds=round(time.perf_counter() - started, 1), topology=topology.fingerprint())
    joblib.dump(samples, path)
    log(f'train: sweep measured in {samples.meta["seconds"]} s; cached as {path}')
    return emulated_samples(samples)
