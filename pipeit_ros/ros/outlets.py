"""The container's publishers that outlive its runs, on the container's own node.

- Results (``pipeit/output``, ``pipeit/classification``): one writer each for every generation's tail run in
  this container, so their readers get the results in order across re-plans (DDS orders per writer).
- Tensors to the next container, one topic per generation and cut (:func:`messages.tensor_topic`): a run's
  publisher stays open after the run ended until the next container acknowledged its last tensors and the end
  marker, while the container goes on to the next generation. Fast DDS asks for acknowledgements once per
  heartbeat (3 s by default, 0.1 s with pipeit_ros/data/fastdds_profiles.xml): waiting for them in the run
  held every re-plan up by 2 s.
"""
import time

from rclpy.duration import Duration

from pipeit_ros.app.wire import topics
from pipeit_ros.ros import messages

ACK_TIMEOUT_S = 10.0    # an ended run's tensor publisher is closed after this even if not acknowledged


class Outlets:
    def __init__(self, node):
        self.node = node
        self._results = None
        self._unacked = []          # (tensor publisher, when its run ended)

    def results(self):
        """(pipeit/output, pipeit/classification, pipeit/detections) publishers, made on first use."""
        if self._results is None:
            kind, dkind = messages.classification_type(), messages.detections_type()
            self._results = (
                self.node.create_publisher(messages.Float32MultiArray, topics.OUTPUT, messages.RESULT_QOS),
                self.node.create_publisher(kind, topics.CLASSIFICATION, messages.RESULT_QOS),
                self.node.create_publisher(dkind, topics.DETECTIONS, messages.RESULT_QOS))
            self.node.get_logger().info(f'results on {self._results[1].topic_name} as {_type_name(kind)}, on '
                                        f'{self._results[2].topic_name} as {_type_name(dkind)} and on '
                                        f'{self._results[0].topic_name} as std_msgs/msg/Float32MultiArray')
        return self._results

    def tensor(self, generation, stage_index, policy, queue_size):
        return self.node.create_publisher(messages.Image, messages.tensor_topic(generation, stage_index),
                                          messages.tensor_qos(policy, queue_size))

    @property
    def pending(self):
        """True while an ended run's tensor publisher waits for its acknowledgements."""
        return bool(self._unacked)

    def ended(self, pub):
        """``pub``'s run ended (its end marker is out): close it once acknowledged (:meth:`close_acknowledged`)."""
        self._unacked.append((pub, time.monotonic()))

    def discard(self, pub):
        self.node.destroy_publisher(pub)

    def close_acknowledged(self, force=False):
        now = time.monotonic()
        for entry in list(self._unacked):
            pub, since = entry
            if force or now - since > ACK_TIMEOUT_S or pub.wait_for_all_acked(Duration(seconds=0)):
                self.node.destroy_publisher(pub)
                self._unacked.remove(entry)


def _type_name(kind):
    return f'{kind.__module__.split(".")[0]}/msg/{kind.__name__}'
