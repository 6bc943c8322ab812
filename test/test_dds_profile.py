"""The shipped Fast DDS profiles on real processes: a reliable writer's samples are acknowledged within its
heartbeat period, so a re-plan that waits for acknowledgements (results moving to another container) waits
a tenth of a second instead of Fast DDS' default three; a container's reliable sample larger than its
shared-memory segment still arrives whole."""
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


TENSOR_PROBE = r'''
import os, sys, time
import numpy as np
import rclpy
from pipeit_ros.app.wire import tensor_msg
from pipeit_ros.ros import messages
rclpy.init()
node = rclpy.create_node('pipeit_big_' + os.environ['PROBE_ROLE'])
qos = messages.tensor_qos('block', 2)
sizes = [int(n) for n in os.environ['PROBE_SIZES'].split(',')]
if os.environ['PROBE_ROLE'] == 'reader':
    got = []
    node.create_subscription(messages.Image, 'pipeit/big_probe', lambda m: got.append(tensor_msg.unpack(m)), qos)
    print('ready', flush=True)
    end = time.monotonic() + 40
    while len(got) < len(sizes) and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    for p in got:
        a = p.arrays[0]
        print(p.seq, a.nbytes, int(np.array_equal(a, np.arange(a.size, dtype=np.float32))), flush=True)
    sys.exit(0)
pub = node.create_publisher(messages.Image, 'pipeit/big_probe', qos)
end = time.monotonic() + 10
while pub.get_subscription_count() == 0 and time.monotonic() < end:
    time.sleep(0.02)
header = messages.Image().header
for seq, n in enumerate(sizes):
    pub.publish(messages.tensor_msg(header, ['x'], [np.arange(n // 4, dtype=np.float32)], seq=seq, generation=1,
                                    t_recv_ns=0))
print('acked', pub.wait_for_all_acked(rclpy.duration.Duration(seconds=30)), flush=True)
'''


def test_a_containers_reliable_sample_larger_than_its_segment_arrives_whole():
    """The containers' profile has an 8 MiB segment (only the camera's best-effort frames need 32 MiB): tensors of
    1x and 3x the segment, from a writer with it, reach a reader with the camera's profile intact."""
    segment = dds_profile.NODE_SEGMENT_BYTES
    sizes = [segment, 3 * segment]
    dom = domain_id()
    env = {k: v for k, v in os.environ.items() if k not in dds_profile.PROFILE_VARS}
    env.update(ROS_DOMAIN_ID=str(dom), PROBE_SIZES=','.join(map(str, sizes)))
    reader = subprocess.Popen([sys.executable, '-c', TENSOR_PROBE], stdout=subprocess.PIPE, text=True,
                              env={**env, **dds_profile.dds_profile_env('camera', environ={}), 'PROBE_ROLE': 'reader'})
    try:
        assert reader.stdout.readline().strip() == 'ready'
        writer = subprocess.run([sys.executable, '-c', TENSOR_PROBE], capture_output=True, text=True, timeout=60,
                                env={**env, **dds_profile.dds_profile_env('container', environ={}),
                                     'PROBE_ROLE': 'writer'})
        assert writer.returncode == 0 and 'acked True' in writer.stdout, writer.stdout + writer.stderr
        out, _ = reader.communicate(timeout=60)
    finally:
        reader.kill()
        reader.wait()
    assert [tuple(map(int, line.split())) for line in out.split('\n') if line.strip()] == \
        [(seq, n, 1) for seq, n in enumerate(sizes)]
