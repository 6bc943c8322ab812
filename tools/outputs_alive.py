"""Outputs of a data-parallel plan alive at once, per replica and in all, under the big.LITTLE emulation.

``python tools/outputs_alive.py NET FRAMES``: the zoo net's whole model as ``0-N@big+little[0+1]:1x2`` on
emulated-biglittle-1+1 with its predictions (so with the plan's reorder window, docs/architecture.md), FRAMES frames
submitted as fast as it takes them. Each output is counted alive from the start of the run that makes it (its
chunk is allocated then) to its delivery in order. Prints the window, the predicted memory, the process's PSS,
and the peak of outputs alive per replica and in all: what ``CostTable.reordered_outputs`` counts
(docs/memory.md, "A replicated last stage: the reorder window").
"""
import sys
import time

from pipeit_ros.cost import profiler
from pipeit_ros.engine.pipeline import Pipeline
from pipeit_ros.engine.sessions import optimize_stages
from pipeit_ros.hw import memory as procmem
from pipeit_ros.hw.emulation import emulated
from pipeit_ros.hw.topology import resolve
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import zoo
from pipeit_ros.plan import parse_spec
from pipeit_ros.planning import prediction


def peaks(intervals, replicas):
    """Peak count of overlapping (start, end) intervals per replica and in all; ``intervals`` [(replica, a, b)]."""
    events = sorted([(a, 1, r) for r, a, _ in intervals] + [(b, -1, r) for r, _, b in intervals])
    cur, top, total, top_total = [0] * replicas, [0] * replicas, 0, 0
    for _, step, r in events:
        cur[r] += step
        total += step
        top[r] = max(top[r], cur[r])
        top_total = max(top_total, total)
    return top, top_total


def main():
    if len(sys.argv) != 3:
        raise SystemExit('usage: python tools/outputs_alive.py NET FRAMES')
    net, n = sys.argv[1], int(sys.argv[2])
    topo = resolve('emulated-biglittle-1+1')
    g = graph_mod.load(zoo.zoo_path(net))
    cost = profiler.profile(g, topo, progress=False, log=lambda *_: None)
    last = len(g.layers) - 1
    plan = prediction.with_predictions(parse_spec(f'0-{last}@big+little[0+1]:1x2', topo, last + 1), cost, topo)
    print('window', plan.stages[-1].window, 'predicted MiB', plan.notes['memory_mib'])
    optimize_stages(g, plan)
    x = g.sample_input(0)
    delivered = {}
    with emulated(topo, log=lambda *a: None):
        with Pipeline(g, plan, on_output=lambda f: delivered.__setitem__(f.seq, time.perf_counter()),
                      timeline=n) as pipe:
            for _ in range(n):
                pipe.submit(x)
            pipe.drain()
            runs = pipe.timeline()
            usage = procmem.usage()
    print(f'PSS {usage.pss / procmem.MIB:.1f} MiB')
    top, top_total = peaks([(r, a, delivered[seq]) for _, r, seq, a, _ in runs], 2)
    print('peak outputs alive per replica', top, 'in all', top_total)
    print('frames per replica', [sum(1 for _, r, *_ in runs if r == k) for k in (0, 1)])


if __name__ == '__main__':
    main()
