"""Shared fixtures: zoo models are built once per session into a temp dir."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, 'test', 'fixtures')
sys.path.insert(0, os.path.join(REPO, 'tools'))  # developer tools (rosbench, startbench, framecost) are not installed


def _shipped_dds_profile():
    """The shipped Fast DDS profile for this process and every process a test starts, as users get it (read once
    per process, so before any participant exists; pipeit_ros.testing.harness.dds_env)."""
    from pipeit_ros.app import dds_profile
    os.environ.pop('FASTDDS_BUILTIN_TRANSPORTS', None)
    os.environ.update(dds_profile.dds_profile_env())


_shipped_dds_profile()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets the same private cache dir, never the user's ~/.cache/pipeit."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path_factory.getbasetemp() / 'xdg-cache'))


@pytest.fixture(scope='session')
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('zoo')


@pytest.fixture(scope='session')
def zoo_model(zoo_dir):
    """zoo_model(name) -> path of that zoo net as an ONNX file (built once per session)."""
    from pipeit_ros.model import zoo

    def build(name):
        path = zoo_dir / f'{name}.onnx'
        if not path.exists():
            zoo.save(name, str(path))
        return str(path)
    return build


@pytest.fixture
def run_cli(capsys):
    """run_cli(*argv) -> (exit code, stdout, stderr) of the real `pipeit` main()."""
    from pipeit_ros.cli import main

    def call(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return call


def python_exe():
    return sys.executable
