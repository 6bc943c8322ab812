"""`pipeit_container`: one process per CPU cluster hosting that cluster's pipeline stages.

The whole process is pinned to its cluster's CPUs at start (every thread, DDS's included); the engine's
workers then pin themselves to their stage's CPUs inside it. ``cluster: '*'`` (single-container layout) hosts
every stage in one process, so every hand-over between stages is an in-process, zero-copy one.

The control node ``pipeit_container`` reads ``pipeit/plan`` and drives the re-plan handshake of
pipeit_ros.app.handoff on ``pipeit/status``, asking pipeit_ros.app.generations when the new generation takes over
from the old one; the stages run in :class:`~pipeit_ros.ros.run.RunHost` objects, each stage node on a thread of
its own. Parameters are read at start, except ``top_k`` and ``labels_file``.

A container the running plan gives no stage sleeps after ``sleep_after_s`` (pipeit_ros.ros.sleeping): its control
node ends, and :func:`main` exec's the sleeper, which exec's this container again when the planner wakes it.

Embedding (tests, benchmarks): ``with Container(context=ctx, parameters={'cluster': '*'}) as c: ...`` runs one
container inside the calling process, its control node spinning on a background thread.
"""
from collections import Counter
from dataclasses import fields
import faulthandler
import json
import os
import signal
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String

from pipeit_ros.app import generations, handoff
from pipeit_ros.app.container_config import (
    DESCRIPTIONS,
    ContainerSettings,
    cluster_cpus,
    pin_process,
    runtime_refusal,
)
from pipeit_ros.app.dds_profile import dds_note
from pipeit_ros.app.ledger import FrameLedger
from pipeit_ros.app.results import load_labels
from pipeit_ros.app.wire import diagnostics, topics
from pipeit_ros.app.wire.plan_msg import decode_plan_message
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import threads as cpuload
from pipeit_ros.ros import composition, messages, sleeping
from pipeit_ros.ros.node_main import run_node
from pipeit_ros.ros.outlets import Outlets
from pipeit_ros.ros.stage_node import ImageInput, NodeThread

TICK_S = 0.1            # state machine step (each control-node wake-up costs ~0.5 ms CPU)
HEARTBEAT_S = 1.0       # status period; a peer silent for handoff.STALE_S is gone
WARN_EVERY_S = 10.0
LEDGER_PERIOD_S = 1.0


class ContainerNode(Node):
    def __init__(self, *, context=None, node_name='pipeit_container', namespace='', parameters=None):
        overrides = [Parameter(k, value=v) for k, v in (parameters or {}).items()]
        super().__init__(node_name, namespace=namespace, context=context, parameter_overrides=overrides)
        values = {}
        for f in fields(ContainerSettings):
            d = ParameterDescriptor(description=DESCRIPTIONS[f.name])
            default = Parameter.Type.DOUBLE_ARRAY if f.name in ('mean', 'std') else f.default
            try:
                values[f.name] = self.declare_parameter(f.name, default, d).value
            except InvalidParameterTypeException as exc:
                raise PipeitError(f'parameter {f.name}: {exc} (write doubles as 1.0, not 1)') from None
        self.settings = ContainerSettings(**values).check()
        self.cluster = self.settings.cluster
        self.name = self.get_name()
        self.labels = self._load_labels(self.settings.labels_file)
        self.cpus = cluster_cpus(self.settings)
        self.msg = None             # PlanMessage of the generation this container works towards
        self._latest = None         # newest PlanMessage received
        self.runs, self.old_runs = [], []
        self.outlets = Outlets(self)     # result and tensor publishers, which outlive the runs
        self.ledger = FrameLedger()      # every frame in, out or dropped with a reason (pipeit_ros.app.ledger)
        self._camera = Counter()         # camera inputs closed so far: 'received' and drops by reason
        self.built = False
        self.state = 'idle'
        self.error = None
        self.image_input = None
        self._input_thread = None
        self.gens = generations.Generations((self.name, os.getpid()), self.get_logger().warning, self.warn_once)
        self._next_seq = 0          # seq of the next camera frame a head run here admits
        self._warned = {}
        self._graphs = {}
        self._published_stamp = None
        self._done_before = 0           # frames finished by runs already closed (status 'done')
        self.graph_id = self.settings.graph_id
        self.may_sleep = False          # set by main(): only a process of its own can become the sleeper
        self.sleep_socket = None        # bound once this container goes to sleep (main() then exec's the sleeper)
        self.sleep_status = None        # the status the sleeper serves
        self.idle_since = None          # when this container last began hosting nothing (ros.sleeping)
        self._status_pub = self.create_publisher(String, topics.STATUS, messages.STATUS_QOS)
        self._diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_timer(LEDGER_PERIOD_S, self.publish_ledger)
        self.create_subscription(String, topics.STATUS, self._on_status, messages.STATUS_QOS)
        self.create_subscription(String, topics.PLAN, self._on_plan, messages.PLAN_QOS)
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._parameters_set)
        self.create_timer(TICK_S, self.tick)
        self.create_timer(HEARTBEAT_S, self.publish_status)
        composition.serve(self, lambda: list(self.runs))

    # -- set-up ---------------------------------------------------------------------------------------------
    @staticmethod
    def _load_labels(path):
        return load_labels(path) if path else None

    @staticmethod
    def _check_parameters(params):
        reason = next(filter(None, (runtime_refusal(p.name, p.value) for p in params)), None)
        return SetParametersResult(successful=reason is None, reason=reason or '')

    def _parameters_set(self, params):
        for p in params:
            if p.name == 'top_k':
                self.settings.top_k = int(p.value)
            elif p.name == 'labels_file':
                self.settings.labels_file = p.value
                self.labels = self._load_labels(p.value)

    # -- helpers the runs call ------------------------------------------------------------------------------
    def next_frame_number(self):
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        return seq

    def warn_once(self, kind, text):
        """Log ``text`` at most once per WARN_EVERY_S for each ``kind`` (bad frames come in floods)."""
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[kind] = now
            self.get_logger().warning(f'{text} (logged once per {WARN_EVERY_S:.0f} s)')

    # -- status ---------------------------------------------------------------------------------------------
    def status_dict(self):
        stamp = self.image_input.first_stamp if self.image_input is not None else None
        runs = self.runs + self.old_runs
        waiting = sum(len(r.inbox) + max(0, r.admitted - r.published) for r in runs if not r.is_head)
        waiting += len(self.image_input.inbox) if self.image_input is not None else 0
        waiting += sum(max(0, r.admitted - r.published) for r in runs if r.is_head)
        return {'container': self.name, 'cluster': self.cluster, 'generation': self.msg.generation if self.msg
                else 0, 'state': self.state, 'stages': [i for r in self.runs for i in r.indices],
                'pid': os.getpid(), 'graph': self.graph_id, 'cpus': list(self.cpus),
                'done': self._done_before + sum(r.published for r in runs), 'waiting': waiting,
                'first_stamp': None if stamp is None else {'sec': stamp.sec, 'nanosec': stamp.nanosec},
                'handoff': self.gens.handed_over}

    def status_acked(self, seconds):
        """Wait up to ``seconds`` for every reader of pipeit/status to acknowledge what was sent."""
        return self._status_pub.wait_for_all_acked(Duration(seconds=seconds))

    def publish_status(self):
        d = self.status_dict()
        self.gens.heard(handoff.PeerStatus.from_dict(d, time.monotonic()))
        self._status_pub.publish(String(data=json.dumps(d)))

    def ledger_snapshot(self):
        """The ledger with the live runs' engine drops (booked when a run closes) and the camera input's counts."""
        live = {'queue': sum(r.pipeline.dropped for r in self.runs + self.old_runs)}
        snap = self.ledger.snapshot(live)
        camera = Counter(self._camera)
        if self.image_input is not None:
            camera.update(self.image_input.drops)
            camera['received'] += self.image_input.received
        snap['camera_received'] = camera.pop('received', 0)
        snap['camera_dropped'] = dict(camera)
        return snap

    def publish_ledger(self):
        values = diagnostics.ledger_values(self.ledger_snapshot())
        status = (messages.LEVEL['ok'], f'{self.name}/ledger', 'frames in, out and dropped', self.cluster, values)
        self._diagnostics.publish(messages.diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def _set_state(self, state):
        if state != self.state:
            self.state = state
            if state == 'running':
                self.gens.started(self.msg.generation)
            self.publish_status()

    def _on_status(self, msg):
        try:
            d = json.loads(msg.data)
            if self.graph_id and d.get('graph', '') != self.graph_id:
                return                  # a container of another graph (pipeit_ros.ros.planner_node refuses it)
            p = handoff.PeerStatus.from_dict(d, time.monotonic())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.warn_once('status', f'ignoring a malformed pipeit/status message: {exc}')
            return
        self.gens.heard(p)

    # -- plans ----------------------------------------------------------------------------------------------
    def _on_plan(self, msg):
        try:
            plan_msg = decode_plan_message(msg.data)
            if self.graph_id and plan_msg.graph != self.graph_id:
                self.warn_once('foreign_plan', f'ignoring a plan of graph {plan_msg.graph or "?"!r}: this container '
                                               f'belongs to graph {self.graph_id!r} (another pipeit graph in '
                                               f'namespace {self.get_namespace()!r}?)')
                return
            clusters = {c['name'] for c in plan_msg.topology['clusters']}
            if self.cluster != handoff.ALL and self.cluster not in clusters:
                raise PipeitError(f'cluster {self.cluster!r} is not in the plan\'s topology '
                                  f'({", ".join(sorted(clusters))})')
        except (PipeitError, KeyError, TypeError) as exc:
            self.get_logger().error(f'ignoring plan message: {exc}')
            return
        self._latest = plan_msg

    def _begin(self, msg):
        """Start moving to generation ``msg.generation``: the current runs drain, the camera input moves."""
        self.old_runs += self.runs
        self.runs, self.built, self.error = [], False, None
        self.msg = msg
        head_here = generations.hosts_head(msg.plan, self.cluster)
        tail_here = generations.hosts_tail(msg.plan, self.cluster)
        for run in self.old_runs:
            run.results_move = not tail_here
            if run.is_head and head_here:
                run.request_cut()
            elif not run.is_head:
                run.retire()
            # an old head whose camera input moves to another container keeps taking frames until that container
            # says where its own begin (the hand-off cut): holding them instead lost those the new input had
            # not subscribed in time for; the new head skips exactly the stamps this one took
        if head_here and self.image_input is None:
            s = self.settings
            self.image_input = ImageInput(context=self.context, namespace=self.get_namespace(),
                                          topic=s.image_topic, qos_name=s.image_qos, policy=s.policy,
                                          queue_size=s.queue_size)
            self._input_thread = self.image_input.pump().start()
        self.gens.begin()
        # the status below speaks of the new generation: 'running' would be the old one's, and would tell the
        # planner and the peers that this generation started (a plan superseding it came out before its head
        # took a frame, and the frames waiting for that head were taken by nobody)
        self.state = 'draining' if self.old_runs else 'idle'
        runs = handoff.hosted_runs(msg.plan, self.cluster)
        self.get_logger().info(f'generation {msg.generation} ({msg.reason}): plan {msg.plan.to_spec()}; '
                               f'hosting stages {runs or "none"}')
        self.publish_status()

    def _handoff(self):
        """Old head runs whose cut waits for the new head's first frame stamp."""
        for run in self.old_runs:
            if run.is_head and not run.cut_requested:
                cut = self.gens.cut(self.msg, run.idle_s(), self.settings.replan_timeout_s)
                if cut is not None:
                    run.request_cut(cut)

    def _graph(self, msg):
        from pipeit_ros.model import graph  # noqa: PLC0415 - onnx and onnxruntime only once a plan gives this
        # container a stage; one hosting none holds ~20 MiB less (docs/memory.md, "An idle container")
        key = (msg.model_path, msg.model_hash)
        if key not in self._graphs:
            g = graph.load(msg.model_path, tuple(msg.preprocess['input_shape']),
                           max_cut_tensors=None)   # run whatever cut the planner chose
            if msg.model_hash and g.model_hash != msg.model_hash:
                raise PipeitError(f'{msg.model_path}: model hash {g.model_hash} differs from the plan\'s '
                                  f'{msg.model_hash} (the file changed?)')
            self._graphs = {key: g}
        return self._graphs[key]

    def _build(self, hosted):
        # the engine, onnxruntime and OpenCV load here, with the first stage this container hosts (see _graph)
        from pipeit_ros.app.preprocess import PreprocessConfig, Preprocessor  # noqa: PLC0415 - see above
        from pipeit_ros.ros.run import RunHost  # noqa: PLC0415 - see above
        msg, s = self.msg, self.settings
        try:
            graph = self._graph(msg)
            pre = None
            if hosted[0][0] == 0:
                pre = Preprocessor(PreprocessConfig.from_dict(msg.preprocess, mean=s.mean, std=s.std,
                                                              interpolation=s.interpolation))
            for indices in hosted:
                head = indices[0] == 0
                self.runs.append(RunHost(self, msg, graph, indices, preprocessor=pre,
                                         image_inbox=self.image_input.inbox if head else None,
                                         evicted=self.image_input.evicted if head else None).start())
        except Exception as exc:  # noqa: BLE001 - a plan we cannot run leaves the container alive and saying why
            self.error = exc
            self.get_logger().error(f'generation {msg.generation}: cannot build stages {hosted}: '
                                    f'{type(exc).__name__}: {exc}')
            for run in self.runs:
                run.close()
                if run.out_pub is not None:
                    self.outlets.discard(run.out_pub)
            self.runs = []
        cpuload.name_threads()      # stage_<i>.<r>, feeder, output, pump.*, spin.* in top -H and rosbench
        self.built = True

    # -- the state machine (control thread) -----------------------------------------------------------------
    def tick(self):
        latest = self._latest
        if self.runs or self.old_runs or self.image_input is not None or not self.built or latest is not self.msg:
            self.idle_since = None
        if self.gens.move_on(self.msg, latest, self.error is not None, self.settings.replan_timeout_s):
            self._begin(latest)
        for run in [r for r in self.old_runs if r.finished.is_set()]:
            if run.is_head and self.image_input is not None:
                self.gens.book_unstarted(self.ledger, run.gen, run.went, run.cut_stamp, self.image_input.inbox,
                                         self.image_input.evicted)
            if run.is_head and run.last_stamp_ns is not None:
                self.gens.head_ended(self.msg.generation, run.first_stamp_ns, run.last_stamp_ns, run.last_seq)
            run.close()
            if run not in self.old_runs:
                continue                # shutdown() took the runs meanwhile (a test's stop during a tick)
            self.old_runs.remove(run)
            self._done_before += run.published
            if run.out_pub is not None:
                self.outlets.ended(run.out_pub)
        self.outlets.close_acknowledged()
        if self.image_input is not None and not any(r.is_head for r in self.old_runs) and \
                (self.msg is None or not generations.hosts_head(self.msg.plan, self.cluster)):
            self._close_input()
        if self.image_input is not None and self.image_input.first_stamp != self._published_stamp:
            self._published_stamp = self.image_input.first_stamp
            self.publish_status()
        if self.old_runs:
            self._handoff()
            return self._set_state('draining')
        if self.msg is None:
            self.gens.wait_note('no_plan', 'no plan on pipeit/plan yet: is pipeit_planner running on this ROS '
                                           'domain and DDS transport?')
            return None
        gen = self.msg.generation
        if not self.built:
            if self.gens.may_build(gen):
                hosted = handoff.hosted_runs(self.msg.plan, self.cluster)
                if hosted:
                    self._build(hosted)
                else:
                    self.built = True
            return self._set_state('idle')
        if not self.runs:
            return sleeping.sleep_when_idle(self)
        if self.state == 'running':
            return None
        unmatched = [r for r in self.runs if not r.matched()]
        if unmatched:
            self.gens.wait_note('unmatched', lambda: f'generation {gen}: no subscriber on '
                                f'{", ".join(r.out_pub.topic_name for r in unmatched)} yet: is the next stage\'s '
                                f'container running on this ROS domain and DDS transport?')
            return None
        self._set_state('ready')
        head = next((r for r in self.runs if r.is_head), None)
        if head is None:
            if self.gens.running(gen):
                self._set_state('running')
            else:
                self.gens.wait_note('waiting', lambda: f'generation {gen}: waiting for the head container to '
                                                       f'run; heard from: {self.gens.heard_from() or "nobody"}')
            return None
        why, skip, first_seq = self.gens.admit(gen, self.msg.plan)
        if not why:
            self._next_seq = max(self._next_seq, first_seq)
            head.go(skip)
            self._set_state('running')
        else:
            self.gens.wait_note('waiting', f'generation {gen}: frames wait: {why}')
        return None

    def _close_input(self):
        self._camera.update(self.image_input.drops)
        self._camera['received'] += self.image_input.received
        self._camera['left_behind'] += len(self.image_input.inbox)   # the new head container holds them
        self.image_input.close()
        self._input_thread.stop()
        self.image_input = self._input_thread = None

    def shutdown(self):
        """Stop every run and the camera input (frames still inside are abandoned)."""
        if self.image_input is not None:
            self.image_input.close()
        for run in self.old_runs + self.runs:
            run.close()
        self.old_runs, self.runs = [], []
        self.outlets.close_acknowledged(force=True)
        if self.image_input is not None:
            self._close_input()


class Container:
    """One container: its control node spinning on a background thread (:meth:`start`) or on the caller's
    (:meth:`spin`), the stage nodes each on their own."""

    def __init__(self, *, context=None, node_name=None, namespace='', parameters=None, pin=False):
        parameters = dict(parameters or {})
        cluster = parameters.get('cluster') or handoff.ALL
        name = node_name or ('pipeit_container' if cluster == handoff.ALL else f'pipeit_container_{cluster}')
        self.node = ContainerNode(context=context, node_name=name, namespace=namespace, parameters=parameters)
        if pin and self.node.settings.pin:
            pin_process(self.node.cpus)
        self._spinner = NodeThread(self.node, name=f'spin.{self.node.name}')

    def start(self):
        """Spin the control node on a background thread; returns self."""
        self._spinner.start()
        return self

    def spin(self):
        """Spin the control node on the calling thread until ROS shuts down (SIGINT/SIGTERM) or stop()."""
        self._spinner.spin_here()

    def stop(self):
        """Stop the control node, then the runs and the camera input, then destroy the control node."""
        if self._spinner is None:
            return
        self._spinner.halt()
        self.node.shutdown()
        self._spinner.stop()
        self._spinner = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def _build():
    container = Container(pin=True)
    container.node.may_sleep = True
    container.node.get_logger().info(f'cluster {container.node.cluster} on CPUs {list(container.node.cpus)}')
    container.node.get_logger().info(dds_note())
    return container


def main(args=None):
    """Console script ``pipeit_container``; exit codes as :mod:`pipeit_ros.ros.node_main` says.
    ``kill -USR1`` prints every thread's Python stack to stderr (a stalled container says where it waits)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    built = []

    def build():
        built.append(_build())
        return built[-1]
    # the control node's timer wakes the wait every TICK_S, so a signal's KeyboardInterrupt runs promptly
    code = run_node('pipeit_container', build, Container.spin, Container.stop, args)
    if code == 0 and built:
        sleeping.exec_sleeper(built[0].node)      # returns only where the container did not go to sleep
    return code


if __name__ == '__main__':
    sys.exit(main())
