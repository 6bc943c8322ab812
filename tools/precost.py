"""CPU time of pre-processing one camera frame, per resize mode: ``python tools/precost.py [--size HxW]...``

Each mode's :class:`pipeit_ros.app.preprocess.Preprocessor` turns a ``--frame`` (default 640x480) rgb8 frame
into a float32 NCHW input ``--repeat`` times; the figure is the median ``time.thread_time`` of one call (CPU
time of this thread, so it holds while other processes share the machine), OpenCV held to one thread.

The last ``--in-flight`` inputs stay alive, as frames queued in the engine do (the Preprocessor hands an
output out again only once nobody holds it), and the first tenth of the calls is not counted. Allocation
state matters on these VMs: glibc maps each block this large anew, and the first writes into a fresh 640x640
float32 input cost 0.14 ms of page faults.
"""
import argparse
import collections
import json
import statistics
import time

import cv2
import numpy as np

from pipeit_ros.app.preprocess import RESIZE_MODES, PreprocessConfig, Preprocessor


def measure(config, frame, repeat, in_flight):
    pre = Preprocessor(config)
    h, w = frame.shape[:2]
    data = frame.tobytes()
    alive = collections.deque([pre('rgb8', h, w, w * 3, data)], maxlen=max(1, in_flight))
    times = []
    for _ in range(repeat):
        t = time.thread_time()
        x = pre('rgb8', h, w, w * 3, data)
        times.append(time.thread_time() - t)
        if in_flight:
            alive.append(x)
    return statistics.median(times[len(times) // 10:]) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', action='append', metavar='HxW', help='model input size (default 224x224, '
                                                                        '320x320, 640x640); repeatable')
    parser.add_argument('--frame', default='480x640', metavar='HxW', help='camera frame size (default 480x640)')
    parser.add_argument('--colour', default='rgb', choices=('rgb', 'bgr'), help="the model's channel order")
    parser.add_argument('--repeat', type=int, default=300, metavar='N')
    parser.add_argument('--in-flight', type=int, default=4, metavar='N', help='inputs kept alive (default 4)')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    fh, fw = (int(v) for v in args.frame.split('x'))
    frame = np.random.default_rng(0).integers(0, 256, (fh, fw, 3), dtype=np.uint8)
    rows = []
    for size in args.size or ['224x224', '320x320', '640x640']:
        h, w = (int(v) for v in size.split('x'))
        for mode in RESIZE_MODES:
            cfg = PreprocessConfig(input_shape=(1, 3, h, w), resize=mode, colour=args.colour)
            rows.append({'frame': args.frame, 'input': size, 'resize': mode, 'colour': args.colour,
                         'cpu_ms': round(measure(cfg, frame, args.repeat, args.in_flight), 3)})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f'{"frame":<9} {"input":<9} {"resize":<12} cpu ms/frame (median of {args.repeat}, one thread)')
        for r in rows:
            print(f'{r["frame"]:<9} {r["input"]:<9} {r["resize"]:<12} {r["cpu_ms"]:.3f}')


if __name__ == '__main__':
    main()
