"""Planning "on paper" for boards we do not have (HiKey 970, RK3588, ...): scaled host predictions.

The layer-time predictor is trained on this machine. For another board, a layer's time on (cluster, k cores)
is derived from this machine's predicted 1-core time of that layer:

    t = t_host_1core(layer) * target_ms(core type, GHz) / host_ms * ((1 - p) + p / k)

- ``host_ms``: this machine's predicted 1-core MobileNetV2 time (sum of the predictor's layer times);
- ``target_ms``: MobileNetV2 on one core of that type, from the anchor below scaled by the core's relative
  speed per GHz (table) and the cluster's max frequency from the topology YAML; emulated/'host' clusters use
  host_ms / (capacity);
- ``p``: each layer's parallel fraction, from the host predictor's 1- vs 2-core times when this machine
  has a 2-core configuration (Amdahl: t2/t1 = 1 - p/2) and that gives the network at least a 1.5x
  speed-up, else :data:`DEFAULT_PARALLEL` (measured on the shared 2-core machine, the 2-thread figures
  gave MobileNetV2 only ~1.25x: the second core was busy with other work, not a property of the network).

Per-run overhead and the segment term are scaled the same way. Every number it yields is a prediction
(CostTable source 'predictor-scaled', ``meta['on_paper'] = True``), good for comparing cuts, not for quoting
frame rates.

Anchor and speed table (FP32 CNN, per core, relative per GHz; Cortex-A73 = 1.0) — approximate, override
with ``speeds=``:

============  =====  =========================================================================================
core type     /GHz   source
============  =====  =========================================================================================
anchor        75 ms  MobileNetV2 (1.0, 224) on one big core of a Pixel 1 (Kryo @ 2.15 GHz), TF-Lite float:
                     Sandler et al., "MobileNetV2", CVPR 2018, Table 4 -> 161 ms for an A73-class core @ 1 GHz
                     (the Kryo is taken as A73-class: an assumption).
Cortex-A73    1.00   reference
Cortex-A72    0.90   AnandTech, Kirin 960 review: the A73 is ~11 % faster than the Kirin 950's A72 (SPECint2000)
Cortex-A53    0.58   Linux hi3660.dtsi capacity-dmips-mhz A53 592 / A73 1024 (the HiKey 970's core pair)
Cortex-A76    1.60   Arm launch claims: A75 ~ +20 % over A73, A76 ~ +35 % over A75 (1.2 x 1.35 = 1.62)
Cortex-A55    0.83   Linux rk3588s.dtsi capacity-dmips-mhz A55 530 / A76 1024, times the A76 row
Cortex-A15    0.70   assumption (an A72 predecessor; no FP32 CNN figure found)
Cortex-A7     0.37   Linux exynos5422 capacity-dmips-mhz A7 539 / A15 1024, times the A15 row
============  =====  =========================================================================================

Integer DMIPS ratios understate the gap of NEON-heavy CNN kernels between in-order and out-of-order cores,
so little clusters here are, if anything, predicted too fast. Different frameworks (TF-Lite 2018 vs
onnxruntime now) are a further, unquantified source of error.
"""
import numpy as np
from sklearn.utils.validation import check_is_fitted

from pipeit_ros.cost import timing as measure
from pipeit_ros.cost.predictor import design_matrix, table_from_layers
from pipeit_ros.errors import PipeitError
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import zoo

ANCHOR_MS_PER_GHZ = 75.0 * 2.15          # MobileNetV2 on an A73-class core, ms x GHz (see the table)
REL_SPEED_PER_GHZ = {'Cortex-A73': 1.00, 'Cortex-A72': 0.90, 'Cortex-A53': 0.58, 'Cortex-A76': 1.60,
                     'Cortex-A55': 0.83, 'Cortex-A15': 0.70, 'Cortex-A7': 0.37}
DEFAULT_PARALLEL = 0.85
MIN_HOST_SPEEDUP = 1.5   # below this the host's 2nd core was busy while it was measured: use DEFAULT_PARALLEL
DEFAULT_GHZ = 2.0


class ScaledPredictor:
    """Cost tables for ``topology`` (a board we do not have) from a host-trained LayerTimePredictor."""

    def __init__(self, predictor, topology, *, speeds=None, host_mobilenet_ms=None, parallel=None):
        check_is_fitted(predictor, 'topology_fingerprint_')
        self.predictor, self.topology = predictor, topology
        self.speeds = dict(REL_SPEED_PER_GHZ, **(speeds or {}))
        self.parallel = parallel
        self.host_cfg = predictor.config_rows_[0]
        self.host2_cfg = next((c for c in predictor.config_rows_
                               if c.cluster == self.host_cfg.cluster and c.cores == 2), None)
        self._host_ms = host_mobilenet_ms

    @property
    def host_ms(self):
        """This machine's predicted 1-core MobileNetV2 time (ms), the host side of the scaling."""
        if self._host_ms is None:
            g = graph_mod.load(zoo.zoo_path('mobilenet_v2'))
            self._host_ms = float(self._host_layers(g)[0].sum())
        return self._host_ms

    def _host_layers(self, graph):
        cfgs = [self.host_cfg] + ([self.host2_cfg] if self.host2_cfg else [])
        return self.predictor.predict(design_matrix(graph.layers, cfgs)).reshape(len(cfgs), -1)

    def factor(self, cluster):
        """Time on one core of ``cluster`` / time on one host core."""
        if cluster.core_type == 'host':
            return 1.0 / max(cluster.emulate_share or cluster.capacity or 1.0, 1e-3)
        ghz = (cluster.max_freq_khz or DEFAULT_GHZ * 1e6) / 1e6
        if cluster.core_type in self.speeds:
            return ANCHOR_MS_PER_GHZ / (self.speeds[cluster.core_type] * ghz) / self.host_ms
        fastest = self.topology.clusters[0]
        if fastest.core_type in self.speeds or fastest.core_type == 'host':
            return self.factor(fastest) / max(cluster.capacity, 1e-3)
        raise PipeitError(f'no speed figure for core type {cluster.core_type!r} of cluster {cluster.name!r} '
                          f'(known: {", ".join(sorted(self.speeds))}); pass speeds={{{cluster.core_type!r}: x}}')

    def cost_table(self, graph, topology=None):
        """A CostTable for ``graph`` on the board (source 'predictor-scaled', labelled as a prediction)."""
        topology = topology or self.topology
        host = self._host_layers(graph)
        t1 = host[0]
        if self.parallel is not None:
            p = np.full_like(t1, float(self.parallel))
        elif len(host) > 1 and t1.sum() / host[1].sum() >= MIN_HOST_SPEEDUP:
            p = np.clip(2 * (1 - host[1] / t1), 0.0, 1.0)
        else:
            p = np.full_like(t1, DEFAULT_PARALLEL)
        configs = measure.core_configs(topology)
        factors = {c.name: self.factor(c) for c in topology.clusters}
        layer_ms = np.array([t1 * factors[c.cluster] * ((1 - p) + p / c.cores) for c in configs])
        overhead = np.array([self.predictor.overhead_ms_[0] * factors[c.cluster] for c in configs])
        coef = np.array([self.predictor.segment_coef_[0] * factors[c.cluster] for c in configs])
        fastest = factors[topology.clusters[0].name]
        handover = {k: dict(v, fixed_ms=v['fixed_ms'] * fastest, ms_per_mb=v['ms_per_mb'] * fastest)
                    for k, v in self.predictor.handover_.items() if isinstance(v, dict) and 'fixed_ms' in v}
        handover.setdefault('in_process', {'fixed_ms': 0.0, 'ms_per_mb': 0.0})
        return table_from_layers(graph, topology, layer_ms, overhead, coef, handover, source='predictor-scaled',
                                 meta={'on_paper': True, 'prediction': True, 'factors': factors,
                                       'host_mobilenet_ms': self.host_ms, 'anchor_ms_per_ghz': ANCHOR_MS_PER_GHZ,
                                       'host_topology': self.predictor.topology_fingerprint_})


def scaled_for(topology, predictor=None, **kwargs):
    """An on-paper predictor for a board we do not have: ``predictor`` (trained here) scaled to ``topology``."""
    return ScaledPredictor(predictor, topology, **kwargs)
