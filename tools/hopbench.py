"""Camera -> head-stage hop over Fast DDS: latency and frames lost, per transport setting and frame rate.

The real ``pipeit_camera`` process publishes 640x480 rgb8 frames (best effort, as by default) at RATE for
SECONDS; this process takes them as the head-stage container does (pipeit_ros.ros.stage_node.ImageInput: raw
take, read in place) and records arrival time - header stamp (one host clock). Each setting runs in fresh
processes, since Fast DDS reads a profile once per process:

- ``profile``: the shipped profile (pipeit_ros/data/fastdds_profiles.xml: shared memory 32 MiB + UDPv4) in both
  processes, what the test suite gets (pipeit_ros.testing.harness.dds_env);
- ``roles``: each process its role's profile, as the layout gives them (pipeit_ros.app.dds_profile): the camera
  the shipped one, the receiving container the same with an 8 MiB segment;
- ``shm``: shared-memory-only builtin transports through the environment, as the nodes and tests used before
  (FASTDDS_BUILTIN_TRANSPORTS=SHM_TRANSPORT below);
- ``default``: Fast DDS' builtin defaults (shared memory 512 KB + UDPv4), no profile.

::

    python tools/hopbench.py --rates 30 --seconds 60                 # shm and profile, 60 s at 30 Hz
    python tools/hopbench.py --find-max --seconds 60                 # the highest rate sustained, then 60 s there

A rate is sustained when the camera reached 97% of it and DDS lost under 1% of the frames (short probes).
Run under the bench lock for figures (see /work/helpers/COMMON.md); the load average is printed with them.
"""
import argparse
import json
import os
import subprocess
import sys
import time

SHM_TRANSPORT = 'SHM?max_msg_size=8MB&sockets_size=16MB'     # the harness' transport before the shipped profile
MODES = {'profile': None, 'roles': None, 'shm': SHM_TRANSPORT, 'default': ''}


def mode_env(mode, role):
    from pipeit_ros.app.dds_profile import dds_profile_env
    from pipeit_ros.testing import harness
    if mode == 'default':
        return {k: v for k, v in os.environ.items() if not k.startswith(('FASTDDS_', 'FASTRTPS_'))}
    env = harness.dds_env(MODES[mode])
    return {**env, **dds_profile_env(role, environ=env)} if mode == 'roles' else env


def child(mode, rate, seconds, width, height):
    """One measurement in this (fresh) process, on a ROS domain of its own: a JSON line on stdout."""
    domain = {'ROS_DOMAIN_ID': str(1 + os.getpid() % 100)}
    env = {**mode_env(mode, 'container'), **domain}
    os.environ.clear()
    os.environ.update(env)
    import numpy as np
    import rclpy

    from pipeit_ros.app import handoff
    from pipeit_ros.ros.stage_node import ImageInput

    rclpy.init()
    inp = ImageInput(context=rclpy.get_default_context(), namespace='', topic='image_raw', qos_name='sensor_data',
                     policy='drop_oldest', queue_size=1_000_000)
    pump = inp.pump().start()
    n = int(rate * seconds)
    cam = subprocess.Popen([sys.executable, '-m', 'pipeit_ros.ros.camera_node', '--ros-args', '-p', f'rate_hz:={rate}',
                            '-p', f'count:={n}', '-p', 'wait_for_subscribers:=1', '-p', f'width:={width}',
                            '-p', f'height:={height}'], env={**mode_env(mode, 'camera'), **domain}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    latency_ms, stamps = [], set()
    deadline = time.monotonic() + seconds * 2 + 60
    while time.monotonic() < deadline:
        try:
            item = inp.inbox.get(timeout=0.2)
        except handoff.Closed:
            break
        if item is None:
            if cam.poll() is not None and len(inp.inbox) == 0:
                break
            continue
        msg, t_recv = item[:2]          # (message, receive time, frames lost before it)
        stamp = handoff.stamp_ns(msg.header.stamp)
        stamps.add(stamp)
        latency_ms.append((t_recv - stamp) / 1e6)
    if cam.poll() is None:
        cam.kill()
    cam.wait()
    span = (max(stamps) - min(stamps)) / 1e9 if len(stamps) > 1 else 0.0
    lat = np.array(latency_ms or [float('nan')])
    print(json.dumps({'mode': mode, 'rate_hz': rate, 'seconds': seconds, 'published': n, 'received': len(stamps),
                      'lost': n - len(stamps), 'dds_lost': int(inp.drops['dds']),
                      'p50_ms': float(np.percentile(lat, 50)), 'p99_ms': float(np.percentile(lat, 99)),
                      'max_ms': float(lat.max()), 'camera_hz': (len(stamps) - 1) / span if span else 0.0,
                      'camera_exit': cam.returncode}))
    inp.close()
    pump.stop()
    rclpy.try_shutdown()


def measure(mode, rate, seconds, args):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--child', mode, str(rate), str(seconds),
                           '--width', str(args.width), '--height', str(args.height)],
                          capture_output=True, text=True, timeout=seconds * 3 + 120)
    if proc.returncode != 0:
        raise RuntimeError(f'{mode} at {rate:g} Hz failed:\n{proc.stderr[-2000:]}')
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row['load'] = os.getloadavg()[0]
    print(f'{mode:8} {rate:7.1f} Hz {seconds:5.0f} s: p50 {row["p50_ms"]:6.2f} ms, p99 {row["p99_ms"]:6.2f} ms, '
          f'lost {row["lost"]} of {row["published"]} (DDS reported {row["dds_lost"]}), camera at '
          f'{row["camera_hz"]:.1f} Hz (load {row["load"]:.1f})', file=sys.stderr, flush=True)
    return row


def sustained(row):
    return row['camera_hz'] >= 0.97 * row['rate_hz'] and row['lost'] <= 0.01 * row['published']


def find_max(args):
    """The highest rate (doubling from 60 Hz, then bisecting) the ``profile`` and ``shm`` settings both sustain in
    ``args.probe`` s probes."""
    def ok(rate):
        return all(sustained(measure(m, rate, args.probe, args)) for m in args.modes)
    lo, hi = 30.0, 60.0
    while hi <= 960 and ok(hi):
        lo, hi = hi, hi * 2
    for _ in range(3):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--child', nargs=3, metavar=('MODE', 'RATE', 'SECONDS'), help=argparse.SUPPRESS)
    ap.add_argument('--modes', default='shm,profile', help=f'comma-separated of {", ".join(MODES)}')
    ap.add_argument('--rates', default='30', help='comma-separated frame rates (Hz)')
    ap.add_argument('--find-max', action='store_true', help='measure at the highest sustained rate instead')
    ap.add_argument('--probe', type=float, default=5.0, help='seconds of each --find-max probe')
    ap.add_argument('--seconds', type=float, default=60.0)
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], float(args.child[1]), float(args.child[2]), args.width, args.height)
        return 0
    args.modes = [m for m in args.modes.split(',') if m]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        ap.error(f'unknown mode {unknown[0]!r} (known: {", ".join(MODES)})')
    rates = [find_max(args)] if args.find_max else [float(r) for r in args.rates.split(',')]
    rows = [measure(m, r, args.seconds, args) for r in rates for m in args.modes]
    if args.json:
        print(json.dumps({'rows': rows, 'loadavg': os.getloadavg()}, indent=2))
    else:
        print(f'{"mode":8} {"rate":>7} {"p50 ms":>7} {"p99 ms":>7} {"lost":>11} {"camera Hz":>9}')
        for r in rows:
            print(f'{r["mode"]:8} {r["rate_hz"]:7.1f} {r["p50_ms"]:7.2f} {r["p99_ms"]:7.2f} '
                  f'{r["lost"]:>5}/{r["published"]:<5} {r["camera_hz"]:9.1f}')
        print('load average ' + ' '.join(f'{x:.2f}' for x in os.getloadavg()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
