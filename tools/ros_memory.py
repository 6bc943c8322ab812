"""The planner's memory figure for a ROS layout against what the layout's containers hold (docs/memory.md).

``python tools/ros_memory.py NET STAGES [--layout one|per_cluster] [--topology T] [--at S] [--sleep-after S]
[--breakdown]``

Predicts ``STAGES`` of zoo network ``NET`` for the layout as the planner node does (the profile's memory model,
``CostTable.for_processes`` with the idle and hosting containers of ``pipeit_ros.ros.footprint``: the layout's peak)
and as it holds once the containers hosting nothing sleep (``--sleep-after`` seconds, the containers'
``sleep_after_s``; 0: they stay awake, and the two figures are one), then runs it with
``pipeit bringup --with-camera pattern`` (``stages`` forced, a ROS domain from this process's pid) and sums the
containers' PSS (``/proc/PID/smaps_rollup``) ``--at`` seconds after the start. Prints one line per container
and the ratio predicted / summed; with ``--breakdown`` also where each container's PSS goes, read at the same
moment (``tools/smaps_breakdown.py``).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import psutil
import smaps_breakdown  # tools/

from pipeit_ros.cost import profiler
from pipeit_ros.hw import memory as procmem
from pipeit_ros.hw.topology import resolve
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import zoo
from pipeit_ros.plan import parse_spec
from pipeit_ros.planning import prediction
from pipeit_ros.ros import footprint


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('net')
    ap.add_argument('stages')
    ap.add_argument('--layout', choices=('one', 'per_cluster'), default='per_cluster')
    ap.add_argument('--topology', default='emulated-biglittle-1+1')
    ap.add_argument('--at', type=float, default=32.0, help='seconds after the start to read the containers')
    ap.add_argument('--sleep-after', type=float, default=10.0,
                    help="the containers' sleep_after_s (0: an idle container stays awake)")
    ap.add_argument('--breakdown', action='store_true', help="also print each container's PSS by kind of mapping")
    args = ap.parse_args(argv)
    topo = resolve(args.topology)
    g = graph_mod.load(zoo.zoo_path(args.net))
    cost = profiler.profile(g, topo, progress=False, log=lambda *_: None).in_containers(args.layout)
    figures = footprint.container_memory()
    if figures is None:
        sys.exit('the container probe failed')
    count = 1 if args.layout == 'one' else len(topo.clusters)
    plan = parse_spec(args.stages, topo, len(g.layers))
    peak, predicted = (prediction.predict_memory(plan, cost.for_processes(count, *figures.figures(asleep)), topo)
                       / procmem.MIB for asleep in (False, args.sleep_after > 0))
    with tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False) as params:
        params.write(f"pipeit_planner:\n  ros__parameters:\n    stages: '{args.stages}'\n"
                     f"pipeit_container:\n  ros__parameters:\n    sleep_after_s: {args.sleep_after:.1f}\n")
    cmd = [os.path.join(os.path.dirname(sys.executable), 'pipeit'), 'bringup', '--params-file', params.name,
           '--topology', args.topology, '--model', g.path, '--with-camera', 'pattern',
           '--duration', f'{args.at + 8:g}', '--quiet'] + (['--single-container'] if args.layout == 'one' else [])
    env = {**os.environ, 'ROS_DOMAIN_ID': str(150 + os.getpid() % 50)}
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        time.sleep(args.at)
        use = {c.pid: procmem.usage(c.pid) for c in psutil.Process(proc.pid).children(recursive=True)
               if 'container' in ' '.join(c.cmdline())}
        kinds = [line for pid in use for line in smaps_breakdown.report(pid)] if args.breakdown else []
        out = proc.communicate(timeout=120)[0]
    finally:
        os.unlink(params.name)
    summed = sum(u.pss for u in use.values()) / procmem.MIB
    for pid, u in use.items():
        print(f'container pid {pid}: PSS {u.pss / procmem.MIB:.1f} MiB, RSS {u.rss / procmem.MIB:.1f} MiB')
    if kinds:
        print('\n'.join(kinds))
    print(f'{args.net} {args.layout} {args.stages}: container idle {figures.idle_bytes / procmem.MIB:.1f} MiB, '
          f'asleep {figures.sleeping_bytes / procmem.MIB:.1f} MiB, hosting {figures.hosting_bytes / procmem.MIB:.1f} MiB, containers\' PSS '
          f'summed {summed:.1f} MiB, predicted {predicted:.1f} MiB (at the peak {peak:.1f}), ratio {predicted / max(summed, 1e-9):.2f}; '
          + (out.strip().splitlines() or ['no output'])[-1])


if __name__ == '__main__':
    main()
