"""Best-effort overload: does the frame ledger account for every camera frame?

``python tools/overload.py [--rate HZ] [--seconds S] [--width W] [--height H] [--model NAME] [--json]``

Starts ``pipeit bringup`` (planner and one container, ``--single-container``, with the shipped parameters:
``image_qos: sensor_data``, ``policy: drop_oldest``) on a ROS domain of its own, and plays the camera in this
process: rgb8 frames at ``--rate`` for ``--seconds`` with best-effort QoS (``qos_profile_sensor_data``, as
pipeit_camera), under the package's Fast DDS profile like every node of the layout. When the camera stops it
waits until the containers' ledgers (``<container>/ledger`` on /diagnostics) stop changing, then prints:

- ``published``: frames this process published (it knows the count exactly);
- ``in``, ``out``, ``dropped`` (by reason): the ledger summed over the containers;
- ``uncounted`` = published - in: frames the graph never accounted for (a QoS loss at the very end of the stream,
  with no later frame to show the sequence gap, is the only one the ledger cannot see);
- ``unbalanced`` = in - out - dropped (0 when every frame that entered left once);
- ``no_result_at``: positions of the published frames no result came back for (from ``pipeit/classification``
  stamps): dropped ones, counted, and uncounted ones; the first and the last show where no gap can tell.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import yaml

from pipeit_ros.app.dds_profile import dds_profile_env

os.environ.update(dds_profile_env())            # before rclpy: this process talks to the layout's nodes
DOMAIN = 120 + os.getpid() % 90
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN)

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from pipeit_ros.app.wire import diagnostics, topics
from pipeit_ros.app.wire import tensor_msg as tensormsg
from pipeit_ros.ros import messages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT_S = 90.0
SETTLE_S = 4.0
DISCOVERY_S = 3.0       # after this process sees the container's reader, before the first frame: the reader's side
                        # of discovery may lag, and a best-effort frame published before it matched was never in          # ledgers unchanged this long (they are published once a second) = settled


def params_file(tmp):
    with open(os.path.join(ROOT, 'config', 'pipeline.yaml'), encoding='utf-8') as f:
        params = yaml.safe_load(f)
    params.pop('pipeit_camera', None)
    path = os.path.join(tmp, 'params.yaml')
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(params, f)
    return path


class Bench(Node):
    def __init__(self, width, height):
        super().__init__('overload_bench')
        self.pub = self.create_publisher(Image, 'image_raw', qos_profile_sensor_data)
        self.ledgers = {}
        self.changed = time.monotonic()
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self.published, self.results = [], set()     # stamps (ns) published here, and of the results that came
        self.create_subscription(messages.classification_type(), topics.CLASSIFICATION, self._on_result,
                                 messages.RESULT_QOS)
        rng = np.random.default_rng(0)
        self.frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2)]
        self.msgs = []
        for frame in self.frames:
            msg = Image(height=height, width=width, encoding='rgb8', step=width * 3, is_bigendian=0)
            msg.header.frame_id = 'camera'
            msg.data = tensormsg.byte_array(frame)
            self.msgs.append(msg)

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.endswith(diagnostics.LEDGER_NAME_SUFFIX):
                ledger = diagnostics.ledger_of({kv.key: kv.value for kv in status.values})
                if self.ledgers.get(status.name) != ledger:
                    self.ledgers[status.name] = ledger
                    self.changed = time.monotonic()

    def _on_result(self, msg):
        stamp = messages.classification_dict(msg)['header']['stamp']
        self.results.add(stamp['sec'] * 1_000_000_000 + stamp['nanosec'])

    def send(self, i):
        msg = self.msgs[i % len(self.msgs)]
        msg.header.stamp = self.get_clock().now().to_msg()
        self.published.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
        self.pub.publish(msg)

    def missing_at(self):
        """Positions (0-based, in publishing order) of the frames with no result: lost or dropped."""
        return [i for i, stamp in enumerate(self.published) if stamp not in self.results]


def total(ledgers):
    out = {'in': 0, 'out': 0, 'sent': 0, 'received': 0, 'dropped': {}, 'camera_dropped': {}}
    for ledger in ledgers.values():
        for key in ('in', 'out', 'sent', 'received'):
            out[key] += ledger[key]
        for group in ('dropped', 'camera_dropped'):
            for reason, n in ledger[group].items():
                out[group][reason] = out[group].get(reason, 0) + n
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rate', type=float, default=200.0)
    ap.add_argument('--seconds', type=float, default=20.0)
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--model', default='tiny')
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args(argv)
    n = max(1, round(args.rate * args.seconds))
    rclpy.init()
    node = Bench(args.width, args.height)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    # results and ledgers are taken on a thread of their own: taken between frames, 200 results/s overran the
    # result reader's history and looked like frames without a result
    threading.Thread(target=executor.spin, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [os.path.join(os.path.dirname(sys.executable), 'pipeit'), 'bringup', '--model', args.model, '--single-container',
               '--params-file', params_file(tmp), '--quiet', '--duration', str(args.seconds + START_TIMEOUT_S + 60)]
        log = open(os.path.join(tmp, 'bringup.log'), 'w+', encoding='utf-8')
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while (node.pub.get_subscription_count() == 0 or not node.ledgers) and time.monotonic() < deadline:
                time.sleep(0.1)
                if proc.poll() is not None:
                    break
            if node.pub.get_subscription_count() == 0:
                log.seek(0)
                raise SystemExit(f'overload: the graph did not start:\n{log.read()[-3000:]}')
            end = time.monotonic() + DISCOVERY_S
            time.sleep(max(0.0, end - time.monotonic()))
            t0 = time.monotonic()
            for i in range(n):
                node.send(i)
                wait = t0 + (i + 1) / args.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            sent_s = time.monotonic() - t0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and time.monotonic() - node.changed < SETTLE_S:
                time.sleep(0.1)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    led = total(node.ledgers)
    dropped = sum(led['dropped'].values())
    result = {'rate_hz': args.rate, 'size': f'{args.width}x{args.height}', 'published': n,
              'publish_s': round(sent_s, 2), 'in': led['in'], 'out': led['out'], 'dropped': led['dropped'],
              'uncounted': n - led['in'], 'unbalanced': led['in'] - led['out'] - dropped,
              'camera_dropped': led['camera_dropped'], 'load': os.getloadavg()[0]}
    missing = node.missing_at()
    result['no_result_at'] = missing if len(missing) <= 20 else missing[:10] + ['...'] + missing[-10:]
    print(json.dumps(result) if args.json else
          f'{n} published at {args.rate:g} Hz ({args.width}x{args.height}, {sent_s:.1f} s): in {led["in"]}, '
          f'out {led["out"]}, dropped {dropped} {led["dropped"]}; uncounted {result["uncounted"]}, unbalanced '
          f'{result["unbalanced"]}; camera inputs {led["camera_dropped"]}; no result for frames '
          f'{result["no_result_at"]}; load {result["load"]:.1f}')
    executor.shutdown(timeout_sec=2)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
