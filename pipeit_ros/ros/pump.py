"""A lean receive loop for the per-frame subscriptions: one thread, one wait set, every queued message taken.

rclpy's SingleThreadedExecutor spends about 0.45 ms of CPU per wake-up on its own book-keeping (it rebuilds
the wait set from every entity of the node, makes a Task per callback and wakes twice per message), against
0.05 ms for waiting on one subscription and taking its message (measured with ``/proc/<tid>/schedstat`` for
1000 paced std_msgs/String messages; tools/framecost shows it per frame in the whole graph). On a
machine whose every core runs a stage, that book-keeping comes straight off the frame rate, so the camera
input, the tensor input of a stage and the bench's result collector take their messages here instead.

A pumped node is spun by nothing else (an executor would take the same messages); it has no parameter
services and no timers. Besides messages, the pump serves the subscriptions' QoS event handlers (message
lost, incompatible QoS), so ``drops_dds`` keeps counting. A callback that raises is logged (once per
``WARN_EVERY_S``) and counted in ``errors``; the pump keeps running. Every wait has a deadline (``WAIT_S``).

The same interface as :class:`pipeit_ros.ros.stage_node.NodeThread`: :meth:`start`, :meth:`halt`, :meth:`stop`.
"""
from contextlib import ExitStack
import threading
import time

from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter

WAIT_S = 0.5            # longest wait before the loop looks at its stop flag and the context
MAX_TAKE = 64           # messages taken from one subscription per wake-up (the others get their turn)
WARN_EVERY_S = 10.0


def pumped_node(name, *, context, namespace=''):
    """A node for pumped subscriptions: no parameter or type description services (nothing would answer
    them), and the process's command-line arguments ignored like the stage nodes'."""
    return Node(name, namespace=namespace, context=context, use_global_arguments=False,
                start_parameter_services=False,
                parameter_overrides=[Parameter('start_type_description_service', value=False)])


class Pump:
    """Takes the messages of ``subscriptions`` (of ``node``) on a thread and hands each to its callback."""

    def __init__(self, node, subscriptions, name=None, with_info=False):
        self.node = node
        self.with_info = with_info      # callbacks get (message, message info: publisher_gid, sequence number)
        self.context = node.context
        self.subscriptions = list(subscriptions)
        self.handlers = [h for sub in self.subscriptions for h in sub.event_handlers]
        self.errors = 0
        self._warned = 0.0
        self._stopping = False
        self._guard = GuardCondition(None, None, context=self.context)
        self.thread = threading.Thread(target=self._loop, name=name or f'pump.{node.get_name()}', daemon=True)

    def start(self):
        self.thread.start()
        return self

    def halt(self):
        """Stop taking messages (a running callback finishes); returns at once."""
        self._stopping = True
        self._guard.trigger()

    def stop(self, timeout=2.0):
        """Stop the loop and destroy the node; returns False, leaving the node alone, when the thread did not
        end within ``timeout`` (destroying a node in use could crash the process)."""
        self.halt()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
            if self.thread.is_alive():
                return False
        self._guard.destroy()
        self.node.destroy_node()
        return True

    # -- the loop (pump thread) ------------------------------------------------------------------------------
    def _loop(self):
        subs = [(sub, sub.handle, sub.msg_type, sub.raw, sub.callback) for sub in self.subscriptions]
        wait_set = _rclpy.WaitSet(len(subs), 1, 0, 0, 0, len(self.handlers), self.context.handle)
        timeout_ns = int(WAIT_S * 1e9)
        try:
            with ExitStack() as held:          # keep every handle alive while the wait set refers to it
                for _, handle, _, _, _ in subs:
                    held.enter_context(handle)
                held.enter_context(self._guard.handle)
                for h in self.handlers:
                    held.enter_context(h)
                while not self._stopping and self.context.ok():
                    wait_set.clear_entities()
                    for _, handle, _, _, _ in subs:
                        wait_set.add_subscription(handle)
                    wait_set.add_guard_condition(self._guard.handle)
                    for h in self.handlers:
                        h.add_to_wait_set(wait_set)
                    wait_set.wait(timeout_ns)
                    for h in self.handlers:
                        if h.is_ready(wait_set):
                            self._call(h.callback, h.take_data())
                    for _, handle, msg_type, raw, cb in subs:
                        for _ in range(MAX_TAKE):
                            if self._stopping:
                                return
                            taken = handle.take_message(msg_type, raw)
                            if taken is None:
                                break
                            self._call(cb, taken[0], taken[1])
        except Exception as exc:  # noqa: BLE001 - the context went down under a wait (SIGINT): a quiet end
            if self.context.ok() and not self._stopping:
                self.node.get_logger().error(f'{self.thread.name} ended: {type(exc).__name__}: {exc}')

    def _call(self, callback, data, info=None):
        if data is None:
            return
        try:
            if self.with_info and info is not None:
                callback(data, info)
            else:
                callback(data)
        except Exception as exc:  # noqa: BLE001 - bad input is logged and counted, the pump goes on
            self.errors += 1
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY_S:
                self._warned = now
                self.node.get_logger().warning(f'{self.thread.name}: callback failed ({self.errors} so far): '
                                               f'{type(exc).__name__}: {exc} (logged once per '
                                               f'{WARN_EVERY_S:.0f} s)')
