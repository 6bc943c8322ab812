"""The node ``pipeit bringup`` runs in its own process to show live throughput and latency.

It listens to ``pipeit/classification`` and ``pipeit/detections`` (one message per frame on the one of the two
that the model's task uses, carrying the source image's header stamp: latency = receipt time - stamp when the
stamp is on this machine's clock, else the head container's receive-time latency the message carries, see
results.end_to_end_latency_ms), ``pipeit/plan`` (the generation running) and ``/diagnostics`` (per-stage
figures, and the planner's verdict on each container: stalled or not), all of its own graph only (namespace,
graph id). Best-effort subscriptions: they match reliable and best-effort
publishers alike, and a monitor must never slow the pipeline down.
"""
from collections import deque
import json
import time

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from pipeit_ros.app import results
from pipeit_ros.app.wire import topics
from pipeit_ros.ros import messages

WINDOW_S = 2.0


class Monitor(Node):
    def __init__(self, namespace='', graph_id='', **kwargs):
        if namespace:
            kwargs['namespace'] = namespace
        super().__init__('pipeit_bringup', **kwargs)
        self.graph_id = graph_id
        self._prefix = messages.diagnostic_prefix(self.get_namespace())
        self.stalled = {}               # container -> message, while the planner reports it stalled
        self.stall_events = []          # (container, message) each time one became stalled
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.create_subscription(messages.classification_type(), topics.CLASSIFICATION,
                                 lambda m: self._on_result(m, messages.classification_dict), qos)
        self.create_subscription(messages.detections_type(), topics.DETECTIONS,
                                 lambda m: self._on_result(m, messages.detections_dict), qos)
        self.create_subscription(String, topics.PLAN, self._on_plan, messages.PLAN_QOS)
        self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.recent = deque()          # (monotonic receipt time, latency ms) inside WINDOW_S
        self.latencies = []
        self.first = self.last = None
        self.frames = 0
        self.generations = []
        self.plan_spec = ''
        self.stages = {}

    def _on_result(self, msg, as_dict):
        now, wall = time.monotonic(), time.time()
        try:
            d = as_dict(msg)
            stamp = d['header']['stamp']
            latency = results.end_to_end_latency_ms(wall, stamp['sec'] + stamp['nanosec'] * 1e-9, d.get('latency_ms'))
        except (ValueError, KeyError, TypeError):
            latency = float('nan')
        self.frames += 1
        self.first = self.first or now
        self.last = now
        self.recent.append((now, latency))
        self.latencies.append(latency)
        while self.recent and self.recent[0][0] < now - WINDOW_S:
            self.recent.popleft()

    def _on_plan(self, msg):
        try:
            data = json.loads(msg.data)
            if self.graph_id and data.get('graph', '') != self.graph_id:
                return                  # another graph's planner (it exits: pipeit_ros.ros.planner_node)
            generation = int(data['generation'])
            stages = data['plan']['stages']
        except (ValueError, KeyError, TypeError):
            return
        if generation not in self.generations:
            self.generations.append(generation)
        self.plan_spec = ','.join(f'{s["first"]}-{s["last"]}@{s["cluster"]}' for s in stages)

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if not status.name.startswith(self._prefix + 'pipeit/'):
                continue                # another graph's
            values = {kv.key: kv.value for kv in status.values}
            if '/stage_' in status.name:
                self.stages[status.name] = values
            elif 'stalled' in values:   # the planner's verdict on one container
                container = status.name.rsplit('/', 1)[-1]
                if values['stalled'] == 'true':
                    if container not in self.stalled:
                        self.stall_events.append((container, status.message))
                    self.stalled[container] = status.message
                else:
                    self.stalled.pop(container, None)

    def line(self):
        """One status line: frames/s and latency over the last seconds, the plan generation."""
        now = time.monotonic()
        while self.recent and self.recent[0][0] < now - WINDOW_S:
            self.recent.popleft()
        fps = len(self.recent) / WINDOW_S
        lat = np.array([ms for _, ms in self.recent if ms == ms])
        latency = (f'latency p50 {np.percentile(lat, 50):.1f} ms p99 {np.percentile(lat, 99):.1f} ms'
                   if lat.size else 'latency -')
        gen = f'plan gen {self.generations[-1]} {self.plan_spec}' if self.generations else 'no plan yet'
        stalled = ''.join(f'  {name} {why}' for name, why in sorted(self.stalled.items()))
        return f'{fps:6.1f} frames/s  {latency}  {self.frames} results  {gen}{stalled}'

    def summary(self):
        lat = np.array([ms for ms in self.latencies if ms == ms])
        span = (self.last - self.first) if self.frames > 1 else 0.0
        return {
            'frames': self.frames,
            'fps': (self.frames - 1) / span if span > 0 else 0.0,
            'latency_p50_ms': float(np.percentile(lat, 50)) if lat.size else None,
            'latency_p99_ms': float(np.percentile(lat, 99)) if lat.size else None,
            'generations': list(self.generations),
            'plan': self.plan_spec,
            'stalled': [{'container': name, 'message': why} for name, why in self.stall_events],
        }
