"""QoS profiles and message builders of the container: the only place that turns arrays into ROS messages.

Payloads are filled from ``array.array`` (one memcpy, pipeit_ros.app.wire.tensor_msg), never from an ndarray.

Results of the last stage, two messages per frame, published in this order:

- ``pipeit/output``: std_msgs/Float32MultiArray, the raw output tensor; ``layout.dim`` names each axis
  (``batch``, ``class`` for logits) with its size and row-major stride. It has no header: pair it with the
  ``pipeit/classification`` message published right after it (same ``seq``).
- ``pipeit/classification``: vision_msgs/Classification (header = source image header; results = top-k
  ObjectHypothesis, class_id = the class index as text, score = softmax; no seq/labels: pair by stamp) when
  vision_msgs is importable (tested with vision_msgs built from upstream's definitions: test_vision_msgs.py),
  otherwise std_msgs/String
  holding JSON ``{"header": {"stamp": {"sec", "nanosec"}, "frame_id"}, "seq", "generation", "latency_ms",
  "top_k": [{"class_id", "score", "label"?}]}``.
"""
import functools
import json

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, MultiArrayDimension, String

from pipeit_ros.app import results
from pipeit_ros.app.container_config import IMAGE_QOS_CHOICES
from pipeit_ros.app.wire import tensor_msg as tensormsg
from pipeit_ros.errors import PipeitError

try:                                    # not installable from PyPI here; used where a ROS install has it
    from vision_msgs.msg import Classification, ObjectHypothesis
except ImportError:
    Classification = ObjectHypothesis = None
try:                                    # a vision_msgs with the detection messages (scripts/build-vision-msgs)
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:
    Detection2D = Detection2DArray = ObjectHypothesisWithPose = None

PLAN_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
STATUS_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
RESULT_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


def image_qos(name):
    """'sensor_data': best effort, keep last 5 (camera drivers' default; DDS may lose frames, reported as
    ``drops_dds`` where the middleware tells). 'reliable': a keep-all reader, so DDS loses nothing and every
    drop is the container's own, counted (keep-latest under 'drop_oldest', none under 'block')."""
    if name == 'sensor_data':
        return qos_profile_sensor_data
    if name == 'reliable':
        return QoSProfile(depth=1, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
    raise PipeitError(f'image_qos {name!r} is not one of {", ".join(IMAGE_QOS_CHOICES)}')


def tensor_qos(policy, queue_size):
    """Internal tensor topics are reliable; with 'block' keep-all, so back-pressure instead of loss."""
    if policy == 'block':
        return QoSProfile(depth=1, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
    return QoSProfile(depth=max(4, int(queue_size)), history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE)


def tensor_topic(generation, stage_index):
    """One topic per generation and cut: a publisher of a new generation can only match the new reader, never
    a previous generation's reader on the same cut that is gone but not yet forgotten by discovery (its frames
    would be lost under 'block')."""
    return f'pipeit/tensor/g{int(generation)}/stage_{int(stage_index)}'


def copy_header(dst, src):
    """Copy stamp and frame_id from any header-like ``src`` (a std_msgs/Header, or the one
    pipeit_ros.app.wire.image_cdr reads from a raw camera frame) into the message header ``dst``."""
    dst.stamp.sec, dst.stamp.nanosec = src.stamp.sec, src.stamp.nanosec
    dst.frame_id = src.frame_id
    return dst


def tensor_msg(header, names, arrays, *, seq, generation, t_recv_ns, src_hw=(0, 0)):
    """The tensors that cross a cut (``names`` in the cut's order), as one message on the stage's topic."""
    msg = Image()
    copy_header(msg.header, header)
    return tensormsg.pack_tensors(msg, names, arrays, seq=seq, generation=generation, t_recv_ns=t_recv_ns,
                                  src_hw=src_hw)


def eos_msg(generation, sent=None):
    return tensormsg.pack_eos(Image(), generation, sent)


@functools.lru_cache(maxsize=8)
def _layout_dims(shape):
    """The MultiArrayDimension list of an output shape, built once (every frame of a plan has one shape; the
    list is only read, when a message is published)."""
    return [MultiArrayDimension(label=label, size=size, stride=stride)
            for label, size, stride in results.multiarray_layout(shape)]


def output_msg(arr):
    msg = Float32MultiArray()
    msg.layout.dim = _layout_dims(tuple(arr.shape))
    msg.layout.data_offset = 0
    msg.data = tensormsg.float32_array(arr)
    return msg


def classification_msg(header, seq, top, generation, latency_ms):
    if Classification is not None:
        msg = Classification()
        copy_header(msg.header, header)
        msg.results = [ObjectHypothesis(class_id=str(t['class_id']), score=float(t['score'])) for t in top]
        return msg
    d = results.classification_dict(header.stamp.sec, header.stamp.nanosec, header.frame_id, seq, top,
                                    generation=generation, latency_ms=latency_ms)
    return String(data=json.dumps(d))


def classification_type():
    return Classification if Classification is not None else String


def classification_dict(msg):
    """Either kind of ``pipeit/classification`` message as the JSON branch's object, for the nodes that read
    results (bringup's monitor, rosbench, tests). vision_msgs carries no seq, generation, latency or labels."""
    if isinstance(msg, String):
        return json.loads(msg.data)
    return {'header': {'stamp': {'sec': msg.header.stamp.sec, 'nanosec': msg.header.stamp.nanosec},
                       'frame_id': msg.header.frame_id},
            'top_k': [{'class_id': int(h.class_id) if h.class_id.isdigit() else h.class_id, 'score': h.score}
                      for h in msg.results]}


def detections_msg(header, seq, detections, generation, latency_ms):
    """``pipeit/detections``: vision_msgs/Detection2DArray (header = the source image's; per detection one
    ObjectHypothesisWithPose, class_id the class index as text, and the box centre and size in source-image
    pixels) where vision_msgs has it, else std_msgs/String holding pipeit_ros.app.results.detections_dict."""
    if Detection2DArray is not None:
        msg = Detection2DArray()
        copy_header(msg.header, header)
        out = []
        for d in detections:
            det = Detection2D()
            copy_header(det.header, header)
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id = str(d['class_id'])
            hyp.hypothesis.score = float(d['score'])
            det.results = [hyp]
            x, y, w, h = d['bbox']
            det.bbox.center.position.x, det.bbox.center.position.y = x + w / 2, y + h / 2
            det.bbox.size_x, det.bbox.size_y = w, h
            out.append(det)
        msg.detections = out
        return msg
    d = results.detections_dict(header.stamp.sec, header.stamp.nanosec, header.frame_id, seq, detections,
                                generation=generation, latency_ms=latency_ms)
    return String(data=json.dumps(d))


def detections_type():
    return Detection2DArray if Detection2DArray is not None else String


def detections_dict(msg):
    """Either kind of ``pipeit/detections`` message as the JSON branch's object (bbox = [x, y, w, h])."""
    if isinstance(msg, String):
        return json.loads(msg.data)
    dets = []
    for det in msg.detections:
        hyp = det.results[0].hypothesis
        cx, cy, w, h = det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x, det.bbox.size_y
        dets.append({'class_id': int(hyp.class_id) if hyp.class_id.isdigit() else hyp.class_id,
                     'score': hyp.score, 'bbox': [cx - w / 2, cy - h / 2, w, h]})
    return {'header': {'stamp': {'sec': msg.header.stamp.sec, 'nanosec': msg.header.stamp.nanosec},
                       'frame_id': msg.header.frame_id}, 'detections': dets}


def diagnostic_prefix(namespace):
    """What a graph's DiagnosticStatus names start with: '' in the root namespace, else 'front/' (/diagnostics
    is one topic for every graph; each reads only its own)."""
    ns = namespace.strip('/')
    return f'{ns}/' if ns else ''


def diagnostic_array(stamp, statuses):
    """statuses: [(level, name, message, hardware_id, [(key, value)])] -> DiagnosticArray."""
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [DiagnosticStatus(level=level, name=name, message=message, hardware_id=hw,
                                   values=[KeyValue(key=k, value=v) for k, v in values])
                  for level, name, message, hw, values in statuses]
    return arr


LEVEL = {'ok': DiagnosticStatus.OK, 'warn': DiagnosticStatus.WARN, 'error': DiagnosticStatus.ERROR}
