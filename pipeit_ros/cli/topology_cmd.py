"""Show the CPU clusters Pipe-it plans for: detected from sysfs, or from a topology YAML file.

Without options the clusters of this machine are detected from /sys, limited to the CPUs this process
may use. --sysfs-root reads a copy of another machine's /sys (all its online CPUs count). --config
loads a YAML file or a shipped name (see --list); its CPUs must exist here unless --offline.
"""
from pipeit_ros.cli.common import add_json_flag, note, print_json
from pipeit_ros.errors import TopologyError
from pipeit_ros.hw import topology as topo


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--sysfs-root', metavar='DIR',
                        help='root of a sysfs tree describing another machine (default: detect here from /sys)')
    source.add_argument('--config', metavar='FILE|NAME',
                        help='topology YAML file or shipped name (e.g. rk3588, emulated-2x1); overrides detection')
    source.add_argument('--list', action='store_true', help='list the shipped topology names')
    parser.add_argument('--offline', action='store_true',
                        help='with --config: plan on paper, do not check its CPUs against this machine')
    add_json_flag(parser)


def run(args):

    if args.list:
        return _list(topo, args.json)
    if args.sysfs_root:
        topology = topo.detect(args.sysfs_root)
    elif args.config:
        topology = topo.resolve(args.config, check_cpus=False)
        if not args.offline and topology.source.startswith('yaml:'):
            try:
                topo.check_cpus_here(topology, where=topology.source[len('yaml:'):])
            except TopologyError as exc:
                raise TopologyError(f'{exc}; --offline skips this check') from None
    else:
        topology = topo.detect()
    if args.json:
        print_json(topology.to_dict())
        return 0
    print(topology.describe())
    if topology.has_emulation():
        note('emulation: clusters with a share get busy co-runners on their cores, so our work gets only '
             'that share of each core (a slow-core stand-in on homogeneous machines)')
    return 0


def _list(topo, as_json):
    shipped = topo.shipped_topologies()
    if as_json:
        print_json(shipped)
        return 0
    width = max((len(n) for n in shipped), default=0)
    for name, path in shipped.items():
        t = topo.load_yaml(path, check_cpus=False)
        summary = ' + '.join(f'{c.name} {c.size} x {c.core_type}' for c in t.clusters)
        print(f'{name:<{width}}  {summary}')
    if not shipped:
        note('no shipped topologies found')
    return 0
