"""Measure the ROS graph against the engine alone for one plan: frames/s ratio and end-to-end latency.

``python tools/rosbench.py [MODEL] [--topology T] [--stages SPEC | --plan FILE | --auto]
[--layout single|multi|both] [--seconds S] [--window K | --rate HZ] [--paced F] [--json]``

For each layout the container processes are started as in a deployment (``single``: one container for every
stage; ``multi``: one per cluster the plan uses, each pinned to its cluster), with ``policy: block`` and a
reliable camera topic. This process plays camera and consumer: it publishes 640x480 rgb8 frames and
subscribes to ``pipeit/classification``. Closed loop by default: a new frame goes out whenever fewer than
``--window`` frames are in flight, so the graph runs at its own pace and nothing is dropped; ``--rate`` sends
at a fixed rate instead. Then, for latency, frames go out at ``--paced`` (0.5) x the measured rate: a
saturating source would only show its own queueing (Little's law: window / fps). Figures are taken over
``--seconds`` after ``--warmup`` seconds:

- ``fps``: results received per second; ``engine_fps``: the same plan in pipeit_ros.bench.benchmark (no ROS, no
  pre-processing), measured just before each layout; ``ratio`` = fps / engine_fps.
- ``engine_fps_after``: the engine reference again after the layout (half as long); more than 10 % away
  from ``engine_fps`` means the machine's load changed meanwhile (a note says so): run again.
- ``engine_fps_with_preprocess`` (second reference, skip with ``--no-with-preprocess``): the same plan fed by
  the container's pre-processing of the same frames, no ROS, measured after the layout;
  ``ratio_with_preprocess`` = fps / it.
- ``interleaved`` (``--interleave N``, default 4): with the graph still up, N pairs of (engine alone, then the
  ROS graph again), each ``--seconds``/2; ``ratio_interleaved`` is the median of the pairs' ratios. On a
  machine whose load drifts (this VM's engine reference once moved from 55 to 97 frames/s within one run),
  adjacent pairs share the conditions that separate before/after windows do not.
- ``--no-output-reader``: this process reads ``pipeit/classification`` only, so the containers publish no
  ``pipeit/output`` (a result topic without readers gets no messages) and the CPU figures show what that
  saves (for MobileNetV2's 4 KB output nothing measurable on the 2-core VM: output thread 0.95 vs 0.92 ms).
- ``e2e_p50/p99_ms`` (saturated) and ``paced_e2e_p50/p99_ms``: result arrival here minus the frame's stamp
  (set when it was published here): publish -> DDS -> pre-processing -> stages (-> hops) -> results -> back.
- ``container_p50/p99_ms``: the containers' own figure, from frame receipt to result publish.
- ``cpu_ms_per_frame``: {process: {thread group: CPU ms per result}} over the measuring window, for this
  process (``bench``: camera publish on the main thread, result pump) and each container (threads named by
  pipeit_ros.hw.threads: ``stage_<i>``, ``feeder``, ``output``, ``pump.*``, ``spin.*``, ``dds``). On a
  machine whose every core runs a stage, whatever is not ``stage_<i>`` comes off the frame rate.
Everything runs inside ``pipeit_ros.hw.emulation.emulated(topology)`` like ``pipeit bench``.
"""
import argparse
import json
import sys
import time

import numpy as np

LAYOUTS = ('single', 'multi')
ENGINE_DRIFT = 0.1      # engine reference before vs after a layout differing more: the load changed


def _note(text):
    print(text, file=sys.stderr, flush=True)


def load_plan(args, graph, topology):
    from pipeit_ros.plan import Plan, check_against, parse_spec
    if args.stages:
        return parse_spec(args.stages, topology, n_layers=len(graph.layers))
    if args.plan:
        plan = Plan.load(args.plan)
        check_against(plan, graph, topology)
        return plan
    from pipeit_ros.planning.facade import auto_plan
    return auto_plan(graph, topology, log=_note)


def _drive(col, src, frames, *, seconds, warmup, window, rate, on_start=None):
    """Publish frames for ``warmup + seconds`` (closed loop with ``window`` in flight, or at ``rate`` Hz);
    return (results that arrived in the last ``seconds``, frames sent). ``on_start()`` is called once when the
    last ``seconds`` begin."""
    base = len(col.classifications)
    t_start = time.time_ns()
    t_measure, t_end = t_start + int(warmup * 1e9), t_start + int((warmup + seconds) * 1e9)
    sent = 0
    period_ns = int(1e9 / rate) if rate else 0

    def in_flight():
        return sent - (len(col.classifications) - base)
    while True:
        now = time.time_ns()
        if now >= t_end:
            break
        if on_start is not None and now >= t_measure:
            on_start()
            on_start = None
        if period_ns:
            due = t_start + sent * period_ns
            if now < due:
                time.sleep(min(due - now, t_end - now) / 1e9)
                continue
        else:
            with col.arrived:
                col.arrived.wait_for(lambda: in_flight() < window, timeout=0.1)
            if in_flight() >= window:
                continue
        msg = frames[sent % len(frames)]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
        src.send(msg)
        sent += 1
    return [c for c in list(col.classifications)[base:] if t_measure <= c['t_arrival_ns'] <= t_end], sent


def _latencies(got):
    e2e = [(c['t_arrival_ns'] - (c['header']['stamp']['sec'] * 10**9 + c['header']['stamp']['nanosec'])) / 1e6
           for c in got]
    inside = [c['latency_ms'] for c in got if 'latency_ms' in c]
    p = np.percentile
    return {'e2e_p50_ms': float(p(e2e, 50)), 'e2e_p99_ms': float(p(e2e, 99)),
            'container_p50_ms': float(p(inside, 50)) if inside else None,
            'container_p99_ms': float(p(inside, 99)) if inside else None}


def measure_layout(graph, plan, topology_spec, layout, *, seconds=10.0, warmup=2.0, window=None, rate=0.0,
                   paced=0.5, width=640, height=480, domain_id=None, transport=None, log=_note,
                   interleave=0, reference=None, output_reader=True):
    """Run camera -> containers -> results; returns the figures as a dict.

    Phase 1 (throughput): closed loop with ``window`` frames in flight (or open loop at ``rate`` Hz).
    Phase 2 (latency, when ``paced`` > 0 and no ``rate``): open loop at ``paced`` x the phase-1 frame rate,
    so the figures show the pipeline's latency rather than the queueing a saturating source causes.
    Phase 3 (``interleave`` > 0, closed loop): ``interleave`` pairs of ``reference(seconds)`` (the engine alone,
    frames/s) and the graph again, ``seconds`` / 2 each.
    """
    from pipeit_ros.app import handoff
    from pipeit_ros.app.wire.plan_msg import encode_plan_message
    from pipeit_ros.hw import threads as cpuload
    from pipeit_ros.hw.topology import resolve
    from pipeit_ros.testing import harness

    topology = resolve(topology_spec)
    domain = harness.domain_id_for_process(base=17) if domain_id is None else domain_id
    text = encode_plan_message(plan, generation=1, reason='start', model_path=graph.path,
                               model_hash=graph.model_hash, topology=topology, input_shape=graph.input_shape)
    clusters = ['*'] if layout == 'single' else sorted(handoff.plan_clusters(plan))
    params = {'topology': topology_spec, 'policy': 'block', 'image_qos': 'reliable'}
    window = window or 3 * len(plan.stages) + 2
    procs = [harness.spawn_container(c, params, domain, capture=False, transport=transport) for c in clusters]
    row = {'layout': layout, 'containers': len(clusters)}
    try:
        with harness.dds_transport(transport), harness.RosGraph(domain_id=domain) as rg:
            col, src, planner = rg.collector(outputs=output_reader), rg.source(), rg.planner()
            planner.publish(text)
            started = harness.wait(lambda: col.running(1) or any(p.poll() is not None for p in procs), 120)
            if not started or not col.running(1) or not src.wait_for_subscriber(30):
                raise RuntimeError(f'{layout} layout: containers did not start (see their log above)')
            frames = [harness.image_msg(harness.synthetic_frame(i, width, height), 'rgb8', 0) for i in range(8)]
            log(f'{layout}: {len(clusters)} container process(es), measuring {warmup:g} + {seconds:g} s')
            cpuload.name_threads()
            pids = {'bench': 'self', **{f'container_{c}': p.pid for c, p in zip(clusters, procs)}}
            cpu = {}
            got, sent = _drive(col, src, frames, seconds=seconds, warmup=warmup, window=window, rate=rate,
                               on_start=lambda: cpu.update({k: cpuload.thread_cpu(v) for k, v in pids.items()}))
            after = {k: cpuload.thread_cpu(v) for k, v in pids.items()}
            if not got:
                raise RuntimeError(f'{layout} layout: no result in the measuring window')
            row.update(frames=len(got), sent=sent, fps=len(got) / seconds, window=None if rate else window,
                       rate_hz=rate or None, **_latencies(got))
            row['cpu_ms_per_frame'] = {k: cpuload.per_frame_ms(cpu.get(k, {}), after[k], len(got)) for k in pids}
            if paced > 0 and not rate:
                row['paced_rate_hz'] = paced * row['fps']
                log(f'{layout}: latency at {row["paced_rate_hz"]:.1f} frames/s')
                got, _ = _drive(col, src, frames, seconds=seconds, warmup=1.0, window=0,
                                rate=row['paced_rate_hz'])
                row.update({f'paced_{k}': v for k, v in _latencies(got).items()} if got else {})
            if interleave and not rate:
                row['interleaved'] = _interleave(col, src, frames, interleave, seconds / 2, window, reference, log)
                row['ratio_interleaved'] = float(np.median([r / e for r, e in row['interleaved']]))
    finally:
        row['exit_codes'] = [harness.stop_process(p) for p in procs]
    return row


def _interleave(col, src, frames, pairs, seconds, window, reference, log):
    """[(ROS graph frames/s, engine frames/s)] for ``pairs`` adjacent windows: the engine alone (the graph idle,
    no frame sent), then the graph after a second to fill up again."""
    out = []
    for i in range(pairs):
        eng = reference(seconds)
        got, _ = _drive(col, src, frames, seconds=seconds, warmup=1.0, window=window, rate=0.0)
        out.append((len(got) / seconds, eng))
        log(f'pair {i + 1}/{pairs}: ros {out[-1][0]:.1f}, engine {eng:.1f} frames/s')
    return out


def engine_fps(graph, plan, topology, seconds):
    from pipeit_ros.bench.benchmark import run_benchmark
    result = run_benchmark(graph, topology, {'plan': plan}, seconds=seconds, rounds=3, progress=False)
    return result.candidates['plan'].fps


def engine_fps_with_preprocess(graph, plan, seconds, width=640, height=480):
    """A second reference: the same plan fed by the container's pre-processing (pipeit_ros.app.preprocess of
    ``width`` x ``height`` rgb8 frames, converted on the submitting thread as the container's feeder does), no
    ROS. What pre-processing costs on CPUs that run stages shows as engine_fps - this; the rest of the gap to
    the ROS figure is the ROS path (DDS, takes, results, the bench's own camera and consumer)."""
    from pipeit_ros.app.preprocess import PreprocessConfig, Preprocessor
    from pipeit_ros.engine.pipeline import Pipeline
    from pipeit_ros.testing.harness import synthetic_frame
    pre = Preprocessor(PreprocessConfig(input_shape=tuple(graph.input_shape)))
    frames = [synthetic_frame(i, width, height).tobytes() for i in range(8)]
    done = []
    clock = time.perf_counter
    with Pipeline(graph, plan, queue_size=2, on_output=lambda f: done.append(clock()), name='with_pre') as pipe:
        for i in range(20):
            pipe.submit(pre('rgb8', height, width, width * 3, frames[i % 8]))
        pipe.drain()
        done.clear()
        end, i = clock() + seconds, 0
        while clock() < end:
            pipe.submit(pre('rgb8', height, width, width * 3, frames[i % 8]))
            i += 1
        pipe.drain()
    return sum(1 for t in done if t <= end) / seconds


def run(args):
    from pipeit_ros.hw.emulation import emulated
    from pipeit_ros.hw.topology import resolve
    from pipeit_ros.model import graph as graph_mod
    from pipeit_ros.model import zoo

    model = args.model or zoo.default_model_path()
    if model in zoo.NETWORKS:
        model = zoo.zoo_path(model)
    graph = graph_mod.load(model)
    topology = resolve(args.topology)
    plan = load_plan(args, graph, topology)
    _note(f'plan: {plan.to_spec()}')
    layouts = LAYOUTS if args.layout == 'both' else (args.layout,)
    rows = []
    with emulated(topology, log=_note):
        for layout in layouts:
            eng = engine_fps(graph, plan, topology, min(args.seconds, 10.0))   # just before: same conditions
            row = measure_layout(graph, plan, args.topology, layout, seconds=args.seconds, warmup=args.warmup,
                                 window=args.window, rate=args.rate, paced=args.paced, width=args.width,
                                 height=args.height, transport=args.transport, interleave=args.interleave,
                                 output_reader=args.output_reader,
                                 reference=lambda s: engine_fps(graph, plan, topology, s))
            row['engine_fps'] = eng
            row['ratio'] = row['fps'] / eng if eng else None
            if args.with_preprocess:
                pre = engine_fps_with_preprocess(graph, plan, min(args.seconds, 10.0) / 2, args.width, args.height)
                row['engine_fps_with_preprocess'] = pre
                row['ratio_with_preprocess'] = row['fps'] / pre if pre else None
            # the reference again, after: on a shared machine a load change in between shows here
            row['engine_fps_after'] = engine_fps(graph, plan, topology, min(args.seconds, 10.0) / 2)
            if eng and abs(row['engine_fps_after'] / eng - 1) > ENGINE_DRIFT:
                _note(f'{layout}: engine reference moved from {eng:.1f} to {row["engine_fps_after"]:.1f} frames/s '
                      f'across the measurement: the machine\'s load changed, the ratio is unreliable; run again')
            rows.append(row)
    out = {'model': graph.path, 'plan': plan.to_spec(), 'topology': args.topology,
           'transport': args.transport or 'shipped profile', 'results': rows}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f'{"layout":8} {"ros fps":>8} {"engine":>8} {"ratio":>6} {"e2e p50":>8} {"e2e p99":>8} '
              f'{"paced at":>9} {"p50":>7} {"p99":>7}  (frames/s, ms)')
        for r in rows:
            paced = (f'{r["paced_rate_hz"]:9.1f} {r.get("paced_e2e_p50_ms", 0):7.2f} '
                     f'{r.get("paced_e2e_p99_ms", 0):7.2f}' if r.get('paced_rate_hz') else '')
            print(f'{r["layout"]:8} {r["fps"]:8.1f} {r["engine_fps"]:8.1f} {r["ratio"]:6.2f} '
                  f'{r["e2e_p50_ms"]:8.2f} {r["e2e_p99_ms"]:8.2f} {paced}')
        for r in rows:
            line = f'{r["layout"]:8}: engine reference after the layout {r["engine_fps_after"]:.1f} frames/s'
            if r.get('engine_fps_with_preprocess'):
                line += (f'; engine fed by the same pre-processing (second reference, no ROS) '
                         f'{r["engine_fps_with_preprocess"]:.1f}, ros fps / that = {r["ratio_with_preprocess"]:.2f}')
            print(line)
            if r.get('interleaved'):
                pairs = ', '.join(f'{a:.1f}/{b:.1f}' for a, b in r['interleaved'])
                print(f'{r["layout"]:8}: interleaved ros/engine pairs {pairs}: median ratio '
                      f'{r["ratio_interleaved"]:.2f}')
        print('CPU ms per frame by process and thread (python = main thread and unnamed ones; in the bench '
              'process the main thread publishes the frames):')
        for r in rows:
            for proc, groups in r.get('cpu_ms_per_frame', {}).items():
                parts = ', '.join(f'{k} {v:.2f}' for k, v in groups.items() if v >= 0.005)
                print(f'  {r["layout"]:8} {proc:14} {sum(groups.values()):6.2f}: {parts}')
    return 0


def build_parser():
    ap = argparse.ArgumentParser(prog='rosbench', description=__doc__.split('\n\n')[0])
    ap.add_argument('model', nargs='?', help='ONNX file or zoo name (default: mobilenet_v2)')
    ap.add_argument('--topology', default='auto')
    group = ap.add_mutually_exclusive_group()
    group.add_argument('--stages', help='compact plan spec, e.g. 0-40@c0,41-99@c1')
    group.add_argument('--plan', help='plan JSON file')
    group.add_argument('--auto', action='store_true', help='plan with the DSE (the default)')
    ap.add_argument('--layout', choices=LAYOUTS + ('both',), default='both')
    ap.add_argument('--seconds', type=float, default=10.0)
    ap.add_argument('--warmup', type=float, default=2.0)
    ap.add_argument('--window', type=int, default=None, help='frames in flight (closed loop)')
    ap.add_argument('--rate', type=float, default=0.0, help='open loop at this frame rate instead')
    ap.add_argument('--paced', type=float, default=0.5,
                    help='then measure latency at this fraction of the measured frame rate (0: skip)')
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--transport', default=None,
                    help='FASTDDS_BUILTIN_TRANSPORTS for every process instead of the shipped Fast DDS profile '
                         '(pipeit_ros/data/fastdds_profiles.xml), e.g. SHM or LARGE_DATA')
    ap.add_argument('--no-with-preprocess', dest='with_preprocess', action='store_false',
                    help='skip the second reference, the engine fed by the same pre-processing')
    ap.add_argument('--interleave', type=int, default=4, metavar='N',
                    help='then N adjacent (engine alone, ROS graph) pairs, the graph still up (0: skip)')
    ap.add_argument('--no-output-reader', dest='output_reader', action='store_false',
                    help='read pipeit/classification only: the containers then publish no pipeit/output')
    ap.add_argument('--json', action='store_true')
    return ap


def main(argv=None):
    from pipeit_ros.errors import PipeitError
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except PipeitError as exc:
        print(f'rosbench: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
