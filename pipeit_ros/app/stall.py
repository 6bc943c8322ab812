"""Which containers of a graph are stalled, from their ``pipeit/status`` heartbeats (no rclpy).

A container sends its status every second (pipeit_ros.ros.container) with ``done`` (frames its runs have
finished, ever) and ``waiting`` (frames queued in front of its stages). It is stalled when, while it hosts
stages, either its heartbeat stops for ``timeout_s`` (stopped with SIGSTOP, hung in native code: it cannot
say so itself) or frames wait and ``done`` does not move for ``timeout_s``. The planner publishes the verdicts
on /diagnostics; ``pipeit bringup`` prints them.
"""
from dataclasses import dataclass

from pipeit_ros.app import sleeper


@dataclass
class ContainerTrack:
    name: str
    cluster: str
    hosts_stages: bool
    last_seen: float
    done: int
    waiting: int
    progress_at: float          # when ``done`` last moved, or nothing waited
    state: str = ''


@dataclass(frozen=True)
class Verdict:
    container: str
    cluster: str
    stalled: bool
    message: str


class StallWatch:
    def __init__(self, timeout_s):
        self.timeout_s = float(timeout_s)
        self.tracks = {}

    def update(self, status, now):
        """Feed one decoded status dict (keys container, cluster, stages, done, waiting)."""
        name = str(status['container'])
        done, waiting = int(status.get('done', 0)), int(status.get('waiting', 0))
        track = self.tracks.get(name)
        if track is None:
            track = self.tracks[name] = ContainerTrack(name, str(status.get('cluster', '')), False, now, done,
                                                       waiting, now)
        if done != track.done or waiting == 0:
            track.progress_at = now
        track.cluster = str(status.get('cluster', track.cluster))
        track.hosts_stages = bool(status.get('stages'))
        track.state = str(status.get('state', ''))
        track.last_seen, track.done, track.waiting = now, done, waiting

    def forget(self, name):
        self.tracks.pop(name, None)

    def verdicts(self, now):
        """One Verdict per container seen, by name."""
        out = []
        for t in sorted(self.tracks.values(), key=lambda t: t.name):
            silent = now - t.last_seen
            still = now - t.progress_at
            if t.hosts_stages and silent >= self.timeout_s:
                out.append(Verdict(t.name, t.cluster, True, f'stalled: no status for {silent:.1f} s while hosting '
                                                            f'stages (stopped or hung?)'))
            elif t.hosts_stages and t.waiting and still >= self.timeout_s:
                out.append(Verdict(t.name, t.cluster, True, f'stalled: no frame done for {still:.1f} s with '
                                                            f'{t.waiting} waiting'))
            else:
                idle = sleeper.SLEEPING if t.state == sleeper.SLEEPING else 'idle'
                out.append(Verdict(t.name, t.cluster, False, 'running' if t.hosts_stages else idle))
        return out
