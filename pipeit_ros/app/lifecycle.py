"""Process lifecycle of a graph's nodes: they end with the process that started them, and what killed runs
left behind is cleaned at the next start.

- :class:`ParentWatch` (every node's main, through pipeit_ros.ros.signals): the kernel sends SIGHUP the moment
  the parent dies (``PR_SET_PDEATHSIG``), and a thread waiting on the parent's pidfd catches a parent that died
  before that was set up; the node then stops as on SIGTERM, and the kernel ends it (SIGALRM) if the clean stop
  has not finished :data:`ORPHAN_GRACE_S` after the parent's death. A SIGKILLed ``pipeit bringup`` or ``ros2 launch`` (which exits at
  once on SIGTERM, ros2/launch issue 666) so leaves no node running.
- :func:`clean_leftovers` (bringup and the planner at start): ``pipeit-<kind>-<pid>-*`` work directories whose
  process is gone, and Fast DDS shared-memory segments and ports whose owner died. Fast DDS keeps an owner
  lock (``flock``) on a ``_el``/``_sl`` file next to each; the kernel drops it with its process, so an
  unlocked one belongs to nobody (the rule of Fast DDS' own ``fastdds shm clean``). A killed node leaves a
  segment of the profile's 32 MiB behind.
"""
import ctypes
import fcntl
import os
import re
import select
import shutil
import signal
import sys
import tempfile
import threading
import time

PR_SET_PDEATHSIG = 1
PARENT_SIGNAL = signal.SIGHUP
ORPHAN_GRACE_S = 1.0        # a node whose parent is gone gets this long to stop cleanly (each node ends < 2 s)
WATCH_PERIOD_S = 0.2        # getppid() polling where pidfds are missing
SHM_DIR = '/dev/shm'
_SEGMENT_LOCK_RE = re.compile(r'^(fastdds|fastrtps)_[0-9a-z]{16}_el$')
_PORT_LOCK_RE = re.compile(r'^(fastdds|fastrtps)_port\d{1,5}_(el|sl)$')
_WORKDIR_RE = re.compile(r'^pipeit-[a-z]+-(?P<pid>\d+)-')


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ParentWatch:
    """End this process once its parent is gone: ``stop()`` runs on the main thread (a signal handler; it may
    raise, e.g. KeyboardInterrupt, to unwind the node's spin loop), and the kernel ends the process ``grace_s``
    after the parent's death if the clean stop has not (a SIGALRM left at its default action: no Python code, so
    no wait for a tear-down that holds the GIL).

    The parent's death is seen at once twice over: the kernel's ``PR_SET_PDEATHSIG`` signal, and a thread
    blocked on a pidfd of the parent (``getppid()`` polled where pidfds are missing), which arms the deadline even
    while the main thread is inside native code. SIGHUP while the parent still runs is ignored: it comes from a
    terminal's hang-up (the parent gets it too and stops its children) or from a launcher's thread that started
    us ending before the launcher."""

    def __init__(self, stop, grace_s=ORPHAN_GRACE_S):
        self.parent = os.getppid()
        self.grace_s = grace_s
        self._stop = stop
        self._armed = threading.Lock()
        self._stopping = False
        self.orphaned = threading.Event()
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.signal(PARENT_SIGNAL, self._on_signal)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_SIGNAL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), 'prctl(PR_SET_PDEATHSIG) failed')
        try:
            pidfd = os.pidfd_open(self.parent)
        except OSError:             # gone already, or no pidfds: getppid() tells
            pidfd = None
        self._thread = threading.Thread(target=self._watch, args=(pidfd,), name='parent-watch', daemon=True)
        self._thread.start()

    def _on_signal(self, signum, frame):
        if os.getppid() == self.parent and not self.orphaned.is_set():
            return
        self._orphaned()
        if not self._stopping:          # once: a second signal (the kernel's and the watch's) must not cut the stop
            self._stopping = True
            self._stop()

    def _orphaned(self):
        """Arm the deadline (once) and say so."""
        with self._armed:
            if self.orphaned.is_set():
                return
            signal.setitimer(signal.ITIMER_REAL, self.grace_s)
            self.orphaned.set()
        try:            # stderr is often a pipe to the dead parent
            sys.stderr.write(f'parent process {self.parent} is gone: stopping, or ending in {self.grace_s:g} s\n')
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def _watch(self, pidfd):
        if pidfd is not None and os.getppid() == self.parent:   # the pidfd is the parent's, not a reused pid's
            select.select([pidfd], [], [])                       # readable once the parent has ended
        else:
            while os.getppid() == self.parent:
                time.sleep(WATCH_PERIOD_S)
        self._orphaned()
        os.kill(os.getpid(), PARENT_SIGNAL)         # the clean stop, should the kernel's signal not come


def work_dir(kind):
    """A new temporary directory ``pipeit-<kind>-<pid>-XXXX``: :func:`clean_leftovers` removes it once this
    process is gone without having removed it."""
    return tempfile.mkdtemp(prefix=f'pipeit-{kind}-{os.getpid()}-')


def _unlocked(path):
    """True when nobody holds a lock on ``path`` (taken and given back at once)."""
    try:
        with open(path, 'ab') as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
        return True
    except OSError:
        return False


def _remove(path):
    """Remove a file; its bytes in use (0 when it was not there)."""
    try:
        size = os.stat(path).st_blocks * 512
        os.remove(path)
    except OSError:
        return 0
    return size


def clean_shm(shm_dir=SHM_DIR):
    """Remove Fast DDS segments and ports whose owner process is gone; (files removed, bytes freed)."""
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return 0, 0
    files, freed = 0, 0
    ports = {}
    for name in names:
        path = os.path.join(shm_dir, name)
        if _SEGMENT_LOCK_RE.match(name) and _unlocked(path):
            for p in (path[:-len('_el')], path):
                freed += _remove(p)
                files += 1
        elif _PORT_LOCK_RE.match(name):
            ports.setdefault(name[:-len('_el')], []).append(path)
    for port, locks in ports.items():
        if all(_unlocked(lock) for lock in locks):
            for p in (os.path.join(shm_dir, port), os.path.join(shm_dir, f'sem.{port}_mutex'), *locks):
                freed += _remove(p)
                files += 1
    return files, freed


def clean_work_dirs(tmp=None):
    """Remove ``pipeit-<kind>-<pid>-*`` directories (:func:`work_dir`) whose process is gone; their names."""
    tmp = tmp or tempfile.gettempdir()
    gone = []
    try:
        names = os.listdir(tmp)
    except OSError:
        return gone
    for name in names:
        m = _WORKDIR_RE.match(name)
        path = os.path.join(tmp, name)
        if m and os.path.isdir(path) and not pid_alive(int(m['pid'])):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(name)
    return gone


def clean_leftovers(log=None):
    """Clean what killed runs left (work directories, Fast DDS shared memory); says what when ``log``."""
    dirs = clean_work_dirs()
    files, freed = clean_shm()
    if log is not None and (dirs or files):
        log(f'cleaned what killed runs left: {len(dirs)} work director{"y" if len(dirs) == 1 else "ies"}, '
            f'{files} Fast DDS shared-memory files ({freed / 2**20:.1f} MiB)')
    return dirs, files, freed
