"""The graph's topic names, relative so that a launch namespace applies to them (``/diagnostics`` excepted, as
ROS tools expect it there). Defined here only."""
PLAN = 'pipeit/plan'                    # planner -> containers: the plan (JSON, transient local)
STATUS = 'pipeit/status'                # containers <-> containers: re-plan hand-over states
OUTPUT = 'pipeit/output'                # the raw output tensors of each frame, one message each
CLASSIFICATION = 'pipeit/classification'  # top-k of each frame (task classification)
DETECTIONS = 'pipeit/detections'        # boxes of each frame in source pixels (task detection)
TENSOR = 'pipeit/tensor'                # + '/g<generation>/stage_<i>': a hop between containers
EOS = 'pipeit/eos'
DIAGNOSTICS = '/diagnostics'

PLANNER, CONTAINER, CAMERA = 'pipeit_planner', 'pipeit_container', 'pipeit_camera'   # node names (a container
# of one cluster is CONTAINER + '_' + the cluster's name): a container names the planner in what it logs
