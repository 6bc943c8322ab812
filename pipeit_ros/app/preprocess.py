"""Camera image -> model input tensor, from a small typed record, with at most two OpenCV calls per frame.

:class:`PreprocessConfig` is what a model wants: its input shape and layout (NCHW or NHWC), the resize mode
(``stretch``; ``letterbox`` with its pad value; ``center_crop``), the colour order (``rgb``, ``bgr``,
``grey``), ``scale``, ``mean`` and ``std`` (input = (pixel * scale - mean) / std) and the dtype (``float32``,
or ``uint8``: pixels as they are). :func:`resolve` finds it for a model, first source that has a field wins:

1. explicit values (planner parameters) and the YAML sidecar next to the model (``net.onnx`` ->
   ``net.pipeit.yaml``, same keys as the planner parameters);
2. the model's ``metadata_props`` (:mod:`pipeit_ros.model.meta` says which keys);
3. the defaults below (ImageNet mean/std, RGB, stretch), with a log line saying that they were assumed.

:class:`Preprocessor` applies a config to a sensor_msgs/Image-shaped frame: ``np.frombuffer`` views the bytes
(row padding sliced off as a view), ``cv2.cvtColor`` only where the channel count changes (grey, alpha, mono
to colour), then one ``cv2.dnn.blobFromImageWithParams`` call resizes (stretch, letterbox or centre crop),
swaps R and B where the model's order differs from the frame's, applies ``(x - mean') * scale'`` per channel
and lays the result out as NCHW or NHWC float32/uint8 in a fresh array. :func:`geometry` gives the affine map
from source pixels to model pixels that the blob applied (detections are mapped back with it). In stretch
mode a colour conversion or an ``area`` / ``nearest`` filter puts a ``cv2.resize`` first (the conversion then
runs on the small image). Frames that cannot be read raise
:class:`ImageError` whose ``kind`` ('encoding', 'size', 'empty') lets the input node count drops per reason.
"""
from dataclasses import asdict, dataclass, fields
import os

import cv2
import numpy as np

from pipeit_ros.app.wire.plan_msg import IMAGENET_MEAN, IMAGENET_STD
from pipeit_ros.errors import PipeitError
from pipeit_ros.model import meta

CHANNELS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'rgba8': 4, 'bgra8': 4}
SUPPORTED_ENCODINGS = tuple(CHANNELS)
INTERPOLATIONS = ('linear', 'area', 'nearest')
RESIZE_MODES = ('stretch', 'letterbox', 'center_crop')
COLOURS = ('rgb', 'bgr', 'grey')
LAYOUTS = ('nchw', 'nhwc')
DTYPES = ('float32', 'uint8')


class ImageError(PipeitError):
    """A frame that cannot become a model input; ``kind`` names the reason for the drop counters."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class PreprocessConfig:
    """What the model wants from a camera frame (see the module docstring). ``pad_value`` is in pixel units
    (0-255) and fills the letterbox border before scaling; a 1-channel input means ``colour`` grey."""

    input_shape: tuple = (1, 3, 224, 224)
    resize: str = 'stretch'
    pad_value: float = 114.0
    colour: str = 'rgb'
    scale: float = 1 / 255
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    layout: str = 'nchw'
    dtype: str = 'float32'
    interpolation: str = 'linear'

    def __post_init__(self):
        for name, allowed in (('resize', RESIZE_MODES), ('colour', COLOURS), ('layout', LAYOUTS),
                              ('dtype', DTYPES), ('interpolation', INTERPOLATIONS)):
            if getattr(self, name) not in allowed:
                raise PipeitError(f'{name} {getattr(self, name)!r} is not one of {", ".join(allowed)}')
        shape = tuple(int(d) for d in self.input_shape)
        c = shape[1] if self.layout == 'nchw' else (shape[3] if len(shape) == 4 else 0)
        if len(shape) != 4 or shape[0] != 1 or c not in (1, 3) or min(shape) < 1:
            axes = 'C, H, W' if self.layout == 'nchw' else 'H, W, C'
            raise PipeitError(f'model input shape {list(shape)} is not (1, {axes}) with C 1 or 3')
        if c == 3 and self.colour == 'grey':
            raise PipeitError(f'colour grey needs a 1-channel input, the model takes {list(shape)}')
        colour = 'grey' if c == 1 else self.colour
        mean, std = _per_channel('mean', self.mean, c), _per_channel('std', self.std, c)
        if any(s <= 0 for s in std) or not float(self.scale) > 0:
            raise PipeitError(f'scale {self.scale} and std {list(std)} must be > 0 for every channel')
        if self.dtype == 'uint8' and (float(self.scale) != 1.0 or any(mean) or any(s != 1 for s in std)):
            raise PipeitError('a uint8 input takes pixels as they are: it needs scale 1, mean 0 and std 1')
        if self.resize != 'stretch' and self.interpolation != 'linear':
            raise PipeitError(f'interpolation {self.interpolation!r} needs resize stretch (letterbox and '
                              'center_crop resize linearly)')
        if not 0 <= float(self.pad_value) <= 255:
            raise PipeitError(f'pad_value must be a pixel value in [0, 255], got {self.pad_value}')
        for name, value in (('input_shape', shape), ('colour', colour), ('mean', mean), ('std', std),
                            ('scale', float(self.scale)), ('pad_value', float(self.pad_value))):
            object.__setattr__(self, name, value)

    @property
    def size(self):
        """(height, width) of the model input."""
        return self.input_shape[2:4] if self.layout == 'nchw' else self.input_shape[1:3]

    def to_dict(self):
        """For the plan message; ``rgb`` (False for BGR) is kept for readers of the first preprocess object."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        d['rgb'] = self.colour != 'bgr'
        return d

    @classmethod
    def from_dict(cls, d, **overrides):
        """From the plan message's ``preprocess`` object; non-empty overrides (node parameters) win. A legacy
        ``rgb`` flag becomes ``colour``."""
        d = dict(d or {})
        d.update({k: v for k, v in overrides.items() if v not in (None, [], (), '')})
        if 'rgb' in d and 'colour' not in d:
            d['colour'] = 'rgb' if d['rgb'] else 'bgr'
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})


def _per_channel(name, values, c):
    values = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    if len(values) == 1:
        values = values * c
    if len(values) == 3 and c == 1:
        values = (sum(values) / 3,)
    if len(values) != c:
        raise PipeitError(f'{name} {list(values)} needs 1 or {c} values for a {c}-channel model')
    return values


def _scalar(values, fill):
    """A cv::Scalar (4 values) from per-channel values."""
    return tuple(values) + (fill,) * (4 - len(values))


# -- finding a model's pre-processing ---------------------------------------------------------------------------
PREPROCESS_KEYS = ('resize', 'pad_value', 'colour', 'scale', 'mean', 'std', 'layout', 'dtype')
# parameter / sidecar names of the record's fields where they differ
PARAM_NAMES = {'resize': 'resize_mode', 'scale': 'pixel_scale'}


def resolve(graph, explicit=None, sidecar=None, log=None):
    """(config, {field: source}) for ``graph`` (a LayerGraph): explicit values (parameter names: resize_mode,
    pad_value, colour, pixel_scale, mean, std, layout, dtype; None or '' = not given), else the sidecar's,
    else the model's metadata, else the defaults; ``log`` gets one line saying where the fields came from."""
    def fields_of(table):
        return {k: table[PARAM_NAMES.get(k, k)] for k in PREPROCESS_KEYS
                if table.get(PARAM_NAMES.get(k, k)) not in (None, '', [], ())}

    explicit, sidecar = fields_of(explicit or {}), fields_of(sidecar or {})
    hints = meta.preprocess_hints(graph.metadata)
    values, sources = {}, {}
    for key in PREPROCESS_KEYS:
        for source, table in (('parameter', explicit), ('sidecar', sidecar), ('metadata', hints)):
            if key in table:
                values[key], sources[key] = table[key], source
                break
        else:
            sources[key] = 'default'
    if sources['layout'] == 'default':          # not a guess: the input's shape says it
        values['layout'], sources['layout'] = meta.input_layout(graph.input_shape), 'input shape'
    if sources['dtype'] == 'default':           # nor this: the input's type
        values['dtype'], sources['dtype'] = ('uint8' if graph.input_dtype == np.uint8 else 'float32'), 'input type'
        if values['dtype'] == 'uint8':
            values.update({k: v for k, v in (('scale', 1.0), ('mean', 0.0), ('std', 1.0)) if sources[k] == 'default'})
    try:
        config = PreprocessConfig(input_shape=tuple(graph.input_shape), **values)
    except PipeitError as exc:
        raise PipeitError(f'{graph.path}: pre-processing {exc}') from None
    if log is not None:
        by_source = {}
        for key, source in sources.items():
            by_source.setdefault(source, []).append(key)
        said = '; '.join(f'{source}: {", ".join(keys)}' for source, keys in by_source.items())
        assumed = ' (defaults assumed: give them as parameters or in ' \
            f'{os.path.basename(meta.sidecar_path(graph.path))})' if 'default' in by_source else ''
        log(f'pre-processing of {os.path.basename(graph.path)}: {config.resize} to '
            f'{"x".join(map(str, config.size))}, {config.colour}, scale {config.scale:.6g}, mean '
            f'{[round(m, 4) for m in config.mean]}, std {[round(s, 4) for s in config.std]}, {config.layout} '
            f'{config.dtype} [{said}]{assumed}')
    return config, sources


# -- applying it -------------------------------------------------------------------------------------------------
def image_view(encoding, height, width, step, data):
    """The frame as an ``(height, width, channels)`` uint8 view of ``data`` (no copy; padding sliced off)."""
    if encoding not in CHANNELS:
        raise ImageError('encoding', f'unsupported image encoding {encoding!r} (supported: '
                                     f'{", ".join(SUPPORTED_ENCODINGS)})')
    if height == 0 or width == 0 or len(data) == 0:
        raise ImageError('empty', f'empty image ({width}x{height}, {len(data)} bytes)')
    ch = CHANNELS[encoding]
    if step < width * ch:
        raise ImageError('size', f'step {step} is less than width {width} x {ch} bytes')
    if len(data) != step * height:
        raise ImageError('size', f'{len(data)} data bytes, expected step {step} x height {height} = '
                                 f'{step * height}')
    rows = np.frombuffer(data, np.uint8).reshape(height, step)
    return rows[:, :width * ch].reshape(height, width, ch)


def geometry(config, src_hw):
    """(sx, sy, ox, oy): a source pixel (x, y) lands at (x * sx + ox, y * sy + oy) in the model input, with
    OpenCV's letterbox (centred, truncated size) and centre-crop (one factor, offset truncated) arithmetic."""
    h, w = int(src_hw[0]), int(src_hw[1])
    th, tw = config.size
    if config.resize == 'stretch':
        return tw / w, th / h, 0.0, 0.0
    if config.resize == 'letterbox':
        f = min(np.float32(tw) / np.float32(w), np.float32(th) / np.float32(h))      # float32, as OpenCV
        rw, rh = int(np.float32(w) * f), int(np.float32(h) * f)
        return rw / w, rh / h, float((tw - rw) // 2), float((th - rh) // 2)
    f = float(np.float32(max(np.float32(tw) / np.float32(w), np.float32(th) / np.float32(h))))
    rw, rh = round(w * f), round(h * f)
    return f, f, -float(int(0.5 * (rw - tw))), -float(int(0.5 * (rh - th)))


class Preprocessor:
    """Callable turning frames into model inputs for one :class:`PreprocessConfig`.

    >>> pre = Preprocessor(PreprocessConfig(input_shape=(1, 3, 32, 32)))
    >>> pre('mono8', 2, 2, 4, bytes(8)).shape
    (1, 3, 32, 32)
    """

    def __init__(self, config=None):
        self._cv2 = cv2
        self.config = config or PreprocessConfig()
        self._per_encoding = {}

    def _plan(self, encoding):
        """(cvtColor code or None, blob params) for frames of ``encoding``, built once."""
        if encoding in self._per_encoding:
            return self._per_encoding[encoding]
        cv2, cfg = self._cv2, self.config
        if cfg.colour == 'grey':
            code, swap = {'rgb8': cv2.COLOR_RGB2GRAY, 'bgr8': cv2.COLOR_BGR2GRAY, 'mono8': None,
                          'rgba8': cv2.COLOR_RGBA2GRAY, 'bgra8': cv2.COLOR_BGRA2GRAY}[encoding], False
        else:
            code, order = {'rgb8': (None, 'rgb'), 'bgr8': (None, 'bgr'), 'mono8': (cv2.COLOR_GRAY2RGB, 'rgb'),
                           'rgba8': (cv2.COLOR_RGBA2RGB, 'rgb'), 'bgra8': (cv2.COLOR_BGRA2BGR, 'bgr')}[encoding]
            swap = order != cfg.colour
        p = cv2.dnn.Image2BlobParams()
        # (x * scale - mean) / std  ==  (x - mean / scale) * (scale / std): the blob's mean and scale factor
        if cfg.dtype == 'float32':
            p.scalefactor = _scalar([cfg.scale / s for s in cfg.std], 1.0)
            p.mean = _scalar([m / cfg.scale for m in cfg.mean], 0.0)
        p.size = (cfg.size[1], cfg.size[0])
        p.swapRB = swap
        p.ddepth = cv2.CV_32F if cfg.dtype == 'float32' else cv2.CV_8U
        p.datalayout = cv2.DNN_LAYOUT_NCHW if cfg.layout == 'nchw' else cv2.DNN_LAYOUT_NHWC
        p.paddingmode = {'stretch': cv2.dnn.DNN_PMODE_NULL, 'letterbox': cv2.dnn.DNN_PMODE_LETTERBOX,
                         'center_crop': cv2.dnn.DNN_PMODE_CROP_CENTER}[cfg.resize]
        p.borderValue = _scalar([cfg.pad_value] * 3, 0.0)
        self._per_encoding[encoding] = (code, p)
        return code, p

    def __call__(self, encoding, height, width, step, data):
        cv2, cfg = self._cv2, self.config
        img = image_view(encoding, height, width, step, data)
        code, params = self._plan(encoding)
        # stretch with a colour conversion or a non-linear filter: resize first, so the conversion runs on the
        # small image (the blob then has nothing left to resize)
        if cfg.resize == 'stretch' and (code is not None or cfg.interpolation != 'linear') \
                and (height, width) != cfg.size:
            interp = {'linear': cv2.INTER_LINEAR, 'area': cv2.INTER_AREA,
                      'nearest': cv2.INTER_NEAREST}[cfg.interpolation]
            img = cv2.resize(img, (cfg.size[1], cfg.size[0]), interpolation=interp)
        if code is not None:
            img = cv2.cvtColor(np.ascontiguousarray(img), code)
        elif not img.flags.c_contiguous:       # a row-padded frame
            img = np.ascontiguousarray(img)
        return cv2.dnn.blobFromImageWithParams(img, params)

    def convert_msg(self, msg):
        """A sensor_msgs/Image (or anything with its fields) -> model input."""
        return self(msg.encoding, msg.height, msg.width, msg.step, msg.data)
