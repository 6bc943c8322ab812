"""SIGSTOP -> stall report: how long a frozen container goes unreported (pipeit_ros.app.stall).

Starts ``pipeit bringup`` with its own camera and one container, then STOPS times: stops the container with
SIGSTOP and times bringup's ``container <name> stalled: ...`` line, resumes it and times ``... runs again``.
The report comes between about ``stall_timeout_s`` - 1 s and + 1 s after the stop (the last heartbeat before the
stop is up to 1 s old; the planner judges once a second)::

    python tools/stallbench.py --stall-timeout 5 --stops 3

Run under the bench lock for figures (see /work/helpers/COMMON.md); the load average is printed with them.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--stall-timeout', type=float, default=5.0, help="the planner's stall_timeout_s")
    ap.add_argument('--stops', type=int, default=3)
    ap.add_argument('--model', default='tiny')
    args = ap.parse_args(argv)
    lines, stamps = [], []
    with tempfile.TemporaryDirectory(prefix='stallbench-') as work:
        params = os.path.join(work, 'params.yaml')
        with open(params, 'w') as f:
            f.write(f'pipeit_planner:\n  ros__parameters:\n    stall_timeout_s: {args.stall_timeout}\n')
        env = {**os.environ, 'ROS_DOMAIN_ID': str(1 + (os.getpid() + 3) % 100), 'PYTHONUNBUFFERED': '1'}
        proc = subprocess.Popen([sys.executable, '-m', 'pipeit_ros', 'bringup', '--with-camera', 'pattern', '--model',
                                 args.model, '--single-container', '--params-file', params], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def read():
            for line in proc.stdout:
                stamps.append(time.monotonic())
                lines.append(line.rstrip('\n'))
        threading.Thread(target=read, daemon=True).start()

        def wait_line(pattern, after, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for t, line in zip(list(stamps), list(lines)):
                    if t >= after and re.search(pattern, line):
                        return t
                time.sleep(0.01)
            raise RuntimeError(f'no line {pattern!r} within {timeout:g} s:\n' + '\n'.join(lines[-30:]))

        container = None
        try:
            wait_line(r' [1-9]\d* results', 0, 180)
            container = next(p for p in psutil.Process(proc.pid).children()
                             if 'pipeit_ros.ros.container' in ' '.join(p.cmdline()))
            for i in range(args.stops):
                time.sleep(3.0)                 # frames flowing again
                t_stop = time.monotonic()
                container.suspend()
                t_report = wait_line(r'^container pipeit_container stalled: ', t_stop, args.stall_timeout + 30)
                t_resume = time.monotonic()
                container.resume()
                t_again = wait_line(r'container pipeit_container runs again', t_resume, 30)
                print(f'stop {i + 1}: stall_timeout_s {args.stall_timeout:g}: reported {t_report - t_stop:.2f} s '
                      f'after SIGSTOP, running again reported {t_again - t_resume:.2f} s after SIGCONT '
                      f'(load {os.getloadavg()[0]:.1f})', flush=True)
        finally:
            if container is not None:
                container.resume()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print('load average ' + ' '.join(f'{x:.2f}' for x in os.getloadavg()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
