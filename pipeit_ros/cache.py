"""The cache of profiles, predictors and zoo models: ${XDG_CACHE_HOME:-~/.cache}/pipeit.

Keys join what makes a result reusable: the model's hash, the topology's fingerprint and the onnxruntime
version. Every command that reuses an entry says so (the callers print it; ``lookup`` returns the path).
"""
import hashlib
import os
import sys
import time

from pipeit_ros.errors import PipeitError


def cache_dir(*parts):
    """The cache folder ``parts`` (made if missing); PipeitError when it cannot be made."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    path = os.path.join(base, 'pipeit', *parts)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise PipeitError(f'cache directory {path} cannot be made ({exc.strerror or exc}); set XDG_CACHE_HOME '
                          f'to a writable directory') from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PipeitError(f'cache directory {path} is not writable; set XDG_CACHE_HOME to a writable directory')
    return path


def move_aside(path, reason, log=None):
    """Rename a cache entry that failed to load to ``<path>.bad-<time>`` (kept for a post-mortem) and say so;
    the caller rebuilds it."""
    aside = f'{path}.bad-{time.strftime("%Y%m%dT%H%M%S")}'
    try:
        os.replace(path, aside)
        where = f'moved aside to {aside}'
    except OSError as exc:
        where = f'could not be moved aside ({exc.strerror or exc}), ignored'
    message = f'cache: entry {path} is unusable ({reason}); {where}; rebuilding it'
    if log is None:
        print(f'pipeit: warning: {message}', file=sys.stderr)
    else:
        log(f'warning: {message}')


def ort_version():
    # imported here: the cache is imported by modules that never run a model (hw/emulation), and onnxruntime
    # costs every such process its import time and a thread
    import onnxruntime  # noqa: PLC0415 - see above
    return onnxruntime.__version__


def key(*parts):
    """A short file-name-safe key from the parts (model hash, topology fingerprint, ORT version, options)."""
    text = '|'.join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_path(kind, *parts, suffix='.json'):
    """Path of the cache entry of ``kind`` (profiles, predictors, ...) for these key parts."""
    return os.path.join(cache_dir(kind), key(*parts, ort_version()) + suffix)
