"""A container going to sleep (pipeit_ros.app.sleeper): when its control node ends, and the exec into the sleeper.

:func:`sleep_when_idle` runs on the control node's tick while the container hosts no run; once the running plan
has given it nothing for ``sleep_after_s`` it binds the sleeper's socket, says ``sleeping`` on pipeit/status and
shuts its context down, which ends the spin. The process's ``main()`` then calls :func:`exec_sleeper`. Only a
container that is a process of its own sleeps (``may_sleep``: not one embedded in a test), one of a graph (the
socket's name holds the graph id) and of one cluster (``'*'`` hosts every stage).
"""
import os
import sys
import time

from pipeit_ros.app import handoff, sleeper
from pipeit_ros.ros import signals

ACK_WAIT_S = 1.0        # the longest wait for the 'sleeping' status to be acknowledged


def sleep_when_idle(node):
    """Go to sleep once ``node`` (a ContainerNode hosting no run) has been idle for ``sleep_after_s``."""
    after = node.settings.sleep_after_s
    if not (after and node.may_sleep and node.graph_id and node.cluster != handoff.ALL) or node.outlets.pending:
        return None
    now = time.monotonic()
    if node.idle_since is None:
        node.idle_since = now
    if now - node.idle_since < after:
        return None
    try:
        node.sleep_socket = sleeper.listen(sleeper.socket_name(node.graph_id, node.cluster))
    except OSError as exc:
        node.may_sleep = False
        node.get_logger().warning(f'cannot sleep: the sleeper\'s socket for cluster {node.cluster!r} of graph '
                                  f'{node.graph_id!r}: {exc}; staying awake')
        return None
    node.state = sleeper.SLEEPING
    node.sleep_status = node.status_dict()
    node.publish_status()
    node.status_acked(ACK_WAIT_S)       # so the planner hears it before the node is gone
    node.get_logger().info(f'generation {node.msg.generation} gives this container no stage for {after:g} s: '
                           f'sleeping until a plan does (pid {os.getpid()} stays; docs/memory.md)')
    node.context.try_shutdown()
    return None


def exec_sleeper(node):
    """Turn this process into the sleeper where ``node`` went to sleep (no return then), unless a signal asked the
    process to stop meanwhile; the sleeper runs this process's command line again when woken."""
    if node.sleep_socket is None or signals.stop_requested():
        return
    argv = sleeper.command(node.sleep_socket, node.sleep_status, [sys.executable, *sys.orig_argv[1:]])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
