"""How much memory an onnxruntime session holds, by the way it gets its weights (the table of docs/memory.md).

``python tools/ort_memory.py MODEL.onnx MODE [--replicas N] [--hold S]``, one fresh process per measurement.

Modes: ``bytes`` (InferenceSession from the model's bytes), ``path`` (from its file), ``ort-direct`` (an ORT-format
copy with ``session.use_ort_model_bytes_directly``), ``external`` (an external-data copy, opened by path: onnxruntime
maps the file per session), ``add-initializer`` (OrtValues over numpy arrays in memory, shared by the sessions),
``add-initializer-mmap`` (OrtValues over one ``np.memmap`` of the external-data file: what pipeit_ros does),
``optimized`` (onnxruntime's own optimized model, ``ORT_ENABLE_ALL``, saved once with its initializers in an
external-data file, then opened by path with optimizations off: the weights it transforms, e.g. to NCHWc, are file
pages mapped per session instead of copies in each); each with ``-noprepack`` appended sets ``session.disable_prepacking``. The copies are made next to the model on first use.
Prints one JSON line: memory (MiB, ``pipeit_ros.hw.memory``) after the imports and after every replica's session
ran once; with ``--hold`` it waits that long before the second reading (start two to see pages shared).
"""
import argparse
import json
import os
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

from pipeit_ros.hw import memory
from pipeit_ros.model.load import session_feeds

MODES = ('bytes', 'path', 'ort-direct', 'external', 'add-initializer', 'add-initializer-mmap', 'optimized')


def options(noprepack, extra=(), level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = level
    so.log_severity_level = 3
    for key, value in [*extra, *([('session.disable_prepacking', '1')] if noprepack else [])]:
        so.add_session_config_entry(key, value)
    return so


def variant(path, kind):
    """The external-data ('ext'), ORT-format ('ort') or optimized ('opt') copy of ``path``, made on first use."""
    stem = os.path.splitext(path)[0]
    out = {'ext': f'{stem}_ext.onnx', 'ort': f'{stem}.ort', 'opt': f'{stem}_opt.onnx'}[kind]
    if not os.path.exists(out):
        if kind == 'opt':
            so = options(True, [('session.optimized_model_external_initializers_file_name',
                                 os.path.basename(stem) + '_opt.data'),
                                ('session.optimized_model_external_initializers_min_size_in_bytes', '1024')])
            so.optimized_model_filepath = out
            ort.InferenceSession(path, so)
        elif kind == 'ext':
            onnx.save(onnx.load(path), out, save_as_external_data=True, all_tensors_to_one_file=True,
                      location=os.path.basename(stem) + '_ext.data', size_threshold=1024)
        else:
            so = options(False, [('session.save_model_format', 'ORT')])
            so.optimized_model_filepath = out
            ort.InferenceSession(path, so)
    return out


def sessions(path, mode, n):
    """(sessions, what they need kept alive)."""
    base, noprepack = mode.removesuffix('-noprepack'), mode.endswith('-noprepack')
    if base == 'bytes':
        with open(path, 'rb') as f:
            data = f.read()
        return [ort.InferenceSession(data, options(noprepack)) for _ in range(n)], None
    if base in ('path', 'external'):
        src = path if base == 'path' else variant(path, 'ext')
        return [ort.InferenceSession(src, options(noprepack)) for _ in range(n)], None
    if base == 'optimized':
        src = variant(path, 'opt')
        return [ort.InferenceSession(src, options(noprepack, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
                for _ in range(n)], None
    if base == 'ort-direct':
        with open(variant(path, 'ort'), 'rb') as f:
            data = f.read()
        so = options(noprepack, [('session.use_ort_model_bytes_directly', '1')])
        return [ort.InferenceSession(data, so) for _ in range(n)], data
    if base == 'add-initializer':
        model = onnx.load(path)
        arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        src = model.SerializeToString()
    else:
        src = variant(path, 'ext')
        model = onnx.load(src, load_external_data=False)
        mapping = np.memmap(os.path.splitext(src)[0] + '.data', dtype=np.uint8, mode='r')
        arrays = {}
        for t in model.graph.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                raw = mapping[int(info['offset']):int(info['offset']) + int(info['length'])]
                arrays[t.name] = raw.view(helper.tensor_dtype_to_np_dtype(t.data_type)).reshape(tuple(t.dims))
    values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in arrays.items()}
    out = []
    for _ in range(n):
        so = options(noprepack)
        for k, v in values.items():
            so.add_initializer(k, v)
        out.append(ort.InferenceSession(src, so))
    return out, (arrays, values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model')
    parser.add_argument('mode', choices=[*MODES, *(m + '-noprepack' for m in MODES)])
    parser.add_argument('--replicas', type=int, default=1)
    parser.add_argument('--hold', type=float, default=0.0)
    args = parser.parse_args(argv)
    before = memory.usage()
    held, keep = sessions(os.path.abspath(args.model), args.mode, args.replicas)
    feeds = session_feeds(held[0])        # zeros in the input's own dtype
    for s in held:
        s.run(None, feeds)
    memory.trim()
    time.sleep(args.hold)
    print(json.dumps({'mode': args.mode, 'replicas': args.replicas, 'imports': before.mib(),
                      'sessions': memory.usage().mib()}))
    del keep


if __name__ == '__main__':
    main()
