"""onnxruntime's optimised model of a stage, stored beside the prepared model: the weights it rewrites are
file pages too.

Building a session, onnxruntime rewrites some weights into forms of its own (on x86 the NCHWc-blocked
convolution weights): a copy in every session, so data-parallel replicas and the containers of several
clusters did not share them (ResNet-50: a second replica +99 MiB, docs/memory.md). Here each stage model is
optimised once (``ORT_ENABLE_ALL``, pre-packing off as in the engine) and saved with its initializers
outside. The tensors onnxruntime changed go into a data file of their own; the ones it kept as they were point
back into the prepared model's ``weights.data``. Sessions are then built from the optimised model with
optimisations off, every initializer from the process's one mapping of its file
(:func:`pipeit_ros.engine.sessions.shared_mapping`): shared by replicas and by processes.

Both files lie in the prepared model's folder (``optimized/<key>.onnx`` and ``.data``), so onnxruntime's check
that external data stays inside the model's folder holds, and removing a prepared model removes its stages.
The optimised model holds kernels for this CPU (the NCHWc block follows its vector width) and this
onnxruntime: the key holds both (:func:`cpu_signature`), with the stage model's hash.
"""
from dataclasses import dataclass
import functools
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import threading
import time

import numpy as np
import onnx
from onnx import TensorProto
import onnxruntime as ort

from pipeit_ros import cache
from pipeit_ros.hw import memory as procmem
from pipeit_ros.hw.cpus import cpuinfo
from pipeit_ros.model.prepared import EXTERNAL_MIN_BYTES, WEIGHTS_FILE, external_weights

OPTIMIZED_FORMAT = 'v1'    # bump when what is stored changes, so older optimised models are not reused
FOLDER = 'optimized'
STALE_S = 14 * 86400       # a stored stage unused this long is removed when another is stored (made again if needed)
ORPHAN_S = 86400           # a temporary folder this old was left by a killed process (a write takes seconds)
_ALIGN = 64                # the changed tensors' offsets in their data file (onnxruntime's own allocation alignment)


@dataclass(frozen=True)
class Optimized:
    """A stage's optimised model (serialized, a few KiB) and the weight files its initializers lie in."""

    model: bytes
    weights: tuple      # (the prepared model's ExternalWeights, this stage's changed tensors' ExternalWeights)


_locks_lock = threading.Lock()
_locks = {}          # key -> lock: the profiler's configurations build the same stage in parallel threads
_warned = set()


@functools.cache
def cpu_signature():
    """What the optimised kernels depend on: the machine, and on x86 the CPU's vector extensions (read once)."""
    flags = ' '.join(sorted(cpuinfo('flags', 'features').split()))
    return f'{platform.machine()}|{hashlib.sha256(flags.encode()).hexdigest()[:12]}'


def stage_key(model_bytes):
    return cache.key(OPTIMIZED_FORMAT, hashlib.sha256(model_bytes).hexdigest(), cpu_signature(), ort.__version__)


def optimize(model_bytes, weights, log=None, initializers=None):
    """The :class:`Optimized` stage of ``model_bytes`` (a stage model whose big initializers lie in
    ``weights``), made and stored on first use; None, with a warning once, where onnxruntime cannot save it
    (the caller then builds the session from ``model_bytes`` as before)."""
    key = stage_key(model_bytes)
    folder = os.path.join(os.path.dirname(weights.path), FOLDER)
    with _locks_lock:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        path = os.path.join(folder, key + '.onnx')
        stored = _read(path, weights, key)
        if stored is None:
            try:
                _write(model_bytes, weights, folder, key, initializers)
            except (ort.capi.onnxruntime_pybind11_state.Fail, OSError, ValueError) as exc:
                if key not in _warned:
                    _warned.add(key)
                    message = (f'onnxruntime could not store the optimised stage ({str(exc).splitlines()[0][:200]}); '
                               f'its sessions hold their own copy of the weights onnxruntime rewrites')
                    (log or (lambda m: print(f'pipeit: warning: {m}', file=sys.stderr)))(message)
                return None
            stored = _read(path, weights, key)
            _prune(folder)
        return stored


def _read(path, weights, key):
    if not os.path.exists(path):
        return None
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a damaged entry is made again
        cache.move_aside(path, f'unreadable: {str(exc).splitlines()[0][:120]}')
        return None
    own = external_weights(model, os.path.dirname(weights.path), f'{FOLDER}/{key}.data')
    if own.entries and not os.path.exists(own.path):
        cache.move_aside(path, 'its data file is missing')
        return None
    try:
        os.utime(path)          # in use: not stale (_prune)
    except OSError:
        pass
    return Optimized(model.SerializeToString(), (weights, own))


def _prune(folder):
    """Remove the stages stored here that no process used for :data:`STALE_S` (a plan re-cut by adaptation
    leaves its old stages behind), and temporary folders a killed process left (older than :data:`ORPHAN_S`).
    A process that still maps a removed file keeps its pages; a stage needed again is made again."""
    now = time.time()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        try:
            age = now - os.stat(path).st_mtime
            if name.endswith('.onnx') and age > STALE_S:
                for stale in (path, path[:-len('.onnx')] + '.data'):
                    if os.path.exists(stale):
                        os.remove(stale)
            elif name.startswith('.opt-') and age > ORPHAN_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def _write(model_bytes, weights, folder, key, initializers):
    """Optimise into a temporary folder, keep the changed tensors, rename into place (.data, then .onnx: a
    reader that finds the model finds its data)."""
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.opt-', dir=folder)
    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        so.add_session_config_entry('session.disable_prepacking', '1')
        so.add_session_config_entry('session.model_external_initializers_file_folder_path',
                                    os.path.dirname(weights.path))
        so.add_session_config_entry('session.optimized_model_external_initializers_file_name', 'all.data')
        so.add_session_config_entry('session.optimized_model_external_initializers_min_size_in_bytes',
                                    str(EXTERNAL_MIN_BYTES))
        so.optimized_model_filepath = os.path.join(tmp, 'model.onnx')
        for name, value in (initializers or {}).items():
            so.add_initializer(name, value)     # read from the mapping, not copied in (AlexNet: 233 MiB)
        ort.InferenceSession(model_bytes, sess_options=so, providers=['CPUExecutionProvider'])
        so = None
        model = onnx.load(os.path.join(tmp, 'model.onnx'), load_external_data=False)
        _relocate(model, weights, os.path.join(tmp, 'all.data'), os.path.join(tmp, 'own.data'), key)
        onnx.save_model(model, os.path.join(tmp, 'own.onnx'))
        if not os.path.exists(os.path.join(folder, key + '.onnx')):   # another process's copy, being mapped, stays
            os.replace(os.path.join(tmp, 'own.data'), os.path.join(folder, key + '.data'))
            os.replace(os.path.join(tmp, 'own.onnx'), os.path.join(folder, key + '.onnx'))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        procmem.trim()      # onnxruntime's temporaries (the weights it read and rewrote) go back


def _relocate(model, weights, saved, own, key):
    """Point each external initializer of ``model`` at the prepared ``weights.data`` where its bytes are the
    prepared tensor's, else copy it from ``saved`` into ``own`` (aligned)."""
    original = {e[0]: e for e in weights.entries}
    old = np.memmap(weights.path, dtype=np.uint8, mode='r') if os.path.getsize(weights.path) else None
    new = np.memmap(saved, dtype=np.uint8, mode='r') if os.path.exists(saved) and os.path.getsize(saved) else None
    with open(own, 'wb') as out:
        for t in model.graph.initializer:
            if t.data_location != TensorProto.EXTERNAL:
                continue
            info = {e.key: e.value for e in t.external_data}
            offset, length = int(info.get('offset', 0)), int(info['length'])
            data = new[offset:offset + length]
            o = original.get(t.name)
            if (o is not None and old is not None and o[2:] == (length, t.data_type, tuple(t.dims))
                    and np.array_equal(old[o[1]:o[1] + length], data)):
                location, offset = WEIGHTS_FILE, o[1]
            else:
                out.write(b'\0' * (-out.tell() % _ALIGN))
                location, offset = f'{FOLDER}/{key}.data', out.tell()
                out.write(data.tobytes())
            del t.external_data[:]
            for k, v in (('location', location), ('offset', str(offset)), ('length', str(length))):
                entry = t.external_data.add()
                entry.key, entry.value = k, v
    del old, new

