"""ament_python package set-up: works with `colcon build` and with `pip install -e .`."""
from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'pipeit_ros'


def _tree(src):
    """data_files entries that keep the directory structure of `src` under share/pipeit_ros."""
    entries = {}
    for path in glob(os.path.join(src, '**', '*.yaml'), recursive=True):
        entries.setdefault(os.path.join('share', package_name, os.path.dirname(path)), []).append(path)
    return sorted(entries.items())


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={package_name: ['data/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        *_tree('config'),
    ],
    install_requires=['setuptools', 'numpy', 'onnx', 'onnxruntime', 'scikit-learn', 'pyyaml', 'joblib', 'matplotlib', 'tqdm'],
    zip_safe=True,
    maintainer='pipeit_ros maintainers',
    maintainer_email='maintainers@pipeit-ros.invalid',
    description='Pipe-it CNN pipelines pinned per CPU cluster, for ROS 2',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'pipeit = pipeit_ros.cli:main',
            'pipeit_planner = pipeit_ros.ros.planner_node:main',
            'pipeit_container = pipeit_ros.ros.container:main',
            'pipeit_camera = pipeit_ros.ros.camera_node:main',
        ],
    },
)
