"""The services of a ROS 2 component container on ``pipeit_container``, so ``ros2 component list`` shows the
stage nodes a container hosts; load and unload are refused, since plans place stages, not users."""
from pipeit_ros.app.wire import topics


def serve(node, runs):
    """Create the ``~/_container/*`` services on ``node`` where composition_interfaces is importable (the ROS 2
    tools install it); ``runs()`` returns the container's live runs (each with ``nodes``: stage index -> node)."""
    try:
        from composition_interfaces.srv import ListNodes, LoadNode, UnloadNode  # noqa: PLC0415 - optional
    except ImportError:
        return

    def list_nodes(request, response):
        nodes = [(i, stage) for run in runs() for i, stage in sorted(run.nodes.items())]
        response.full_node_names = [stage.get_fully_qualified_name() for _, stage in nodes]
        response.unique_ids = [i + 1 for i, _ in nodes]     # stage index + 1 (0 is not a valid id)
        return response

    def refuse(request, response):
        response.success = False
        planner = f'{node.get_namespace().rstrip("/")}/{topics.PLANNER}'
        response.error_message = (f'refused: {node.get_fully_qualified_name()} hosts the stages its graph\'s plan '
                                  f'gives it; change the plan (ros2 param set {planner} ...), not the container')
        return response

    node.create_service(ListNodes, '~/_container/list_nodes', list_nodes)
    node.create_service(LoadNode, '~/_container/load_node', refuse)
    node.create_service(UnloadNode, '~/_container/unload_node', refuse)
