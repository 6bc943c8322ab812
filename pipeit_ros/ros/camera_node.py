"""`pipeit_camera`: publishes sensor_msgs/Image on ``image_raw`` from a video, an image folder or a pattern.

A timer at ``rate_hz`` reads the next frame (``pipeit_ros.app.camera_frames``) and publishes it with the current
time as header stamp and ``frame_id``. With ``count`` > 0 it publishes exactly that many frames, then the
process exits 0 after a short linger (so reliable subscribers get the last ones) — tests and demos. With
``wait_for_subscribers`` it starts only once that many subscribers are matched (no frame lost to discovery). Image
bytes go in with ``ndarray.tobytes()`` (one memcpy; assigning the array itself walks it element by element).
"""
import time

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from pipeit_ros.app.camera_frames import ENCODINGS, open_source
from pipeit_ros.app.wire import tensor_msg as tensormsg
from pipeit_ros.errors import PipeitError
from pipeit_ros.ros.node_main import run_node

LINGER_S = 0.5


def _range(low, high, floating):
    if floating:
        return ParameterDescriptor(floating_point_range=[FloatingPointRange(from_value=low, to_value=high)])
    return ParameterDescriptor(integer_range=[IntegerRange(from_value=low, to_value=high, step=1)])


class CameraNode(Node):
    PARAMS = {  # name: (default, description, descriptor extras)
        'source': ('pattern', "'pattern', a folder of images (sorted by name) or a video file", None),
        'rate_hz': (30.0, 'frames per second', _range(0.1, 1000.0, True)),
        'width': (640, 'frame width in pixels (0 with height 0: the file\'s own size)', _range(0, 16384, False)),
        'height': (480, 'frame height in pixels', _range(0, 16384, False)),
        'encoding': ('rgb8', 'one of ' + ', '.join(ENCODINGS), None),
        'count': (0, 'frames to publish, then exit; 0: forever', _range(0, 2**31 - 1, False)),
        'loop': (True, 'start a video or folder over at its end', None),
        'frame_id': ('camera', 'header frame_id', None),
        'qos': ('sensor_data', "'sensor_data' (best effort) or 'reliable'", None),
        'wait_for_subscribers': (0, 'start publishing once this many subscribers are matched; 0: at once',
                                 _range(0, 1000, False)),
    }

    def __init__(self, **kwargs):
        super().__init__('pipeit_camera', **kwargs)
        for name, (default, description, extra) in self.PARAMS.items():
            d = extra or ParameterDescriptor()
            d.description = description
            d.read_only = True           # a running camera keeps its settings; restart to change them
            self.declare_parameter(name, default, d)
        p = {name: self.get_parameter(name).value for name in self.PARAMS}
        if p['qos'] not in ('sensor_data', 'reliable'):
            raise PipeitError(f"qos must be 'sensor_data' or 'reliable', got {p['qos']!r}")
        self.source = open_source(p['source'], p['width'], p['height'], p['encoding'], p['loop'])
        self.count, self.frame_id, self.encoding = p['count'], p['frame_id'], p['encoding']
        self.wait_for_subscribers = p['wait_for_subscribers']
        qos = qos_profile_sensor_data if p['qos'] == 'sensor_data' else QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.create_publisher(Image, 'image_raw', qos)
        self.published = 0
        self.done = False
        self.timer = self.create_timer(1.0 / p['rate_hz'], self._tick)
        self.get_logger().info(f'publishing {self.source.describe()} as {self.encoding} at {p["rate_hz"]:g} Hz'
                               + (f', {self.count} frames' if self.count else ''))

    def _tick(self):
        if self.done:
            return
        if self.wait_for_subscribers:
            if self.publisher.get_subscription_count() < self.wait_for_subscribers:
                return
            self.wait_for_subscribers = 0
        skipped = getattr(self.source, 'unreadable', 0)
        frame = self.source.read()
        if getattr(self.source, 'unreadable', 0) != skipped:
            self.get_logger().warning(f'skipped an unreadable image ({self.source.skipped}); '
                                      f'{self.source.unreadable} skipped so far',
                                      throttle_duration_sec=10.0)
        if frame is None:
            self._finish('end of source')
            return
        msg = Image()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        msg.height, msg.width = frame.shape[0], frame.shape[1]
        msg.encoding = self.encoding
        msg.is_bigendian = 0
        msg.step = frame.shape[1] * frame.shape[2]
        msg.data = tensormsg.byte_array(frame)     # one memcpy (bytes + array.array would be two)
        self.publisher.publish(msg)
        self.published += 1
        if self.count and self.published >= self.count:
            self._finish(f'{self.published} frames published')

    def _finish(self, why):
        self.done = True
        self.timer.cancel()
        self.get_logger().info(f'done: {why}')

    def destroy_node(self):
        self.source.close()
        super().destroy_node()


def _spin(node):
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not node.done and rclpy.ok():
        executor.spin_once(timeout_sec=0.1)
    deadline = time.monotonic() + LINGER_S
    while time.monotonic() < deadline and rclpy.ok():
        executor.spin_once(timeout_sec=0.05)


def main(args=None):
    """Console script ``pipeit_camera``; exit codes as :mod:`pipeit_ros.ros.node_main` says."""
    return run_node('pipeit_camera', CameraNode, _spin, CameraNode.destroy_node, args)


if __name__ == '__main__':
    raise SystemExit(main())
