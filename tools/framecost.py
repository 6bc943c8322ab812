"""Where the CPU of a frame goes on the ROS path: per-thread CPU per frame of a whole graph in one process.

``python tools/framecost.py [MODEL] [--topology T] [--stages SPEC] [--seconds S] [--window K]
[--width W] [--height H] [--json]``

Camera source, result collector and a single container (``cluster: '*'``) run in this process, so every
thread is ours to name: the engine's stage workers and output thread, the feeder (pre-processing), the
executor threads (camera input callback, stage nodes' diagnostics, the control node's timers, the bench's own
source and collector) and the middleware's threads (Fast DDS names them ``dds.*``). Over ``--seconds`` of a
closed loop (``--window`` frames in flight) each thread's CPU time (``/proc/self/task/<tid>/schedstat``,
nanoseconds, so the figure holds while other processes share the machine) is divided by the results
received. The camera's publish runs on this (main) thread: ``main`` is the camera's own cost (serialising the
Image), ``spin.pipeit_test_collector`` the bench's consumer. What is not a stage worker is the ROS path's
overhead; on a machine where every core runs a stage, each ms of it per frame comes off the frame rate.

A run inside one process differs from a deployment in one way: the camera and the container share a
process, so Fast DDS may hand frames over in-process; use rosbench's per-process figures for the rest.
"""
import argparse
import json
import sys
import threading
import time

import rosbench  # tools/

from pipeit_ros.hw import threads


def thread_cpu_ns():
    """{tid: (name, cpu ns)} of every thread of this process; Python threads by their Python name."""
    return threads.thread_cpu(names={t.native_id: t.name for t in threading.enumerate()})


def _group(name, stage_tids, tid):
    if tid in stage_tids:
        return stage_tids[tid]
    if name == threading.main_thread().name:
        return 'camera publish (main)'
    for key, label in (('.feeder', 'feeder: pre-processing + submit'), ('.output', 'engine output: results'),
                       ('camera_in', 'camera input pump (take + parse)'),
                       ('pipeit_test_results', 'bench consumer'), ('pipeit_test_collector', 'bench consumer'),
                       ('_input', 'tensor input'), ('spin.stage_', 'stage nodes (diag)'),
                       ('spin.pipeit_container', 'control node timers'), ('dds.', 'Fast DDS threads')):
        if key in name:
            return label
    return 'other: ' + name


def measure(graph, plan, topology_spec, *, seconds=8.0, warmup=2.0, window=None, width=640, height=480,
            log=rosbench._note):
    """{'frames', 'fps', 'cpu_ms_per_frame': {group: ms}, 'threads': [...]} of one in-process graph run."""
    from pipeit_ros.app.wire.plan_msg import encode_plan_message
    from pipeit_ros.hw.topology import resolve
    from pipeit_ros.testing import harness

    topology = resolve(topology_spec)
    text = encode_plan_message(plan, generation=1, reason='start', model_path=graph.path,
                               model_hash=graph.model_hash, topology=topology, input_shape=graph.input_shape)
    window = window or 3 * len(plan.stages) + 2
    with harness.dds_transport(), harness.RosGraph(domain_id=harness.domain_id_for_process(base=41)) as rg:
        col, src, planner = rg.collector(), rg.source(), rg.planner()
        planner.publish(text)
        container = rg.container({'cluster': '*', 'topology': topology_spec, 'policy': 'block',
                                  'image_qos': 'reliable'})
        if not harness.wait(lambda: col.running(1), 120) or not src.wait_for_subscriber(30):
            raise RuntimeError('the container did not start')
        frames = [harness.image_msg(harness.synthetic_frame(i, width, height), 'rgb8', 0) for i in range(8)]
        rosbench._drive(col, src, frames, seconds=warmup, warmup=0.0, window=window, rate=0.0)
        stage_tids = {}
        for run in container.node.runs:
            for stage, tids in run.pipeline.worker_tids().items():
                for tid in tids:
                    stage_tids[tid] = f'engine {stage}' if stage != 'output' else 'engine output: results'
        before, base = thread_cpu_ns(), len(col.classifications)
        t0 = time.perf_counter()
        got, _ = rosbench._drive(col, src, frames, seconds=seconds, warmup=0.0, window=window, rate=0.0)
        after, wall = thread_cpu_ns(), time.perf_counter() - t0
        n = len(col.classifications) - base
    groups, threads = {}, []
    for tid, (name, ns) in after.items():
        used = ns - before.get(tid, (name, 0))[1]
        label = _group(name, stage_tids, tid)
        groups[label] = groups.get(label, 0.0) + used / 1e6 / max(1, n)
        threads.append({'tid': tid, 'name': name, 'group': label, 'cpu_ms_per_frame': used / 1e6 / max(1, n)})
    overhead = sum(v for k, v in groups.items() if not k.startswith('engine stage_'))
    return {'frames': n, 'fps': n / wall, 'cpu_ms_per_frame': dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            'overhead_ms_per_frame': overhead, 'threads': sorted(threads, key=lambda t: -t['cpu_ms_per_frame'])}


def main(argv=None):
    ap = argparse.ArgumentParser(prog='framecost', description=__doc__.split('\n\n')[0])
    ap.add_argument('model', nargs='?')
    ap.add_argument('--topology', default='auto')
    ap.add_argument('--stages', help='compact plan spec (default: the DSE plan)')
    ap.add_argument('--seconds', type=float, default=8.0)
    ap.add_argument('--warmup', type=float, default=2.0)
    ap.add_argument('--window', type=int, default=None)
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args(argv)
    args.plan = None
    from pipeit_ros.hw.topology import resolve
    from pipeit_ros.model import graph as graph_mod
    from pipeit_ros.model import zoo
    model = args.model or zoo.default_model_path()
    graph = graph_mod.load(zoo.zoo_path(model) if model in zoo.NETWORKS else model)
    plan = rosbench.load_plan(args, graph, resolve(args.topology))
    out = measure(graph, plan, args.topology, seconds=args.seconds, warmup=args.warmup, window=args.window,
                  width=args.width, height=args.height)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f'{out["frames"]} frames, {out["fps"]:.1f} frames/s; CPU ms per frame:')
    for k, v in out['cpu_ms_per_frame'].items():
        print(f'  {k:45s} {v:7.3f}')
    print(f'  {"overhead (all but the stage workers)":45s} {out["overhead_ms_per_frame"]:7.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
