"""Emulated big.LITTLE on a machine of identical cores: busy co-runners make a cluster "LITTLE".

Each CPU of a cluster with ``emulate_share`` gets ``count`` busy-loop processes pinned to it at nice level
``nice``; our threads keep their nice level (0), so the fair scheduler (CFS, EEVDF since Linux 6.6, same
weights) gives a thread of ours on that CPU ``share = w(0) / (w(0) + count * w(nice))``, w = the kernel's
sched_prio_to_weight (1024 at nice 0, 820 at 1, ...) — as on a robot whose other nodes run on those cores.
Nice only lowers a co-runner's weight (raising it needs privileges), so :func:`corunner_spec` takes the fewest
co-runners whose best nice level comes within 0.01 of the share: 1/2 -> 1 at nice 0, 1/3 -> 2 at nice 0,
0.6 -> 1 at nice 2 (0.610), 0.3 -> 3 at nice 1 (0.294). Measured on the 2-core machine (1-thread
MobileNetV2 loops, test_emulation.py): 0.5 -> 0.48-0.52 of the big core's frames/s on a quiet machine.

The slowdown comes in scheduler slices (a 4 ms tick at HZ=250): a run much shorter than that usually
finishes unpreempted (0.1 ms segments: median 0.99x the big core's time, mean 2.0x). Time runs on an
emulated core by their mean over a window of many ticks, never by the median of single runs.

The co-runner is ``sh -c 'while :; do :; done' pipeit-corunner-<token>`` (dash: 1.6 MB RSS, 0.1 MB anonymous;
``python -S -c 'while 1: pass'`` is 8.4 MB): it steals time, not cache or memory. A ``python -S`` helper sets
the parent-death signal (SIGKILL when the thread that started it ends, also on SIGKILL of our process), the
pinning and nice, then execs it. Co-runners stay in our session and process group: with autogroup
scheduling nice levels weigh only inside one session, and Ctrl-C reaches them too.

What the emulation cannot hold: with ``sched_autogroup_enabled=1`` (this VM) the fair scheduler first divides
a CPU between sessions (autogroups), and only inside ours by nice level. Our session's weight is split over the
CPUs by its runnable load there, so with the co-runner it weighs about twice as much on the emulated CPU as on
the big one: another session's busy thread on the big CPU slows the big core more than the little one, on the
little CPU it slows the little one more. Measured (3 s, pinned shell loops, the co-runner in our session, one
outside busy loop in a new session; load average 5): little/big share 0.21-0.34 with no outside loop, 0.66-0.84
with it on the big CPU, 0.12-0.62 on the little one, against the 0.5 set. Nothing we can set without privileges
stops that, so measurements say what the CPUs gave: :func:`measured_speeds` turns the run-queue shares our
pinned threads got (:func:`pipeit_ros.hw.threads.held_shares`) into each emulated cluster's speed relative to
the others, and :func:`speed_warnings` says where it strayed from the share set.

They stop on leaving :func:`emulated` (also by exception), on SIGTERM/SIGINT/SIGHUP (killed, then the
previous handler runs), at interpreter exit, and when this process dies. A pid file under the cache's
``run/`` lists them; :func:`reap_leftovers` kills only processes that a pid file of a dead owner names, whose
start time matches, whose command line carries that run's marker and whose parent is gone.
"""
import atexit
from contextlib import contextmanager
from dataclasses import dataclass
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

from pipeit_ros.cache import cache_dir
from pipeit_ros.errors import PipeitError

# kernel/sched/core.c sched_prio_to_weight[], nice 0..19 (negative nice needs privileges; not used)
CFS_WEIGHTS = (1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15)
MAX_PER_CPU = 16
MARKER_PREFIX = 'pipeit-corunner-'
LOOP = 'while :; do :; done'

# Runs in the child before the exec: set-up that must happen inside it.
_HELPER = r'''
import ctypes, os, sys
marker, owner, cpu, nice = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
if os.getppid() != owner:
    os._exit(3)  # the owner died before the line above
os.sched_setaffinity(0, {cpu})
if nice:
    os.nice(nice)
os.execv('/bin/sh', ['sh', '-c', sys.argv[5], marker])
'''


@dataclass(frozen=True)
class CoRunnerSpec:
    """How one CPU of a cluster is shared: ``count`` co-runners at ``nice``; ``share`` is what the weights give."""

    target: float
    count: int
    nice: int
    share: float

    def describe(self):
        runners = f'{self.count} co-runner{"s" if self.count > 1 else ""} per CPU at nice {self.nice}'
        if abs(self.share - self.target) >= 0.0005:
            runners += f', weight share {self.share:.3f}'
        return runners


def weight_share(count, nice):
    """Share of one nice-0 thread on a CPU that also runs ``count`` busy co-runners at ``nice``."""
    return CFS_WEIGHTS[0] / (CFS_WEIGHTS[0] + count * CFS_WEIGHTS[nice])


def corunner_spec(share, max_per_cpu=MAX_PER_CPU, tolerance=0.01):
    """The fewest co-runners (then the closest nice level) whose weight share is within ``tolerance`` of
    ``share``; the closest pair overall when none is."""
    share = float(share)
    lowest, highest = weight_share(max_per_cpu, 0), weight_share(1, len(CFS_WEIGHTS) - 1)
    if not lowest - tolerance <= share <= highest + tolerance:
        raise PipeitError(f'emulate share {share:g} cannot be emulated: co-runners at nice 0..19 give '
                          f'{lowest:.3f}..{highest:.3f} with at most {max_per_cpu} per CPU')
    pairs = [(c, n) for c in range(1, max_per_cpu + 1) for n in range(len(CFS_WEIGHTS))]
    close = [p for p in pairs if abs(weight_share(*p) - share) <= tolerance]
    count, nice = min(close, key=lambda p: (p[0], abs(weight_share(*p) - share))) if close else \
        min(pairs, key=lambda p: abs(weight_share(*p) - share))
    return CoRunnerSpec(target=share, count=count, nice=nice, share=weight_share(count, nice))


SPEED_TOLERANCE = 0.10   # a measured emulated speed further than this (relative) from the share set: a warning


def measured_speeds(topology, shares):
    """{emulated cluster: the share of its CPUs our pinned threads got / that of the topology's other clusters'
    CPUs} from ``shares`` ({cpu: share while runnable}, :func:`pipeit_ros.hw.threads.held_shares`): the speed
    the emulation gave that cluster, to compare with its ``emulate_share``. A cluster is left out where its CPUs
    or the reference CPUs were not measured (no pinned thread ran there)."""
    def mean(cpus):
        got = [shares[c] for c in cpus if c in shares]
        return sum(got) / len(got) if got else None
    reference = mean([cpu for c in topology.clusters if c.emulate_share is None for cpu in c.cpus])
    out = {}
    for c in topology.clusters:
        own = mean(c.cpus) if c.emulate_share is not None else None
        if own is not None and reference:
            out[c.name] = own / reference
    return out


def speed_warnings(topology, speeds, where='', tolerance=SPEED_TOLERANCE):
    """One line per emulated cluster whose :func:`measured_speeds` (a list of them, e.g. one per measuring
    window) left ``emulate_share`` by more than ``tolerance`` of it."""
    lines = []
    for c in topology.clusters:
        got = [s[c.name] for s in speeds if c.name in s]
        if c.emulate_share is None or not got:
            continue
        low, high = min(got), max(got)
        if max(abs(low / c.emulate_share - 1), abs(high / c.emulate_share - 1)) > tolerance:
            lines.append(f'warning: {where}emulated cluster {c.name} ran at {low:.2f}-{high:.2f} of the others\' '
                         f'speed (set: {c.emulate_share:g}; run-queue shares of our pinned threads, '
                         f'{len(got)} window{"s" if len(got) > 1 else ""}): other sessions\' load moved it, so ratios between plans that use '
                         f'it and plans that do not carry that error')
    return lines


# ---------------------------------------------------------------- /proc helpers

def _proc_stat(pid):
    """(state, ppid, start time in clock ticks since boot) from /proc/PID/stat, None when it is gone."""
    try:
        with open(f'/proc/{pid}/stat', encoding='ascii', errors='replace') as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(')') + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _proc_start(pid):
    """Start time of a live (not zombie) ``pid``, else None: with the pid it names one process for good."""
    stat = _proc_stat(pid)
    return None if stat is None or stat[0] == 'Z' else stat[2]


def _proc_cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().decode(errors='replace').split('\0')
    except OSError:
        return []


def _proc_cpus(pid):
    try:
        with open(f'/proc/{pid}/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Cpus_allowed_list:'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        return None
    return None


def find_corunners(marker=MARKER_PREFIX):
    """Pids of live processes whose command line has an argument starting with ``marker`` (tests, reports)."""
    pids = []
    for name in os.listdir('/proc'):
        if name.isdigit() and _proc_start(int(name)) is not None \
                and any(arg.startswith(marker) for arg in _proc_cmdline(int(name))):
            pids.append(int(name))
    return sorted(pids)


def run_dir():
    return cache_dir('run')


# ---------------------------------------------------------------- leftovers of a crash

def _pid_files(directory):
    """(path, record) of every readable pid file in ``directory``; others are not ours to judge."""
    for fname in sorted(os.listdir(directory)):
        if fname.startswith('emulation-') and fname.endswith('.json'):
            path = os.path.join(directory, fname)
            try:
                with open(path, encoding='utf-8') as f:
                    record = json.load(f)
                record['owner'], record['marker'] = int(record['owner']), str(record['marker'])
                record['corunners'] = [(int(c['pid']), c['start']) for c in record['corunners']]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            yield path, record


def reap_leftovers(log=print, directory=None):
    """Kill co-runners that an earlier, dead pipeit process left; return their pids.

    A process is killed only when a pid file of a dead owner names it, its start time is the recorded one,
    its command line carries that run's marker and its parent is no longer the owner. Pid files of dead
    owners are removed; those of live owners (another pipeit running now) are left alone.
    """
    killed = []
    for path, record in _pid_files(directory or run_dir()):
        owner, marker = record['owner'], record['marker']
        if _proc_start(owner) == record.get('owner_start') or not marker.startswith(MARKER_PREFIX):
            continue  # its owner is alive, or the file is not one of ours
        for pid, start in record['corunners']:
            stat = _proc_stat(pid)
            if stat and stat[0] != 'Z' and stat[2] == start and stat[1] != owner and marker in _proc_cmdline(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
        try:
            os.remove(path)
        except OSError:
            pass
    if killed:
        log(f'emulation: killed {len(killed)} leftover co-runner(s) of an earlier run: pids {killed}')
    return killed


def others_on(cpus, directory=None):
    """{pid: cpus} of other live pipeit processes whose co-runners sit on any of ``cpus`` (shares add up)."""
    found = {}
    for _, record in _pid_files(directory or run_dir()):
        owner, shared = record['owner'], sorted(set(record.get('cpus', ())) & set(cpus))
        if owner != os.getpid() and shared and _proc_start(owner) == record.get('owner_start'):
            found[owner] = shared
    return found


# ---------------------------------------------------------------- one emulation

class Emulation:
    """The co-runners of one topology: :meth:`start` them, :meth:`stop` them (idempotent, signal-safe)."""

    def __init__(self, topology, max_per_cpu=MAX_PER_CPU):
        self.topology = topology
        self.specs = {c.name: corunner_spec(c.emulate_share, max_per_cpu)
                      for c in topology.clusters if c.emulate_share is not None}
        self.marker = MARKER_PREFIX + uuid.uuid4().hex[:12]
        self.procs = []
        self.pid_file = None
        self.owner = os.getpid()
        self._lock = threading.RLock()  # re-entered by a signal handler during stop()

    @property
    def key(self):
        return tuple((cpu, s.count, s.nice) for name, s in sorted(self.specs.items())
                     for cpu in self.topology.cluster(name).cpus)

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def describe(self):
        parts = [f'cluster {name} cpus {list(self.topology.cluster(name).cpus)} at share {s.target:g} '
                 f'({s.describe()})' for name, s in self.specs.items()]
        return 'emulating big.LITTLE: ' + '; '.join(parts)

    def start(self, timeout=5.0):
        allowed = os.sched_getaffinity(0)
        for cpu, _, _ in self.key:
            if cpu not in allowed:
                raise PipeitError(f'emulation: cpu {cpu} of topology {self.topology.name!r} is not in this '
                                  f'process\'s CPU affinity {sorted(allowed)}')
        owner = self.owner = os.getpid()
        try:
            for cpu, count, nice in self.key:
                for _ in range(count):
                    self.procs.append(subprocess.Popen(
                        [sys.executable, '-S', '-c', _HELPER, self.marker, str(owner), str(cpu), str(nice), LOOP],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True))
            self._wait_running(timeout)
            self._write_pid_file(owner)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_running(self, timeout):
        """Return once every co-runner has exec'ed the loop on its CPU; raise if one failed."""
        deadline = time.monotonic() + timeout
        cpus = [cpu for cpu, count, _ in self.key for _ in range(count)]
        pending = list(zip(self.procs, cpus))
        while pending:
            proc, cpu = pending[0]
            if proc.poll() is not None:
                raise PipeitError(f'emulation: the co-runner for cpu {cpu} exited with code {proc.returncode}')
            if _proc_cmdline(proc.pid)[:4] == ['sh', '-c', LOOP, self.marker] and _proc_cpus(proc.pid) == str(cpu):
                pending.pop(0)
            elif time.monotonic() > deadline:
                raise PipeitError(f'emulation: the co-runner for cpu {cpu} did not start within {timeout:g} s')
            else:
                time.sleep(0.005)

    def _write_pid_file(self, owner):
        record = {'owner': owner, 'owner_start': _proc_start(owner), 'marker': self.marker,
                  'topology': self.topology.name, 'cpus': sorted({cpu for cpu, _, _ in self.key}),
                  'corunners': [{'pid': p.pid, 'start': _proc_start(p.pid)} for p in self.procs]}
        path = os.path.join(run_dir(), f'emulation-{owner}-{self.marker}.json')
        with open(path + '.tmp', 'w', encoding='utf-8') as f:
            json.dump(record, f)
        os.replace(path + '.tmp', path)
        self.pid_file = path

    def stop(self):
        """Kill and reap every co-runner; safe to call twice and from a signal handler."""
        with self._lock:
            procs, self.procs = self.procs, []
            if os.getpid() != self.owner:
                return  # a forked child of the owner: the co-runners are the owner's to stop
            for p in procs:
                try:
                    p.kill()
                except OSError:
                    pass
            for p in procs:
                try:
                    p.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    pass
            if self.pid_file:
                try:
                    os.remove(self.pid_file)
                except OSError:
                    pass
                self.pid_file = None


# ---------------------------------------------------------------- process-wide bookkeeping

ACTIVE_ENV = 'PIPEIT_EMULATION_ACTIVE'   # set by `pipeit bringup` for its children: emulation already on

_active = {}            # key -> [Emulation, users]
_active_lock = threading.RLock()
_previous_handlers = {}
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def stop_all():
    """Stop every running emulation of this process (signal handlers, atexit, tests)."""
    with _active_lock:
        entries = list(_active.values())
        _active.clear()
    for emulation, _ in entries:
        emulation.stop()


def _on_signal(signum, frame):
    stop_all()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    _restore_handlers()
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # die of it, as without us


def _install_handlers():
    if threading.current_thread() is not threading.main_thread() or _previous_handlers:
        return  # only the main thread may; the parent-death signal still covers a crash
    for signum in _SIGNALS:
        previous = signal.getsignal(signum)
        if previous in (signal.SIG_IGN, None):
            continue  # ignored (e.g. nohup): keep ignoring, the co-runners stay with us
        _previous_handlers[signum] = previous
        signal.signal(signum, _on_signal)


def _restore_handlers():
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_previous_handlers.items()):
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, previous)
        del _previous_handlers[signum]


atexit.register(stop_all)


@contextmanager
def emulated(topology, log=print):
    """Run the block with the topology's emulated clusters shared with co-runners; a silent no-op without any.

    Nested use with the same emulation reuses the running co-runners; another emulation while one runs is
    an error (the shares would add up). A process whose parent already emulates this topology (``ACTIVE_ENV``
    names its fingerprint) starts none.
    """
    if topology is None or not topology.has_emulation():
        yield None
        return
    if os.environ.get(ACTIVE_ENV) == topology.fingerprint():
        # a child of `pipeit bringup`, which already runs this emulation around it: a second set of
        # co-runners would halve the share again
        yield None
        return
    emulation = Emulation(topology)
    with _active_lock:
        if _active and emulation.key not in _active:
            running = next(iter(_active.values()))[0]
            raise PipeitError(f'emulation of topology {topology.name!r} cannot start while that of '
                              f'{running.topology.name!r} runs in this process')
        entry = _active.get(emulation.key)
        if entry is None:
            reap_leftovers(log=log)
            for pid, cpus in others_on([cpu for cpu, _, _ in emulation.key]).items():
                log(f'emulation: warning: pipeit process {pid} also runs co-runners on cpus {cpus}; '
                    f'both runs get less than their share')
            emulation.start()
            entry = _active[emulation.key] = [emulation, 0]
            _install_handlers()
            log(emulation.describe())
        entry[1] += 1
    try:
        yield entry[0]
    finally:
        with _active_lock:
            entry[1] -= 1
            last = entry[1] == 0 and _active.get(emulation.key) is entry
            if last:
                del _active[emulation.key]
        if last:
            entry[0].stop()
            if not _active:
                _restore_handlers()
