"""Frame sources of the camera node (pipeit_ros.app.camera_frames) with real OpenCV, without ROS."""
import cv2
import numpy as np
import pytest

from pipeit_ros.app.camera_frames import FolderSource, PatternSource, VideoSource, open_source
from pipeit_ros.errors import PipeitError


@pytest.fixture
def folder(tmp_path):
    """Three 40x30 images whose B channel encodes their order (names unsorted on disk creation)."""
    rng = np.random.default_rng(0)
    for i, name in [(2, 'c.png'), (0, 'a.png'), (1, 'b.png')]:
        img = rng.integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
        img[:, :, 0] = 50 * (i + 1)
        cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / 'notes.txt').write_text('not an image')
    return tmp_path


@pytest.fixture
def video(tmp_path):
    path = str(tmp_path / 'clip.avi')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i + 20, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize('encoding,channels', [('rgb8', 3), ('bgr8', 3), ('mono8', 1)], ids=['rgb8', 'bgr8', 'mono8'])
def test_pattern_shapes_and_motion(encoding, channels):
    src = PatternSource(80, 60, encoding)
    a, b = src.read(), src.read()
    assert a.shape == b.shape == (60, 80, channels) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 0            # the scene moves
    again = PatternSource(80, 60, encoding)
    assert np.array_equal(again.read(), a)                             # deterministic


def test_pattern_rgb_is_bgr_swapped():
    rgb, bgr = PatternSource(32, 24, 'rgb8').read(), PatternSource(32, 24, 'bgr8').read()
    assert np.array_equal(rgb, bgr[:, :, ::-1])


def test_folder_sorted_resized_and_looping(folder):
    src = open_source(str(folder), 20, 15, 'bgr8', loop=True)
    assert isinstance(src, FolderSource) and len(src.files) == 3
    frames = [src.read() for _ in range(4)]
    assert [int(f[:, :, 0].mean().round()) for f in frames] == [50, 100, 150, 50]
    assert frames[0].shape == (15, 20, 3)


def test_folder_without_loop_ends(folder):
    src = FolderSource(str(folder), loop=False)
    assert [src.read() is None for _ in range(4)] == [False, False, False, True]
    assert src.read() is None


def test_folder_skips_unreadable_images_and_counts_them(folder):
    (folder / 'b_broken.png').write_bytes(b'\x89PNG not really')     # sorts between b.png and c.png
    src = FolderSource(str(folder), encoding='bgr8', loop=True)
    levels = [int(src.read()[:, :, 0].mean().round()) for _ in range(6)]
    assert levels == [50, 100, 150, 50, 100, 150]
    assert src.unreadable == 2 and src.skipped.endswith('b_broken.png')          # once per pass


def test_folder_of_unreadable_images_is_an_error(tmp_path):
    (tmp_path / 'a.png').write_bytes(b'junk')
    with pytest.raises(PipeitError, match='cannot read any of its 1 images'):
        FolderSource(str(tmp_path)).read()


def test_video_frames_then_loop(video):
    src = open_source(video, encoding='mono8', loop=True)
    assert isinstance(src, VideoSource)
    levels = [int(src.read().mean().round()) for _ in range(7)]
    assert levels[5:] == levels[:2]                    # starts over after 5 frames
    assert levels[:5] == sorted(levels[:5]) and levels[4] - levels[0] > 100
    src.close()


def test_video_without_loop_ends(video):
    src = VideoSource(video, loop=False)
    frames = [src.read() for _ in range(6)]
    assert [f is None for f in frames] == [False] * 5 + [True]


@pytest.mark.parametrize('make,match', [
    (lambda p: open_source(str(p / 'missing.mp4')), 'is not "pattern", a folder of images or a video file'),
    (lambda p: open_source(str(p)), 'no image files'),
    (lambda p: (p / 'x.avi').write_text('junk') and open_source(str(p / 'x.avi')), 'cannot open|no frame'),
    (lambda p: PatternSource(10, 10, 'yuv422'), 'encoding must be one of'),
    (lambda p: PatternSource(10, 0), None),
    (lambda p: FolderSource(str(p), 10, 0), 'width and height must both be'),
], ids=['missing', 'empty-folder', 'not-a-video', 'encoding', 'pattern-size-defaults', 'half-size'])
def test_bad_sources(tmp_path, make, match):
    if match is None:
        make(tmp_path)       # a pattern with one size 0 falls back to the defaults for it
        return
    with pytest.raises(PipeitError, match=match):
        make(tmp_path)
