"""Camera frame -> model input: every encoding against a plain-numpy reference, padding, resize, bad frames."""
from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from pipeit_ros.app.preprocess import CHANNELS, PreprocessConfig, Preprocessor, image_view
from pipeit_ros.errors import ImageError, PipeitError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def padded(pixels, pad):
    """(bytes, step) of an HxWxC frame whose rows carry ``pad`` extra bytes (filled with junk)."""
    h = pixels.shape[0]
    row = pixels.reshape(h, -1)
    junk = np.full((h, pad), 0xAB, np.uint8)
    return np.hstack([row, junk]).tobytes(), row.shape[1] + pad


def to_rgb(pixels, encoding):
    """Plain numpy: any supported encoding -> HxWx3 RGB."""
    return {'rgb8': lambda p: p, 'bgr8': lambda p: p[..., ::-1], 'mono8': lambda p: np.repeat(p, 3, axis=2),
            'rgba8': lambda p: p[..., :3], 'bgra8': lambda p: p[..., 2::-1]}[encoding](pixels)


def reference(pixels, encoding, channels, rgb):
    x = to_rgb(pixels, encoding).astype(np.float64)
    mean, std = np.array(MEAN), np.array(STD)
    if channels == 1:
        x = pixels.astype(np.float64) if encoding == 'mono8' else x @ np.array([0.299, 0.587, 0.114])[:, None]
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    elif not rgb:
        x, mean, std = x[..., ::-1], mean[::-1], std[::-1]
    return ((x / 255.0 - mean) / std).transpose(2, 0, 1)[None]


@pytest.mark.parametrize('encoding', sorted(CHANNELS), ids=sorted(CHANNELS))
@pytest.mark.parametrize('channels,rgb', [(3, True), (3, False), (1, True)], ids=['rgb-model', 'bgr-model',
                                                                                 'grey-model'])
@pytest.mark.parametrize('pad', [0, 5], ids=['no-padding', 'step-padding'])
def test_each_encoding_matches_numpy_reference(encoding, channels, rgb, pad):
    rng = np.random.default_rng(7)
    h, w = 24, 32
    pixels = rng.integers(0, 256, (h, w, CHANNELS[encoding]), dtype=np.uint8)
    data, step = padded(pixels, pad)
    order = 1 if rgb else -1          # mean/std are given in the model's channel order
    cfg = PreprocessConfig(input_shape=(1, channels, h, w), mean=MEAN[::order], std=STD[::order],
                           colour='rgb' if rgb else 'bgr')
    out = Preprocessor(cfg)(encoding, h, w, step, data)
    assert out.shape == (1, channels, h, w) and out.dtype == np.float32 and out.flags['C_CONTIGUOUS']
    ref = reference(pixels, encoding, channels, rgb)
    # OpenCV's grey conversion rounds to whole levels: half a level after normalisation
    tol = 0.51 / 255 / min(STD) if channels == 1 and encoding != 'mono8' else 1e-5
    np.testing.assert_allclose(out, ref, atol=tol, rtol=0)


@pytest.mark.parametrize('interpolation', ['linear', 'area'])
def test_exact_halving_resize_gives_block_values(interpolation):
    """A frame of 2x2 constant blocks halved: every output pixel is its block's value, whatever the filter."""
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    pixels = blocks.repeat(2, axis=0).repeat(2, axis=1)
    data, step = padded(pixels, 3)
    pre = Preprocessor(PreprocessConfig(input_shape=(1, 3, 16, 20), interpolation=interpolation))
    out = pre('rgb8', 32, 40, step, data)
    np.testing.assert_allclose(out, reference(blocks, 'rgb8', 3, True), atol=1e-5, rtol=0)


def test_camera_frame_resized_to_model_input():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out = Preprocessor(PreprocessConfig(input_shape=(1, 3, 224, 224)))('bgr8', 480, 640, 640 * 3,
                                                                      pixels.tobytes())
    assert out.shape == (1, 3, 224, 224)
    # a resize averages: the normalised mean stays that of the whole frame
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), reference(pixels, 'bgr8', 3, True).mean(axis=(0, 2, 3)),
                               atol=0.02)


BAD = [
    ('encoding', dict(encoding='yuv422', height=2, width=2, step=4, data=bytes(8))),
    ('encoding', dict(encoding='32FC1', height=2, width=2, step=8, data=bytes(16))),
    ('size', dict(encoding='rgb8', height=4, width=4, step=12, data=bytes(47))),
    ('size', dict(encoding='rgb8', height=4, width=4, step=12, data=bytes(49))),
    ('size', dict(encoding='rgb8', height=4, width=4, step=10, data=bytes(40))),
    ('empty', dict(encoding='rgb8', height=0, width=0, step=0, data=b'')),
    ('empty', dict(encoding='mono8', height=4, width=4, step=4, data=b'')),
]


@pytest.mark.parametrize('kind,frame', BAD, ids=['yuv', 'float-image', 'short-data', 'long-data',
                                                 'step-too-small', 'zero-size', 'no-data'])
def test_bad_frames_raise_image_error_with_kind(kind, frame):
    pre = Preprocessor(PreprocessConfig(input_shape=(1, 3, 8, 8)))
    with pytest.raises(ImageError) as info:
        pre(frame['encoding'], frame['height'], frame['width'], frame['step'], frame['data'])
    assert info.value.kind == kind
    assert isinstance(info.value, PipeitError)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), pad=st.integers(0, 7), encoding=st.sampled_from(sorted(CHANNELS)),
       seed=st.integers(0, 2**16))
def test_image_view_strips_padding_without_copy(h, w, pad, encoding, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, CHANNELS[encoding]), dtype=np.uint8)
    data, step = padded(pixels, pad)
    buf = bytearray(data)
    view = image_view(encoding, h, w, step, buf)
    np.testing.assert_array_equal(view, pixels)
    assert np.shares_memory(view, np.frombuffer(buf, np.uint8))


@pytest.mark.parametrize('kwargs,match', [
    (dict(input_shape=(3, 224, 224)), 'not \\(1, C, H, W\\)'),
    (dict(input_shape=(1, 4, 8, 8)), 'not \\(1, C, H, W\\)'),
    (dict(mean=(0.5, 0.5)), 'mean'),
    (dict(std=(0.2, 0.0, 0.2)), 'std'),
    (dict(interpolation='cubic'), 'interpolation'),
], ids=['no-batch', 'four-channels', 'mean-length', 'zero-std', 'interpolation'])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(PipeitError, match=match):
        PreprocessConfig(**kwargs)


def test_config_from_plan_message_with_overrides():
    plan_pre = {'mean': [0.5, 0.5, 0.5], 'std': [0.25, 0.25, 0.25], 'rgb': False, 'input_shape': [1, 3, 32, 32]}
    cfg = PreprocessConfig.from_dict(plan_pre, mean=[0.1], std=None)
    assert cfg.input_shape == (1, 3, 32, 32) and cfg.colour == 'bgr'
    assert cfg.mean == (0.1, 0.1, 0.1) and cfg.std == (0.25, 0.25, 0.25)


def numpy_path(pixels, encoding, size, channels, rgb, interpolation='linear'):
    """The straightforward path: cv2.resize on uint8, then plain numpy colour order and normalisation."""
    import cv2
    interp = {'linear': cv2.INTER_LINEAR, 'area': cv2.INTER_AREA}[interpolation]
    small = cv2.resize(pixels, size, interpolation=interp)
    small = small[:, :, None] if small.ndim == 2 else small
    return reference(small, encoding, channels, rgb)


@pytest.mark.parametrize('encoding', sorted(CHANNELS), ids=sorted(CHANNELS))
@pytest.mark.parametrize('channels,rgb', [(3, True), (3, False), (1, True)], ids=['rgb-model', 'bgr-model',
                                                                                 'grey-model'])
@pytest.mark.parametrize('interpolation', ['linear', 'area'])
def test_camera_sized_frame_matches_resize_then_numpy(encoding, channels, rgb, interpolation):
    """640x480 (row-padded) -> 224x224 through the blob path equals resize + numpy normalisation."""
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 256, (480, 640, CHANNELS[encoding]), dtype=np.uint8)
    data, step = padded(pixels, 8)
    order = 1 if rgb else -1
    cfg = PreprocessConfig(input_shape=(1, channels, 224, 224), mean=MEAN[::order], std=STD[::order],
                           colour='rgb' if rgb else 'bgr', interpolation=interpolation)
    out = Preprocessor(cfg)(encoding, 480, 640, step, data)
    assert out.shape == (1, channels, 224, 224) and out.dtype == np.float32 and out.flags['C_CONTIGUOUS']
    ref = numpy_path(pixels, encoding, (224, 224), channels, rgb, interpolation)
    tol = 0.51 / 255 / min(STD) if channels == 1 and encoding != 'mono8' else 1e-5
    np.testing.assert_allclose(out, ref, atol=tol, rtol=0)


def test_each_call_returns_a_fresh_array():
    """The engine keeps several frames in flight: an output buffer must never be reused."""
    pre = Preprocessor(PreprocessConfig(input_shape=(1, 3, 8, 8)))
    a = pre('rgb8', 8, 8, 24, bytes(range(192)))
    b = pre('rgb8', 8, 8, 24, bytes(192))
    assert not np.shares_memory(a, b) and a.max() != b.max()
