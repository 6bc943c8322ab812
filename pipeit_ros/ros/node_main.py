"""The one ``main()`` path of every pipeit process (planner, container, camera) and its exit-code policy.

- 0: a clean end: SIGINT/SIGTERM (:mod:`pipeit_ros.ros.signals`), ROS shutdown, or the node finished its work;
- 2: bad configuration: a :class:`~pipeit_ros.errors.PipeitError`, or a parameter or name that rclpy refuses
  (wrong type, bad topic or namespace): one line ``<process>: error: <reason>`` on stderr;
- 1: an internal error, logged with its traceback.

A node that fails after start-up sets ``exit_code`` (e.g. the planner's first plan could not be made). A ``stop``
that returns False leaves a thread inside native code (the planner's worker profiling in onnxruntime): the
process then ends with ``os._exit``, since the interpreter's exit would destroy native threads still running
(SIGABRT, "terminate called without an active exception").
"""
import os
import sys
import traceback

import rclpy
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger

from pipeit_ros.errors import PipeitError
from pipeit_ros.ros.signals import init_with_own_signals

OK, INTERNAL, CONFIG = 0, 1, 2
CONFIG_ERRORS = (PipeitError, ParameterException, NameValidationException)


def exit_code_of(exc):
    """The exit code an exception that ended start-up or spinning stands for."""
    return CONFIG if isinstance(exc, CONFIG_ERRORS) else INTERNAL


def run_node(name, build, spin, stop=None, args=None):
    """Start rclpy, ``build()`` the process' object, ``spin(obj)`` until it ends, ``stop(obj)``; the exit code.

    ``obj.exit_code`` (when set and non-zero) overrides a clean end."""
    init_with_own_signals(args)
    obj, code, stopped = None, OK, True
    log = get_logger(name)
    try:
        obj = build()
        spin(obj)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # noqa: BLE001 - the process' last word: one line (2) or a traceback (1)
        code = exit_code_of(exc)
        if code == CONFIG:          # one line, as the `pipeit` CLI writes it
            reason = str(exc) if isinstance(exc, PipeitError) else f'{type(exc).__name__}: {exc}'
            print(f'{name}: error: {reason}', file=sys.stderr, flush=True)
        else:
            log.fatal(f'internal error: {type(exc).__name__}: {exc}\n{traceback.format_exc()}')
    finally:
        try:
            if obj is not None and stop is not None:
                stopped = stop(obj) is not False
        finally:
            rclpy.try_shutdown()
    code = code or (getattr(obj, 'exit_code', None) or OK)
    reason = getattr(obj, 'exit_reason', None)
    if code == CONFIG and reason:   # the last line, after what tear-down printed: supervisors quote the last line
        print(f'{name}: error: {reason}', file=sys.stderr, flush=True)
    if not stopped:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
