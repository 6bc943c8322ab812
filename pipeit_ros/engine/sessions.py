"""onnxruntime sessions placed on exact CPUs: the one place that knows how.

Measured (``docs/architecture.md``): ``os.sched_setaffinity(native_id, cpus)`` pins the calling thread, but onnxruntime's
intra-op pool ignores the caller's mask and places its own threads; its ``session.intra_op_thread_affinities``
option pins the pool (one entry per pool thread, ``intra_op_num_threads - 1`` entries, processor ids counted
from 1). The caller thread is one of the ``intra_op_num_threads`` workers, so it takes the group's first CPU.
The engine, the profiler, the predictor's sweep and the bare baseline all build sessions here, so what is
measured is what runs.

Weights (docs/memory.md): a model prepared by ``graph.load`` keeps its big initializers in one external-data
file. :func:`shared_initializers` maps that file once per process (``np.memmap``, read-only) and wraps each
initializer in an OrtValue over the mapping; every session gets them with ``SessionOptions.add_initializer``,
so its weights are the file's page-cache pages, shared by every session of the process and every process of
the machine. Pre-packing is off (``session.disable_prepacking``): it copies Gemm/MatMul weights into each
session (AlexNet: +244 MB per session) and measured no faster here. The memory pattern is off: from the second
run on it allocates a block beside the arena the first run left (LR-ASPP: 64 -> 109 MiB a session), which the
profiler, measuring the first run, would miss; off it measured as fast (docs/memory.md).
"""
import mmap
import os
import threading

import numpy as np
from onnx import helper
import onnxruntime as ort

from pipeit_ros.hw import memory as procmem


def thread_affinity_entries(cpus):
    """The ORT affinity string for a pool of len(cpus) threads: the caller keeps cpus[0], one CPU per pool thread."""
    return ';'.join(str(c + 1) for c in cpus[1:])


_shared_lock = threading.Lock()
_shared = {}   # weights file path -> (np.memmap, {initializer name: OrtValue}); lives as long as the process


def shared_initializers(weights):
    """{name: OrtValue} over this process's one read-only mapping of ``weights`` (model.prepared.ExternalWeights)."""
    with _shared_lock:
        held = _shared.get(weights.path)
        if held is not None and len(held[1]) == len(weights.entries):
            return held[1]
        size = os.path.getsize(weights.path)
        mapping = np.memmap(weights.path, dtype=np.uint8, mode='r') if size else np.zeros(0, np.uint8)
        values = {}
        for name, offset, length, data_type, dims in weights.entries:
            dtype = helper.tensor_dtype_to_np_dtype(data_type)
            raw = mapping[offset:offset + length]
            if offset % dtype.itemsize:          # never written so by onnx; copied rather than misaligned
                raw = raw.copy()
            values[name] = ort.OrtValue.ortvalue_from_numpy(raw.view(dtype).reshape(dims))
        _shared[weights.path] = (mapping, values)
        return values


def drop_resident(weights):
    """Unmap this process's resident pages of ``weights`` (``MADV_DONTNEED``; they stay in the page cache and
    fault back in on the next read), so that the pages a session then reads can be counted
    (:mod:`pipeit_ros.cost.profiler`)."""
    with _shared_lock:
        held = _shared.get(weights.path)
    raw = getattr(held[0], '_mmap', None) if held is not None else None
    if raw is not None and hasattr(mmap, 'MADV_DONTNEED'):
        raw.madvise(mmap.MADV_DONTNEED)


def session_options(cpus, threads=None, pinned=True, spinning=None, weights=None):
    threads = threads or len(cpus)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry('session.disable_prepacking', '1')
    # the memory pattern allocates a block of its own from the second run on, beside the first run's arena
    # (LR-ASPP: +45 MiB a session) and was no faster (docs/memory.md)
    so.enable_mem_pattern = False
    if weights is not None:   # the model's external-data references resolve there (a model from bytes has no folder)
        so.add_session_config_entry('session.model_external_initializers_file_folder_path',
                                    os.path.dirname(weights.path))
        for name, value in shared_initializers(weights).items():
            so.add_initializer(name, value)   # names the model does not use are ignored
    if pinned and threads > 1:
        so.add_session_config_entry('session.intra_op_thread_affinities',
                                    thread_affinity_entries(tuple(cpus)[:threads]))
    if spinning is not None:
        so.add_session_config_entry('session.intra_op.allow_spinning', '1' if spinning else '0')
    return so


def make_session(model, cpus, threads=None, pinned=True, spinning=None, weights=None):
    """An InferenceSession for ``model`` (bytes, ModelProto or path) running on ``cpus``; ``weights``
    (graph.weights) supplies the initializers that the model references in its external-data file.

    With ``pinned`` the pool threads are placed on cpus[1:]; the thread that calls ``run`` must pin itself to
    cpus[0] (see :func:`pipeit_ros.hw.cpus.pin_current_thread`) — the engine's workers do.
    """
    procmem.fix_mmap_threshold()      # what a process holds does not depend on when glibc moved it
    if hasattr(model, 'SerializeToString'):
        model = model.SerializeToString()
    so = session_options(cpus, threads, pinned, spinning, weights)
    return ort.InferenceSession(model, sess_options=so, providers=['CPUExecutionProvider'])
