"""Pipe-it for ROS 2: CNN pipelines whose stages each run on the cores of one CPU cluster.

The public API, loaded on first use (importing the package does no work)::

    import pipeit_ros
    graph = pipeit_ros.load_model('net.onnx')            # LayerGraph: layers, descriptors, cut points
    topology = pipeit_ros.resolve_topology('rk3588')      # a shipped board, a YAML file or 'auto'
    plan = pipeit_ros.auto_plan(graph, topology)          # cost table + DSE -> Plan
    with pipeit_ros.Pipeline(graph, plan) as pipe: ...    # the pipelined engine

Everything outside ``pipeit_ros.ros``, ``pipeit_ros.testing`` and ``pipeit_ros.cli`` works without rclpy;
``docs/architecture.md`` maps the layers.
"""
import importlib

__version__ = '0.1.0'

_API = {
    'load_model': ('pipeit_ros.model.graph', 'load'),
    'LayerGraph': ('pipeit_ros.model.graph', 'LayerGraph'),
    'resolve_topology': ('pipeit_ros.hw.topology', 'resolve'),
    'Topology': ('pipeit_ros.hw.topology', 'Topology'),
    'Cluster': ('pipeit_ros.hw.cluster', 'Cluster'),
    'auto_plan': ('pipeit_ros.planning.facade', 'auto_plan'),
    'Plan': ('pipeit_ros.plan', 'Plan'),
    'Stage': ('pipeit_ros.plan', 'Stage'),
    'Pipeline': ('pipeit_ros.engine.pipeline', 'Pipeline'),
    'PipeitError': ('pipeit_ros.errors', 'PipeitError'),
    'ModelError': ('pipeit_ros.errors', 'ModelError'),
    'PlanError': ('pipeit_ros.errors', 'PlanError'),
    'TopologyError': ('pipeit_ros.errors', 'TopologyError'),
    'StageError': ('pipeit_ros.errors', 'StageError'),
}
__all__ = sorted(_API)


def __getattr__(name):
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}') from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
