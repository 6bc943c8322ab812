"""`colcon build` installs the package the ROS way: launch/ and config/ under share/pipeit_ros, package.xml,
the ament index marker and the console scripts under lib/pipeit_ros (where `ros2 run` looks)."""
import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLCON = os.path.join(os.path.dirname(sys.executable), 'colcon')

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def install(tmp_path_factory):
    work = tmp_path_factory.mktemp('colcon')
    proc = subprocess.run([COLCON, '--log-base', str(work / 'log'), 'build', '--base-paths', REPO,
                           '--build-base', str(work / 'build'), '--install-base', str(work / 'install'),
                           '--event-handlers', 'console_direct-'],
                          cwd=work, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'Finished <<< pipeit_ros' in proc.stdout
    return work / 'install' / 'pipeit_ros'


def test_share_holds_launch_config_and_package_xml(install):
    share = install / 'share' / 'pipeit_ros'
    assert (share / 'package.xml').is_file()
    assert (share / 'launch' / 'pipeline.launch.py').is_file()
    assert (share / 'config' / 'pipeline.yaml').is_file()
    shipped = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, 'config', 'topologies', '*.yaml')))
    assert shipped and sorted(os.listdir(share / 'config' / 'topologies')) == shipped
    assert (install / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'pipeit_ros').is_file()


@pytest.mark.parametrize('script', ['pipeit', 'pipeit_planner', 'pipeit_container', 'pipeit_camera'])
def test_entry_points_under_lib(install, script):
    path = install / 'lib' / 'pipeit_ros' / script
    assert path.is_file() and os.access(path, os.X_OK)


def test_installed_package_finds_its_share(install):
    """From the install space (AMENT_PREFIX_PATH as setup.sh sets it) the default parameter file and the
    shipped topologies resolve to share/pipeit_ros, and `pipeit --help` runs."""
    site = glob.glob(str(install / 'lib' / 'python3*' / 'site-packages'))[0]
    env = {**os.environ, 'AMENT_PREFIX_PATH': str(install), 'PYTHONPATH': site}
    code = ('import pipeit_ros, pipeit_ros.app.layout as l, pipeit_ros.app.dds_profile as d, '
            'pipeit_ros.hw.topology as t; print(pipeit_ros.__file__); print(l.default_params_file()); '
            'print(t.shipped_topologies()["rk3588"]); print(d.DDS_PROFILES)')
    out = subprocess.run([sys.executable, '-c', code], env=env, cwd=str(install), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    module, params, topo, profile = out.stdout.split()
    assert module.startswith(site)
    assert params == str(install / 'share' / 'pipeit_ros' / 'config' / 'pipeline.yaml')
    assert topo.startswith(str(install / 'share' / 'pipeit_ros' / 'config' / 'topologies'))
    assert profile.startswith(site) and os.path.isfile(profile)     # the shipped Fast DDS profile (the camera's)
    helped = subprocess.run([str(install / 'lib' / 'pipeit_ros' / 'pipeit'), 'bringup', '--help'], env=env,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and '--with-camera' in helped.stdout, helped.stderr
