"""Predicted against measured memory for zoo networks (the table of docs/memory.md).

``python tools/memory_table.py [NET ...] [--topology T]``: per network, profile (cached), then the exact plan
and data parallelism over the first two clusters, each predicted by the profile's memory model and measured in a
fresh process (``pipeit_ros.engine.footprint``: peak PSS, weights whole) while the topology's emulation runs, so
replicas run at the speeds the prediction takes (``--frames``: a longer run lets a replicated last stage's
outputs reach their bound). Prints one markdown row per plan.
Run it on a quiet machine: processes of the same virtual environment running alongside share the libraries'
pages and lower the measured PSS.
"""
import argparse

from pipeit_ros.cost import profiler
from pipeit_ros.engine import footprint
from pipeit_ros.hw.emulation import emulated
from pipeit_ros.hw.topology import resolve
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import zoo
from pipeit_ros.plan import parse_spec
from pipeit_ros.planning import dse, prediction

MIB = 2**20
NETS = ('alexnet', 'googlenet', 'mobilenet_v1', 'mobilenet_v2', 'resnet50', 'squeezenet1_1', 'yolov8n',
        'lraspp_mobilenet_v3_large')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('nets', nargs='*', default=NETS)
    ap.add_argument('--topology', default='emulated-biglittle-1+1')
    ap.add_argument('--frames', type=int, default=60)
    args = ap.parse_args(argv)
    topo = resolve(args.topology)
    a, b = topo.clusters[:2]
    print('| net | plan | spec | predicted MiB | measured MiB | ratio | running MiB | peak RSS MiB |')
    print('|---|---|---|--:|--:|--:|--:|--:|')
    for name in args.nets:
        g = graph_mod.load(zoo.zoo_path(name))
        cost = profiler.profile(g, topo, progress=False, log=lambda *_: None)
        last = len(g.layers) - 1
        dp = parse_spec(f'0-{last}@{a.name}+{b.name}[{a.cpus[0]}+{b.cpus[0]}]:1x2', topo, len(g.layers))
        for label, plan in (('exact plan', dse.solve(cost, topo)), ('data parallelism', prediction.with_predictions(dp, cost, topo))):
            with emulated(topo, log=lambda *_: None):
                m = footprint.measure(g, plan, frames=args.frames)
            if 'error' in m:
                print(f'| {name} | {label} | {plan.to_spec()} | {m["error"]} |')
                continue
            pred = plan.notes['memory_mib']
            print(f'| {name} | {label} | `{plan.to_spec()}` | {pred:.1f} | {m["memory_mb"]:.1f} | '
                  f'{pred / m["memory_mb"]:.2f} | {m["running_mb"]:.1f} | {m["peak_rss_mb"]:.0f} |', flush=True)


if __name__ == '__main__':
    main()
