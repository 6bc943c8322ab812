"""The pipelined engine: a plan's stages run as pinned worker threads joined by bounded queues.

Each stage replica is one thread pinned (``os.sched_setaffinity`` on its native id) to the first CPU of its core
group, owning an onnxruntime session whose intra-op pool is pinned to the group's other CPUs (runtime.py); the
session is built inside that thread. Frames travel as one :class:`FrameResult` object whose ``outputs`` list is
replaced by each stage with the arrays onnxruntime returned — the next stage feeds those very arrays (no copy).
Replicas of a stage pull from one shared queue, so frames may overtake each other; one output thread puts them
back in input order; a :class:`ReorderWindow` keeps a replicated last stage's fast replicas from running far
ahead of a slow one (their outputs would wait, resident, to be put back in order). Drops (``drop_oldest``) happen
only at the pipeline's input: dropping later would throw away work already done, and back-pressure from the
bounded inter-stage queues reaches the input anyway.
Every wait polls a stop flag, so a failed stage or ``stop()`` ends every thread within ``POLL_S``.
"""
import queue
import threading
import time

import numpy as np

from pipeit_ros.engine.parts import (
    QUEUE_SIZE,
    Channel,
    FrameResult,
    ReorderWindow,
    StageStats,
    Worker,
    check_plan,
    switch_acquire,
    switch_release,
)
from pipeit_ros.engine.sessions import make_session
from pipeit_ros.errors import PipeitError, PlanError, StageError
from pipeit_ros.hw import memory as procmem
from pipeit_ros.hw.cpus import pin_current_thread

__all__ = ['POLICIES', 'FrameResult', 'Pipeline', 'StageStats', 'check_plan']

POLL_S = 0.1            # longest a thread sleeps before it looks at the stop flag
POLICIES = ('block', 'drop_oldest')
_BUILD_LOCK = threading.Lock()


class Pipeline:
    """Runs ``plan`` (or the consecutive stages ``stages`` of it) on a stream of frames.

    ``policy`` 'block': submit() waits for room (benchmarks); 'drop_oldest': the oldest frame waiting at the
    input is dropped and counted (live cameras). ``on_output(FrameResult)`` is called in input order from the
    output thread; without it results are read with get(). ``tap(stage, replica, seq, inputs, outputs)``, for
    tests and tracing, is called in the worker after each run. ``timeline`` = frames per replica whose
    (seq, t_start, t_end) are recorded for a Gantt chart (see reset_timeline()).
    """

    def __init__(self, graph, plan, *, stages=None, queue_size=QUEUE_SIZE, policy='block', on_output=None,
                 name='pipeline', topology=None, tap=None, timeline=0):
        if policy not in POLICIES:
            raise PipeitError(f'back-pressure policy {policy!r} is not one of {", ".join(POLICIES)}')
        if int(queue_size) < 1:
            raise PipeitError(f'queue_size must be >= 1, got {queue_size}')
        indices = list(range(len(plan.stages)) if stages is None else stages)
        if not indices or indices != list(range(indices[0], indices[0] + len(indices))) \
                or indices[0] < 0 or indices[-1] >= len(plan.stages):
            raise PlanError(f'stages {indices} must be consecutive indices of the plan\'s '
                            f'{len(plan.stages)} stage(s)')
        check_plan(graph, plan, topology, indices)
        self.graph, self.plan, self.name = graph, plan, name
        self.policy, self.queue_size = policy, int(queue_size)
        self.on_output, self.tap = on_output, tap
        self.indices = indices
        self.stage_plans = [plan.stages[i] for i in indices]
        self.input_names = list(graph.boundary(self.stage_plans[0].first))
        self.output_names = list(graph.boundary(self.stage_plans[-1].last + 1))
        self._timeline_limit = int(timeline)
        self._threads = []
        self._workers = []
        self._output_tid = 0
        self._started = self._stopped = False

    # -- life cycle ------------------------------------------------------------------------------------------
    def start(self):
        """Build every stage's sessions inside its pinned worker thread; return when all are ready."""
        if self._started:
            raise PipeitError(f'{self.name} is already started')
        self._started = True
        self._stopping = False
        self._error = None
        n = len(self.stage_plans)
        # channel k feeds hosted stage k; _out feeds the output thread (unbounded: at most the frames in flight
        # are ever in it, and the tombstones of dropped or refused frames must never block submit()).
        self._queues = [Channel(self.queue_size) for _ in range(n)]
        self._out = queue.SimpleQueue()
        self._high_water = [0] * n
        self._drops = 0
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._done = 0
        self._cond = threading.Condition()
        self._results = queue.SimpleQueue()
        last = self.stage_plans[-1]
        in_order = all(s.replicas == 1 for s in self.stage_plans[:-1])   # ReorderWindow: frames arrive in order
        self._window = ReorderWindow(last.replicas, last.window) if last.replicas > 1 and in_order else None
        models = [self.graph.extract_bytes(s.first, s.last) for s in self.stage_plans]
        ready = []
        switch_acquire()
        self._switch_held = True
        for k, (idx, s) in enumerate(zip(self.indices, self.stage_plans)):
            in_names = list(self.graph.boundary(s.first))
            out_names = list(self.graph.boundary(s.last + 1))
            for r, cpus in enumerate(s.replica_cpus()):
                w = Worker(stage=k, replica=r, cpus=tuple(cpus))
                self._workers.append(w)
                ev = threading.Event()
                ready.append(ev)
                t = threading.Thread(target=self._work, name=f'{self.name}.stage_{idx}.{r}', daemon=True,
                                     args=(w, f'stage_{idx}', s, models[k], in_names, out_names, ev))
                self._threads.append(t)
                t.start()
        out = threading.Thread(target=self._emit, name=f'{self.name}.output', daemon=True)
        self._threads.append(out)
        out.start()
        for ev in ready:
            while not ev.wait(POLL_S):
                pass
            if self._error is not None:
                break
        if self._error is not None:
            err = self._error
            self.stop()
            raise err
        procmem.trim()   # building a session frees big temporaries in its thread's malloc arena: give them back
        return self

    def stop(self, timeout=5.0):
        """Stop every thread (frames still inside are abandoned; call drain() first to finish them).
        Never hangs: returns False when a thread did not end within ``timeout`` (it is a daemon)."""
        if not self._started or self._stopped:
            return True
        self._stopped = True
        self._stopping = True
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        if self._switch_held:
            self._switch_held = False
            switch_release()
        return not any(t.is_alive() for t in self._threads if t is not threading.current_thread())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _is_stopping(self):
        return self._stopping

    def _fail(self, stage_name, exc):
        if self._error is None:
            self._error = StageError(stage_name, exc)
        self._stopping = True
        with self._cond:
            self._cond.notify_all()

    def _check(self):
        if self._error is not None:
            raise self._error
        if not self._started or self._stopped:
            raise PipeitError(f'{self.name} is not running (start() it, or use it as a context manager)')

    # -- hot path --------------------------------------------------------------------------------------------
    def _work(self, w, stage_name, s, model, in_names, out_names, ready):
        try:
            w.native_id = threading.get_native_id()
            if s.pinned:
                pin_current_thread(w.cpus[:1])
            with _BUILD_LOCK:   # one session built at a time: their build-time copies never add up
                session = make_session(model, w.cpus, threads=s.threads, pinned=s.pinned,
                                       weights=self.graph.weights)
                procmem.trim()
        except Exception as exc:  # noqa: BLE001 - reported to the caller of start() as a StageError
            self._fail(stage_name, exc)
            ready.set()
            return
        ready.set()
        get, give_slot = self._queues[w.stage].items.get, self._queues[w.stage].slots.put
        last_stage = w.stage == len(self.stage_plans) - 1
        if last_stage:
            put, take_slot, qsize = self._out.put, None, None
        else:
            nxt = self._queues[w.stage + 1]
            put, take_slot, qsize = nxt.items.put, nxt.slots.get, nxt.items.qsize
        run = session.run
        clock = time.perf_counter
        tap = self.tap
        first = w.stage == 0
        window = self._window if last_stage else None
        stopping = self._is_stopping
        hw = self._high_water
        single = len(in_names) == 1
        in_name = in_names[0]
        empty = queue.Empty
        try:
            while not self._stopping:
                t0 = clock()
                try:
                    frame = get(timeout=POLL_S)
                except empty:
                    w.wait_in_s += clock() - t0
                    continue
                give_slot(None)
                if window is not None:
                    window.enter(frame.seq, stopping, POLL_S)
                t1 = clock()
                if first:
                    frame.t_start = t1
                inputs = frame.outputs
                outputs = run(out_names, {in_name: inputs[0]} if single else dict(zip(in_names, inputs)))
                t2 = clock()
                frame.outputs = outputs
                if tap is not None:
                    tap(w.stage, w.replica, frame.seq, inputs, outputs)
                if len(w.timeline) < self._timeline_limit:
                    w.timeline.append((frame.seq, t1, t2))
                if take_slot is not None:
                    while True:
                        try:
                            take_slot(timeout=POLL_S)
                            break
                        except empty:
                            if self._stopping:
                                return
                put(frame)
                t3 = clock()
                if window is not None:
                    window.record(w.replica, t3 - t1)
                if qsize is not None:
                    n = qsize()
                    if n > hw[w.stage + 1]:
                        hw[w.stage + 1] = n
                w.frames += 1
                w.busy_s += t2 - t1
                w.wait_in_s += t1 - t0
                w.wait_out_s += t3 - t2
                frame = inputs = outputs = None   # not kept alive while waiting for the next frame (YOLOv8n
                                                  # 0-33@little,34-110@big: 11 MiB less, docs/memory.md)
        except Exception as exc:  # noqa: BLE001 - any stage failure stops the pipeline, re-raised by the caller
            self._fail(stage_name, exc)

    def _emit(self):
        """Output thread: put frames back in input order, skip dropped ones, hand them out."""
        self._output_tid = threading.get_native_id()
        get = self._out.get
        pending = {}
        next_seq = 0
        clock = time.perf_counter
        on_output = self.on_output
        deliver = self._results.put if on_output is None else on_output
        window = self._window
        empty = queue.Empty
        while not self._stopping:
            try:
                item = get(timeout=POLL_S)
            except empty:
                continue
            if type(item) is int:           # tombstone of a dropped frame
                pending[item] = None
            else:
                pending[item.seq] = item
            delivered = 0
            while next_seq in pending:
                frame = pending.pop(next_seq)
                next_seq += 1
                if frame is not None:
                    frame.t_done = clock()
                    try:
                        deliver(frame)
                    except Exception as exc:  # noqa: BLE001 - a failing callback stops the pipeline
                        self._fail('on_output', exc)
                        return
                delivered += 1
            frame = item = None       # the last frame delivered is not kept alive until the next one
            if delivered and window is not None:
                window.advance(next_seq)      # after delivery: a frame being delivered stays inside the window
            if delivered:
                with self._cond:
                    self._done += delivered
                    self._cond.notify_all()

    # -- caller side -----------------------------------------------------------------------------------------
    def submit(self, inputs, meta=None, timeout=None):
        """Queue one frame (an array, or a list of arrays in input_names order); returns its sequence number.
        With 'block' waits for room (queue.Full after ``timeout``); with 'drop_oldest' never waits."""
        self._check()
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        elif len(inputs) != len(self.input_names):
            raise PipeitError(f'{self.name} takes {len(self.input_names)} input(s) {self.input_names}, '
                              f'got {len(inputs)}')
        with self._seq_lock:
            seq = self._seq
            self._seq = seq + 1
        frame = FrameResult(seq, meta, inputs, time.perf_counter())
        q = self._queues[0]
        if self.policy == 'block':
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                wait = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
                try:
                    q.slots.get(timeout=wait) if wait > 0 else q.slots.get_nowait()
                    break
                except queue.Empty:
                    if self._stopping or (deadline is not None and time.monotonic() >= deadline):
                        self._out.put(seq)   # never came in: a tombstone keeps the output order going
                        if self._stopping:
                            self._check()
                            raise PipeitError(f'{self.name} stopped while submit() waited') from None
                        raise queue.Full from None
        else:
            while True:
                try:
                    q.slots.get_nowait()
                    break
                except queue.Empty:
                    pass
                try:
                    old = q.items.get_nowait()   # its slot is now ours
                except queue.Empty:          # a worker took the last frame and is about to return its slot
                    try:
                        q.slots.get(timeout=POLL_S)
                        break
                    except queue.Empty:
                        self._check()
                        continue
                with self._seq_lock:
                    self._drops += 1
                self._out.put(old.seq)
                break
        q.items.put(frame)
        n = q.qsize()
        if n > self._high_water[0]:
            self._high_water[0] = n
        return seq

    def get(self, timeout=None):
        """The next result in input order (without on_output); queue.Empty after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._error is not None:
                raise self._error
            wait = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            try:
                return self._results.get(timeout=wait) if wait > 0 else self._results.get_nowait()
            except queue.Empty:
                if not self._started or self._stopped:
                    raise PipeitError(f'{self.name} is not running and has no result left') from None
                if wait <= 0:
                    raise

    def drain(self, timeout=None):
        """Wait until every submitted frame came out (or was dropped); False on timeout."""
        self._check()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._done < self._seq:
                if self._error is not None:
                    raise self._error
                if self._stopping:
                    return False
                wait = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                if wait <= 0:
                    return False
                self._cond.wait(wait)
        if self._error is not None:
            raise self._error
        return True

    def run(self, frames):
        """Convenience: submit every frame, wait for all, return the results in order (needs no on_output)."""
        if self.on_output is not None:
            raise PipeitError('run() collects results itself: build the pipeline without on_output')
        for f in frames:
            self.submit(f)
        self.drain()
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    # -- observation -----------------------------------------------------------------------------------------
    @property
    def dropped(self):
        return self._drops if self._started else 0

    @property
    def submitted(self):
        return self._seq if self._started else 0

    def queue_depths(self):
        """Per hosted stage: frames waiting in the queue in front of it (0 before start)."""
        return [q.qsize() for q in self._queues] if self._started else [0] * len(self.indices)

    def stats(self):
        """Per hosted stage: counters summed over its replicas."""
        out = []
        for k, (idx, s) in enumerate(zip(self.indices, self.stage_plans)):
            st = StageStats(name=f'stage_{idx}', cluster=s.cluster, cpus=tuple(s.cpus), replicas=s.replicas)
            for w in self._workers if self._started else ():
                if w.stage == k:
                    st.frames += w.frames
                    st.busy_s += w.busy_s
                    st.wait_in_s += w.wait_in_s
                    st.wait_out_s += w.wait_out_s
            if self._started:
                st.queue_high_water = self._high_water[k]
                st.drops = self._drops if k == 0 else 0
            out.append(st)
        return out

    def worker_tids(self):
        """{stage name: [native thread id per replica], 'output': [output thread id]} (to check pinning)."""
        out = {}
        for w in self._workers:
            out.setdefault(f'stage_{self.indices[w.stage]}', []).append(w.native_id)
        out['output'] = [self._output_tid]
        return out

    def reset_timeline(self, limit=None):
        """Start recording (seq, t_start, t_end) afresh, up to ``limit`` frames per replica."""
        if limit is not None:
            self._timeline_limit = int(limit)
        for w in self._workers:
            w.timeline = []

    def timeline(self):
        """[(stage name, replica, seq, t_start, t_end)] recorded since reset_timeline()."""
        return [(f'stage_{self.indices[w.stage]}', w.replica, seq, a, b)
                for w in self._workers for seq, a, b in w.timeline]
