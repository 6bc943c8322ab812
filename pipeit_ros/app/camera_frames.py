"""Frames for the camera source node, with OpenCV: a video file, a folder of images, or a moving pattern.

Kept apart from the node (no rclpy) so the sources are tested without a ROS graph. Every source yields
uint8 arrays of shape (H, W, channels) in the requested encoding (rgb8, bgr8, mono8), resized when a size
is given; ``read()`` returns None at the end (never for the pattern, or a source that loops).
"""
import os

import cv2
import numpy as np

from pipeit_ros.errors import PipeitError

ENCODINGS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1}
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')


def _cv2():
    return cv2


class FrameSource:
    """Base: converts the BGR frames a subclass produces (``_next_bgr``) to the encoding and size."""

    def __init__(self, width=0, height=0, encoding='rgb8'):
        if encoding not in ENCODINGS:
            raise PipeitError(f'encoding must be one of {", ".join(ENCODINGS)}, got {encoding!r}')
        if width < 0 or height < 0 or (width == 0) != (height == 0):
            raise PipeitError(f'width and height must both be > 0 (or both 0: native size), got {width}x{height}')
        self.width, self.height, self.encoding = int(width), int(height), encoding
        self.index = 0

    def read(self):
        bgr = self._next_bgr()
        if bgr is None:
            return None
        self.index += 1
        return self._convert(bgr)

    def _convert(self, bgr):
        cv2 = _cv2()
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        if self.width and (bgr.shape[1], bgr.shape[0]) != (self.width, self.height):
            bgr = cv2.resize(bgr, (self.width, self.height), interpolation=cv2.INTER_AREA)
        if self.encoding == 'rgb8':
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.encoding == 'mono8':
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[:, :, None]
        return np.ascontiguousarray(bgr)

    def _next_bgr(self):
        raise NotImplementedError

    def close(self):
        pass

    def describe(self):
        return type(self).__name__


class PatternSource(FrameSource):
    """A synthetic moving scene: a colour gradient, a disc circling the centre, and the frame number."""

    def __init__(self, width=640, height=480, encoding='rgb8'):
        super().__init__(width or 640, height or 480, encoding)
        w, h = self.width, self.height
        x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
        y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
        self._background = np.dstack([np.broadcast_to(x, (h, w)), np.broadcast_to(y, (h, w)),
                                      np.full((h, w), 96, np.float32)]).astype(np.uint8)

    def _next_bgr(self):
        cv2 = _cv2()
        frame = self._background.copy()
        w, h, i = self.width, self.height, self.index
        angle = 2 * np.pi * (i % 120) / 120
        centre = (int(w / 2 + 0.3 * w * np.cos(angle)), int(h / 2 + 0.3 * h * np.sin(angle)))
        cv2.circle(frame, centre, max(2, min(w, h) // 8), (0, 0, 255), thickness=-1)
        cv2.putText(frame, str(i), (max(1, w // 40), max(12, h // 8)), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.3, h / 480), (255, 255, 255), max(1, h // 240))
        return frame

    def describe(self):
        return f'pattern {self.width}x{self.height}'


class VideoSource(FrameSource):
    """Frames of a video file (cv2.VideoCapture); starts over at the end when ``loop``."""

    def __init__(self, path, width=0, height=0, encoding='rgb8', loop=True):
        super().__init__(width, height, encoding)
        self.path, self.loop = path, loop
        # FFmpeg's own log lines (e.g. '[mp3 @ 0x...] Failed to find two consecutive MPEG audio frames' while it
        # probes a file that is no video) would stand beside our one-line reason; the user can still set it
        os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')   # AV_LOG_QUIET
        self._cap = _cv2().VideoCapture(path)
        if not self._cap.isOpened():
            raise PipeitError(f'{path}: OpenCV cannot open this video')
        self._frames = 0

    def _next_bgr(self):
        ok, frame = self._cap.read()
        if not ok and self.loop and self._frames:
            self._cap.set(_cv2().CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok:
            if not self._frames:
                raise PipeitError(f'{self.path}: no frame could be decoded')
            return None
        self._frames += 1
        return frame

    def close(self):
        self._cap.release()

    def describe(self):
        return f'video {self.path}'


class FolderSource(FrameSource):
    """The images of a folder in sorted name order (cv2.imread); starts over at the end when ``loop``. An image
    OpenCV cannot read is skipped and counted (``unreadable``, ``skipped``: its path); a pass over the folder
    in which none could be read is an error."""

    def __init__(self, path, width=0, height=0, encoding='rgb8', loop=True):
        super().__init__(width, height, encoding)
        self.path, self.loop = path, loop
        self.files = sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.lower().endswith(IMAGE_EXTENSIONS))
        if not self.files:
            raise PipeitError(f'{path}: no image files ({", ".join(IMAGE_EXTENSIONS)})')
        self._pos = 0
        self.unreadable = 0
        self.skipped = None          # path of the last image skipped

    def _next_bgr(self):
        for _ in range(len(self.files)):
            if self._pos == len(self.files):
                if not self.loop:
                    return None
                self._pos = 0
            path = self.files[self._pos]
            self._pos += 1
            frame = _cv2().imread(path, _cv2().IMREAD_COLOR)
            if frame is not None:
                return frame
            self.unreadable += 1
            self.skipped = path
        if self._pos == len(self.files) and not self.loop:
            return None
        raise PipeitError(f'{self.path}: OpenCV cannot read any of its {len(self.files)} images')

    def describe(self):
        return f'{len(self.files)} images in {self.path}'


def open_source(source, width=0, height=0, encoding='rgb8', loop=True):
    """'pattern', a folder of images, or a video file."""
    if source == 'pattern':
        return PatternSource(width, height, encoding)
    if os.path.isdir(source):
        return FolderSource(source, width, height, encoding, loop)
    if os.path.isfile(source):       # a regular file: a FIFO or a device would block OpenCV
        return VideoSource(source, width, height, encoding, loop)
    raise PipeitError(f'camera source {source!r} is not "pattern", a folder of images or a video file')
