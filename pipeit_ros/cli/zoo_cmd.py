"""Build one of the paper's networks (architecture-faithful, seeded random weights) as an ONNX file.

`pipeit zoo NAME --out FILE` writes the network; `pipeit zoo --list` shows the names with their published
parameter and MAC counts. Random weights are enough to plan, profile and time a network.
"""
import os
import time

from pipeit_ros.cli.common import add_json_flag, check_number, note, output_path, print_json
from pipeit_ros.errors import PipeitError
from pipeit_ros.model import zoo


def add_arguments(parser):
    parser.add_argument('name', metavar='NAME', nargs='?', help='network name (see --list)')
    parser.add_argument('--out', metavar='FILE', help='where to write the ONNX file (default: NAME.onnx)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random weights (default 0)')
    parser.add_argument('--list', action='store_true', help='list the networks')
    add_json_flag(parser)


def run(args):


    check_number('--seed', args.seed, 0, 2**32 - 1)
    if args.list:
        return _list(zoo, args.json)
    if not args.name:
        raise PipeitError(f'give a network NAME ({", ".join(zoo.NETWORKS)}) or --list')
    path = output_path(args.out or f'{args.name}.onnx', 'ONNX file')
    start = time.perf_counter()
    zoo.save(args.name, path, seed=args.seed)
    size = os.path.getsize(path)
    note(f'zoo: built {args.name} (seed {args.seed}) in {time.perf_counter() - start:.2f} s, '
         f'{size / 2**20:.1f} MB')
    if args.json:
        print_json({'name': args.name, 'path': path, 'seed': args.seed, 'bytes': size})
    else:
        print(path)
    return 0


def _list(zoo, as_json):
    rows = [{'name': name, 'input_shape': [1, *zoo.input_shape(name)],
             'published_params': zoo.PUBLISHED.get(name, (None, None))[0],
             'published_macs': zoo.PUBLISHED.get(name, (None, None))[1]} for name in zoo.NETWORKS]
    if as_json:
        print_json(rows)
        return 0
    width = max(len(r['name']) for r in rows)
    for r in rows:
        published = (f'{r["published_params"] / 1e6:6.2f} M params  {r["published_macs"] / 1e9:5.3f} G MACs'
                     if r['published_params'] else 'test network (residual + concat branches)')
        print(f'{r["name"]:<{width}} {"x".join(map(str, r["input_shape"])):<13} {published}')
    return 0
