"""Small helpers shared by the subcommands."""
import argparse
import json
import math
import os
import stat
import sys

from pipeit_ros.errors import ModelError, PipeitError
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import zoo
from pipeit_ros.model.load import INPUT_SHAPE_FLAG, parse_input_shape


def add_json_flag(parser):
    parser.add_argument('--json', action='store_true', help='machine-readable output on stdout')


def add_model_argument(parser, help, **kwargs):
    """The MODEL positional and ``--input-shape`` (for models whose input dims are dynamic)."""
    parser.add_argument('model', metavar='MODEL', help=help, **kwargs)
    add_input_shape_flag(parser)


def add_input_shape_flag(parser):
    parser.add_argument(INPUT_SHAPE_FLAG, dest='input_shape', type=_input_shape, metavar='NxCxHxW',
                        help='input shape for a model with dynamic dims, e.g. 1x3x480x640 (default: the '
                             "model's own; a dynamic batch becomes 1)")


def _input_shape(text):
    try:
        return parse_input_shape(text)
    except ModelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def load_model(args, default=None):
    """The LayerGraph of ``args.model`` (a file or zoo name; ``default`` when none) at ``args.input_shape``, its
    cut points limited by ``--max-cut-tensors``, its tensors by ``--memory-mb`` where the command has it."""
    spec = args.model if args.model is not None else default
    return graph_mod.load(resolve_model(spec), getattr(args, 'input_shape', None), max_cut_tensors=cut_limit(args),
                          max_tensor_mb=getattr(args, 'memory_mb', None))


def add_topology_flag(parser):
    parser.add_argument('--topology', default='auto', metavar='FILE|NAME|auto',
                        help='topology YAML, a shipped name (e.g. emulated-2x1) or auto-detect (default)')


def add_cut_flag(parser):
    parser.add_argument('--max-cut-tensors', type=int, default=graph_mod.DEFAULT_MAX_CUT_TENSORS, metavar='N',
                        help='a cut is legal where at most N tensors cross it (default '
                             f'{graph_mod.DEFAULT_MAX_CUT_TENSORS}; 1: only chain cuts, as the Pipe-it paper)')


def cut_limit(args):
    """``--max-cut-tensors`` (the default where a command has no such flag), checked."""
    value = getattr(args, 'max_cut_tensors', graph_mod.DEFAULT_MAX_CUT_TENSORS)
    if value < 1:
        raise PipeitError(f'--max-cut-tensors must be >= 1, got {value}')
    return value


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
    output_path(path, what)
    try:
        obj.save(path)
    except OSError as exc:
        raise PipeitError(f'{path}: cannot write the {what}: {exc.strerror or exc}') from None
    note(f'{what}: written to {path}')


def check_number(option, value, low=None, high=None, low_open=False):
    """``value`` of ``option`` when it is None or a finite number in [low, high] (low excluded with
    ``low_open``); else PipeitError (exit 2, one line) before any work starts: nan, inf and out-of-range values
    would make a command hang or allocate without bound."""
    if value is None:
        return value
    ok = math.isfinite(value) and (low is None or value > low or (value == low and not low_open)) and \
        (high is None or value <= high)
    if not ok:
        bounds = ([f'{">" if low_open else ">="} {low:g}'] if low is not None else []) + \
                 ([f'<= {high:g}'] if high is not None else [])
        raise PipeitError(f'{option} must be {" and ".join(bounds) or "finite"}, got {value!r}')
    return value


def output_path(path, what):
    """Refuse an --out/--plot path that is a directory or not a regular file (a FIFO would block the write)."""
    try:
        st = os.stat(path)
    except OSError:               # not there yet: its folder must be, and writable, before any work starts
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise PipeitError(f'cannot write {path}: folder {folder} does not exist (the {what} goes there)') from None
        if not os.access(folder, os.W_OK):
            raise PipeitError(f'cannot write {path}: folder {folder} is not writable (the {what} goes there)') from None
        return path
    if stat.S_ISDIR(st.st_mode):
        raise PipeitError(f'{path}: is a directory; give a file name for the {what}')
    if not stat.S_ISREG(st.st_mode):
        raise PipeitError(f'{path}: not a regular file; give a file name for the {what}')
    return path


def plot_path(path):
    """The file --plot writes: a directory is refused, a name without a suffix gets matplotlib's '.png'."""
    if os.path.isdir(path):
        raise PipeitError(f'--plot {path}: is a directory; give a file name such as {os.path.join(path, "plot.png")}')
    if not os.path.splitext(path)[1]:
        path += '.png'
    return output_path(path, 'plot')
