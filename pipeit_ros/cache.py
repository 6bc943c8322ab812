"""The cache of profiles, predictors and zoo models: ${XDG_CACHE_HOME:-~/.cache}/pipeit.

Keys join what makes a result reusable: the model's hash, the topology's fingerprint and the onnxruntime
version. Every command that reuses an entry says so (the callers print it; ``lookup`` returns the path).
"""
import hashlib
import os

import onnxruntime


def cache_dir(*parts):
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    path = os.path.join(base, 'pipeit', *parts)
    os.makedirs(path, exist_ok=True)
    return path


def ort_version():
    return onnxruntime.__version__


def key(*parts):
    """A short file-name-safe key from the parts (model hash, topology fingerprint, ORT version, options)."""
    text = '|'.join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_path(kind, *parts, suffix='.json'):
    """Path of the cache entry of ``kind`` (profiles, predictors, ...) for these key parts."""
    return os.path.join(cache_dir(kind), key(*parts, ort_version()) + suffix)
