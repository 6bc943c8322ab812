"""One run of consecutive stages hosted by one container, for one plan generation.

A run is one engine :class:`~pipeit_ros.engine.pipeline.Pipeline` over its stages, so arrays pass between them
in-process without a copy. Its input is an inbox filled by a callback (camera frames for the head run, tensor
messages of ``pipeit/tensor/g<generation>/stage_<first>`` otherwise); a feeder thread converts (pre-processing, or
``np.frombuffer``) and submits. Its output, from the engine's output thread in frame order, is either the next
stage's tensor topic or the results (``pipeit/output``, ``pipeit/classification``).

A run ends in order: the head stops at its cut (pipeit_ros.app.handoff), any other run at the end-of-generation
marker; then the engine drains and the marker goes on downstream. Its publishers are the container's
(pipeit_ros.ros.outlets): a tail that stays in one container keeps one result writer, so DDS keeps the order; a
tail moving to another container first waits until its readers acknowledged the last results (or
RESULT_ACK_TIMEOUT_S).
"""
from collections import Counter
from dataclasses import dataclass, replace
import os
import queue
import threading
import time

from rclpy.duration import Duration

from pipeit_ros.app import handoff, results
from pipeit_ros.app.handoff import CUT_IDLE_S, CUT_NOW
from pipeit_ros.app.preprocess import PreprocessConfig, geometry
from pipeit_ros.app.wire import diagnostics as keys
from pipeit_ros.app.wire import tensor_msg as tensormsg
from pipeit_ros.engine.pipeline import Pipeline
from pipeit_ros.errors import ImageError, PipeitError, StageError
from pipeit_ros.hw import memory as procmem
from pipeit_ros.ros import messages
from pipeit_ros.ros.pump import Pump, pumped_node
from pipeit_ros.ros.stage_node import NodeThread, StageNode

RESULT_ACK_TIMEOUT_S = 2.0  # results moving to another container's publisher: the last ones go first
MATCH_TIMEOUT_S = 2.0


@dataclass(slots=True)
class FrameMeta:
    header: object          # the source image's std_msgs/Header (stamp, frame_id), passed on unchanged
    t_recv_ns: int          # wall clock when the camera frame reached the head container
    seq: int                # frame number given by the head container
    src_hw: tuple = (0, 0)  # the camera frame's height and width (detections are mapped back to it)


def make_pipeline(graph, plan, indices, **kwargs):
    """Pipeline over ``indices``, built while this thread may run on the hosted stages' CPUs: the engine checks
    them against the caller's affinity, and a stage whose replicas span two clusters (``big+little``) runs in
    the first cluster's container, whose process is pinned to that cluster only."""
    tid = 0
    before = os.sched_getaffinity(tid)
    try:
        os.sched_setaffinity(tid, before | {c for i in indices for c in plan.stages[i].cpus})
    except OSError:
        pass
    try:
        return Pipeline(graph, plan, stages=indices, **kwargs)
    finally:
        os.sched_setaffinity(tid, before)


class RunHost:
    """Stages ``indices`` of plan message ``msg`` in container ``owner``: engine, stage nodes, feeder thread.

    The head run (stage 0) takes frames from the container's camera inbox once :meth:`go` is called; other runs
    take tensors of their own generation from their input topic from the start. The container ends a run with
    :meth:`request_cut` / :meth:`hold` (head) or :meth:`retire` (others), waits for ``finished``, then
    :meth:`close`.
    """

    def __init__(self, owner, msg, graph, indices, *, preprocessor=None, image_inbox=None, evicted=None):
        self.owner, self.msg, self.indices = owner, msg, list(indices)
        self.gen = msg.generation
        n = len(msg.plan.stages)
        self.is_head, self.is_tail = self.indices[0] == 0, self.indices[-1] == n - 1
        self.cluster = owner.cluster
        self.pre = preprocessor
        p = owner.settings
        self.timeout_s = p.replan_timeout_s
        self.inbox = image_inbox if self.is_head else handoff.Inbox(p.queue_size, p.policy)
        self._evicted = evicted         # stamps of camera frames the full inbox dropped (head run, drop_oldest)
        self.drops = Counter()
        self.sent = Counter()           # result messages published per topic (tail run; none without readers)
        self.latency = results.LatencyWindow()
        self.error = None
        self.admitted = self.published = 0
        self._arrived = 0               # tensor messages of this generation taken from the input topic
        self._cut = None
        self._skip = []                 # [(first, last)] stamps an old head in another container took
        self.first_stamp_ns = None      # stamp of the first camera frame this (head) run took
        self.last_stamp_ns = None       # stamp of the last camera frame this (head) run took
        self.last_seq = None            # and the seq it gave it
        self._hold = False
        self._retiring = False
        self._closing = False
        self._close_lock = threading.Lock()
        self._closed = None             # what close() returned, once it ran
        self._go = threading.Event()
        self._cut_set = threading.Event()
        self.finished = threading.Event()
        self._last_activity = time.monotonic()
        self.results_move = False       # set when the next generation's results come from another container
        self.pipeline = make_pipeline(graph, msg.plan, self.indices, queue_size=p.queue_size, policy=p.policy,
                                      on_output=self._on_output, name=f'{owner.name}.g{self.gen}')
        ctx, ns = owner.context, owner.get_namespace()
        self.nodes = {i: StageNode(i, self, context=ctx, namespace=ns) for i in self.indices}
        self.out_pub = self.output_pub = self.class_pub = self.det_pub = None
        pumps = []
        if not self.is_head:            # pumped: a tensor costs one wait and one take (pipeit_ros.ros.pump)
            node = pumped_node(f'stage_{self.indices[0]}_input', context=ctx, namespace=ns)
            sub = node.create_subscription(messages.Image, messages.tensor_topic(self.gen, self.indices[0]),
                                           self._on_tensor, messages.tensor_qos(p.policy, p.queue_size))
            pumps.append(Pump(node, [sub]))
        if self.is_tail:
            self.output_pub, self.class_pub, self.det_pub = owner.outlets.results()
            self.spec = results.OutputSpec.from_dict(msg.output)
            self.pre_config = PreprocessConfig.from_dict(msg.preprocess)
        else:
            self.out_pub = owner.outlets.tensor(self.gen, self.indices[-1] + 1, p.policy, p.queue_size)
        self._threads = [NodeThread(node) for node in self.nodes.values()] + pumps
        self._feeder = threading.Thread(target=self._feed, name=f'{owner.name}.g{self.gen}.feeder', daemon=True)

    # -- control side (container thread) --------------------------------------------------------------------
    def start(self):
        self.pipeline.start()
        for t in self._threads:
            t.start()
        if not self.is_head:
            self._go.set()
        self._feeder.start()
        return self

    def matched(self):
        """True when the next container's subscription is matched (no frame would go to nobody)."""
        return self.out_pub is None or self.out_pub.get_subscription_count() > 0

    def go(self, skip=()):
        """Let frames in (head run; the others take what arrives), skipping frames stamped inside the ``skip``
        ranges [(first, last)] ns: an old head container took them before the camera input moved here."""
        self._skip = [(int(lo), int(hi)) for lo, hi in skip]
        self._go.set()

    def _skipped(self, stamp):
        return any(lo <= stamp <= hi for lo, hi in self._skip)

    def _taken(self, stamp, lost=0):
        """Book a camera frame as taken, and the ``lost`` ones DDS lost just before it as taken and dropped."""
        if self.first_stamp_ns is None:
            self.first_stamp_ns = stamp
        self.last_stamp_ns = stamp
        self.owner.ledger.count('took', 1 + lost)
        self.owner.ledger.drop('dds', lost)

    def hold(self):
        """Head run: admit nothing more until :meth:`request_cut` says where this generation ends."""
        self._hold = True

    def request_cut(self, stamp_ns=None):
        """Head run: stop admitting now (None or CUT_NOW), or (hand-off) at the first frame stamped at/after
        ``stamp_ns``."""
        self._cut_since = time.monotonic()          # before _cut: the feeder reads them in the other order
        self._cut = CUT_NOW if stamp_ns in (None, CUT_NOW) else int(stamp_ns)
        self._cut_set.set()

    def idle_s(self):
        """Seconds since this run last took an item from its inbox."""
        return time.monotonic() - self._last_activity

    @property
    def cut_requested(self):
        return self._cut is not None

    @property
    def cut_stamp(self):
        """The hand-off cut's stamp (ns): the new head container's first frame; None without one."""
        return None if self._cut in (None, CUT_NOW) else self._cut

    @property
    def went(self):
        """True once frames were let in (:meth:`go`)."""
        return self._go.is_set()

    def retire(self):
        """Non-head run: end at the end-of-generation marker (or after replan_timeout_s without progress)."""
        self._last_activity = time.monotonic()
        self._retiring = True

    def close(self):
        """Stop the feeder, the engine and the stage nodes. The nodes are destroyed only once no thread of this
        run can touch them any more; returns whether everything ended. Only the first call acts (the control
        node's tick and a container shutdown may both close a run)."""
        with self._close_lock:
            if self._closed is None:
                self._closed = self._close()
            return self._closed

    def _close(self):
        self._closing = True
        if not self.is_head:
            self.inbox.close()
        self._feeder.join(2.0)
        ended = self.pipeline.stop() and not self._feeder.is_alive()
        self.owner.ledger.drop('queue', self.pipeline.dropped)     # the engine's drop_oldest drops, booked once
        inside = self.pipeline.submitted - self.published - self.pipeline.dropped - self.drops['replan']
        self.owner.ledger.drop('abandoned', max(0, inside))        # still inside at a shutdown
        if not ended:
            self.owner.get_logger().warning(f'generation {self.gen} stages {self.indices}: a thread did not end; '
                                            f'leaving its nodes to the process exit')
            for t in self._threads:
                t.halt()
            return False
        return all([t.stop() for t in self._threads])

    # -- input ----------------------------------------------------------------------------------------------
    def _on_tensor(self, msg):
        try:
            gen = tensormsg.peek_generation(msg)
        except PipeitError as exc:
            self.drops['malformed'] += 1
            self.owner.warn_once('malformed', str(exc))
            return
        if gen != self.gen:
            self.drops['stale'] += 1
            return
        self._arrived += 1
        try:
            if self.inbox.put(msg) is not None:
                self.drops['input'] += 1
                self.owner.ledger.count('received')     # it arrived, and left as a queue drop
                self.owner.ledger.drop('queue')
        except handoff.Closed:
            pass

    def _feed(self):
        try:
            while not self._go.wait(0.1):
                if self._cut is not None or self._retiring:
                    break
                if self._closing:
                    return self.finished.set()
            else:
                self._loop()
                self._book_evicted()
            if self._closing:
                return self.finished.set()
            self._finish()
        except StageError as exc:
            self.error = exc
            self.owner.get_logger().error(f'generation {self.gen}: {exc}')
            self.finished.set()
        except Exception as exc:  # noqa: BLE001 - a feeder must never die silently
            if self._closing:
                return self.finished.set()
            self.error = exc
            self.owner.get_logger().error(f'generation {self.gen} feeder failed: {type(exc).__name__}: {exc}')
            self.finished.set()

    def _loop(self):
        while not self._closing:
            if self._hold and self._cut is None:
                self._cut_set.wait(0.1)             # the container cuts within HANDOFF_WAIT_S (app.generations)
                continue
            self._book_evicted()
            try:
                item = self.inbox.get(timeout=0.1)
            except handoff.Closed:
                return
            now = time.monotonic()
            if item is None:
                # a hand-off cut ends when a frame at/after its stamp comes; only a camera that stopped (or lost
                # that frame, best effort) leaves the run idle this long, counted from the last frame taken
                if self._cut == CUT_NOW or \
                        (self._cut is not None and now - max(self._cut_since, self._last_activity) > CUT_IDLE_S):
                    return
                if self._retiring and now - self._last_activity > self.timeout_s:
                    self.owner.get_logger().warning(
                        f'generation {self.gen} stages {self.indices}: no end-of-generation marker within '
                        f'{self.timeout_s:.1f} s; ending the run')
                    return
                continue
            self._last_activity = now
            if self.is_head:
                msg, t_recv, lost = item
                cut = self._cut                     # set by the container thread: read it once
                if cut == CUT_NOW:
                    self.inbox.unget(item)          # the next generation's first frame
                    return
                stamp = handoff.stamp_ns(msg.header.stamp)
                if cut is not None and stamp >= cut:
                    return                          # the new head holds it and the ones after
                if self._skipped(stamp):
                    continue                        # the old head took it (and counts it)
                self._taken(stamp, lost)
                self._admit_image(msg, t_recv)
            else:
                try:
                    packet = tensormsg.unpack(item)
                    inputs = None if packet.kind == 'eos' else packet.ordered(self.pipeline.input_names)
                except PipeitError as exc:
                    self.drops['malformed'] += 1
                    self.owner.ledger.count('received')
                    self.owner.ledger.drop('bad_frame')
                    self.owner.warn_once('malformed', f'tensor message dropped: {exc}')
                    continue
                if packet.kind == 'eos':
                    return self._book_lost(packet.sent)
                self.owner.ledger.count('received')
                self._submit(inputs, FrameMeta(item.header, packet.t_recv_ns, packet.seq, packet.src_hw))

    def _book_lost(self, sent):
        """At the end-of-generation marker: tensor messages published upstream that never arrived (DDS lost them:
        keep-last under drop_oldest) are booked as received and dropped ('dds'), so the graph's ledger balances."""
        lost = 0 if sent is None else sent - self._arrived
        if lost > 0:
            self.drops['dds'] += lost
            self.owner.ledger.count('received', lost)
            self.owner.ledger.drop('dds', lost)
            self.owner.warn_once('tensor_lost', f'generation {self.gen} stages {self.indices}: {lost} tensor '
                                                f'message(s) lost between containers (drops_dds)')

    def _book_evicted(self):
        """Head run: book the camera frames the full inbox dropped (drop_oldest) as taken and dropped ('queue'),
        by the same ownership as taken frames: not those an old head took (skip ranges), not those at or after a
        hand-off cut (the new head's copies), and none on a cut where the head stays (the next run's)."""
        if not self._evicted or not self._go.is_set():
            return
        cut = self._cut
        while self._evicted and cut != CUT_NOW:
            stamp, lost = self._evicted.popleft()
            if self._skipped(stamp) or (cut is not None and stamp >= cut):
                continue
            self._taken(stamp, lost)
            self.owner.ledger.drop('queue')

    def _admit_image(self, msg, t_recv):
        try:
            x = self.pre.convert_msg(msg)
        except ImageError as exc:
            self.drops[exc.kind] += 1
            self.owner.ledger.drop('bad_frame')
            self.owner.warn_once(exc.kind, f'frame dropped and counted as drops_{exc.kind}: {exc}')
            return
        self.last_seq = self.owner.next_frame_number()
        self._submit(x, FrameMeta(msg.header, t_recv, self.last_seq, (msg.height, msg.width)))

    def _submit(self, x, meta):
        while not self._closing:
            try:
                self.pipeline.submit(x, meta, timeout=0.5)
                self.admitted += 1
                return
            except queue.Full:
                continue
        self.owner.ledger.drop('abandoned')         # the run closed (shutdown) while this frame waited

    # -- output (engine output thread, frame order) -------------------------------------------------------------
    def _on_output(self, frame):
        meta = frame.meta
        if not self.is_tail:   # every tensor that crosses the cut, in one message
            self.out_pub.publish(messages.tensor_msg(meta.header, self.pipeline.output_names, frame.outputs,
                                                     seq=meta.seq, generation=self.gen, t_recv_ns=meta.t_recv_ns,
                                                     src_hw=meta.src_hw))
            self.owner.ledger.count('sent')
            self.published += 1
            return
        out = frame.outputs[0]
        latency_ms = (time.time_ns() - meta.t_recv_ns) / 1e6
        self.latency.add(latency_ms)
        # lazy, as image_transport publishes: a result topic nobody reads costs no message (the raw tensor of a
        # detector or a segmenter is large); a reader that joins gets the next frame's, as it would anyway
        if self.output_pub.get_subscription_count():
            for arr in frame.outputs:           # one message per model output, in the model's output order
                self.output_pub.publish(messages.output_msg(arr))
            self.sent['output'] += 1
        spec = self.spec
        if spec.task == 'classification' and self.class_pub.get_subscription_count():
            labels = self.owner.labels if self.owner.labels is not None else (spec.labels or None)
            top = results.top_k(out[0] if out.ndim > 1 else out, self.owner.settings.top_k, labels,
                                spec.activation)
            self.class_pub.publish(messages.classification_msg(meta.header, meta.seq, top, self.gen, latency_ms))
            self.sent['classification'] += 1
        elif spec.task == 'detection' and self.det_pub.get_subscription_count():
            if self.owner.labels is not None:
                spec = replace(spec, labels=self.owner.labels)
            src = meta.src_hw if all(meta.src_hw) else self.pre_config.size
            dets = results.decode_detections(out, spec, geometry(self.pre_config, src), src)
            self.det_pub.publish(messages.detections_msg(meta.header, meta.seq, dets, self.gen, latency_ms))
            self.sent['detections'] += 1
        self.owner.ledger.count('out')
        self.published += 1

    def _finish(self):
        if self._closing:
            return self.finished.set()
        try:
            if not self.pipeline.drain(timeout=self.timeout_s):
                left = self.pipeline.submitted - self.published - self.pipeline.dropped
                self.drops['replan'] += left
                self.owner.ledger.drop('replan', left)
                self.owner.get_logger().warning(f'generation {self.gen}: engine did not drain in '
                                                f'{self.timeout_s:.1f} s')
        finally:
            if self.out_pub is not None:
                deadline = time.monotonic() + MATCH_TIMEOUT_S
                while self.out_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                    time.sleep(0.02)
                self.out_pub.publish(messages.eos_msg(self.gen, sent=self.published))
            if self.is_tail and self.results_move:
                for pub in (self.output_pub, self.class_pub):
                    pub.wait_for_all_acked(Duration(seconds=RESULT_ACK_TIMEOUT_S))
            self.finished.set()

    # -- diagnostics ------------------------------------------------------------------------------------------
    def stage_report(self, index, window):
        """(level, message, [(key, value)]) of stage ``index`` for its DiagnosticStatus."""
        k = self.indices.index(index)
        stats = self.pipeline.stats()[k]
        figures = window.update(stats)
        drops = {}
        if k == 0:
            drops = dict(self.drops)
            drops['queue'] = self.pipeline.dropped
            if self.is_head and self.owner.image_input is not None:
                for reason, count in self.owner.image_input.drops.items():
                    drops[reason] = drops.get(reason, 0) + count
        predicted = self.msg.predicted_stage_ms[index] if index < len(self.msg.predicted_stage_ms) else None
        latency = self.latency.percentiles() if index == self.indices[-1] and self.is_tail else None
        use = procmem.usage()
        extra = {keys.QUEUE_HIGH_WATER: stats.queue_high_water, keys.FRAMES: stats.frames,
                 keys.CPUS: ' '.join(map(str, stats.cpus)), keys.PROCESS_PID: os.getpid(),
                 keys.PROCESS_RSS_MB: f'{use.rss / procmem.MIB:.1f}', keys.PROCESS_PSS_MB: f'{use.pss / procmem.MIB:.1f}'}
        if latency is not None:
            extra.update({keys.PUBLISHED_OUTPUT: self.sent['output'],
                          keys.PUBLISHED_CLASSIFICATION: self.sent['classification'],
                          keys.PUBLISHED_DETECTIONS: self.sent['detections']})
        values = results.stage_diagnostic_values(
            generation=self.gen, figures=figures, queue_depth=self._queue_depth(k),
            drops=drops, predicted_ms=predicted or None, latency=latency, extra=extra)
        if self.error is not None:
            return 'error', str(self.error), values
        return 'ok', 'running' if self._go.is_set() else 'waiting', values

    def _queue_depth(self, k):
        """Frames waiting in front of hosted stage k: the engine's queue, plus the inbox for the run's first stage."""
        return self.pipeline.queue_depths()[k] + (len(self.inbox) if k == 0 else 0)
