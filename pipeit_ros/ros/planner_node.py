"""`pipeit_planner`: plans the pipeline and publishes the plan, latched, on ``pipeit/plan``.

Parameters (see ``pipeit_ros.app.planner_state.PARAMS``) are checked in the on-set callback by planning with them:
a change is accepted only when a plan can be made with it (on the memoised model, topology and cost table, so
usually only the DSE runs; a new model or topology is loaded, and profiled when that is the source, inside the
callback) and every running container (heard on ``pipeit/status``) can host that plan. A refused change is
answered with the reason and leaves the parameters and the running plan as they were; the post-set callback
publishes the plan the check made. Planning
(loading the model, profiling or predicting, the DSE) runs on one worker thread of this node, never on the
executor thread, so the parameter services and /diagnostics keep being served while it works: requests
coalesce (the latest configuration wins, a parameter re-plan supersedes a pending adaptation), and the worker
publishes when done. Containers the plan gives no stage sleep (pipeit_ros.app.sleeper): the planner asks their
sleepers for their status every WATCH_PERIOD_S, counts them as running containers, and wakes those a plan
puts stages on. With ``adapt`` on, /diagnostics stage times feed a drift detector
(``pipeit_ros.app.adapt``); when it fires the worker re-plans from the measured times (reason ``adapt``).
"""
import json
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from std_msgs.msg import String

from pipeit_ros.app import adapt, handoff, sleeper
from pipeit_ros.app import planner_state as planner_core
from pipeit_ros.app.lifecycle import clean_leftovers
from pipeit_ros.app.stall import StallWatch
from pipeit_ros.app.wire import diagnostics as keys
from pipeit_ros.app.wire import topics
from pipeit_ros.app.wire.plan_msg import (
    decode_plan_message,
    default_preprocess,
    describe_graph,
    encode_plan_message,
    older_graph,
)
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import memory as procmem
from pipeit_ros.ros import footprint, messages
from pipeit_ros.ros.node_main import CONFIG, exit_code_of, run_node

STOP_WAIT_S = 1.0       # a stopping planner waits this long for a plan in progress, then abandons it
WATCH_PERIOD_S = 1.0    # container verdicts on /diagnostics; sleeping containers heard, woken where needed


def descriptor(spec):
    d = ParameterDescriptor(description=spec.description)
    if spec.choices:
        d.additional_constraints = 'one of: ' + planner_core.choices_text(spec.choices)
    if isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=spec.low, to_value=spec.high, step=0.0)]
    elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
        d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
    return d


class PlannerNode(Node):
    def __init__(self, **kwargs):
        super().__init__('pipeit_planner', **kwargs)
        for spec in planner_core.PARAMS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        self.graph_id = self.declare_parameter('graph_id', '', ParameterDescriptor(
            description='this graph\'s id (set by the launch file / bringup): containers take plans only from '
                        'their own graph\'s planner', read_only=True)).value
        self.config = planner_core.PlannerConfig.from_params(
            {p.name: self.get_parameter(p.name).value for p in planner_core.PARAMS})
        self.inputs = planner_core.PlanInputs(log=self.get_logger().info, layout=self._layout)
        self._container_memory = None  # footprint.ContainerMemory (idle, hosting) of this machine, once measured
        self.current = None            # PlanResult being published
        self.generation = 0
        self.exit_code = 0             # non-zero when the first plan could not be made (node_main's codes)
        self.exit_reason = None        # and why, in one line
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._job = None               # (kind, reason, config, extra) waiting for the worker: extra is the
        #                                drift of an 'adapt' job, the checked PlanResult of a 'publish' one
        self._busy = False
        self._stopping = False
        self._detector = adapt.DriftDetector(self.config.adapt_threshold, self.config.adapt_window_s)
        self._validated = None         # (config, PlanResult) the last accepted parameter change planned
        self._containers = {}          # (container, pid) -> handoff.PeerStatus from pipeit/status
        self._publisher = self.create_publisher(String, topics.PLAN, messages.PLAN_QOS)
        self._diag_prefix = messages.diagnostic_prefix(self.get_namespace())
        self._diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, 10)
        self.create_subscription(String, topics.PLAN, self._on_plan, messages.PLAN_QOS)
        self._stall = StallWatch(self.config.stall_timeout_s)
        self._stalled = set()
        self.create_subscription(String, topics.STATUS, self._on_status, messages.STATUS_QOS)
        self.create_timer(WATCH_PERIOD_S, self._watch_containers)
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._parameters_set)
        self._worker = threading.Thread(target=self._work, name='pipeit_planner_worker', daemon=True)

    def start(self):
        """Check the start-up parameters (not seen by the on-set callback) and queue the first plan."""
        planner_core.check_config(self.config, self.inputs)
        self._worker.start()
        self._request('plan', 'start', self.config)

    # -- one graph per namespace ----------------------------------------------------------------------------
    def _on_plan(self, msg):
        """A plan of another graph on our topic: another graph runs in our namespace. The newer one refuses to
        run (exit 2, naming the older); plans come only from live planners, unlike discovery's endpoints of a
        killed one, which linger for the lease duration."""
        try:
            other = decode_plan_message(msg.data).graph
        except PipeitError:
            return
        if not other or not self.graph_id or other == self.graph_id or not older_graph(other, self.graph_id):
            return
        message = (f'another pipeit graph runs in namespace {self.get_namespace()!r}: graph {other!r} '
                   f'({describe_graph(other)}) publishes {self._publisher.topic_name}; stop it, or start this '
                   f'graph in another namespace')
        self.get_logger().fatal(message)
        self.exit_code = CONFIG
        self.exit_reason = message
        self.context.try_shutdown()

    # -- the containers: which run (parameter checks), which stalled -----------------------------------------
    def _on_status(self, msg):
        try:
            self._heard(json.loads(msg.data))
        except ValueError:
            return                     # the containers warn about malformed status messages

    def _heard(self, d):
        """A container's status dict, from pipeit/status or from its sleeper."""
        now = time.monotonic()
        try:
            if d.get('graph', '') != self.graph_id:
                return                 # another graph's container
            peer = handoff.PeerStatus.from_dict(d, now)
            self._stall.update(d, now)
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        self._containers[peer.key] = peer

    def _hear_sleepers(self):
        """Ask the sleepers of the plan's clusters that no container is heard awake for (its last status may be lost
        with the node that sent it) for their status."""
        current = self.current
        if not self.graph_id or current is None:
            return
        awake = {p.cluster for p in self.running_containers() if p.state != sleeper.SLEEPING}
        for cluster in [c.name for c in current.topology.clusters if c.name not in awake]:
            d = sleeper.query(sleeper.socket_name(self.graph_id, cluster))
            if isinstance(d, dict):
                self._heard(d)

    def _sleepers(self):
        """Hear the sleeping containers, and wake those the plan puts stages on."""
        self._hear_sleepers()
        if self.current is not None:
            self._wake_hosts(self.current.plan)

    def _wake_hosts(self, plan):
        hosts = handoff.plan_clusters(plan)
        for p in self.running_containers():
            if p.state == sleeper.SLEEPING and p.cluster in hosts and \
                    sleeper.wake(sleeper.socket_name(self.graph_id, p.cluster)):
                self._containers.pop(p.key, None)      # it comes back on pipeit/status
                self.get_logger().info(f'woke container {p.container} (pid {p.pid}): the plan puts stages on '
                                       f'cluster {p.cluster}')

    def _watch_containers(self):
        self._sleepers()
        self._stall.timeout_s = self.config.stall_timeout_s
        verdicts = self._stall.verdicts(time.monotonic())
        if not verdicts:
            return
        for v in verdicts:
            if v.stalled and v.container not in self._stalled:
                self.get_logger().warning(f'container {v.container} {v.message}')
            elif not v.stalled and v.container in self._stalled:
                self.get_logger().info(f'container {v.container} runs again')
        self._stalled = {v.container for v in verdicts if v.stalled}
        pids = {p.container: p.pid for p in self.running_containers()}

        def memory(name):   # the container's process, read here: the planner runs on the same machine
            use = procmem.usage(pids[name]) if pids.get(name) else procmem.MemoryUsage()
            return [(keys.PROCESS_PID, str(pids.get(name, 0))),
                    (keys.PROCESS_RSS_MB, f'{use.rss / procmem.MIB:.1f}'),
                    (keys.PROCESS_PSS_MB, f'{use.pss / procmem.MIB:.1f}')]
        self._diagnostics.publish(messages.diagnostic_array(
            self.get_clock().now().to_msg(),
            [(messages.LEVEL['error' if v.stalled else 'ok'], f'{self._diag_prefix}pipeit/{v.container}',
              v.message, v.cluster, [('stalled', str(v.stalled).lower()),
                                     ('stall_timeout_s', f'{self.config.stall_timeout_s:g}')] + memory(v.container))
             for v in verdicts]))

    def stop(self, timeout=STOP_WAIT_S):
        """Stop the worker; False when it is still busy with a plan after ``timeout``."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=timeout)
        return not self._worker.is_alive()

    def idle(self):
        """True when no plan is being made or waiting (tests wait on this)."""
        with self._lock:
            return self._job is None and not self._busy

    # -- parameters ---------------------------------------------------------------------------------------
    def _check_parameters(self, params):
        values = {p.name: p.value for p in params if p.name in planner_core.PARAM_SPECS}
        for name, value in values.items():
            reason = planner_core.check_value(name, value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        config = self.config.updated(values)
        try:
            planner_core.check_config(config, self.inputs)
            if any(planner_core.PARAM_SPECS[n].replans for n in values):
                result = planner_core.make_plan(config, self.inputs)
                self._hear_sleepers()       # a container gone to sleep since the last watch counts
                handoff.check_runnable(result.plan, self.running_containers())
                self._validated = (config, result)
        except PipeitError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a parameter service must answer, never raise
            return SetParametersResult(successful=False, reason=f'{type(exc).__name__}: {exc}')
        return SetParametersResult(successful=True)

    def _layout(self, topology, measure, containers):
        """(containers, bytes of one hosting no stage, bytes a run of stages adds to its container) the plan's
        memory is summed over (``CostTable.for_processes``): the containers heard, else the layout's (one per
        cluster, or one with ``containers`` 'one'). Those figures are measured once per machine
        (pipeit_ros.ros.footprint), when a budget needs them; None while they are not known."""
        if self._container_memory is None:
            self._container_memory = (footprint.container_memory(self.get_logger().info) if measure
                                      else footprint.cached_memory())
        if self._container_memory is None:
            return None
        names = {p.container for p in self.running_containers()}
        fallback = 1 if containers == 'one' else len(topology.clusters)
        return (len(names) or fallback, *self._container_memory.figures(asleep=False))   # the peak: all awake

    def running_containers(self):
        """Containers heard on pipeit/status within handoff's staleness bound (a dead one does not count)."""
        return handoff.live_peers(dict(self._containers), time.monotonic(), handoff.STALE_S)

    def _parameters_set(self, params):
        values = {p.name: p.value for p in params if p.name in planner_core.PARAM_SPECS}
        if not values:
            return
        self.config = self.config.updated(values)
        with self._lock:
            self._detector.configure(self.config.adapt_threshold, self.config.adapt_window_s)
        replanning = [n for n in values if planner_core.PARAM_SPECS[n].replans]
        validated, self._validated = self._validated, None
        if replanning and validated is not None and validated[0] == self.config:
            self._request('publish', f'param:{replanning[0]}', self.config, validated[1])
        elif replanning:
            self._request('plan', f'param:{replanning[0]}', self.config)
        elif self.config.adapt and self.current is not None and self.current.cost is None:
            self._request('prepare', 'adapt', self.config)   # a forced plan needs its cost table to adapt

    # -- adaptation -----------------------------------------------------------------------------------------
    def _on_diagnostics(self, msg):
        if not self.config.adapt:
            return
        now = time.monotonic()
        for status in msg.status:
            if not status.name.startswith(self._diag_prefix + 'pipeit/stage_'):
                continue                # another graph's stage
            report = adapt.parse_stage_status(status.name, {kv.key: kv.value for kv in status.values},
                                              status.hardware_id)
            if report is None:
                continue
            with self._lock:
                drift = self._detector.update(report, now)
                pending = self._job is not None or self._busy
            if drift is not None and not pending:
                self.get_logger().info(
                    f'adapt: stage {drift.stage} runs at {drift.ratio:.2f}x its prediction since '
                    f'{now - drift.since:.1f} s (threshold {self.config.adapt_threshold:g}): re-planning')
                self._request('adapt', 'adapt', self.config, drift)

    # -- worker -------------------------------------------------------------------------------------------
    def _request(self, kind, reason, config, extra=None):
        with self._lock:
            if self._job is not None and self._job[0] in ('plan', 'publish') and kind not in ('plan', 'publish'):
                return                 # a parameter re-plan is queued already; it supersedes this
            if self._job is not None and self._job[0] in ('plan', 'publish'):
                self.get_logger().info(f'{self._job[1]}: superseded by {reason} before it was published')
            self._job = (kind, reason, config, extra)
            self._wake.notify_all()

    def _work(self):
        while True:
            with self._lock:
                while self._job is None and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                job, self._job = self._job, None
                self._busy = True
            try:
                self._do(*job)
            finally:
                with self._lock:
                    self._busy = False

    def _do(self, kind, reason, config, extra):
        log = self.get_logger()
        t0 = time.perf_counter()
        if kind == 'publish':          # planned (and checked) by the on-set callback
            return self._publish(extra, reason, 0.0)
        drift = extra
        try:
            if kind == 'plan':
                result = planner_core.make_plan(config, self.inputs)
            elif kind == 'prepare':
                result = planner_core.make_plan(config, self.inputs)
                with self._lock:
                    if self.current is not None and adapt.same_layout(result.plan, self.current.plan):
                        self.current = result
                        self._detector.rebase(result.predicted_stage_ms)
                return
            else:
                if drift.generation != self.generation:
                    return             # a newer plan came out meanwhile; its own drift will tell
                result = planner_core.adapt_plan(self.current, config, drift, self.inputs)
                if adapt.same_layout(result.plan, self.current.plan):
                    log.info('adapt: the plan stays; predictions updated to the measured times')
                    with self._lock:
                        self.current = result
                        self._detector.rebase(result.predicted_stage_ms)
                    return
        except Exception as exc:  # noqa: BLE001 - keep the old plan running, say why
            message = str(exc) if isinstance(exc, PipeitError) else f'{type(exc).__name__}: {exc}'
            if self.current is None:
                log.fatal(f'cannot make the first plan: {message}')
                self.exit_code = exit_code_of(exc)
                self.exit_reason = f'cannot make the first plan: {message}'
                self.context.try_shutdown()
            else:
                log.error(f'{reason}: planning failed, generation {self.generation} stays: {message}')
            return
        self._publish(result, reason, time.perf_counter() - t0)

    def _superseded_while_starting(self, reason):
        """Hold a new plan until the running generation has started in the containers (handoff.START_WAIT_S at
        most): plans that come faster than a generation starts are coalesced, the newest wins. True (and a log
        line) when a newer parameter re-plan arrived meanwhile, which replaces this one."""
        deadline = time.monotonic() + handoff.START_WAIT_S
        with self._lock:
            while not self._stopping and time.monotonic() < deadline and self.generation and \
                    not handoff.generation_started(self.generation, self.running_containers()):
                if self._job is not None and self._job[0] in ('plan', 'publish'):
                    self.get_logger().info(f'{reason}: superseded by {self._job[1]} before generation '
                                           f'{self.generation} started; not published')
                    return True
                self._wake.wait(0.05)
        return False

    def _publish(self, result, reason, seconds):
        if self._superseded_while_starting(reason):
            return
        with self._lock:
            self.generation += 1
            generation = self.generation
            self.current = result
            self._detector.start(generation, result.predicted_stage_ms)
        graph = result.graph
        text = encode_plan_message(result.plan, generation=generation, reason=reason, model_path=graph.path,
                                   model_hash=graph.model_hash, topology=result.topology,
                                   preprocess=result.preprocess or default_preprocess(graph.input_shape),
                                   output=result.output, predicted_stage_ms=result.predicted_stage_ms,
                                   graph=self.graph_id)
        self._publisher.publish(String(data=text))
        self._wake_hosts(result.plan)
        self.get_logger().info(f'plan generation {generation} ({reason}, {seconds:.2f} s): '
                               f'{result.plan.to_spec()}')


def _spin(node):
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    node.start()
    while rclpy.ok() and not node.exit_code:
        executor.spin_once(timeout_sec=0.1)


def _build():
    clean_leftovers(log=get_logger('pipeit_planner').info)    # under ros2 launch nobody else does it
    return PlannerNode()


def _stop(node):
    """False (the process must not run the interpreter's exit) while the worker is still inside a plan."""
    if not node.stop():
        node.get_logger().info('stopped while planning; the plan in progress is abandoned')
        return False
    node.destroy_node()
    return True


def main(args=None):
    """Console script ``pipeit_planner``; exit codes as :mod:`pipeit_ros.ros.node_main` says."""
    return run_node('pipeit_planner', _build, _spin, _stop, args)


if __name__ == '__main__':
    raise SystemExit(main())
