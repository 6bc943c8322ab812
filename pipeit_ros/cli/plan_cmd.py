"""Choose the pipeline plan: design-space exploration over stage counts, core groups, stage order, cut points
and stage replicas, on the model's cost table (profiled, predicted, or a given file).

The default search is exact for its model of time (throughput = the slowest stage's rate; a stage's replicas
add their rates; hand-overs included); ties go to fewer cores, then lower latency. --search pipeit-paper
runs the paper's heuristic for comparison. A topology that is not this machine (e.g. hikey970) is planned on
paper from the host's predictor scaled for that board. --json / --out give the plan that `pipeit bench --plan`
runs. MODEL is an ONNX file or a zoo name (see `pipeit zoo`).
"""
from pipeit_ros.cli.common import (
    add_cut_flag,
    add_json_flag,
    add_model_argument,
    add_topology_flag,
    check_number,
    load_model,
    note,
    output_path,
    print_json,
    save_output,
)
from pipeit_ros.hw import topology as topo
from pipeit_ros.planning import facade as planning


def add_arguments(parser):
    add_model_argument(parser, help='ONNX file or zoo network name (e.g. mobilenet_v2)')
    add_topology_flag(parser)
    given = parser.add_mutually_exclusive_group()
    given.add_argument('--predictor', metavar='FILE', help='trained predictor (pipeit train --out) for stage times')
    given.add_argument('--profile', metavar='FILE', help='saved profile (pipeit profile --out) for stage times')
    parser.add_argument('--source', choices=planning.SOURCES, default='auto',
                        help='where stage times come from without a file (default auto: a cached or new '
                             'profile here, the scaled host predictor for another board)')
    parser.add_argument('--objective', choices=planning.OBJECTIVES, default='throughput',
                        help='maximise frames/s (default) or minimise the saturated latency (frames '
                             'fed as fast as the plan takes them, as `pipeit bench` does) at --min-fps')
    parser.add_argument('--max-latency-ms', type=float, metavar='X', help='latency bound (the saturated latency with --objective latency)')
    parser.add_argument('--min-fps', type=float, metavar='F', help='frames/s the plan must sustain')
    parser.add_argument('--memory-mb', type=float, metavar='M',
                        help='memory bound in MiB of the plan run in one process: base + weights once + each '
                             'replica\'s session memory (docs/memory.md)')
    parser.add_argument('--search', choices=planning.SEARCHES, default='exact',
                        help='exact optimum (default) or the Pipe-it paper\'s heuristic')
    parser.add_argument('--no-replicas', action='store_true', help='one copy of each stage (no data parallelism)')
    parser.add_argument('--containers', choices=planning.CONTAINERS, default='per_cluster',
                        help="process layout the figures are predicted for: per_cluster (pipeit bringup's: a cut "
                             "between clusters is a hop between containers) or one (single_container, pipeit "
                             "bench)")
    parser.add_argument('--out', metavar='FILE', help='write the plan JSON to FILE (for pipeit bench --plan)')
    add_cut_flag(parser)
    add_json_flag(parser)


def describe(plan, graph, topology):
    """The plan printout: a header, one line per stage (layers with names, CPUs, predicted time), figures."""
    n = plan.notes
    head = (f'plan for {graph.path} on {topology.name}: {plan.search} search, '
            f'{n.get("objective", "throughput")} objective, stage times from {n.get("cost_source") or "?"}')
    if n.get('constraints'):
        head += ' (' + ', '.join(f'{k} {v:g}' for k, v in n['constraints'].items()) + ')'
    lines = [head, plan.describe(graph)]
    extra = [f'{n["cores_used"]} of {len(topology.cpus)} cores'] if 'cores_used' in n else []
    if 'memory_mib' in n:
        extra.append(f'{n["memory_mib"]:.1f} MiB predicted memory')
    if n.get('containers') == 'per_cluster':
        extra.append('a container per cluster')
    if 'search_ms' in n:
        extra.append(f'searched in {n["search_ms"]:.0f} ms')
    if extra:
        lines.append(', '.join(extra))
    if n.get('cost_source') == 'predictor-scaled':
        lines.append('on paper: times predicted for a board this machine is not; compare plans, do not quote fps')
    return '\n'.join(lines)


def run(args):

    check_number('--max-latency-ms', args.max_latency_ms, 0, 1e9, low_open=True)
    check_number('--min-fps', args.min_fps, 0, 1e12, low_open=True)
    check_number('--memory-mb', args.memory_mb, 0, 1e9, low_open=True)
    if args.out:
        output_path(args.out, 'plan')
    topology = topo.resolve(args.topology, check_cpus=False)
    graph = load_model(args)
    plan = planning.auto_plan(graph, topology, source=args.source, predictor_path=args.predictor,
                              profile_path=args.profile, objective=args.objective,
                              max_latency_ms=args.max_latency_ms, min_fps=args.min_fps, memory_mb=args.memory_mb,
                              search=args.search, replicas=not args.no_replicas, containers=args.containers,
                              log=note)
    if args.out:
        save_output(plan, args.out, 'plan')
    if args.json:
        print_json(plan.to_dict())
    else:
        print(describe(plan, graph, topology))
    return 0
