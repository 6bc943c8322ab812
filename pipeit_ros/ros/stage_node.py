"""Nodes a container hosts: one ``stage_<i>`` node per pipeline stage, and the camera input node.

Each stage node spins on its own thread with its own SingleThreadedExecutor (docs/architecture.md, measured facts: a
MultiThreadedExecutor stalls when callbacks publish to each other). A stage node owns what is its stage's: its
DiagnosticStatus on /diagnostics once a second (the output publishers are the container's, pipeit_ros.ros.outlets,
so they outlive the runs). The
per-frame subscriptions (camera input ``image_input``, a run's tensor input ``stage_<i>_input``) live on
nodes of their own, taken by a :class:`~pipeit_ros.ros.pump.Pump` instead of an executor (0.05 ms of CPU per
message instead of 0.5). The frames themselves move in the engine's pinned workers
(pipeit_ros.ros.run.RunHost), not in callbacks.

These nodes ignore the process's command-line arguments (``use_global_arguments=False``): a launcher's
``-r __node:=pipeit_container_big`` renames every node of a process, and would give them all one name. They
take the container's namespace explicitly.
"""
from collections import Counter, deque
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy._rclpy_pybind11 import RCLError
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image

from pipeit_ros.app import handoff, results
from pipeit_ros.app.wire import topics
from pipeit_ros.app.wire.image_cdr import parse_image
from pipeit_ros.errors import ImageError
from pipeit_ros.ros import messages
from pipeit_ros.ros.pump import Pump, pumped_node

DIAGNOSTICS_PERIOD_S = 1.0


class NodeThread:
    """``node`` spinning with a SingleThreadedExecutor of its own: on a new thread (:meth:`start`) or on the
    caller's (:meth:`spin_here`)."""

    def __init__(self, node, name=None):
        self.node = node
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self.spin_here, name=name or f'spin.{node.get_name()}', daemon=True)

    def spin_here(self):
        """Spin until stop() or ROS shutdown (SIGINT/SIGTERM): both end quietly."""
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass
        except RCLError:
            # the context was shut down (SIGINT) between two waits: the same quiet end, anything else re-raised
            if self.node.context.ok():
                raise

    def start(self):
        self.thread.start()
        return self

    def halt(self):
        """Stop calling callbacks (a running one finishes)."""
        self.executor.shutdown(timeout_sec=0)

    def stop(self, timeout=2.0):
        """Stop spinning and destroy the node; returns False, leaving the node alone, when the spinning thread
        did not end within ``timeout`` (destroying a node in use could crash the process)."""
        self.halt()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
            if self.thread.is_alive():
                return False
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        return True


class StageNode(Node):
    """``stage_<i>``: the ROS face of one stage of a running :class:`~pipeit_ros.ros.run.RunHost`."""

    def __init__(self, index, run, *, context, namespace=''):
        super().__init__(f'stage_{index}', namespace=namespace, context=context, use_global_arguments=False)
        self.index, self.run = index, run
        self.window = results.StageWindow()
        self._diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)

    def publish_diagnostics(self):
        level, message, values = self.run.stage_report(self.index, self.window)
        name = f'{messages.diagnostic_prefix(self.get_namespace())}pipeit/stage_{self.index}'
        status = (messages.LEVEL[level], name, message, self.run.cluster, values)
        self._diagnostics.publish(messages.diagnostic_array(self.get_clock().now().to_msg(), [status]))


class ImageInput:
    """The camera input of the container hosting stage 0: frames go, untouched, into ``inbox`` with their
    arrival time (the feeder thread converts them, so this callback never holds a frame up). It lives across
    plan generations, so frames keep queueing while the stages are rebuilt. Its node ``image_input`` is
    pumped (pipeit_ros.ros.pump: a frame costs one wait and one take, not an executor's book-keeping) and
    takes frames serialized, read in place by pipeit_ros.app.wire.image_cdr (one copy instead of three);
    :meth:`pump` gives the thread that takes the frames."""

    def __init__(self, *, context, namespace, topic, qos_name, policy, queue_size):
        self.node = pumped_node('image_input', context=context, namespace=namespace)
        self.inbox = handoff.Inbox(queue_size, policy)
        self.evicted = deque()          # (stamp, lost before it) of frames the full inbox dropped, for the ledger
        self._gaps = handoff.SequenceGaps()
        self._lost_pending = 0          # lost before a frame not yet in the inbox (a bad frame came between)
        self.drops = Counter()
        self.received = 0
        self.first_stamp = None         # header stamp of the first frame received (re-plan hand-off)
        events = SubscriptionEventCallbacks(message_lost=self._on_lost)
        self.subscription = self.node.create_subscription(Image, topic, self._on_image,
                                                          messages.image_qos(qos_name),
                                                          event_callbacks=events, raw=True)

    def pump(self):
        """The (not yet started) :class:`~pipeit_ros.ros.pump.Pump` taking the frames; its stop() destroys the
        node."""
        return Pump(self.node, [self.subscription], name='pump.camera_in', with_info=True)

    def _gap(self, info):
        """Frames lost since this publisher's previous one: a gap in its publication sequence numbers (best effort
        loses frames in transport or in a full reader history, which Fast DDS does not always report)."""
        try:
            gid, seq = bytes(info['publisher_gid']['data']), int(info['publication_sequence_number'])
        except (TypeError, KeyError, ValueError):
            return 0
        return self._gaps.lost(gid, seq)

    def _on_image(self, serialized, info=None):
        """A raw (serialized) frame: read in place by pipeit_ros.app.wire.image_cdr, one copy fewer than a typed
        take. Each inbox item is (message, receive time, frames DDS lost just before it): the head run that owns
        the frame books those as taken and dropped ('dds')."""
        t_recv = time.time_ns()
        lost = self._gap(info)
        if lost:
            self.drops['dds_gap'] += lost
        self._lost_pending += lost
        try:
            msg = parse_image(serialized)
        except ImageError as exc:
            self.drops[exc.kind] += 1
            raise                       # the pump logs it (rate-limited)
        if self.first_stamp is None:
            self.first_stamp = msg.header.stamp
        self.received += 1
        lost, self._lost_pending = self._lost_pending, 0
        try:
            dropped = self.inbox.put((msg, t_recv, lost))
            if dropped is not None:
                self.drops['input'] += 1
                self.evicted.append((handoff.stamp_ns(dropped[0].header.stamp), dropped[2]))
        except handoff.Closed:
            pass

    def _on_lost(self, info):
        self.drops['dds'] += int(info.total_count_change)

    def close(self):
        self.inbox.close()
