"""Small helpers shared by the subcommands."""
import json
import sys


def add_json_flag(parser):
    parser.add_argument('--json', action='store_true', help='machine-readable output on stdout')


def add_topology_flag(parser):
    parser.add_argument('--topology', default='auto', metavar='FILE|NAME|auto',
                        help='topology YAML, a shipped name (e.g. emulated-2x1) or auto-detect (default)')


def print_json(data):
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=_default)
    sys.stdout.write('\n')


def _default(obj):
    if hasattr(obj, 'to_dict'):
        return obj.to_dict()
    if hasattr(obj, 'tolist'):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f'not JSON serialisable: {type(obj).__name__}')


def note(message):
    """Status lines (cache reuse, emulation on, ...) go to stderr so --json stays clean."""
    print(message, file=sys.stderr)
