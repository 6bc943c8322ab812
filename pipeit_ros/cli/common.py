"""Small helpers shared by the subcommands."""
import json
import os
import sys

from pipeit_ros.errors import ModelError, PipeitError
from pipeit_ros.model import graph, zoo


def add_json_flag(parser):
    parser.add_argument('--json', action='store_true', help='machine-readable output on stdout')


def add_topology_flag(parser):
    parser.add_argument('--topology', default='auto', metavar='FILE|NAME|auto',
                        help='topology YAML, a shipped name (e.g. emulated-2x1) or auto-detect (default)')


def add_cut_flag(parser):
    parser.add_argument('--max-cut-tensors', type=int, default=graph.DEFAULT_MAX_CUT_TENSORS, metavar='N',
                        help='a cut is legal where at most N tensors cross it (default '
                             f'{graph.DEFAULT_MAX_CUT_TENSORS}; 1: only chain cuts, as the Pipe-it paper)')


def cut_limit(args):
    """``--max-cut-tensors`` (the default where a command has no such flag), checked."""
    value = getattr(args, 'max_cut_tensors', graph.DEFAULT_MAX_CUT_TENSORS)
    if value < 1:
        raise PipeitError(f'--max-cut-tensors must be >= 1, got {value}')
    return value


def load_graph(args):
    """The LayerGraph of ``args.model`` with the cut limit ``--max-cut-tensors``."""
    return graph.load(resolve_model(args.model), max_cut_tensors=cut_limit(args))


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


def resolve_model(spec):
    """An ONNX path, or a zoo network name -> its cached file; ModelError for anything else."""
    if os.path.exists(spec) or os.sep in spec or spec.endswith('.onnx'):
        return spec
    if spec in zoo.NETWORKS:
        return zoo.zoo_path(spec)
    raise ModelError(f'{spec}: no such file and not a zoo network ({", ".join(zoo.NETWORKS)})')


def save_output(obj, path, what):
    """``obj.save(path)`` for --out: an unwritable path is the user's to fix (exit 2), and it is said where."""
    try:
        obj.save(path)
    except OSError as exc:
        raise PipeitError(f'{path}: cannot write the {what}: {exc.strerror or exc}') from None
    note(f'{what}: written to {path}')
