"""sensor_msgs/Image read from its CDR bytes (pipeit_ros.app.wire.image_cdr) against rclpy's own deserialisation."""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

from pipeit_ros.app.preprocess import PreprocessConfig, Preprocessor
from pipeit_ros.app.wire.image_cdr import parse_image
from pipeit_ros.errors import ImageError
from pipeit_ros.testing import harness

CASES = [  # (encoding, height, width, channels, step padding, frame_id): frame_id lengths move every alignment
    ('rgb8', 4, 6, 3, 0, 'camera'), ('bgr8', 3, 5, 3, 3, 'c'), ('mono8', 7, 9, 1, 1, ''),
    ('rgba8', 2, 3, 4, 0, 'cam'), ('bgra8', 5, 2, 4, 2, 'camera_optical_frame'), ('rgb8', 480, 640, 3, 0, 'ab'),
]


def frame(encoding, h, w, c, pad, frame_id, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    return harness.image_msg(pixels, encoding, 1_700_000_123_456_789_012 % 2**62, frame_id=frame_id,
                             step=w * c + pad)


@pytest.mark.parametrize('case', CASES, ids=[f'{c[0]}-{c[1]}x{c[2]}-pad{c[4]}-id{len(c[5])}' for c in CASES])
def test_fields_and_pixels_match_rclpy(case):
    msg = frame(*case)
    msg.is_bigendian = 1
    raw = parse_image(serialize_message(msg))
    ref = deserialize_message(serialize_message(msg), Image)
    assert (raw.header.stamp.sec, raw.header.stamp.nanosec, raw.header.frame_id) == \
        (ref.header.stamp.sec, ref.header.stamp.nanosec, ref.header.frame_id)
    assert (raw.height, raw.width, raw.encoding, raw.is_bigendian, raw.step) == \
        (ref.height, ref.width, ref.encoding, ref.is_bigendian, ref.step)
    assert bytes(raw.data) == bytes(ref.data)


def test_pixels_are_a_view_not_a_copy():
    ser = bytearray(serialize_message(frame('rgb8', 2, 2, 3, 0, 'x')))
    raw = parse_image(ser)
    ser[-1] ^= 0xFF
    assert raw.data[-1] == ser[-1]


def test_preprocessing_a_raw_frame_equals_the_typed_one():
    msg = frame('bgr8', 480, 640, 3, 4, 'camera', seed=3)
    pre = Preprocessor(PreprocessConfig(input_shape=(1, 3, 224, 224)))
    np.testing.assert_array_equal(pre.convert_msg(parse_image(serialize_message(msg))), pre.convert_msg(msg))


@pytest.mark.parametrize('cut', [0, 3, 6, 14, 30, 45, -1], ids=lambda c: f'cut{c}')
def test_truncated_message_is_malformed(cut):
    ser = serialize_message(frame('rgb8', 2, 3, 3, 0, 'camera'))
    with pytest.raises(ImageError) as err:
        parse_image(ser[:cut])
    assert err.value.kind == 'malformed'


def test_unknown_encapsulation_is_malformed():
    ser = bytearray(serialize_message(frame('rgb8', 2, 3, 3, 0, 'camera')))
    ser[1] = 0x42
    with pytest.raises(ImageError, match='not a CDR message'):
        parse_image(bytes(ser))
