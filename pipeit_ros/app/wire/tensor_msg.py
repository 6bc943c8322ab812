"""The internal tensor message between containers: a sensor_msgs/Image carrying the named tensors of one cut.

Why Image: it is a standard message with a header (the source frame's stamp and frame_id travel unchanged) and a
uint8[] payload that rclpy fills from an ``array.array('B')`` with one memcpy per tensor. The tensors' facts ride
in the ``encoding`` string, which no image viewer will mistake for a picture::

    pipeit/tensor;v2;seq=17;gen=2;t_recv=1764150000123456789;src=480x640;t=x:<f4:1x32x56x56:0,skip:<f4:1x16x56x56:401408

(``src``: the camera frame's height x width, which the last stage needs to map detections back.)

One entry per tensor, in the order of the cut (``pipeit_ros.model.graph.CutPoint.tensors``): name
(percent-quoted, so any ONNX name fits), dtype, shape (``scalar`` for 0-d) and byte offset into ``data``; each
tensor starts at a multiple of :data:`ALIGN` bytes. ``height`` = 1, ``width`` = ``step`` = the byte count,
``is_bigendian`` 0 (each dtype says its own byte order). The end of a plan generation on a topic is an empty
message with encoding ``pipeit/eos;v2;gen=2;sent=41``: it travels in-band behind the generation's last frame, so a
receiver knows every older frame has arrived (see pipeit_ros.app.handoff), and how many tensor messages were
published before it (fewer arrived: DDS lost them, on a keep-last topic under ``drop_oldest``).

Packing copies each tensor once through a memoryview (``array.frombytes``); unpacking is ``np.frombuffer`` over
the message's buffer (no copy). Assigning an ndarray to ``msg.data`` would walk it element by element
(docs/architecture.md, measured facts) — never. Functions take any object with the Image fields, so the core is tested without rclpy.
"""
import array
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import numpy as np

from pipeit_ros.app.wire import topics
from pipeit_ros.errors import PipeitError

TENSOR = topics.TENSOR
EOS = topics.EOS
VERSION = 'v2'
ALIGN = 64      # byte alignment of every tensor in the payload (SIMD loads, as ORT's own allocations)


@dataclass
class Packet:
    """One unpacked message: ``kind`` 'tensor' (with ``names`` and ``arrays``, in the cut's order) or 'eos'
    (end of ``generation``)."""

    kind: str
    generation: int
    seq: int = -1
    names: list = field(default_factory=list)
    arrays: list = field(default_factory=list)
    t_recv_ns: int = 0
    src_hw: tuple = (0, 0)
    sent: int | None = None     # eos: tensor messages published before it on its topic (None: not said)

    def ordered(self, names):
        """The arrays in the order of ``names`` (a stage's input names); PipeitError when one is missing."""
        by_name = dict(zip(self.names, self.arrays))
        missing = [n for n in names if n not in by_name]
        if missing:
            raise PipeitError(f'tensor message lacks {missing} (carries {self.names})')
        return [by_name[n] for n in names]


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


def pack_tensors(msg, names, arrays, *, seq, generation, t_recv_ns=0, src_hw=(0, 0)):
    """Fill an Image-like ``msg`` with the tensors ``arrays`` named ``names`` (header left to the caller: copy the
    source frame's)."""
    if len(names) != len(arrays) or not names:
        raise PipeitError(f'pack_tensors needs one name per array, got {len(names)} names, {len(arrays)} arrays')
    data, entries = array.array('B'), []
    for name, arr in zip(names, arrays):
        arr = _c_order(arr)
        pad = -len(data) % ALIGN
        if pad:
            data.frombytes(bytes(pad))
        shape = 'x'.join(str(d) for d in arr.shape) or 'scalar'
        entries.append(f'{quote(str(name), safe="")}:{arr.dtype.str}:{shape}:{len(data)}')
        _fill(data, arr)
    msg.encoding = (f'{TENSOR};{VERSION};seq={int(seq)};gen={int(generation)};t_recv={int(t_recv_ns)};'
                    f'src={int(src_hw[0])}x{int(src_hw[1])};t={",".join(entries)}')
    msg.height = 1
    msg.width = msg.step = len(data)
    msg.is_bigendian = 0
    msg.data = data
    return msg


def pack_eos(msg, generation, sent=None):
    """Fill ``msg`` as the end-of-generation marker, behind ``sent`` tensor messages."""
    msg.encoding = f'{EOS};{VERSION};gen={int(generation)}' + ('' if sent is None else f';sent={int(sent)}')
    msg.height = msg.width = msg.step = 0
    msg.is_bigendian = 0
    msg.data = array.array('B')
    return msg


def peek_generation(msg):
    """The generation a message belongs to, without touching its payload (for cheap filtering)."""
    return int(_fields(msg.encoding)[1]['gen'])


def unpack(msg):
    """Image-like ``msg`` -> :class:`Packet`; the arrays view the message buffer (no copy)."""
    kind, f = _fields(msg.encoding)
    try:
        gen = int(f['gen'])
        if kind == EOS:
            return Packet('eos', gen, sent=int(f['sent']) if 'sent' in f else None)
        seq, t_recv = int(f['seq']), int(f.get('t_recv', 0))
        src_hw = tuple(int(d) for d in f.get('src', '0x0').split('x'))
        entries = []
        for entry in f['t'].split(','):
            name, dtype, shape, offset = entry.split(':')
            shape = () if shape == 'scalar' else tuple(int(d) for d in shape.split('x'))
            entries.append((unquote(name), np.dtype(dtype), shape, int(offset)))
    except (KeyError, ValueError, TypeError) as exc:
        raise PipeitError(f'malformed tensor message encoding {msg.encoding[:80]!r}: {exc}') from None
    buf = msg.data
    names, arrays = [], []
    for name, dtype, shape, offset in entries:
        count = int(np.prod(shape, dtype=np.int64))
        end = offset + dtype.itemsize * count
        if offset < 0 or end > len(buf):
            raise PipeitError(f'tensor message carries {len(buf)} bytes, tensor {name!r} shape {list(shape)} '
                              f'{dtype} at offset {offset} needs {end}')
        names.append(name)
        arrays.append(np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape) if count
                      else np.empty(shape, dtype))
    return Packet('tensor', gen, seq, names, arrays, t_recv, src_hw)
