"""An ONNX CNN as Pipe-it sees it: layers with descriptors, legal cut points, runnable sub-models.

Layers and their descriptors: :mod:`pipeit_ros.model.layers`.

Cut points. Layers keep the file's order, which ONNX requires to be topological. A cut before layer i is
legal when the tensors produced before it (the model input counts as produced before layer 0) and read at
or after layer i — the tensors that cross — number at least one and at most ``max_cut_tensors`` (default
:data:`DEFAULT_MAX_CUT_TENSORS`; None: no limit), and none of them is a graph output; initializers never
count. With ``max_cut_tensors=1`` a residual or inception block is never cut inside (the Pipe-it paper's
chains); with more, the cut inside hands every live tensor over: a detector's neck, whose skip tensors
stay alive across most of the network, is cut where a few of them cross (YOLOv8n: the largest segment
holds 82 % of the MACs with one tensor, 8 % with four).

Why the file's order and not another topological order: a stage is a prefix of the order, and exporters
write nodes in the order ``forward()`` ran them, which finishes a branch before it starts the next, so few
tensors are alive at each position. On YOLOv8n, LR-ASPP, GoogLeNet, SqueezeNet 1.1 and MobileNetV2, ten
random topological orders each never gave more cut points with <= 4 tensors, nor a smaller largest segment,
than the file's order (YOLOv8n: 81-87 cut points against 94, largest segment 8-27 % against 8 %).
"""
import collections
from dataclasses import dataclass
import hashlib
import math
import operator
import threading

import numpy as np
from onnx import helper
import onnx.utils

from pipeit_ros.errors import PlanError
from pipeit_ros.hw import memory
from pipeit_ros.model import layers as layers_mod
from pipeit_ros.model import load as graph_load
from pipeit_ros.model import meta, prepared

EXTRACT_CACHE_BYTES = 512 * 2**20
DEFAULT_MAX_CUT_TENSORS = 4


@dataclass(frozen=True)
class CutPoint:
    """Cut before layer ``index``: layers [0, index) | [index, n); ``tensors`` (in the order of the layers that
    made them, the model input first) are all that crosses, ``shapes`` and ``sizes`` (bytes) theirs, ``bytes``
    their sum."""
    index: int
    tensors: tuple
    shapes: tuple
    sizes: tuple

    @property
    def bytes(self):
        return sum(self.sizes)

    def to_dict(self):
        return {'index': self.index, 'tensors': list(self.tensors), 'shapes': [list(s) for s in self.shapes],
                'sizes': list(self.sizes), 'bytes': self.bytes}


def load(path, input_shape=None, store=True, max_cut_tensors=DEFAULT_MAX_CUT_TENSORS, max_tensor_mb=None,
         prepared_in=None):
    """Read, check and prepare ``path`` (see :mod:`pipeit_ros.model.load`) with its input fixed to
    ``input_shape`` (else the sidecar's, :func:`pipeit_ros.model.meta.read_sidecar`) where the model leaves
    dims dynamic, its cut points where at most ``max_cut_tensors`` tensors cross; raises ModelError.

    The model hash is the file's, plus the shape where ``input_shape`` fixed a dim other than the batch
    (profiles of one file at two input sizes must not share a cache entry).

    With ``store`` (the default) the prepared model lives in the cache with its weights in one external-data
    file that every session maps (``graph.weights``), and a model prepared before (same file, same given
    shape) is read from there. Without it (the predictor's throw-away probes) the weights stay inside
    ``graph.model``.

    A tensor larger than ``max_tensor_mb`` (default model.load.DEFAULT_MAX_TENSOR_MB) is refused before
    onnxruntime allocates anything for it. ``prepared_in`` names a prepared entry's folder to read first (the
    memory probe reads its parent's: preparing leaves the process holding more than running does).
    """
    graph = _load(path, input_shape, store, max_cut_tensors, max_tensor_mb, prepared_in)
    graph.input_shape_given = input_shape
    return graph


def _load(path, input_shape, store, max_cut_tensors, max_tensor_mb, prepared_in=None):
    if input_shape is None:
        input_shape = meta.read_sidecar(path).get('input_shape') or None
    stored = prepared.load_prepared(None, prepared_in) if store and prepared_in else None
    if stored is not None:
        model, batch_fixed, weights, digest = stored
        return LayerGraph(path, model, digest, batch_fixed, weights, max_cut_tensors)
    if store:
        key = graph_load.file_hash(path)
        if input_shape is not None:
            given = input_shape if isinstance(input_shape, str) else 'x'.join(map(str, input_shape))
            key = hashlib.sha256(f'{key}|given {given}'.encode()).hexdigest()[:16]
        stored = prepared.load_prepared(key)
        if stored is not None:
            model, batch_fixed, weights, digest = stored
            return LayerGraph(path, model, digest, batch_fixed, weights, max_cut_tensors)
    model, digest = graph_load.read_model(path)
    name, batch_fixed, shape = graph_load.check_interface(path, model, input_shape)
    graph_load.check_size(path, graph_load.static_shapes(model.graph), max_tensor_mb)   # before ORT sees it
    graph_load.check_runtime(path)
    own = next(i for i in model.graph.input if i.name == name).type.tensor_type.shape.dim
    if not all(graph_load.is_static(d) for d in own[1:]):
        digest = hashlib.sha256(f'{digest}|{"x".join(map(str, shape))}'.encode()).hexdigest()[:16]
    graph_load.make_static(path, model, shape)
    graph_load.check_size(path, graph_load.static_shapes(model.graph), max_tensor_mb)
    graph_load.check_run(path, model)
    if not store:
        return LayerGraph(path, model, digest, batch_fixed, max_cut_tensors=max_cut_tensors)
    model, batch_fixed, weights, _ = prepared.store_prepared(model, key, batch_fixed, digest)
    memory.trim()   # the whole model read and parsed is gone: give its pages back (AlexNet: 31 MiB)
    return LayerGraph(path, model, digest, batch_fixed, weights, max_cut_tensors)


class LayerGraph:
    """Layers, cut points and sub-model extraction of one prepared model (built by :func:`load`)."""

    def __init__(self, path, model, model_hash, batch_fixed, weights=None, max_cut_tensors=DEFAULT_MAX_CUT_TENSORS):
        if max_cut_tensors is not None and (not _is_int(max_cut_tensors) or max_cut_tensors < 1):
            raise PlanError(f'max_cut_tensors must be an integer >= 1 (or None: no limit), got {max_cut_tensors!r}')
        graph = model.graph
        self.path, self.model, self.model_hash, self.batch_fixed = path, model, model_hash, batch_fixed
        self.weights = weights   # prepared.ExternalWeights, or None: the weights are inside ``model``
        self.input_shape_given = None   # the input shape load() was given: to load it again in another process
        self.input_name = graph.input[0].name
        self._tensors = graph_load.static_shapes(graph)
        self.input_shape = self._tensors[self.input_name][0]
        self.output_names = [o.name for o in graph.output]
        self.output_shapes = [self._tensors[o][0] for o in self.output_names]
        self.opset = graph_load.default_opset(model)
        self.metadata = meta.metadata(model)
        self.input_dtype = helper.tensor_dtype_to_np_dtype(self._tensors[self.input_name][1])
        self._const = {t.name for t in graph.initializer}
        nodes = list(graph.node)
        self._layer_nodes = [[nodes[i] for i in group] for group in layers_mod.group(nodes, self._const, set(self.output_names))]
        self._reader_layers = collections.defaultdict(set)
        for li, group in enumerate(self._layer_nodes):
            for node in group:
                for t in node.input:
                    self._reader_layers[t].add(li)
        self.layers = [self._describe(i, group) for i, group in enumerate(self._layer_nodes)]
        self.max_cut_tensors = None if max_cut_tensors is None else int(max_cut_tensors)
        self.cut_points = self._find_cuts()
        self._cuts = {c.index: c for c in self.cut_points}
        self._extractor = None
        self._bytes_cache = collections.OrderedDict()
        self._lock = threading.Lock()  # stage threads may ask for their sub-models at once

    # -- tensors -------------------------------------------------------------------------------------
    def _shape(self, name):
        return self._tensors[name][0]

    def _nbytes(self, name):
        shape, elem = self._tensors[name]
        return math.prod(shape) * helper.tensor_dtype_to_np_dtype(elem).itemsize

    def _acts(self, node):
        return [i for i in node.input if i and i not in self._const]

    # -- layers --------------------------------------------------------------------------------------
    def _describe(self, index, nodes):
        main, tail = nodes[0], nodes[-1]
        acts = self._acts(main)
        kind = layers_mod.kind(main, acts, self._shape)
        leaving = {o for n in nodes for o in n.output
                   if o and (self._reader_layers[o] - {index} or o in self.output_names)}
        fields = dict(
            index=index, name=main.name, op_type=kind, nodes=tuple(n.name for n in nodes),
            fused=tuple(n.op_type for n in nodes[1:]),
            in_shape=layers_mod.chw(self._shape(acts[0])) if acts else (0, 0, 0),
            out_shape=layers_mod.chw(self._shape(tail.output[0])) if tail.output[0] in self._tensors else (0, 0, 0),
            weight_bytes=sum(self._nbytes(t) for t in {i for n in nodes for i in n.input if i in self._const}),
            output_bytes=sum(self._nbytes(t) for t in leaving))
        fields.update(layers_mod.geometry(main, kind, acts, self._shape))
        return layers_mod.LayerDescriptor(**fields)

    def _find_cuts(self):
        n = len(self._layer_nodes)
        produced = {self.input_name: -1}
        last_read = {}
        for li, nodes in enumerate(self._layer_nodes):
            for node in nodes:
                for t in self._acts(node):
                    last_read[t] = li
                for o in node.output:
                    if o:
                        produced[o] = li
        for o in self.output_names:
            last_read[o] = n
        spans = [(p, last_read[t], t) for t, p in produced.items() if last_read.get(t, p) > p]
        cuts = []
        for i in range(1, n):
            crossing = tuple(t for p, r, t in spans if p < i <= r)
            if crossing and not set(crossing) & set(self.output_names) and \
                    (self.max_cut_tensors is None or len(crossing) <= self.max_cut_tensors):
                cuts.append(CutPoint(i, crossing, tuple(self._shape(t) for t in crossing),
                                     tuple(self._nbytes(t) for t in crossing)))
        return cuts

    @property
    def input_bytes(self):
        """Bytes of the model input (its own dtype: a uint8 input is a quarter of a float32 one)."""
        return self._nbytes(self.input_name)

    def sample_input(self, seed=0):
        """A seeded dummy model input in the input's shape and dtype (model.load.sample_input)."""
        return graph_load.sample_input(self.input_shape, self.input_dtype, np.random.default_rng(seed))

    @property
    def total_macs(self):
        return sum(layer.macs for layer in self.layers)

    @property
    def total_weight_bytes(self):
        return sum(self._nbytes(t) for t in self._const if self._reader_layers[t])

    # -- cutting -------------------------------------------------------------------------------------
    def boundary(self, index):
        """Tensors entering layer ``index`` (0: the model input, n: the graph outputs, else the cut's)."""
        n = len(self.layers)
        if index == 0:
            return [self.input_name]
        if index == n:
            return list(self.output_names)
        if index in self._cuts:
            return list(self._cuts[index].tensors)
        legal = ', '.join(str(i) for i in [0, *self._cuts, n])
        raise PlanError(f'{self.path}: no legal cut before layer {index!r}; legal boundaries are {legal}')

    def segments(self):
        """(first, last) layer ranges between consecutive legal cut points: the DSE's atoms."""
        bounds = [0, *self._cuts, len(self.layers)]
        return [(a, b - 1) for a, b in zip(bounds, bounds[1:])]

    def extract(self, first, last):
        """Runnable sub-model of layers first..last inclusive (cut boundaries only)."""
        with self._lock:
            sub, names = self._skeleton(first, last)
        sub.graph.initializer.extend(self._init_by_name[n] for n in names)
        return sub

    def extract_bytes(self, first, last):
        """Serialized :meth:`extract`, memoised in a bounded LRU (engine and profiler ask many times).

        A stored model's sub-models only reference their weights in ``weights`` (a few KiB each; sessions get
        the weights from :func:`pipeit_ros.engine.sessions.shared_mapping`). Built from serialized pieces
        (protobuf concatenates repeated fields), so the weights a model loaded with ``store=False`` carries are
        copied twice, not four times as ModelProto copies and serialization would.
        """
        with self._lock:
            return self._extract_bytes(first, last)

    def _extract_bytes(self, first, last):
        key = (first, last)
        if key in self._bytes_cache:
            self._bytes_cache.move_to_end(key)
            return self._bytes_cache[key]
        sub, names = self._skeleton(first, last)
        graph = sub.graph.SerializeToString()
        sub.ClearField('graph')
        inits = [self._init_by_name[n].SerializeToString() for n in names]
        graph_len = len(graph) + sum(len(_field_head(5, len(b))) + len(b) for b in inits)
        pieces = [sub.SerializeToString(), _field_head(7, graph_len), graph]  # ModelProto.graph = 7
        for b in inits:
            pieces += [_field_head(5, len(b)), b]  # GraphProto.initializer = 5
        data = b''.join(pieces)
        self._bytes_cache[key] = data
        while sum(map(len, self._bytes_cache.values())) > EXTRACT_CACHE_BYTES and len(self._bytes_cache) > 1:
            self._bytes_cache.popitem(last=False)
        return data

    def _skeleton(self, first, last):
        """onnx.utils.Extractor on the weightless copy: the sub-model without initializers + their names."""
        if not (_is_int(first) and _is_int(last) and 0 <= first <= last < len(self.layers)):
            raise PlanError(f'{self.path}: layer range {first!r}..{last!r} is not within 0..{len(self.layers) - 1}')
        inputs, outputs = self.boundary(first), self.boundary(last + 1)
        if self._extractor is None:
            self._extractor = onnx.utils.Extractor(graph_load.light_copy(self.model, weights_as_inputs=False))
            self._init_by_name = {t.name: t for t in self.model.graph.initializer}
        sub = self._extractor.extract_model(inputs, outputs)
        sub.graph.name = f'{self.model.graph.name or "model"}[{first}:{last}]'
        names = [t.name for t in sub.graph.initializer]  # stubs and small ones; the caller adds the real ones
        del sub.graph.initializer[:]
        return sub, names

    def summary(self):
        """Everything `pipeit inspect --json` prints."""
        return {
            'path': self.path, 'model_hash': self.model_hash, 'opset': self.opset,
            'input_name': self.input_name, 'input_shape': list(self.input_shape),
            'input_dtype': np.dtype(self.input_dtype).name,
            'output_names': list(self.output_names),
            'output_shapes': [list(s) for s in self.output_shapes],
            'batch_fixed': self.batch_fixed, 'n_layers': len(self.layers), 'max_cut_tensors': self.max_cut_tensors,
            'total_macs': self.total_macs, 'total_weight_bytes': self.total_weight_bytes,
            'layers': [layer.to_dict() for layer in self.layers],
            'cut_points': [c.to_dict() for c in self.cut_points],
            'segments': [list(s) for s in self.segments()],
        }


def _field_head(number, length):
    """Protobuf tag + length of a length-delimited field."""
    out, value = bytearray(), (number << 3) | 2
    for v in (value, length):
        while v > 0x7F:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _is_int(value):
    try:
        operator.index(value)
    except TypeError:
        return False
    return True
