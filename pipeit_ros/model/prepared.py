"""The prepared model in the cache, with its weights in one external-data file.

Weights held once (docs/memory.md): the prepared model is stored in the cache (``models/<hash>``) as an ONNX
file whose initializers of at least :data:`EXTERNAL_MIN_BYTES` lie in one external-data file, ``weights.data``.
The model kept in Python then holds only their names, types, dims and file offsets; every onnxruntime
session of every process maps that one file (``engine.sessions.shared_mapping``), so replicas in one process and
containers on one machine share the weight pages. A later load of the same file reads only the small
prepared model.
"""
import dataclasses
import os
import shutil
import tempfile

import onnx
from onnx import TensorProto

from pipeit_ros import cache

EXTERNAL_MIN_BYTES = 1024          # smaller initializers stay inside the model (onnx's own default threshold)
PREPARED_FORMAT = 'v2-external-weights'   # bump when preparation changes, so old prepared models are not reused
WEIGHTS_FILE = 'weights.data'
_BATCH_FIXED_KEY = 'pipeit.batch_fixed'
_MODEL_HASH_KEY = 'pipeit.model_hash'


@dataclasses.dataclass(frozen=True)
class ExternalWeights:
    """The weights file of a prepared model and where each initializer lies in it:
    ``entries`` = ((name, offset, length, onnx data type, dims), ...)."""

    path: str
    entries: tuple

    @property
    def total_bytes(self):
        return sum(e[2] for e in self.entries)


def prepared_dir(digest):
    return os.path.join(cache.cache_dir('models'), cache.key(PREPARED_FORMAT, digest))


def load_prepared(digest, folder=None):
    """(model without weight data, batch_fixed, ExternalWeights, model hash) of a stored prepared model, or None.
    ``digest`` is the entry's key: the file's hash, with the input shape the user gave where there is one;
    ``folder`` an entry's folder instead (another process's cache: the memory probe reads its parent's)."""
    folder = folder or prepared_dir(digest)
    path = os.path.join(folder, 'model.onnx')
    if not os.path.exists(path) or not os.path.exists(os.path.join(folder, WEIGHTS_FILE)):
        return None
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - a damaged entry is prepared again
        return None
    meta = {p.key: p.value for p in model.metadata_props}
    if _BATCH_FIXED_KEY not in meta or _MODEL_HASH_KEY not in meta:
        return None
    return model, meta[_BATCH_FIXED_KEY] == '1', external_weights(model, folder), meta[_MODEL_HASH_KEY]


def store_prepared(model, digest, batch_fixed, model_hash):
    """Write the prepared ``model`` into the cache with its big initializers in one external-data file and
    return :func:`load_prepared` of it (the big ModelProto can then be dropped). Written into a temporary
    folder and renamed, so a concurrent reader sees a whole entry or none."""
    folder = prepared_dir(digest)
    for key, value in ((_BATCH_FIXED_KEY, '1' if batch_fixed else '0'), (_MODEL_HASH_KEY, model_hash)):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    tmp = tempfile.mkdtemp(prefix='.prep-', dir=os.path.dirname(folder))
    try:
        onnx.save_model(model, os.path.join(tmp, 'model.onnx'), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=WEIGHTS_FILE, size_threshold=EXTERNAL_MIN_BYTES)
        if not os.path.exists(os.path.join(tmp, WEIGHTS_FILE)):
            open(os.path.join(tmp, WEIGHTS_FILE), 'wb').close()   # no big initializer: an empty weights file
        try:
            os.rename(tmp, folder)
        except OSError:      # another process stored it first: keep theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_prepared(digest)


def external_weights(model, folder, location=WEIGHTS_FILE):
    """ExternalWeights of ``model``'s initializers that lie in ``folder``/``location``."""
    entries = []
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            if info.get('location') == location:
                entries.append((t.name, int(info.get('offset', 0)), int(info['length']), t.data_type,
                                tuple(t.dims)))
    return ExternalWeights(os.path.join(folder, location), tuple(entries))
