"""Pre-processing as data: every resize mode, colour order, layout and dtype against a numpy reference, and
where a model's record comes from (parameters, sidecar, metadata, defaults)."""
import itertools

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import pytest

from pipeit_ros.app.preprocess import PreprocessConfig, Preprocessor, geometry, resolve
from pipeit_ros.errors import PipeitError
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import meta

ENCODINGS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'rgba8': 4}


def source_rgb(pixels, encoding):
    """Plain numpy: a frame of ``encoding`` as float64 H x W x 3 RGB."""
    x = pixels.astype(np.float64)
    return {'rgb8': lambda: x, 'bgr8': lambda: x[..., ::-1], 'mono8': lambda: np.repeat(x, 3, axis=2),
            'rgba8': lambda: x[..., :3]}[encoding]()


def reference(cfg, pixels, encoding):
    """numpy, plus cv2.resize for the interpolation itself, in OpenCV's letterbox / crop geometry."""
    rgb = source_rgb(pixels, encoding)
    if cfg.colour == 'grey':
        x = pixels.astype(np.float64) if encoding == 'mono8' else (rgb @ np.array([0.299, 0.587, 0.114]))[..., None]
    else:
        x = rgb if cfg.colour == 'rgb' else rgb[..., ::-1]
    h, w = x.shape[:2]
    th, tw = cfg.size
    sx, sy, ox, oy = geometry(cfg, (h, w))
    if cfg.resize == 'center_crop':          # the source region that maps onto the input, resized to it
        left, top = round(-ox / sx), round(-oy / sy)
        x = x[top:top + round(th / sy), left:left + round(tw / sx)]
        assert x.shape[1] / x.shape[0] == pytest.approx(tw / th, rel=0.01) and min(left, top) == 0
        h, w = x.shape[:2]
        sx, sy, ox, oy = tw / w, th / h, 0, 0
    r = cv2.resize(x.astype(np.float32), (round(w * sx), round(h * sy)), interpolation=cv2.INTER_LINEAR)
    r = r.reshape(r.shape[0], r.shape[1], -1)
    rh, rw = r.shape[:2]
    if cfg.resize == 'letterbox':
        out = np.full((th, tw, r.shape[2]), cfg.pad_value, np.float32)
        out[int(oy):int(oy) + rh, int(ox):int(ox) + rw] = r
    else:
        out = r
    out = (out * cfg.scale - np.array(cfg.mean)) / np.array(cfg.std)
    if cfg.layout == 'nchw':
        out = out.transpose(2, 0, 1)
    return out[None]


def frame(encoding, h=480, w=640, seed=5):
    """Smooth content (a resize of noise would amplify the quantisation of the uint8 resize OpenCV does)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = [(np.sin(xx / 37.0 + k) * np.cos(yy / 23.0 - k) * 100 + 128) for k in range(ENCODINGS[encoding])]
    return np.clip(np.dstack(base), 0, 255).astype(np.uint8)


SIZES = ((224, 224), (320, 256), (48, 192))      # square, portrait, wide: each combination gets one in turn
CASES = [(*combo, SIZES[i % len(SIZES)]) for i, combo in
         enumerate(itertools.product(('stretch', 'letterbox', 'center_crop'), ('rgb', 'bgr', 'grey'), ('nchw', 'nhwc')))]


@pytest.mark.parametrize('resize,colour,layout,size', CASES,
                         ids=[f'{r}-{c}-{lay}-{s[0]}x{s[1]}' for r, c, lay, s in CASES])
@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
def test_each_mode_matches_the_numpy_reference(resize, colour, layout, size, encoding):
    c = 1 if colour == 'grey' else 3
    shape = (1, c, *size) if layout == 'nchw' else (1, *size, c)
    cfg = PreprocessConfig(input_shape=shape, resize=resize, colour=colour, layout=layout, mean=0.5, std=0.25,
                           pad_value=114)
    pixels = frame(encoding)
    h, w = pixels.shape[:2]
    out = Preprocessor(cfg)(encoding, h, w, w * pixels.shape[2], pixels.tobytes())
    ref = reference(cfg, pixels, encoding)
    assert out.shape == ref.shape == shape and out.dtype == np.float32 and out.flags['C_CONTIGUOUS']
    # OpenCV resizes uint8 (and grey-converts to whole levels): within 1.5 levels after normalisation
    np.testing.assert_allclose(out, ref, atol=1.5 / 255 / 0.25, rtol=0)


UPSCALE = [(r, c, lay, d) for r in ('stretch', 'letterbox', 'center_crop') for c, lay, d in
           (('rgb', 'nchw', 'float32'), ('grey', 'nhwc', 'float32'), ('bgr', 'nchw', 'uint8'), ('rgb', 'nhwc', 'uint8'))]


@pytest.mark.parametrize('resize,colour,layout,dtype', UPSCALE, ids=['-'.join(c) for c in UPSCALE])
def test_upscaling_and_uint8_inputs_match_the_numpy_reference(resize, colour, layout, dtype):
    """640x480 -> 640x640 and 800x512 (the paths that map pixels before resizing), float32 and uint8."""
    c = 1 if colour == 'grey' else 3
    affine = dict(mean=0.5, std=0.25) if dtype == 'float32' else dict(scale=1, mean=0, std=1)
    pixels = frame('bgr8')
    for size in ((640, 640), (512, 800)):
        shape = (1, c, *size) if layout == 'nchw' else (1, *size, c)
        cfg = PreprocessConfig(input_shape=shape, resize=resize, colour=colour, layout=layout, dtype=dtype,
                               pad_value=114, **affine)
        pre = Preprocessor(cfg)
        out = pre('bgr8', 480, 640, 640 * 3, pixels.tobytes())
        ref = reference(cfg, pixels, 'bgr8')
        assert out.shape == ref.shape == shape and out.dtype == np.dtype(dtype) and out.flags['C_CONTIGUOUS']
        levels = 1.5 if dtype == 'uint8' else 1.5 / 255 / 0.25
        np.testing.assert_allclose(out.astype(np.float64), ref, atol=levels, rtol=0, err_msg=str(size))


def test_outputs_held_by_a_caller_are_never_handed_out_again():
    """Outputs are reused only once nothing holds them: 12 held (whole or as a view) stay distinct."""
    pre = Preprocessor(PreprocessConfig(input_shape=(1, 3, 8, 8)))
    held = [pre('rgb8', 8, 8, 24, bytes([i]) * 192) for i in range(6)]
    held += [pre('rgb8', 8, 8, 24, bytes([i]) * 192)[0, 1:] for i in range(6, 12)]
    assert all(not np.shares_memory(a, b) for i, a in enumerate(held) for b in held[i + 1:])
    assert [float(h.reshape(-1)[-1]) for h in held] == sorted({float(h.reshape(-1)[-1]) for h in held})


def test_letterbox_border_is_the_pad_value_and_the_image_is_centred():
    cfg = PreprocessConfig(input_shape=(1, 3, 320, 320), resize='letterbox', pad_value=114, scale=1.0, mean=0,
                           std=1)
    pixels = np.full((320, 640, 3), 200, np.uint8)          # 2:1 -> a 320x160 band in the middle
    out = Preprocessor(cfg)('rgb8', 320, 640, 640 * 3, pixels.tobytes())[0]
    assert np.all(out[:, :80] == 114) and np.all(out[:, 240:] == 114) and np.all(out[:, 80:240] == 200)
    assert geometry(cfg, (320, 640)) == (0.5, 0.5, 0.0, 80.0)


def test_uint8_input_takes_pixels_as_they_are():
    cfg = PreprocessConfig(input_shape=(1, 16, 16, 3), layout='nhwc', dtype='uint8', scale=1, mean=0, std=1,
                           colour='bgr')
    pixels = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = Preprocessor(cfg)('rgb8', 16, 16, 48, pixels.tobytes())
    assert out.dtype == np.uint8 and out.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(out[0], pixels[..., ::-1])
    with pytest.raises(PipeitError, match='uint8 input'):
        PreprocessConfig(input_shape=(1, 3, 16, 16), dtype='uint8')


@pytest.mark.parametrize('kwargs,match', [
    (dict(resize='fit'), 'resize'), (dict(colour='yuv'), 'colour'), (dict(layout='chw'), 'layout'),
    (dict(dtype='float16'), 'dtype'), (dict(pad_value=300), 'pad_value'), (dict(scale=0), 'scale'),
    (dict(resize='letterbox', interpolation='area'), 'needs resize stretch'),
    (dict(colour='grey'), 'needs a 1-channel input'),
], ids=['resize', 'colour', 'layout', 'dtype', 'pad', 'scale', 'area-letterbox', 'grey-for-3-channels'])
def test_bad_records_are_refused(kwargs, match):
    with pytest.raises(PipeitError, match=match):
        PreprocessConfig(**kwargs)


def net(path, metadata=None, shape=(1, 3, 8, 8)):
    w = numpy_helper.from_array(np.ones((2, shape[1], 1, 1), np.float32), 'w')
    g = helper.make_graph([helper.make_node('Conv', ['input', 'w'], ['y'], name='conv')], 'n',
                          [helper.make_tensor_value_info('input', TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 2, *shape[2:]])],
                          initializer=[w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return str(path)


def test_defaults_are_assumed_with_a_log_line(tmp_path):
    lines = []
    cfg, sources = resolve(graph_mod.load(net(tmp_path / 'plain.onnx')), log=lines.append)
    assert cfg == PreprocessConfig(input_shape=(1, 3, 8, 8))
    assert set(sources.values()) == {'default', 'input shape', 'input type'}
    assert (sources['layout'], sources['dtype']) == ('input shape', 'input type')
    assert len(lines) == 1 and 'defaults assumed' in lines[0] and 'plain.pipeit.yaml' in lines[0]


def test_ultralytics_metadata_gives_letterbox_rgb_zero_to_one(tmp_path):
    md = {'author': 'Ultralytics', 'stride': '32', 'task': 'detect', 'names': "{0: 'a'}"}
    cfg, sources = resolve(graph_mod.load(net(tmp_path / 'y.onnx', md)))
    assert (cfg.resize, cfg.pad_value, cfg.colour, cfg.scale, cfg.mean, cfg.std) == \
        ('letterbox', 114.0, 'rgb', 1 / 255, (0.0,) * 3, (1.0,) * 3)
    assert sources['resize'] == 'metadata' and sources['layout'] == 'input shape'


def test_onnx_image_metadata_gives_colour_and_range(tmp_path):
    md = {'Image.BitmapPixelFormat': 'Bgr8', 'Image.NominalPixelRange': 'Normalized_1_1'}
    cfg, _ = resolve(graph_mod.load(net(tmp_path / 'w.onnx', md)))
    assert (cfg.colour, cfg.scale, cfg.mean, cfg.std) == ('bgr', 1 / 255, (0.5,) * 3, (0.5,) * 3)


def test_parameters_beat_the_sidecar_which_beats_metadata(tmp_path):
    md = {'Image.BitmapPixelFormat': 'Bgr8', 'Image.NominalPixelRange': 'NominalRange_0_255'}
    path = net(tmp_path / 'net.onnx', md)
    (tmp_path / 'net.pipeit.yaml').write_text('resize_mode: center_crop\ncolour: bgr\nmean: [0.5]\n')
    g = graph_mod.load(path)
    cfg, sources = resolve(g, {'colour': 'rgb', 'pad_value': None}, meta.read_sidecar(path))
    assert (cfg.colour, sources['colour']) == ('rgb', 'parameter')
    assert (cfg.resize, sources['resize']) == ('center_crop', 'sidecar')
    assert (cfg.mean, sources['mean']) == ((0.5,) * 3, 'sidecar')
    assert (cfg.scale, sources['scale']) == (1.0, 'metadata')
    assert sources['std'] == 'metadata' and sources['pad_value'] == 'default'


def test_nhwc_input_is_recognised_from_its_shape(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), 'w')
    nodes = [helper.make_node('Transpose', ['input'], ['t'], name='t', perm=[0, 3, 1, 2]),
             helper.make_node('Conv', ['t', 'w'], ['y'], name='conv')]
    g = helper.make_graph(nodes, 'n', [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 32, 48, 3])],
                          [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 2, 32, 48])], initializer=[w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / 'nhwc.onnx'))
    cfg, sources = resolve(graph_mod.load(str(tmp_path / 'nhwc.onnx')))
    assert cfg.layout == 'nhwc' and cfg.size == (32, 48) and sources['layout'] == 'input shape'


def test_a_bad_sidecar_is_named(tmp_path):
    path = net(tmp_path / 'net.onnx')
    (tmp_path / 'net.pipeit.yaml').write_text('- just\n- a list\n')
    with pytest.raises(PipeitError, match='net.pipeit.yaml: the sidecar must be a mapping'):
        meta.read_sidecar(path)
