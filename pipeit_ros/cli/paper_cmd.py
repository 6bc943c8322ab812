"""`pipeit bench --paper-table`: the options and the command of the paper's table (:mod:`pipeit_ros.bench.paper_table`)."""
from pipeit_ros.bench import paper_table as paper
from pipeit_ros.cli.common import cut_limit, note, print_json
from pipeit_ros.errors import PipeitError


def run(args):
    """Entry of `pipeit bench --paper-table` (args: topology, json, plot, seconds, rounds, warmup, nets, ...)."""
    seconds = getattr(args, 'seconds', None) or paper.DEFAULT_SECONDS
    rounds = getattr(args, 'rounds', None) or paper.DEFAULT_ROUNDS
    warmup = getattr(args, 'warmup', None)
    warmup = 20 if warmup is None else warmup
    if seconds <= 0 or rounds < 1 or warmup < 0:
        raise PipeitError(f'--seconds must be > 0, --rounds >= 1, --warmup >= 0 '
                          f'(got {seconds:g}, {rounds}, {warmup})')
    if getattr(args, 'model', None):
        raise PipeitError(f'--paper-table measures the zoo networks; give --nets instead of MODEL ({args.model})')
    nets = paper.parse_nets(getattr(args, 'nets', None))
    topology = paper.resolve_topology(getattr(args, 'topology', None), note)
    note(topology.describe())
    table = paper.build_table(nets, topology, seconds=seconds, rounds=rounds, warmup=warmup,
                              max_cut_tensors=cut_limit(args),
                        progress=not getattr(args, 'no_progress', False), log=note)
    if getattr(args, 'plot', None):
        try:
            paper.plot(table, args.plot)
        except OSError as exc:
            raise PipeitError(f'{args.plot}: cannot write the plot: {exc.strerror or exc}') from None
        note(f'plot written to {args.plot}')
    if getattr(args, 'json', False):
        print_json(table.to_dict())
    else:
        print(paper.format_markdown(table))
    return 0


def add_arguments(parser):
    """The options only --paper-table reads (bench_cmd adds them to `pipeit bench`)."""
    parser.add_argument('--nets', metavar='NAMES',
                        help=f'with --paper-table: comma-separated zoo networks (default: {",".join(paper.PAPER_NETS)})')
