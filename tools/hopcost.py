"""Calibrate the cost of a cut between two containers: ``pipeit_ros/data/hop_cost.json``.

``python tools/hopcost.py [--reps N] [--period-ms P] [--out FILE] [--json]``

Two processes, as two containers of the ROS graph: a child process publishes tensor messages exactly as a
container's output thread does (``messages.tensor_msg``: the crossing tensors packed into one message, two
tensors per message, then ``publish``), this process receives them as a container does (a pumped subscription
with the tensor QoS, ``tensor_msg.unpack``). Both use the containers' Fast DDS profile (shared memory with a
8 MiB segment + UDPv4, pipeit_ros.app.dds_profile; ``--profile camera``: the shipped one, 32 MiB). Per message, on one clock (``time.time_ns``, shared by
processes on one machine):

- send: pack + publish in the sender (``t1 - t0``): what the sending stage's container spends;
- receive: from the end of publish to the unpacked tensors in the receiver (``t2 - t1``): transport, take and
  deserialisation.

Messages are paced (``--period-ms``), so neither side queues. Each is a line fitted to the per-size medians
(fixed ms + ms per MB, both clamped at 0) over sizes from 4 KB to 6.4 MB; the cost table charges them to the
two stages of a cut between containers (pipeit_ros.cost.table). Run it under the shared bench lock.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

SIZES = (4_096, 262_144, 1_605_632, 6_422_528)   # bytes per message, as the in-process hand-over's sizes
TOPIC = 'pipeit/tensor/g1/stage_0'
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pipeit_ros', 'data',
                   'hop_cost.json')


def _env(role='container'):
    """The Fast DDS profile of ``role`` (pipeit_ros.app.dds_profile): containers' by default, as in the graph."""
    from pipeit_ros.app.dds_profile import dds_profile_env
    return dds_profile_env(role, environ={})


def send(reps, period_ms):
    """The child: wait for the reader, publish ``reps`` messages per size, print [(seq, bytes, t0, t1)]."""
    import rclpy
    from rclpy.node import Node

    from pipeit_ros.ros import messages
    rclpy.init()
    node = Node('hopcost_send')
    pub = node.create_publisher(messages.Image, TOPIC, messages.tensor_qos('block', 2))
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    header = messages.Image().header
    rows, seq = [], 0
    for nbytes in SIZES:
        arrays = [np.random.default_rng(seq).standard_normal(nbytes // 8).astype(np.float32) for _ in range(2)]
        for _ in range(reps):
            t0 = time.time_ns()
            msg = messages.tensor_msg(header, ['a', 'b'], arrays, seq=seq, generation=1, t_recv_ns=t0)
            pub.publish(msg)
            t1 = time.time_ns()
            rows.append((seq, nbytes, t0, t1))
            seq += 1
            time.sleep(period_ms / 1000)
    time.sleep(1.0)
    print(json.dumps(rows), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def receive(reps, period_ms, role='container'):
    """This process: start the sender, take its messages, return the per-size medians and fitted lines."""
    import rclpy

    from pipeit_ros.app.wire import tensor_msg
    from pipeit_ros.ros import messages
    from pipeit_ros.ros.pump import Pump, pumped_node
    from pipeit_ros.testing import harness
    domain = harness.domain_id_for_process(base=41)
    os.environ.update(_env(role))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = pumped_node('hopcost_recv', context=context)
    got, lock = {}, threading.Lock()

    def on_tensor(msg):
        packet = tensor_msg.unpack(msg)
        t2 = time.time_ns()
        with lock:
            got[packet.seq] = t2
    sub = node.create_subscription(messages.Image, TOPIC, on_tensor, messages.tensor_qos('block', 2))
    pump = Pump(node, [sub]).start()
    env = {**os.environ, 'ROS_DOMAIN_ID': str(domain), **_env(role)}
    child = subprocess.run([sys.executable, __file__, '--role', 'send', '--reps', str(reps),
                            '--period-ms', str(period_ms)], env=env, capture_output=True, text=True,
                           timeout=60 + len(SIZES) * reps * (period_ms / 1000 + 0.1), check=True)
    pump.stop()
    rclpy.shutdown(context=context)
    rows = json.loads(child.stdout.strip().splitlines()[-1])
    lost = sum(1 for seq, *_ in rows if seq not in got)
    send_ms, recv_ms = {}, {}
    for seq, nbytes, t0, t1 in rows:
        if seq in got:
            send_ms.setdefault(nbytes, []).append((t1 - t0) / 1e6)
            recv_ms.setdefault(nbytes, []).append((got[seq] - t1) / 1e6)
    return send_ms, recv_ms, lost


def _line(per_size):
    """(fixed ms, ms per MB, [(MB, median ms)]) of a line through the per-size medians, least squares of the
    relative error (sizes span three decades; plain least squares would fit the largest only)."""
    points = [(nbytes / 1e6, float(np.median(v))) for nbytes, v in sorted(per_size.items())]
    mb, ms = (np.array(v) for v in zip(*points))
    slope, intercept = np.polyfit(mb, ms, 1, w=1 / np.maximum(ms, 1e-3))
    return max(float(intercept), 0.0), max(float(slope), 0.0), points


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--role', choices=('receive', 'send'), default='receive', help=argparse.SUPPRESS)
    ap.add_argument('--reps', type=int, default=40, help='messages per size (default 40)')
    ap.add_argument('--period-ms', type=float, default=30.0, help='pause between messages (default 30)')
    ap.add_argument('--out', default=OUT, help='calibration file to write (default: the shipped one)')
    ap.add_argument('--json', action='store_true', help='print the calibration as JSON')
    ap.add_argument('--profile', choices=('container', 'camera'), default='container',
                    help="both processes' Fast DDS profile: the containers' (8 MiB segment, default) or the "
                         "camera's (32 MiB)")
    args = ap.parse_args(argv)
    if args.role == 'send':
        send(args.reps, args.period_ms)
        return 0
    send_ms, recv_ms, lost = receive(args.reps, args.period_ms, args.profile)
    s_fixed, s_mb, s_points = _line(send_ms)
    r_fixed, r_mb, r_points = _line(recv_ms)
    import onnxruntime  # noqa: F401 - only to be sure the versions below are this environment's
    import rclpy  # noqa: F401
    data = {'hop_send_fixed_ms': s_fixed, 'hop_send_ms_per_mb': s_mb,
            'hop_recv_fixed_ms': r_fixed, 'hop_recv_ms_per_mb': r_mb,
            'send_points_mb_ms': s_points, 'recv_points_mb_ms': r_points, 'lost': lost,
            'measured': {'tool': 'tools/hopcost.py', 'reps_per_size': args.reps, 'period_ms': args.period_ms,
                         'at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                         'load_average': list(os.getloadavg()), 'cpus': os.cpu_count(),
                         'what': f'two tensors per message, sender publish vs receiver pump, the {args.profile}s\' '
                                 'Fast DDS profile (pipeit_ros.app.dds_profile), tensor QoS of policy block'}}
    with open(args.out, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
        f.write('\n')
    if args.json:
        print(json.dumps(data))
    else:
        print(f'send {s_fixed:.3f} ms + {s_mb:.3f} ms/MB, receive {r_fixed:.3f} ms + {r_mb:.3f} ms/MB '
              f'({lost} lost); written to {args.out}')
        for (mb, s), (_, r) in zip(s_points, r_points):
            print(f'  {mb:8.3f} MB: send {s:7.3f} ms  receive {r:7.3f} ms')
    return 0


if __name__ == '__main__':
    sys.exit(main())
