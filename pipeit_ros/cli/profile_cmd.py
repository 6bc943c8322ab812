"""Measure every segment of a model (between consecutive legal cut points) on every core configuration.

A core configuration is (cluster, k cores) for k = 1 .. cluster size; threads are pinned as the engine pins
them. The per-run overhead of each configuration is measured apart (a trivial model) and kept out of the
segment times. The result is cached by model hash + topology fingerprint + onnxruntime version; a rerun
says that it reused the cache. MODEL is an ONNX file or a zoo name (see `pipeit zoo`).
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
from pipeit_ros.cost import profiler
from pipeit_ros.hw import topology as topo


def add_arguments(parser):
    add_model_argument(parser, help='ONNX file or zoo network name (e.g. mobilenet_v2)')
    add_topology_flag(parser)
    parser.add_argument('--out', metavar='FILE', help='also write the cost table (JSON) to FILE')
    parser.add_argument('--reps', type=int, metavar='N',
                        help='fixed repetitions per segment (default: adaptive, until the medians are stable)')
    parser.add_argument('--budget', type=float, default=None, metavar='S',
                        help='time budget per core configuration in seconds for adaptive repetitions')
    parser.add_argument('--no-cache', action='store_true', help='measure again even if a cached profile exists')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar on stderr')
    add_cut_flag(parser)
    add_json_flag(parser)


def run(args):

    check_number('--reps', args.reps, 1, 100_000)
    check_number('--budget', args.budget, 0, 3600, low_open=True)
    if args.out:
        output_path(args.out, 'profile')
    topology = topo.resolve(args.topology)
    graph = load_model(args)
    options = {} if args.budget is None else {'budget_s': args.budget}
    table = profiler.profile(graph, topology, reps=args.reps, progress=not args.no_progress, log=note,
                             use_cache=not args.no_cache, **options)
    if args.out:
        save_output(table, args.out, 'profile')
    if args.json:
        print_json(table.to_dict())
    else:
        print('\n'.join(profiler.describe(table)))
    return 0
