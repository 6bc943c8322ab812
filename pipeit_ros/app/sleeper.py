"""A container that hosts nothing sleeps: its process becomes this script until a plan gives it a stage.

In the per-cluster layout a data-parallel plan leaves every container but one without a stage, and an idle
container is a whole rclpy process (~49 MiB PSS: Python, rclpy, numpy, a Fast DDS participant and its segment;
docs/memory.md, "A sleeping container"). So a container whose running plan has given it nothing for
``sleep_after_s`` leaves the ROS graph and exec's this script, with the same PID (``ros2 launch`` and
``pipeit bringup`` still supervise it, and its CPU pinning stays). The script imports only the standard library
and answers on a Unix socket in the abstract namespace (:func:`socket_name`: the graph and the cluster), bound by
the container before the ``exec``:

- ``status``: the container's last ``pipeit/status`` dict, ``state`` 'sleeping' (the planner counts it as a
  running container of its cluster, and reports its memory);
- ``wake``: ``ok``, then it exec's the container's own command line again; the container starts as at launch and
  takes the latched plan (the planner wakes the containers its plan puts stages on).

SIGINT and SIGTERM end it with exit 0, as they end a container, and so does its parent's death (the container's
``PR_SET_PDEATHSIG`` SIGHUP outlives the ``exec``: pipeit_ros.app.lifecycle.ParentWatch). Run as ``python -I -S
sleeper.py FD PARENT STATUS -- COMMAND...``: the ``-I -S`` keep site-packages and the environment's Python
settings out of it (the command it exec's gets the environment unchanged).
"""
import json
import os
import signal
import socket
import sys

STATUS, WAKE, OK = b'status', b'wake', b'ok'
SLEEPING = 'sleeping'            # the state a sleeping container reports
REPLY_TIMEOUT_S = 1.0            # a query or wake-up that gets no answer in this long finds no sleeper


def socket_name(graph, cluster):
    """The abstract socket of the sleeping container of ``cluster`` in graph ``graph`` (one per machine)."""
    return f'\0pipeit_ros/{graph}/{cluster}'


def listen(name):
    """A listening socket bound to ``name``, inheritable by the script exec'd; OSError where it is taken."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
        sock.listen(8)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def command(sock, status, argv, parent=None):
    """The argv that turns this process into the sleeper serving ``status`` on ``sock``, then runs ``argv``; it
    ends when process ``parent`` (default: this one's parent) is no longer its parent."""
    parent = os.getppid() if parent is None else parent
    return [sys.executable, '-I', '-S', os.path.abspath(__file__), str(sock.fileno()), str(parent),
            json.dumps(status), '--', *argv]


def _ask(name, request):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(REPLY_TIMEOUT_S)
        sock.connect(name)
        sock.sendall(request + b'\n')
        reply = b''
        while not reply.endswith(b'\n'):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply.strip()


def query(name):
    """The status dict of the container sleeping on ``name``; None where none sleeps there."""
    try:
        return json.loads(_ask(name, STATUS))
    except (OSError, ValueError):
        return None


def wake(name):
    """Wake the container sleeping on ``name``; True when it said it wakes."""
    try:
        return _ask(name, WAKE) == OK
    except OSError:
        return False


def serve(sock, status):
    """Answer queries on ``sock`` until one asks to wake."""
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(REPLY_TIMEOUT_S)
            try:
                request = conn.recv(64).strip()
                if request == STATUS:
                    conn.sendall(status + b'\n')
                elif request == WAKE:
                    conn.sendall(OK + b'\n')
                    return
            except OSError:
                continue


def _exit(*_):
    sys.exit(0)


def main(argv):
    fd, parent, status, sep, *cmd = argv[1:]
    if sep != '--' or not cmd:
        sys.exit('usage: sleeper.py FD PARENT STATUS -- COMMAND...')
    signal.signal(signal.SIGINT, _exit)
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, lambda *_: os.getppid() != int(parent) and _exit())
    if os.getppid() != int(parent):
        _exit()
    sock = socket.socket(fileno=int(fd))
    serve(sock, status.encode())
    sock.close()
    os.execv(cmd[0], cmd)


if __name__ == '__main__':
    main(sys.argv)
