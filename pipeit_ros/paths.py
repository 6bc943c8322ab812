"""Where the package's own files are: shipped data, and config/ in a source tree, a pip install or colcon's share/."""
import os
import sys

PACKAGE = 'pipeit_ros'
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(PACKAGE_DIR, 'data')


def share_dirs(*rel):
    """Candidate directories for ``config/...`` (``rel``): the source tree, a pip install's share/, the ament index."""
    dirs = [os.path.join(os.path.dirname(PACKAGE_DIR), *rel),
            os.path.join(sys.prefix, 'share', PACKAGE, *rel)]
    try:
        from ament_index_python.packages import get_package_share_directory  # noqa: PLC0415 - optional (colcon)
        dirs.append(os.path.join(get_package_share_directory(PACKAGE), *rel))
    except Exception:  # noqa: BLE001 - not importable, or no ament index: plain pip install
        pass
    return dirs
