"""The memory of a container process before it hosts a stage, measured once per machine and cached.

A ROS layout runs a plan in several processes, each a container with its own Python, rclpy, Fast DDS
participant (and its shared-memory segment), OpenCV and onnxruntime (docs/memory.md). The planner's memory
figure for the layout is the sum over its containers (:meth:`pipeit_ros.cost.table.CostTable.for_processes`):
each one's base measured here, the weights once (one memory-mapped file, so the containers' PSS splits
them), every stage replica's session memory. The probe is a real container (``cluster: '*'``) started in a
ROS domain of its own, so it hears no planner; its PSS after ``PROBE_S`` is the base. Before that it
pre-processes a camera-sized frame and runs a small model (the zoo's ``tiny``) as a running container does:
the code pages of onnxruntime and OpenCV that running touches, and their buffers, are the container's, not the
model's (an idle container measured 28-30 MiB under one running SqueezeNet 1.1 or AlexNet beyond their
sessions, weights and arenas; docs/memory.md). The cache key holds the interpreter, the package, onnxruntime's
version and the Fast DDS profile, which decide it.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import rclpy

from pipeit_ros import cache, paths
from pipeit_ros.app.preprocess import PreprocessConfig, Preprocessor
from pipeit_ros.engine.sessions import make_session
from pipeit_ros.hw import memory as procmem
from pipeit_ros.hw.cpus import allowed_cpus
from pipeit_ros.model import graph, zoo
from pipeit_ros.ros.container import Container

PROBE_S = 2.0
TIMEOUT_S = 60.0
PROBE_FORMAT = 'warm'          # bump when what the probe runs changes, so an older measurement is not reused
WARM_MODEL = 'tiny'            # zoo network the probe runs
WARM_FRAME = (480, 640)        # rows, columns of the rgb8 frame it pre-processes (the camera's default size)
WARM_RUNS = 5
_PROFILE_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')


def cache_path():
    return cache.entry_path('memory', 'container-base', PROBE_FORMAT, sys.executable, paths.DATA_DIR,
                            *(os.environ.get(v, '') for v in _PROFILE_VARS))


def cached_base_bytes():
    """The cached measurement of :func:`container_base_bytes`, None where there is none."""
    try:
        with open(cache_path(), encoding='utf-8') as f:
            return float(json.load(f)['pss_bytes'])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def container_base_bytes(log=print):
    """PSS in bytes of a container on this machine that has run a small model but hosts no stage (cached), or
    None where the probe fails (logged)."""
    known = cached_base_bytes()
    if known is not None:
        return known
    path = cache_path()
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p),
           'ROS_DOMAIN_ID': str(100 + os.getpid() % 100)}
    try:
        done = subprocess.run([sys.executable, '-m', __name__], capture_output=True, text=True, timeout=TIMEOUT_S,
                              env=env, check=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        log(f'memory: the container probe failed ({type(exc).__name__}); the layout figure counts one '
            'engine process')
        return None
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(measured, f)
    log(f'memory: a container before its first stage holds {measured["pss_bytes"] / procmem.MIB:.1f} MiB (PSS; measured once, '
        f'cached as {path})')
    return float(measured['pss_bytes'])


def warm_up():
    """Pre-process a camera-sized frame and run :data:`WARM_MODEL` on it, as a container hosting a stage does."""
    g = graph.load(zoo.zoo_path(WARM_MODEL))
    session = make_session(g.extract_bytes(0, len(g.layers) - 1), tuple(allowed_cpus()[:1]), pinned=False,
                           weights=g.weights)
    pre = Preprocessor(PreprocessConfig(input_shape=g.input_shape))
    rows, cols = WARM_FRAME
    frame = np.random.default_rng(0).integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    for _ in range(WARM_RUNS):
        session.run(None, {g.input_name: pre('rgb8', rows, cols, cols * 3, frame.tobytes()).astype(g.input_dtype)})


def main():
    rclpy.init()
    try:
        with Container(parameters={'cluster': '*'}):
            warm_up()
            time.sleep(PROBE_S)
            procmem.trim()
            use = procmem.usage()
    finally:
        rclpy.try_shutdown()
    print(json.dumps({'pss_bytes': use.pss, 'rss_bytes': use.rss, 'anonymous_bytes': use.anonymous}))


if __name__ == '__main__':
    main()
