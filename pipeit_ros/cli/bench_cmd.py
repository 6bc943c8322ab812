"""Measure a pipeline plan against the baselines (onnxruntime on all cores, the fastest cluster, data parallelism
per cluster and per core), all on the same engine, alternating between them in rounds to cancel machine drift.

The plan comes from --plan FILE, --stages SPEC or --auto (the design-space exploration); without one only the
baselines run. Prints frames/s, latency p50/p99, predicted and measured memory (a fresh process per candidate) and per-stage utilisation per candidate, with ratios
to ort_all_cores and to the best baseline, and how it measured. MODEL is an ONNX file or a zoo network name.
"""
from pipeit_ros import cache
from pipeit_ros.bench import benchmark as bench
from pipeit_ros.bench import report
from pipeit_ros.bench.plot import plot
from pipeit_ros.cli import paper_cmd
from pipeit_ros.cli.common import (
    add_cut_flag,
    add_json_flag,
    add_model_argument,
    add_topology_flag,
    check_number,
    load_model,
    note,
    plot_path,
    print_json,
)
from pipeit_ros.cost import profiler
from pipeit_ros.engine.parts import QUEUE_SIZE
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import topology as topo
from pipeit_ros.hw.emulation import emulated
from pipeit_ros.model import zoo
from pipeit_ros.plan import Plan, check_against, parse_spec, with_model
from pipeit_ros.planning import facade as planning
from pipeit_ros.planning import prediction
from pipeit_ros.planning.baselines import NAMES, baselines


def add_arguments(parser):
    add_model_argument(parser, nargs='?', help='ONNX file or zoo network name (default: mobilenet_v2 from the zoo)')
    add_topology_flag(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--plan', metavar='FILE', help='plan JSON (from `pipeit plan --out`)')
    source.add_argument('--stages', metavar='SPEC', help='plan as FIRST-LAST@CLUSTER[:THREADS[xREPLICAS]],... '
                                                         '(e.g. 0-17@big:2,18-40@little:4)')
    source.add_argument('--auto', action='store_true', help='plan now with the design-space exploration')
    parser.add_argument('--source', choices=planning.SOURCES, default='auto',
                        help='with --auto: stage times from a profile (measured, cached) or the predictor (layer '
                             'descriptors only); auto: a profile where the topology\'s CPUs are here')
    parser.add_argument('--seconds', type=float, default=None, metavar='S',
                        help='measuring time per candidate, split over the rounds (default 10; 8 per net with '
                             '--paper-table)')
    parser.add_argument('--rounds', type=int, default=5, metavar='N', help='rounds over all candidates (default 5)')
    parser.add_argument('--warmup', type=int, default=20, metavar='N', help='warm-up frames per candidate')
    parser.add_argument('--queue-size', type=int, default=QUEUE_SIZE, metavar='N',
                        help=f'frames per inter-stage queue (default {QUEUE_SIZE})')
    parser.add_argument('--rate', type=float, default=None, metavar='FPS',
                        help='send frames at this rate, as a camera would (default: as fast as the first stage '
                             'takes them); latencies then leave out the queueing that saturation adds')
    parser.add_argument('--only', metavar='NAMES', help='comma-separated baselines to run (default: all)')
    parser.add_argument('--bare', action='store_true',
                        help='also a plain onnxruntime loop on the same cores (the engine\'s own overhead)')
    parser.add_argument('--stage-alone', action='store_true',
                        help='also time each stage of the plan alone (pipeline efficiency vs the slowest stage)')
    parser.add_argument('--plot', metavar='FILE.png', help='write the stage Gantt chart and the frames/s bars')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar on stderr')
    parser.add_argument('--paper-table', action='store_true',
                        help='reproduce the paper\'s table over the zoo (pipeit_ros.bench.paper_table)')
    paper_cmd.add_arguments(parser)
    add_cut_flag(parser)
    add_json_flag(parser)


def _emulated(topology):
    return emulated(topology, log=note)


def _plan(args, graph, topology):
    """The candidate plan named by --plan/--stages/--auto, checked against model and topology (or None)."""
    if args.source != 'auto' and not args.auto:
        raise PipeitError('--source chooses the stage times of --auto; give --auto too')
    if args.plan:
        plan = Plan.load(args.plan)
    elif args.stages is not None:
        plan = parse_spec(args.stages, topology)
    elif args.auto:
        plan = planning.auto_plan(graph, topology, source=args.source, containers='one', log=note)  # one process
    else:
        return None
    if not plan.model_hash:
        plan = with_model(plan, graph)
    return check_against(plan, graph, topology)


def run(args):
    check_number('--seconds', args.seconds, 0, 86_400, low_open=True)
    check_number('--rounds', args.rounds, 1, 1000)
    check_number('--warmup', args.warmup, 0, 100_000)
    check_number('--queue-size', args.queue_size, 1, 1024)
    check_number('--rate', args.rate, 0, 100_000, low_open=True)
    if args.plot:
        args.plot = plot_path(args.plot)
    cache.cache_dir()                  # an unusable cache is said before anything is measured
    if args.paper_table:
        return paper_cmd.run(args)

    if args.seconds is None:
        args.seconds = 10.0
    if args.seconds <= 0 or args.rounds < 1 or args.warmup < 0 or args.queue_size < 1:
        raise PipeitError('--seconds must be > 0, --rounds and --queue-size >= 1, --warmup >= 0 '
                          f'(got {args.seconds:g}, {args.rounds}, {args.queue_size}, {args.warmup})')
    topology = topo.resolve(args.topology)
    graph = load_model(args, default=zoo.default_model_path())
    candidates = {}
    plan = _plan(args, graph, topology)
    if plan is not None:
        candidates[plan.name or 'plan'] = plan
    wanted = NAMES if args.only is None else [n.strip() for n in args.only.split(',') if n.strip()]
    if not wanted:
        raise PipeitError('--only: give at least one baseline (known: ' + ', '.join(NAMES) + ')')
    unknown = sorted(set(wanted) - set(NAMES))
    if unknown:
        raise PipeitError(f'--only: unknown baseline(s) {", ".join(unknown)} (known: {", ".join(NAMES)})')
    cost = profiler.cached_profile(graph, topology)[0]   # the baselines' predictions, when a profile exists
    for name, p in baselines(graph, topology).items():
        if name in wanted and name not in candidates:
            p = check_against(p, graph, topology)
            candidates[name] = prediction.with_predictions(p, cost, topology) if cost is not None else p
    alone = [n for n in candidates if n not in NAMES] if args.stage_alone else []
    if args.stage_alone and not alone:
        raise PipeitError('--stage-alone needs a plan (--plan, --stages or --auto)')
    note(topology.describe())
    note(f'model {graph.path}: {len(graph.layers)} layers, input {list(graph.input_shape)}')
    for name, p in candidates.items():
        note(f'candidate {name}: {p.to_spec()}')
    with _emulated(topology):
        result = bench.run_benchmark(graph, topology, candidates, seconds=args.seconds, rounds=args.rounds,
                                     warmup=args.warmup, bare=args.bare, progress=not args.no_progress,
                                     stage_alone_for=alone, queue_size=args.queue_size, log=note,
                                     rate=args.rate)
    if args.plot:
        try:
            plot(result, args.plot)
        except OSError as exc:
            raise PipeitError(f'{args.plot}: cannot write the plot: {exc.strerror or exc}') from None
        note(f'plot written to {args.plot}')
    if args.json:
        print_json(result.to_dict())
    else:
        print(report.format_method(result))
        print(report.format_table(result))
    return 0
