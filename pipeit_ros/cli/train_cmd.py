"""Train the layer-time predictor (Pipe-it's performance model) on a sweep of synthetic layers.

The sweep (convolutions of kernel 1-11, stride 1/2, depthwise and grouped; pools; fully connected; residual
adds; concats) is timed on every core configuration of the topology, then a model predicts any layer's time
from its descriptors alone, so an unprofiled network can be planned. The full sweep takes about 10 minutes
on a 2-core machine, --quick a few seconds. The predictor is saved (joblib + metadata) under the cache,
keyed by topology fingerprint and onnxruntime version, and reused on the next run.

--report measures accuracy: leave-one-network-out over the zoo networks of --nets (each held-out network is
predicted by a model trained on the sweep and the others), per layer, per segment and whole network, on
every core configuration. It profiles those networks first (cached), which is the slow part.
"""
import os

from pipeit_ros.cli.common import add_json_flag, add_topology_flag, note, output_path, print_json
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import topology as topo
from pipeit_ros.model import zoo

DEFAULT_REPORT_NETS = ('alexnet', 'googlenet', 'mobilenet_v1', 'mobilenet_v2', 'resnet50', 'squeezenet1_1')


def add_arguments(parser):
    add_topology_flag(parser)
    parser.add_argument('--out', metavar='FILE', help='save the predictor here (default: the cache)')
    parser.add_argument('--quick', action='store_true', help='small sweep (seconds; for tests and trials)')
    parser.add_argument('--kind', choices=('linear', 'gbr', 'hybrid'), default=None,
                        help='model form (default: the one the evidence picked, see pipeit_ros.cost.predictor)')
    parser.add_argument('--report', action='store_true',
                        help='print leave-one-network-out accuracy (MAPE) on zoo networks')
    parser.add_argument('--nets', metavar='A,B', default=','.join(DEFAULT_REPORT_NETS),
                        help='zoo networks for --report (comma-separated; default: all but tiny)')
    parser.add_argument('--no-cache', action='store_true', help='measure and train again, ignoring the cache')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars on stderr')
    add_json_flag(parser)


def run(args):
    from pipeit_ros.cost import evaluate as predictor_eval  # noqa: PLC0415 - scikit-learn costs a second of every `pipeit` start-up
    from pipeit_ros.cost import predictor as pred  # noqa: PLC0415 - as above

    topology = topo.resolve(args.topology)
    nets = [n.strip() for n in args.nets.split(',') if n.strip()]
    unknown = [n for n in nets if n not in zoo.NETWORKS]
    if unknown or not nets:
        raise PipeitError(f'--nets: unknown zoo network(s) {", ".join(unknown) or "(none given)"} '
                          f'(choose from {", ".join(zoo.NETWORKS)})')
    if args.out:
        output_path(args.out, 'predictor')
        directory = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            raise PipeitError(f'--out {args.out}: directory {directory} does not exist or is not writable')
    kind = args.kind or pred.DEFAULT_KIND
    path = args.out or pred.default_path(topology, args.quick)
    p = pred.train(topology, args.quick, path=path, kind=kind, progress=not args.no_progress, log=note,
                   use_cache=not args.no_cache)
    summary = {'path': path, 'kind': p.kind, 'topology_fingerprint': p.topology_fingerprint_,
               'configs': [f'{c}:{k}' for c, k in p.configs_], 'overhead_ms': p.overhead_ms_.tolist(),
               'segment_coef': p.segment_coef_.tolist(), 'sweep_layers': p.meta_['sweep'].get('probes') and
               len(p.meta_['sweep']['probes'])}
    if args.report:
        result = predictor_eval.report(topology, nets, quick=args.quick, progress=not args.no_progress,
                                       log=note, use_cache=not args.no_cache)
        summary['report'] = result
        if not args.json:
            print('\n'.join(predictor_eval.format_report(result)))
    if args.json:
        print_json(summary)
    elif not args.report:
        print(f'predictor ({p.kind}) for topology {p.topology_fingerprint_}: {path}')
    return 0
