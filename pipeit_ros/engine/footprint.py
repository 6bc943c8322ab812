"""A plan's memory, measured in a fresh process of its own: the figure does not depend on what ran before.

What ``--memory-mb`` bounds (docs/memory.md): the **peak** memory of the plan's process while it starts and
runs, counted as PSS (``/proc/PID/smaps_rollup``; the libraries' pages split with the processes that map them,
as a sum over several processes needs) with the model's weight pages counted whole (they are the plan's own,
whatever other process maps the same file). The kernel keeps no peak of PSS, so the peak is the PSS once the
plan runs plus what the process held above that at its peak: ``VmHWM - RSS``, the peak reset
(``/proc/self/clear_refs``) after the model is loaded. Building a session takes temporaries that are freed
before the plan runs (onnxruntime copies the weights it transforms; ResNet-50: ~140 MiB), so the peak can be
well above the running figure.

The child loads the model (the parent's prepared copy: its weights stay in the mapped file, and a child that
prepared the model itself would hold ~12 MiB more, AlexNet, than the plan does), starts the plan's Pipeline,
stalls its last stage on its first frame until every queue is full (:class:`_Stall`: outputs in flight reach
their bound, as in a long run), runs ``frames`` frames and reports ``memory_mb`` (the peak above),
``running_mb`` (the PSS, weights whole, once it runs), ``pss_mb``, ``rss_mb``, ``peak_rss_mb`` and
``queue_high_water`` (per stage). The profiler runs it once per model to measure the per-process base
(:mod:`pipeit_ros.cost.profiler`), ``pipeit bench`` once per candidate.
"""
import json
import os
import subprocess
import sys
import threading
import time

from pipeit_ros.engine.parts import QUEUE_SIZE
from pipeit_ros.engine.pipeline import Pipeline
from pipeit_ros.engine.sessions import optimize_stages
from pipeit_ros.hw import memory as procmem
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.plan import Plan

FRAMES = 10
TIMEOUT_S = 300.0
FRAME_TIMEOUT_S = 60.0
STALL_S = 20.0      # the longest the last stage holds its first frame (a plan whose queues never fill)
SETTLE_MAX_S = 10.0


def _drop(frame):
    """The probe's consumer: it lets each result go as it comes out, as ``pipeit bench`` and a container do."""


class _Stall:
    """The probe's tap: the last stage holds its first frame until every queue in front of it is full, then for
    as long as the first frame took to come through (the stages in front finish the run they hold). Each stage's
    outputs in flight then reach the bound ``CostTable.flight_bytes`` counts, as they do in a long run whenever
    a later stage falls behind, and its session's arena keeps what it grew to. Without the stall a short probe
    caught it or not by chance: YOLOv8n ``0-79@big,80-110@little`` measured 129 or 139 MiB, 2 outputs of 4.3 MiB
    apart."""

    def __init__(self, last_stage, queue_size):
        self.last_stage, self.queue_size = last_stage, queue_size
        self.pipe = None
        self.start = time.monotonic()
        self.released = threading.Event()

    def __call__(self, stage, replica, seq, inputs, outputs):
        if stage != self.last_stage or self.released.is_set():
            return
        first_pass = time.monotonic() - self.start
        deadline = time.monotonic() + STALL_S
        while any(d < self.queue_size for d in self.pipe.queue_depths()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(min(first_pass, SETTLE_MAX_S))
        self.released.set()


def frames_to_fill(plan, queue_size=QUEUE_SIZE):
    """Frames that fill every queue of ``plan`` with every stage's replicas holding one: what the stalled probe
    submits at least."""
    return sum(queue_size + s.replicas for s in plan.stages) + 1


def measure(graph, plan, frames=FRAMES, timeout=TIMEOUT_S):
    """{'memory_mb', 'running_mb', 'pss_mb', 'rss_mb', 'peak_rss_mb', 'queue_high_water'} of ``plan`` run in a
    fresh process, or {'error': one line}."""
    optimize_stages(graph, plan)     # here, so the probe holds what a plan's process holds once they exist
    request = json.dumps({'model': graph.path, 'input_shape': graph.input_shape_given,
                          'prepared': os.path.dirname(graph.weights.path) if graph.weights is not None else None,
                          'plan': plan.to_dict(), 'frames': int(frames)})
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}
    try:
        done = subprocess.run([sys.executable, '-m', __name__], input=request, capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {'error': f'the memory probe did not finish within {timeout:g} s'}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ['no output'])[-1]
        return {'error': f'the memory probe failed (exit {done.returncode}): {tail}'}
    return json.loads(lines[-1])


def main():
    request = json.load(sys.stdin)
    graph = graph_mod.load(request['model'], request.get('input_shape'), prepared_in=request.get('prepared'))
    plan = Plan.from_dict(request['plan'])
    x = graph.sample_input(0)
    procmem.trim()
    procmem.reset_peak()
    stall = _Stall(len(plan.stages) - 1, QUEUE_SIZE) if len(plan.stages) > 1 else None
    with Pipeline(graph, plan, on_output=_drop, tap=stall) as pipe:
        if stall is not None:
            stall.pipe, stall.start = pipe, time.monotonic()
        frames = max(request['frames'], frames_to_fill(plan))
        for _ in range(frames):
            pipe.submit(x, timeout=FRAME_TIMEOUT_S)
        if not pipe.drain(timeout=FRAME_TIMEOUT_S):
            raise SystemExit(f'the plan did not deliver {frames} frames within {FRAME_TIMEOUT_S:g} s')
        now = procmem.usage()
        filled = [st.queue_high_water for st in pipe.stats()]
        folder = os.path.dirname(graph.weights.path) if graph.weights is not None else None   # + optimised stages
        whole = (procmem.mapped_bytes(folder, under=True)
                 - procmem.mapped_bytes(folder, field='Pss', under=True)) if folder else 0
    running = now.pss + whole
    print(json.dumps({'memory_mb': (running + max(now.hwm - now.rss, 0)) / procmem.MIB,
                      'running_mb': running / procmem.MIB, 'pss_mb': now.pss / procmem.MIB,
                      'rss_mb': now.rss / procmem.MIB, 'peak_rss_mb': now.hwm / procmem.MIB,
                      'queue_high_water': filled}))


if __name__ == '__main__':
    main()
