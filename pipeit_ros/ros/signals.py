"""One way for every pipeit process to start rclpy and end on SIGINT/SIGTERM, or when its parent is gone.

rclpy's own handlers run on a signal thread that triggers every executor's guard condition; when the main
thread is tearing those executors down at the same moment, that is a use-after-free (seen: 6 of 20 Ctrl-C'd
containers crashed in ``rcl_trigger_guard_condition``). So rclpy gets no handlers, and both signals raise
KeyboardInterrupt on the main thread, which the callers' spin loops (with timeouts) let run promptly. A node
whose parent (``pipeit bringup``, ``ros2 launch``) dies stops the same way (pipeit_ros.app.lifecycle.ParentWatch).
"""
import signal

import rclpy
from rclpy.signals import SignalHandlerOptions

from pipeit_ros.app.lifecycle import ParentWatch

_stopping = []


def _interrupt(signum=None, frame=None):
    _stopping.append(signum)
    raise KeyboardInterrupt


def stop_requested():
    """True once SIGINT, SIGTERM or the parent's death asked this process to stop (a container that was about
    to sleep must end instead)."""
    return bool(_stopping)


def init_with_own_signals(args=None):
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    ParentWatch(stop=_interrupt)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
