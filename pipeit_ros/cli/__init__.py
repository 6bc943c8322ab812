"""The `pipeit` command: one console script, one module per subcommand.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int`` and imports its heavy
dependencies inside ``run``, so `pipeit --help` stays fast. Exit codes are produced here only:
0 ok, 2 bad input (:class:`~pipeit_ros.errors.PipeitError`), 1 internal error, 130 interrupted.
"""
import argparse
import importlib
import os
import sys

from pipeit_ros import __version__
from pipeit_ros.errors import PipeitError

# name -> (module, one-line help); the order is the order of `pipeit --help`.
COMMANDS = {
    'topology': ('pipeit_ros.cli.topology_cmd', 'show the CPU clusters (detected or from a YAML file)'),
    'inspect': ('pipeit_ros.cli.inspect_cmd', 'list an ONNX model\'s layers, descriptors and legal cut points'),
    'zoo': ('pipeit_ros.cli.zoo_cmd', 'build the paper\'s networks (random weights) as ONNX files'),
    'profile': ('pipeit_ros.cli.profile_cmd', 'measure every segment on every core configuration'),
    'train': ('pipeit_ros.cli.train_cmd', 'train the layer-time predictor on synthetic layers'),
    'plan': ('pipeit_ros.cli.plan_cmd', 'choose the pipeline plan (design-space exploration)'),
    'bench': ('pipeit_ros.cli.bench_cmd', 'measure a plan against the baselines'),
    'bringup': ('pipeit_ros.cli.bringup_cmd', 'start the ROS 2 graph (planner, containers, camera) without ros2 launch'),
}


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit 2, like every other bad input."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def build_parser(only=None):
    """The parser; with ``only`` (a command name), only that command's module is imported and its arguments
    added (every other command is listed by name and help): a command's imports are its own, so `pipeit plan`
    with a bad argument answers without loading what `pipeit bench` needs. ``None`` builds them all."""
    parser = Parser(prog='pipeit', description=__doc__.splitlines()[0])
    parser.add_argument('--version', action='version', version=f'pipeit {__version__}')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of internal errors')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a subcommand not built yet
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _command(argv):
    """The subcommand named in ``argv`` (the first word that is one), or None."""
    return next((a for a in argv if a in COMMANDS), None) if argv else None


def error(message, code):
    """The one place that turns a failure into a line on stderr and an exit code."""
    print(f'pipeit: error: {message}', file=sys.stderr)
    return code


def main(argv=None):
    # onnxruntime persists a telemetry device id under XDG_CACHE_HOME when imported and prints a warning when it
    # cannot (an unwritable cache): that must not become a second line next to our one-line error
    os.environ.setdefault('ORT_DISABLE_TELEMETRY', '1')
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_command(argv) or '')
    args = parser.parse_args(argv)
    if not getattr(args, '_run', None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except PipeitError as exc:
        return error(str(exc), 2)
    except KeyboardInterrupt:
        return error('interrupted', 130)
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if args.debug or os.environ.get('PIPEIT_DEBUG'):
            raise
        return error(f'internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)', 1)
