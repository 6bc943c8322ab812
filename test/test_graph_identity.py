"""Two graphs on one ROS domain: in two namespaces they run side by side, each on its own frames and model; a
second graph in a namespace that already has one refuses to start (exit 2) naming the first."""
import re

import numpy as np
import onnx
from onnx import numpy_helper
from planner_helpers import RosGraph, domain_id, finish, start_cli, stop_process
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def seven_class_tiny(zoo_model, path):
    """The zoo's tiny net with its classifier cut to 7 classes: another small model, told apart by its output."""
    model = onnx.load(zoo_model('tiny'))
    for init in model.graph.initializer:
        if init.name in ('fc.weight', 'fc.bias'):
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(init)[:7]), init.name))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def params_file(path, frame_id):
    path.write_text('pipeit_camera:\n  ros__parameters:\n    rate_hz: 15.0\n    width: 160\n    height: 120\n'
                    f'    frame_id: {frame_id}\n')
    return path


def collector(graph, namespace):
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float32MultiArray, String

    from pipeit_ros.ros import messages

    node = Node(f'collector_{namespace}', namespace=namespace, context=graph.context)
    node.sizes, node.frames = [], []
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
    node.create_subscription(Float32MultiArray, 'pipeit/output', lambda m: node.sizes.append(len(m.data)), qos)
    node.create_subscription(String, 'pipeit/classification',
                             lambda m: node.frames.append(messages.classification_dict(m)['header']['frame_id']), qos)
    return graph.add(node)


def test_two_graphs_in_two_namespaces_never_cross_and_a_third_is_refused(zoo_model, tmp_path):
    dom = domain_id()
    front_model, rear_model = zoo_model('tiny'), seven_class_tiny(zoo_model, tmp_path / 'tiny7.onnx')
    front, out_front = start_cli(['bringup', '--namespace', 'front', '--model', front_model, '--with-camera',
                                  'pattern', '--params-file', params_file(tmp_path / 'f.yaml', 'front_cam')], dom)
    rear, out_rear = start_cli(['bringup', '--namespace', 'rear', '--model', rear_model, '--with-camera', 'pattern',
                                '--params-file', params_file(tmp_path / 'r.yaml', 'rear_cam')], dom)
    graph = RosGraph(dom)
    try:
        a, b = collector(graph, 'front'), collector(graph, 'rear')
        graph.wait(lambda: len(a.sizes) >= 20 and len(b.sizes) >= 20 and len(a.frames) >= 20 and len(b.frames) >= 20,
                   180, what='results of both graphs', output=out_front)
        assert set(a.sizes) == {10} and set(b.sizes) == {7}           # each graph's results: its own model
        assert set(a.frames) == {'front_cam'} and set(b.frames) == {'rear_cam'}   # and its own camera

        third, out_third = start_cli(['bringup', '--namespace', 'front', '--model', 'tiny'], dom)
        code, text = finish(third, out_third, 120)
        assert code == 2, text[-3000:]
        error = [line for line in text.splitlines() if line.startswith('pipeit: error:')]
        assert len(error) == 1 and 'another pipeit graph' in error[0], text[-3000:]
        assert re.search(rf":{front.pid}:\d+'", error[0]) and f'pid {front.pid}' in error[0], error[0]

        before = len(a.sizes)
        graph.wait(lambda: len(a.sizes) >= before + 10, 60, what='the first graph still running', output=out_front)
        assert set(a.sizes) == {10} and set(a.frames) == {'front_cam'}
        assert front.poll() is None and rear.poll() is None
    finally:
        graph.close()
        codes = stop_process(front), stop_process(rear)
        out_front.join()
        out_rear.join()
    assert codes == (0, 0), out_front.text()[-2000:] + out_rear.text()[-2000:]
