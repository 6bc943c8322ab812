"""The frame ledger of one container: every frame that enters the graph leaves it exactly once, as a result or
as a drop counted with a reason.

Per container: ``took`` camera frames its head runs took (each camera frame is taken by one head: the old head
up to the hand-off stamp, the new head after it, pipeit_ros.handoff), ``received``/``sent`` tensors from/to other
containers, ``out`` results published, ``dropped`` by reason (``queue``: a full queue under ``drop_oldest``;
``bad_frame``: a frame that is not an image the model takes; ``replan``: left behind when a run did not drain in
time, or held by a head whose generation never started; ``abandoned``: taken while its run was being closed;
``dds``: a tensor message DDS lost between containers, found at the end-of-generation marker, which says how many
were sent). Over the whole graph, once no frame is inside:
sum(took) == sum(out) + sum(dropped) + (sum(sent) - sum(received)), the last term being tensors still on their way
(zero once every generation ended: a lost one is booked as received and dropped, ``dds``). Published on /diagnostics as ``<container>/ledger``.
"""
from collections import Counter
from dataclasses import dataclass, field
import threading


@dataclass
class FrameLedger:
    took: int = 0
    received: int = 0
    sent: int = 0
    out: int = 0
    dropped: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, what, n=1):
        """Add ``n`` to ``took``, ``received``, ``sent`` or ``out``."""
        with self._lock:
            setattr(self, what, getattr(self, what) + int(n))

    def drop(self, reason, n=1):
        if n:
            with self._lock:
                self.dropped[reason] += int(n)

    def snapshot(self, extra_dropped=None):
        """{'in', 'received', 'sent', 'out', 'dropped': {reason: n}} with ``extra_dropped`` (live runs' engine
        drops, not yet booked) added."""
        with self._lock:
            dropped = Counter(self.dropped)
            dropped.update(extra_dropped or {})
            return {'in': self.took, 'received': self.received, 'sent': self.sent, 'out': self.out,
                    'dropped': {k: v for k, v in sorted(dropped.items()) if v}}

    def inside(self):
        """Frames this container holds now: taken or received, not yet out, sent on or dropped."""
        s = self.snapshot()
        return s['in'] + s['received'] - s['out'] - s['sent'] - sum(s['dropped'].values())
