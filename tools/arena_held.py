"""What a session's arena grows by while it runs with its last k outputs held (a next stage's queue, a reorder
buffer), with onnxruntime's per-session CPU arena or a process-wide one of a given extend strategy.

``python tools/arena_held.py RUNS NET MODES``: MODES a comma list of ``default`` (the per-session arena the engine
uses), ``same`` and ``power`` (an arena registered for the process, ``OrtArenaCfg`` strategy kSameAsRequested /
kNextPowerOfTwo, opted into with ``session.use_env_allocators``). For k = 0..3, one fresh process each: the zoo
net's whole model as one session pinned to CPU 0, RUNS runs; prints the anonymous memory its build and first run
took, what the runs added after 10 and RUNS runs, and the median run time (docs/memory.md).
"""
import os
import subprocess
import sys

CHILD = r'''
import collections, json, sys
from pipeit_ros.engine import sessions
from pipeit_ros.hw import memory as procmem
from pipeit_ros.hw.cpus import pin_current_thread
from pipeit_ros.model import graph as graph_mod, zoo
k, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if mode != 'default':
    sys.path.insert(0, sys.argv[5])
    from arena_held import use_process_arena
    use_process_arena(1 if mode == 'same' else 0)
g = graph_mod.load(zoo.zoo_path(sys.argv[4]))
pin_current_thread((0,))
a_imp = procmem.anonymous_now()
s = sessions.make_session(g.extract_bytes(0, len(g.layers) - 1), (0,), weights=g.weights)
x = {g.input_name: g.sample_input(0)}
s.run(None, x)
procmem.trim()
a0 = procmem.anonymous_now()
held = collections.deque(maxlen=max(k, 1))
marks = []
import time
t = []
for i in range(n):
    a = time.perf_counter(); o = s.run(None, x); t.append(time.perf_counter() - a)
    if k:
        held.append(o)
    o = None
    if i + 1 in (10, 50, n):
        marks.append(round((procmem.anonymous_now() - a0) / 2**20, 1))
t.sort()
print(json.dumps({'mode': mode, 'k': k, 'first_run_mib': round((a0 - a_imp) / 2**20, 1), 'grown_mib_at_10_50_n': marks, 'median_ms': round(t[len(t)//2]*1e3, 1)}))
'''
TOOLS = os.path.dirname(os.path.abspath(__file__))


def use_process_arena(strategy):
    """In this process, before any session is built: register one CPU arena (``OrtArenaCfg`` extend strategy 1
    kSameAsRequested, 0 kNextPowerOfTwo) and make every session the engine builds use it."""
    import onnxruntime as ort

    from pipeit_ros.engine import sessions
    info = ort.OrtMemoryInfo('Cpu', ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, strategy, -1, -1))
    engine_options = sessions.session_options

    def options(*args, **kwargs):
        so = engine_options(*args, **kwargs)
        so.add_session_config_entry('session.use_env_allocators', '1')
        return so
    sessions.session_options = options


def main():
    if len(sys.argv) != 4:
        raise SystemExit('usage: python tools/arena_held.py RUNS NET MODES (see the docstring)')
    for mode in sys.argv[3].split(','):
        for k in (0, 1, 2, 3):
            out = subprocess.run([sys.executable, '-c', CHILD, str(k), sys.argv[1], mode, sys.argv[2], TOOLS],
                                 capture_output=True, text=True)
            print(out.stdout.strip() or out.stderr[-800:], flush=True)


if __name__ == '__main__':
    main()
