"""The internal tensor message: the named tensors of a cut, lossless round trip, end-of-generation markers, one
memcpy per tensor (never per element)."""
import array
import time
from types import SimpleNamespace

import numpy as np
import pytest

from pipeit_ros.app.wire import tensor_msg as tensormsg
from pipeit_ros.errors import PipeitError


def blank():
    return SimpleNamespace(encoding='', height=0, width=0, step=0, is_bigendian=0, data=b'')


CASES = [
    ('float32-nchw', np.float32, (1, 32, 56, 56)),
    ('float16', np.float16, (1, 8, 7, 7)),
    ('int64', np.int64, (3, 5)),
    ('uint8', np.uint8, (2, 3, 4)),
    ('big-endian', '>f4', (4, 4)),
    ('scalar', np.float64, ()),
    ('empty', np.float32, (1, 0, 3)),
]


@pytest.mark.parametrize('dtype,shape', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_round_trip_is_exact(dtype, shape):
    rng = np.random.default_rng(11)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    msg = tensormsg.pack_tensors(blank(), ['x'], [arr], seq=41, generation=3, t_recv_ns=123456789)
    assert isinstance(msg.data, array.array) and msg.data.typecode == 'B'
    assert msg.width == msg.step == arr.nbytes and msg.height == 1
    p = tensormsg.unpack(msg)
    assert (p.kind, p.seq, p.generation, p.t_recv_ns, p.names) == ('tensor', 41, 3, 123456789, ['x'])
    assert p.arrays[0].dtype == np.dtype(dtype) and p.arrays[0].shape == tuple(shape)
    np.testing.assert_array_equal(p.arrays[0], arr)
    assert tensormsg.peek_generation(msg) == 3


def test_several_named_tensors_round_trip_aligned_in_order():
    """A cut's tensors, names with the separators the encoding uses, mixed dtypes and an empty one."""
    rng = np.random.default_rng(5)
    names = ['/model.2/m.0/cv1/act/Mul_output_0', 'a;b=c', 'x:y,z|w', 'empty', 'u8']
    arrays = [rng.standard_normal((1, 16, 80, 80)).astype(np.float32), rng.standard_normal(3).astype('>f8'),
              np.arange(7, dtype=np.int64), np.zeros((1, 0, 3), np.float32), np.arange(5, dtype=np.uint8)]
    msg = tensormsg.pack_tensors(blank(), names, arrays, seq=9, generation=4, t_recv_ns=5)
    p = tensormsg.unpack(msg)
    assert p.names == names and len(p.arrays) == len(arrays)
    for got, want in zip(p.arrays, arrays):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    base = np.frombuffer(msg.data, np.uint8)
    for got in p.arrays:
        if got.size:   # every tensor views the message buffer at an aligned offset
            assert np.shares_memory(got, base) and (got.ctypes.data - base.ctypes.data) % tensormsg.ALIGN == 0
    assert [a.shape for a in p.ordered(['u8', names[0]])] == [(5,), (1, 16, 80, 80)]
    with pytest.raises(PipeitError, match="lacks \\['other'\\]"):
        p.ordered(['other'])


def test_names_and_arrays_must_pair_up():
    with pytest.raises(PipeitError, match='one name per array'):
        tensormsg.pack_tensors(blank(), ['a', 'b'], [np.ones(1)], seq=0, generation=1)


def test_non_contiguous_input_is_packed_in_logical_order():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(2, 0, 1)
    p = tensormsg.unpack(tensormsg.pack_tensors(blank(), ['x'], [arr], seq=0, generation=1))
    np.testing.assert_array_equal(p.arrays[0], arr)


def test_unpack_views_the_message_buffer():
    msg = tensormsg.pack_tensors(blank(), ['x'], [np.ones((4, 4), np.float32)], seq=0, generation=1)
    p = tensormsg.unpack(msg)
    assert np.shares_memory(p.arrays[0], np.frombuffer(msg.data, np.uint8))


def test_end_of_generation_marker():
    msg = tensormsg.pack_eos(blank(), 7)
    p = tensormsg.unpack(msg)
    assert (p.kind, p.generation, p.arrays, p.sent) == ('eos', 7, [], None)
    assert len(msg.data) == 0 and tensormsg.is_pipeit_encoding(msg.encoding)
    assert tensormsg.unpack(tensormsg.pack_eos(blank(), 7, sent=41)).sent == 41   # the receiver books any missing
    assert not tensormsg.is_pipeit_encoding('rgb8')


@pytest.mark.parametrize('encoding,data,match', [
    ('rgb8', b'', 'not a pipeit'),
    ('pipeit/tensor;v1;gen=1;seq=0;dtype=<f4;shape=1', bytes(4), 'not a pipeit'),
    ('pipeit/tensor;v2;gen=1;seq=0', b'', 'malformed'),
    ('pipeit/tensor;v2;gen=1;seq=0;t=x:<f4:2x2:0', bytes(15), '15 bytes'),
    ('pipeit/tensor;v2;gen=1;seq=0;t=x:<f4:2x2:0,y:<f4:1:16', bytes(16), 'needs 20'),
    ('pipeit/tensor;v2;gen=x;seq=0;t=x:<f4:1:0', bytes(4), 'malformed'),
    ('pipeit/tensor;v2;gen=1;seq=0;t=x:<f4:1', bytes(4), 'malformed'),
    ('pipeit/tensor;v2;gen=1;seq=0;t=x:<q9:1:0', bytes(4), 'malformed'),
    ('pipeit/tensor;v2;junk', b'', 'malformed'),
], ids=['image', 'old-version', 'no-tensors', 'short-payload', 'second-short', 'bad-number', 'no-offset',
        'bad-dtype', 'no-key-value'])
def test_malformed_messages_raise(encoding, data, match):
    msg = blank()
    msg.encoding, msg.data = encoding, data
    with pytest.raises(PipeitError, match=match):
        tensormsg.unpack(msg)


def _best_of(n, fn):
    best = float('inf')
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def test_six_megabyte_tensor_packs_into_a_real_image_message_fast():
    """Filling sensor_msgs/Image through its checked setter: an ndarray would be walked per element
    (hundreds of ms for 6 MB, docs/architecture.md, measured facts); array.array takes the setter's one-assignment path."""
    image_mod = pytest.importorskip('sensor_msgs.msg')
    arr = np.random.default_rng(0).standard_normal((1, 96, 128, 128)).astype(np.float32)   # 6.3 MB
    assert arr.nbytes > 6e6
    msg = image_mod.Image()
    seconds = _best_of(3, lambda: tensormsg.pack_tensors(msg, ['x'], [arr], seq=1, generation=1))
    assert seconds < 0.050, f'packing 6 MB took {seconds * 1e3:.1f} ms'
    np.testing.assert_array_equal(tensormsg.unpack(msg).arrays[0], arr)
    two = [arr, arr[:, :8]]   # a cut's two tensors in one message
    tensormsg.pack_tensors(msg, ['x', 'skip'], two, seq=2, generation=1)
    for got, want in zip(tensormsg.unpack(msg).arrays, two):
        np.testing.assert_array_equal(got, want)


def test_float32_array_for_multiarray_is_one_copy():
    std_msgs = pytest.importorskip('std_msgs.msg')
    arr = np.random.default_rng(2).standard_normal((1, 1000)).astype(np.float32)
    msg = std_msgs.Float32MultiArray()
    msg.data = tensormsg.float32_array(arr)
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.float32), arr.ravel())
