"""Throughput of data parallelism with and without the engine's reorder window, paired in one run.

``python tools/window_ab.py NETS ROUNDS SECONDS [plan]``: per zoo net (comma list), ``0-N@big+little[0+1]:1x2`` on
emulated-biglittle-1+1, built twice in one process under the emulation (the window as the engine makes it, and one
that never waits), alive together and run alternately, order flipped each round, each round SECONDS of frames
submitted as fast as the plan takes them after a 3-frame warm-up. With ``plan`` the plan carries its predictions
(the window from the predicted times, profiling first if needed); without, the window comes from the replicas'
measured cycles. Prints frames/s per round and the median (range) of with ÷ without (docs/memory.md).
"""
import statistics
import sys
import time

from pipeit_ros.engine import pipeline
from pipeit_ros.engine.parts import ReorderWindow
from pipeit_ros.engine.sessions import optimize_stages
from pipeit_ros.hw.emulation import emulated
from pipeit_ros.hw.topology import resolve
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import zoo
from pipeit_ros.plan import parse_spec


class NoWindow(ReorderWindow):
    def enter(self, seq, stopping, poll_s):
        return


if len(sys.argv) < 4:
    raise SystemExit('usage: python tools/window_ab.py NETS ROUNDS SECONDS [plan]')
topo = resolve('emulated-biglittle-1+1')
rounds, secs = int(sys.argv[2]), float(sys.argv[3])
for net in sys.argv[1].split(','):
    g = graph_mod.load(zoo.zoo_path(net))
    last = len(g.layers) - 1
    plan = parse_spec(f'0-{last}@big+little[0+1]:1x2', topo, last + 1)
    if len(sys.argv) > 4:
        from pipeit_ros.cost import profiler
        from pipeit_ros.planning import prediction
        plan = prediction.with_predictions(plan, profiler.profile(g, topo, progress=False, log=lambda *_: None), topo)
    print(net, 'window', plan.stages[-1].window, flush=True)
    optimize_stages(g, plan)
    x = g.sample_input(0)
    with emulated(topo, log=lambda *a: None):
        pipes = {}
        for name, cls in (('window', ReorderWindow), ('none', NoWindow)):
            pipeline.ReorderWindow = cls
            count = [0]
            p = pipeline.Pipeline(g, plan, on_output=lambda f, c=count: c.__setitem__(0, c[0] + 1), topology=topo)
            p.start()
            pipes[name] = (p, count)
        pipeline.ReorderWindow = ReorderWindow
        fps = {k: [] for k in pipes}
        for r in range(rounds):
            order = list(pipes) if r % 2 == 0 else list(pipes)[::-1]
            for name in order:
                p, count = pipes[name]
                for _ in range(3):
                    p.submit(x)
                p.drain()
                c0, t0 = count[0], time.perf_counter()
                while time.perf_counter() - t0 < secs:
                    p.submit(x)
                p.drain()
                fps[name].append((count[0] - c0) / (time.perf_counter() - t0))
        for p, _ in pipes.values():
            p.stop()
    ratios = [a / b for a, b in zip(fps['window'], fps['none'])]
    print(net, 'fps window', [round(v, 1) for v in fps['window']], 'none', [round(v, 1) for v in fps['none']],
          'ratio median', round(statistics.median(ratios), 3), 'range', round(min(ratios), 3), round(max(ratios), 3),
          flush=True)
