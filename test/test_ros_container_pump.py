"""The lean receive loop of the per-frame subscriptions (pipeit_ros.ros.pump) and thread naming for CPU figures."""
import threading

import pytest

rclpy = pytest.importorskip('rclpy')

from std_msgs.msg import String

from pipeit_ros.hw import threads as cpuload
from pipeit_ros.ros import messages
from pipeit_ros.ros.pump import Pump, pumped_node
from pipeit_ros.testing import harness


@pytest.mark.parametrize('name,short', [
    ('pipeit_container_c0.g2.stage_3.0', 'stage_3.0'), ('pipeit_container.g1.feeder', 'feeder'),
    ('spin.pipeit_container_c0', 'spin.control_c0'), ('spin.pipeit_test_collector', 'spin.test_colle'),
    ('pump.stage_12_input', 'pump.stage_12_i'), ('x' * 40, 'x' * 15)], ids=lambda v: v[:20])
def test_short_thread_names_fit_the_kernel_limit(name, short):
    assert cpuload.short_name(name) == short


def test_named_threads_show_in_proc_with_their_cpu():
    done = threading.Event()
    t = threading.Thread(target=done.wait, name='pipeit_container.g7.stage_0.1', daemon=True)
    t.start()
    try:
        assert cpuload.name_threads() >= 1
        names = {name for name, _ in cpuload.thread_cpu().values()}
        assert 'stage_0.1' in names
        groups = cpuload.per_frame_ms({}, {1: ('stage_0.1', 2_000_000), 2: ('dds.shm.1', 1_000_000)}, 2)
        assert groups == {'stage_0': 1.0, 'dds': 0.5}
    finally:
        done.set()


@pytest.mark.ros
def test_pump_takes_every_message_counts_a_failing_callback_and_keeps_going():
    got = []

    def on_msg(msg):
        if msg.data == 'bad':
            raise ValueError('bad input')
        got.append(msg.data)

    with harness.RosGraph(domain_id=harness.domain_id_for_process(base=63)) as rg:
        node = pumped_node('pump_test', context=rg.context)
        sub = node.create_subscription(String, 'pump_test', on_msg, messages.RESULT_QOS)
        pump = Pump(node, [sub]).start()
        pub = rg.planner().create_publisher(String, 'pump_test', messages.RESULT_QOS)
        assert harness.wait(lambda: pub.get_subscription_count() > 0, 10)
        for text in ['a', 'bad', 'b', 'c']:
            pub.publish(String(data=text))
        assert harness.wait(lambda: len(got) == 3, 10), got
        assert got == ['a', 'b', 'c'] and pump.errors == 1 and pump.thread.is_alive()
        assert pump.stop(timeout=2.0) and not pump.thread.is_alive()
