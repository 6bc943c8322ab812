"""Launch a pipeit pipeline: the planner, one container per CPU cluster (or one for all), optionally a camera.

    ros2 launch pipeit_ros pipeline.launch.py model:=/path/net.onnx topology:=rk3588 camera:=pattern

The process layout comes from pipeit_ros.app.layout.build_layout (tested; `pipeit bringup` starts the same one),
resolved here at launch so 'auto' becomes this machine's clusters. Each container is pinned to its cluster's
CPUs with `taskset` and named in the output by its node name (`exec_name`); every node gets its role's Fast DDS
profile (pipeit_ros.app.dds_profile: the camera 32 MiB of shared memory, the planner and the containers 8 MiB). A node that ends (other than a camera with `count`) shuts the launch down, as
`pipeit bringup` stops on a dead node. Emulated clusters (co-runners) are started by `pipeit bringup` only, not by
this file.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from pipeit_ros.app import layout

ARGUMENTS = {
    'model': ('', 'ONNX model file or zoo network name (empty: the parameter file\'s, else mobilenet_v2)'),
    'input_shape': ('', 'model input NxCxHxW, e.g. 1x3x480x640, for a model with dynamic dims (empty: the '
                        'parameter file\'s, else the model\'s own)'),
    'topology': ('', "'auto', a topology YAML or a shipped name (empty: the parameter file's, else auto)"),
    'image_topic': ('', 'image topic the first stage subscribes to (empty: the parameter file\'s image_raw)'),
    'params_file': ('', 'ROS 2 parameter file (empty: this package\'s config/pipeline.yaml)'),
    'single_container': ('false', 'true: one container process for all clusters instead of one per cluster'),
    'camera': ('', "also start pipeit_camera on this source: 'pattern', a video file or an image folder"),
    'namespace': ('', 'namespace of every node'),
}


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    params = layout.load_params_file(arg['params_file'] or layout.default_params_file())
    specs = layout.build_layout(params, arg['topology'] or None,
                                single_container=arg['single_container'].lower() in ('true', '1', 'yes'),
                                with_camera=arg['camera'] or None, model=arg['model'] or None,
                                image_topic=arg['image_topic'] or None, namespace=arg['namespace'],
                                input_shape=arg['input_shape'] or None)
    return [Node(package=s.package, executable=s.executable, name=s.name, namespace=s.namespace or None,
                 parameters=[s.parameters], remappings=list(s.remappings.items()), additional_env=s.env,
                 prefix=layout.taskset_prefix(s.cpus), exec_name=s.name, output='screen', emulate_tty=True,
                 on_exit=None if s.exit_ok else [Shutdown(reason=f'{s.name} ended')])
            for s in specs]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)])
