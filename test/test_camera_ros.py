"""pipeit_camera as a real process on its own ROS domain: N frames at about the rate, then exit 0."""
import os
import subprocess

import cv2
import numpy as np
from planner_helpers import RosGraph, domain_id
import pytest

from pipeit_ros.app.layout import ProcessSpec, write_params_file
from pipeit_ros.app.supervise import command

pytestmark = pytest.mark.ros


@pytest.fixture
def ros():
    graph = RosGraph(domain_id())
    yield graph
    graph.close()


def start_camera(ros, tmp_path, **params):
    spec = ProcessSpec(name='pipeit_camera', executable='pipeit_camera', role='camera', parameters=params)
    argv = command(spec, write_params_file(spec, tmp_path / 'camera.yaml'))
    env = {**os.environ, 'ROS_DOMAIN_ID': str(ros.domain)}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def image_listener(ros):
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    node = ros.add(Node('image_listener', context=ros.context))
    node.images = []
    node.create_subscription(Image, 'image_raw', node.images.append,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    return node


def stamps_s(images):
    return np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in images])


def finish(ros, proc, timeout=30):
    ros.wait(lambda: proc.poll() is not None, timeout, 'the camera to exit')
    ros.spin(0.3)
    return proc.returncode, proc.stdout.read()


@pytest.mark.parametrize('encoding,channels', [('rgb8', 3), ('mono8', 1)], ids=['rgb8', 'mono8'])
def test_pattern_count_and_rate(ros, tmp_path, encoding, channels):
    listener = image_listener(ros)
    rate, n = 20.0, 15
    proc = start_camera(ros, tmp_path, source='pattern', rate_hz=rate, width=64, height=48, encoding=encoding,
                        count=n, qos='reliable', wait_for_subscribers=1)
    code, out = finish(ros, proc)
    assert code == 0, out
    images = listener.images
    assert len(images) == n, out
    assert {(m.width, m.height, m.encoding, m.step, m.header.frame_id) for m in images} == \
        {(64, 48, encoding, 64 * channels, 'camera')}
    assert all(len(m.data) == 48 * 64 * channels for m in images)
    intervals = np.diff(stamps_s(images))
    assert (intervals > 0).all()
    assert 0.5 / rate < np.median(intervals) < 2.0 / rate          # about the rate (wide: a shared machine)
    first, second = (np.frombuffer(m.data, np.uint8) for m in images[:2])
    assert not np.array_equal(first, second)                       # the pattern moves


def test_folder_source_ends(ros, tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f'{i:03d}.png'), np.full((10, 12, 3), 60 * (i + 1), np.uint8))
    listener = image_listener(ros)
    proc = start_camera(ros, tmp_path, source=str(folder), width=0, height=0, encoding='bgr8', loop=False,
                        rate_hz=30.0, qos='reliable', wait_for_subscribers=1)
    code, out = finish(ros, proc)
    assert code == 0 and 'end of source' in out, out
    assert [int(np.frombuffer(m.data, np.uint8).mean()) for m in listener.images] == [60, 120, 180]
    assert {(m.width, m.height) for m in listener.images} == {(12, 10)}


def test_bad_source_exits_2(ros, tmp_path):
    proc = start_camera(ros, tmp_path, source=str(tmp_path / 'missing.mp4'))
    code, out = finish(ros, proc)
    assert code == 2 and 'missing.mp4' in out, out
