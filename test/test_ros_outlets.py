"""The container's outlets on real rclpy + Fast DDS: an ended run's tensor publisher stays open until the next
container acknowledged what it sent (a reader that cannot answer keeps it open until ACK_TIMEOUT_S)."""
import os
import signal
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip('rclpy')

from planner_helpers import domain_id
from rclpy.node import Node

from pipeit_ros.ros import messages
from pipeit_ros.ros import outlets as outlets_mod
from pipeit_ros.testing import harness

pytestmark = [pytest.mark.ros, pytest.mark.slow]

READER = r'''
import time, rclpy
from pipeit_ros.ros import messages
rclpy.init()
node = rclpy.create_node('pipeit_outlet_reader')
node.create_subscription(messages.Image, messages.tensor_topic(1, 1), lambda m: None,
                         messages.tensor_qos('block', 2))
print('ready', flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    rclpy.spin_once(node, timeout_sec=0.1)
'''


def open_publishers(node, topic):
    return sum(1 for info in node.get_publishers_info_by_topic(topic) if info.node_name == node.get_name())


@pytest.mark.parametrize('reader_stopped', [False, True], ids=['reader-answers', 'reader-stopped'])
def test_ended_tensor_publisher_closes_once_acknowledged(reader_stopped, monkeypatch):
    # the writer's heartbeat, which asks for the acknowledgements, is Fast DDS' 3 s here: this process may have
    # made its participant factory before any profile file was set
    monkeypatch.setattr(outlets_mod, 'ACK_TIMEOUT_S', 2.0 if reader_stopped else 30.0)
    dom = domain_id()
    env = {**os.environ, 'ROS_DOMAIN_ID': str(dom)}
    reader = subprocess.Popen([sys.executable, '-c', READER], env=env, stdout=subprocess.PIPE, text=True)
    with harness.RosGraph(domain_id=dom) as rg:
        node = Node('pipeit_outlet_owner', context=rg.context)     # publishes only: nothing to spin
        try:
            assert reader.stdout.readline().strip() == 'ready'
            outlets = outlets_mod.Outlets(node)
            pub = outlets.tensor(1, 1, 'block', 2)
            topic = pub.topic_name
            assert harness.wait(lambda: pub.get_subscription_count() == 1, 10)
            if reader_stopped:
                reader.send_signal(signal.SIGSTOP)
            pub.publish(messages.eos_msg(1))
            outlets.ended(pub)
            t0 = time.monotonic()
            assert harness.wait(lambda: outlets.close_acknowledged() or open_publishers(node, topic) == 0, 9)
            closed_after = time.monotonic() - t0
            if reader_stopped:      # no acknowledgement can come: open until the timeout
                assert closed_after >= outlets_mod.ACK_TIMEOUT_S - 0.1
            else:                   # acknowledged on a heartbeat, long before the timeout
                assert closed_after < outlets_mod.ACK_TIMEOUT_S / 3
        finally:
            node.destroy_node()
            reader.send_signal(signal.SIGCONT)
            reader.kill()
            reader.wait()
