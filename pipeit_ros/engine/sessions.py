"""onnxruntime sessions placed on exact CPUs: the one place that knows how.

Measured (``docs/architecture.md``): ``os.sched_setaffinity(native_id, cpus)`` pins the calling thread, but onnxruntime's
intra-op pool ignores the caller's mask and places its own threads; its ``session.intra_op_thread_affinities``
option pins the pool (one entry per pool thread, ``intra_op_num_threads - 1`` entries, processor ids counted
from 1). The caller thread is one of the ``intra_op_num_threads`` workers, so it takes the group's first CPU.
The engine, the profiler, the predictor's sweep and the bare baseline all build sessions here, so what is
measured is what runs.

Weights (docs/memory.md): a model prepared by ``graph.load`` keeps its big initializers in one external-data
file. :func:`shared_mapping` maps that file once per process (``np.memmap``, read-only) and wraps each
initializer in an OrtValue over the mapping; every session gets them with ``SessionOptions.add_initializer``,
so its weights are the file's page-cache pages, shared by every session of the process and every process of
the machine. The weights onnxruntime rewrites (NCHWc convolution weights on x86) are too: a stage is built
from its optimised model (:mod:`pipeit_ros.engine.optimized`), whose rewritten tensors lie in a file of their
own, mapped the same way. Pre-packing is off (``session.disable_prepacking``): it copies Gemm/MatMul weights into each
session (AlexNet: +244 MB per session) and measured no faster here. The memory pattern is off: from the second
run on it allocates a block beside the arena the first run left (LR-ASPP: 64 -> 109 MiB a session), which the
profiler, measuring the first run, would miss; off it measured as fast (docs/memory.md).
"""
import mmap
import os
import threading
import weakref

import numpy as np
from onnx import helper
import onnxruntime as ort

from pipeit_ros.engine import optimized
from pipeit_ros.hw import memory as procmem


def thread_affinity_entries(cpus):
    """The ORT affinity string for a pool of len(cpus) threads: the caller keeps cpus[0], one CPU per pool thread."""
    return ';'.join(str(c + 1) for c in cpus[1:])


_shared_lock = threading.Lock()
_shared = weakref.WeakValueDictionary()   # weights file path -> its _Mapping, while a session uses it


class _Mapping:
    """One read-only mapping of a weights file and an OrtValue per initializer over it. Every session built over
    it holds it (``InferenceSession._pipeit_weights``), so the file is unmapped when the last such session goes
    (a container that re-plans drops the stages it no longer runs)."""

    def __init__(self, weights):
        size = os.path.getsize(weights.path)
        self.path, self.count = weights.path, len(weights.entries)
        self.mapping = np.memmap(weights.path, dtype=np.uint8, mode='r') if size else np.zeros(0, np.uint8)
        self.values = {}
        for name, offset, length, data_type, dims in weights.entries:
            dtype = helper.tensor_dtype_to_np_dtype(data_type)
            raw = self.mapping[offset:offset + length]
            if offset % dtype.itemsize:          # never written so by onnx; copied rather than misaligned
                raw = raw.copy()
            self.values[name] = ort.OrtValue.ortvalue_from_numpy(raw.view(dtype).reshape(dims))


def shared_mapping(weights):
    """This process's one _Mapping of ``weights`` (model.prepared.ExternalWeights), made if none is alive."""
    with _shared_lock:
        held = _shared.get(weights.path)
        if held is None or held.count != len(weights.entries):
            held = _shared[weights.path] = _Mapping(weights)
        return held


def drop_resident(folder):
    """Unmap this process's resident pages of every weights file mapped from ``folder`` (``MADV_DONTNEED``;
    they stay in the page cache and fault back in on the next read), so that the pages a session then reads can
    be counted (:mod:`pipeit_ros.cost.profiler`)."""
    with _shared_lock:
        held = [m for p, m in list(_shared.items()) if p.startswith(folder + os.sep)]
    for m in held:
        raw = getattr(m.mapping, '_mmap', None)
        if raw is not None and hasattr(mmap, 'MADV_DONTNEED'):
            raw.madvise(mmap.MADV_DONTNEED)


def session_options(cpus, threads=None, pinned=True, spinning=None, mappings=(), optimized=False):
    """SessionOptions for a session on ``cpus`` whose initializers come from ``mappings`` (_Mapping, the first
    the prepared model's weights; the session must hold them: :func:`make_session`); ``optimized``: the model
    is onnxruntime's already (engine.optimized), so it is built with optimisations off."""
    threads = threads or len(cpus)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    so.log_severity_level = 3
    so.add_session_config_entry('session.disable_prepacking', '1')
    # the memory pattern allocates a block of its own from the second run on, beside the first run's arena
    # (LR-ASPP: +45 MiB a session) and was no faster (docs/memory.md)
    so.enable_mem_pattern = False
    if mappings:   # the model's external-data references resolve there (a model from bytes has no folder)
        so.add_session_config_entry('session.model_external_initializers_file_folder_path',
                                    os.path.dirname(mappings[0].path))
        for m in mappings:
            for name, value in m.values.items():
                so.add_initializer(name, value)   # names the model does not use are ignored
    if pinned and threads > 1:
        so.add_session_config_entry('session.intra_op_thread_affinities',
                                    thread_affinity_entries(tuple(cpus)[:threads]))
    if spinning is not None:
        so.add_session_config_entry('session.intra_op.allow_spinning', '1' if spinning else '0')
    return so


def make_session(model, cpus, threads=None, pinned=True, spinning=None, weights=None, optimize=True,
                 configure=None):
    """An InferenceSession for ``model`` (bytes, ModelProto or path) running on ``cpus``; ``weights``
    (graph.weights) supplies the initializers that the model references in its external-data file. Such a model
    is built from its optimised form (engine.optimized; ``optimize=False``: as given), so the weights onnxruntime
    rewrites are shared too. ``configure(so)`` may set more options (the per-layer trace turns on profiling).

    With ``pinned`` the pool threads are placed on cpus[1:]; the thread that calls ``run`` must pin itself to
    cpus[0] (see :func:`pipeit_ros.hw.cpus.pin_current_thread`) — the engine's workers do.

    The session holds the mappings its initializers lie in (``_pipeit_weights``): onnxruntime keeps no
    reference to the OrtValues given to ``add_initializer``, and a mapping gone under a session crashes it.
    """
    procmem.fix_mmap_threshold()      # what a process holds does not depend on when glibc moved it
    if hasattr(model, 'SerializeToString'):
        model = model.SerializeToString()
    files, stage = (), None
    if weights is not None:
        if isinstance(model, str):
            with open(model, 'rb') as f:
                model = f.read()
        if optimize:
            stage = optimized.optimize(model, weights, initializers=shared_mapping(weights).values)
        model, files = (stage.model, stage.weights) if stage is not None else (model, (weights,))
    holders = [shared_mapping(w) for w in files]
    so = session_options(cpus, threads, pinned, spinning, holders, optimized=stage is not None)
    if configure is not None:
        configure(so)
    session = ort.InferenceSession(model, sess_options=so, providers=['CPUExecutionProvider'])
    session._pipeit_weights = holders
    return session


def optimize_stages(graph, plan):
    """Make the optimised model of each of ``plan``'s stages now, in this process (engine.optimized), so that
    the processes that then run the plan find them made: onnxruntime's temporaries while it optimises and saves
    (AlexNet: the 233 MiB of weights, once) stay out of their memory, and what they hold does not depend on
    whether a stage ran on this machine before."""
    if graph.weights is None:
        return
    values = shared_mapping(graph.weights).values
    for s in plan.stages:
        optimized.optimize(graph.extract_bytes(s.first, s.last), graph.weights, initializers=values)
    values = None
    procmem.trim()
