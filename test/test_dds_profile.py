"""The shipped Fast DDS profile on real processes: a reliable writer's samples are acknowledged within its
heartbeat period, so a re-plan that waits for acknowledgements (results moving to another container) waits
a tenth of a second instead of Fast DDS' default three."""
import os
import subprocess
import sys

from planner_helpers import domain_id
import pytest

from pipeit_ros.app import dds_profile

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PROBE = r'''
import os, sys, time
import rclpy
from rclpy.duration import Duration
from std_msgs.msg import String
from pipeit_ros.ros import messages
rclpy.init()
node = rclpy.create_node('pipeit_ack_' + os.environ['PROBE_ROLE'])
if os.environ['PROBE_ROLE'] == 'reader':
    node.create_subscription(String, 'pipeit/ack_probe', lambda m: None, messages.RESULT_QOS)
    print('ready', flush=True)
    end = time.monotonic() + 40
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    sys.exit(0)
pub = node.create_publisher(String, 'pipeit/ack_probe', messages.RESULT_QOS)
end = time.monotonic() + 10
while pub.get_subscription_count() == 0 and time.monotonic() < end:
    time.sleep(0.02)
time.sleep(0.5)
worst = 0.0
for _ in range(3):
    pub.publish(String(data='x'))
    t = time.monotonic()
    assert pub.wait_for_all_acked(Duration(seconds=8))
    worst = max(worst, time.monotonic() - t)
print(f'{worst:.3f}')
'''


def probe(role, dom, profile, **popen):
    env = {k: v for k, v in os.environ.items() if k not in ('FASTDDS_DEFAULT_PROFILES_FILE',
                                                              'FASTRTPS_DEFAULT_PROFILES_FILE')}
    env.update(ROS_DOMAIN_ID=str(dom), PROBE_ROLE=role)
    if profile:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = dds_profile.DDS_PROFILES
    return subprocess.Popen([sys.executable, '-c', PROBE], env=env, stdout=subprocess.PIPE, text=True, **popen)


def test_shipped_profile_gets_acknowledgements_far_sooner_than_the_default():
    dom = domain_id()
    reader = probe('reader', dom, profile=False)
    try:
        assert reader.stdout.readline().strip() == 'ready'
        worst = {}
        for profile in (False, True):
            writer = probe('writer', dom, profile)
            out, _ = writer.communicate(timeout=40)
            assert writer.returncode == 0, out
            worst[profile] = float(out.split()[-1])
        assert worst[True] < worst[False] / 5, worst      # 100 ms heartbeat against Fast DDS' 3 s
    finally:
        reader.kill()
        reader.wait()
