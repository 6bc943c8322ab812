"""The internal tensor message between containers: a sensor_msgs/Image carrying one raw tensor.

Why Image: it is a standard message with a header (the source frame's stamp and frame_id travel unchanged) and a
uint8[] payload that rclpy fills from an ``array.array('B')`` with one memcpy. The tensor's facts ride in the
``encoding`` string, which no image viewer will mistake for a picture::

    pipeit/tensor;v1;seq=17;gen=2;dtype=<f4;shape=1x32x56x56;t_recv=1764150000123456789;src=480x640

(``src``: the camera frame's height x width, which the last stage needs to map detections back.)

``height`` = 1, ``width`` = ``step`` = the byte count, ``is_bigendian`` from the dtype. The end of a plan
generation on a topic is an empty message with encoding ``pipeit/eos;v1;gen=2``: it travels in-band behind the
generation's last frame, so a receiver knows every older frame has arrived (see pipeit_ros.app.handoff).

Packing copies once through a memoryview (``array.frombytes``); unpacking is ``np.frombuffer`` over the message's
buffer (no copy). Assigning an ndarray to ``msg.data`` would walk it element by element (docs/architecture.md, measured facts) — never.
Functions take any object with the Image fields, so the core is tested without rclpy.
"""
import array
from dataclasses import dataclass

import numpy as np

from pipeit_ros.app.wire import topics
from pipeit_ros.errors import PipeitError

TENSOR = topics.TENSOR
EOS = topics.EOS
VERSION = 'v1'


@dataclass
class Packet:
    """One unpacked message: ``kind`` 'tensor' (with ``array``) or 'eos' (end of ``generation``)."""

    kind: str
    generation: int
    seq: int = -1
    array: np.ndarray | None = None
    t_recv_ns: int = 0
    src_hw: tuple = (0, 0)


def _c_order(arr, dtype=None):
    """``arr`` as a C-contiguous array (no copy when it already is one; 0-d stays 0-d)."""
    arr = np.asarray(arr, dtype=dtype)
    return arr if arr.flags.c_contiguous else np.array(arr, order='C')


def _fill(out, arr):
    if arr.nbytes:
        out.frombytes(memoryview(arr.reshape(-1).view(np.uint8)))
    return out


def byte_array(arr):
    """``array.array('B')`` holding arr's bytes: one memcpy, whatever the dtype."""
    return _fill(array.array('B'), _c_order(arr))


def float32_array(arr):
    """``array.array('f')`` for a float32 message field (Float32MultiArray.data): one memcpy."""
    return _fill(array.array('f'), _c_order(arr, np.float32))


def is_pipeit_encoding(encoding):
    return encoding.startswith(TENSOR + ';') or encoding.startswith(EOS + ';')


def _fields(encoding):
    kind, _, rest = encoding.partition(';')
    parts = rest.split(';')
    if kind not in (TENSOR, EOS) or not parts or parts[0] != VERSION:
        raise PipeitError(f'not a pipeit {VERSION} tensor message (encoding {encoding[:60]!r})')
    try:
        return kind, dict(p.split('=', 1) for p in parts[1:])
    except ValueError:
        raise PipeitError(f'malformed tensor message encoding {encoding[:80]!r}') from None


def pack_tensor(msg, arr, *, seq, generation, t_recv_ns=0, src_hw=(0, 0)):
    """Fill an Image-like ``msg`` with ``arr`` (header left to the caller: copy the source frame's)."""
    arr = _c_order(arr)
    shape = 'x'.join(str(d) for d in arr.shape) or 'scalar'
    msg.encoding = (f'{TENSOR};{VERSION};seq={int(seq)};gen={int(generation)};dtype={arr.dtype.str};'
                    f'shape={shape};t_recv={int(t_recv_ns)};src={int(src_hw[0])}x{int(src_hw[1])}')
    msg.height = 1
    msg.width = arr.nbytes
    msg.step = arr.nbytes
    msg.is_bigendian = int(arr.dtype.byteorder == '>')
    msg.data = byte_array(arr)
    return msg


def pack_eos(msg, generation):
    """Fill ``msg`` as the end-of-generation marker."""
    msg.encoding = f'{EOS};{VERSION};gen={int(generation)}'
    msg.height = msg.width = msg.step = 0
    msg.is_bigendian = 0
    msg.data = array.array('B')
    return msg


def peek_generation(msg):
    """The generation a message belongs to, without touching its payload (for cheap filtering)."""
    return int(_fields(msg.encoding)[1]['gen'])


def unpack(msg):
    """Image-like ``msg`` -> :class:`Packet`; the array views the message buffer (no copy)."""
    kind, f = _fields(msg.encoding)
    try:
        gen = int(f['gen'])
        if kind == EOS:
            return Packet('eos', gen)
        dtype = np.dtype(f['dtype'])
        shape = () if f['shape'] == 'scalar' else tuple(int(d) for d in f['shape'].split('x'))
        seq, t_recv = int(f['seq']), int(f.get('t_recv', 0))
        src_hw = tuple(int(d) for d in f.get('src', '0x0').split('x'))
    except (KeyError, ValueError, TypeError) as exc:
        raise PipeitError(f'malformed tensor message encoding {msg.encoding[:80]!r}: {exc}') from None
    expected = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if len(msg.data) != expected:
        raise PipeitError(f'tensor message carries {len(msg.data)} bytes, shape {list(shape)} {dtype} '
                          f'needs {expected}')
    arr = np.frombuffer(msg.data, dtype=dtype).reshape(shape)
    return Packet('tensor', gen, seq, arr, t_recv, src_hw)
