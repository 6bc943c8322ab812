"""onnxruntime sessions placed on exact CPUs: the one place that knows how.

Measured (``docs/architecture.md``): ``os.sched_setaffinity(native_id, cpus)`` pins the calling thread, but onnxruntime's
intra-op pool ignores the caller's mask and places its own threads; its ``session.intra_op_thread_affinities``
option pins the pool (one entry per pool thread, ``intra_op_num_threads - 1`` entries, processor ids counted
from 1). The caller thread is one of the ``intra_op_num_threads`` workers, so it takes the group's first CPU.
The engine, the profiler, the predictor's sweep and the bare baseline all build sessions here, so what is
measured is what runs.
"""
import onnxruntime as ort


def thread_affinity_entries(cpus):
    """The ORT affinity string for a pool of len(cpus) threads: the caller keeps cpus[0], one CPU per pool thread."""
    return ';'.join(str(c + 1) for c in cpus[1:])


def session_options(cpus, threads=None, pinned=True, spinning=None):
    threads = threads or len(cpus)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if pinned and threads > 1:
        so.add_session_config_entry('session.intra_op_thread_affinities',
                                    thread_affinity_entries(tuple(cpus)[:threads]))
    if spinning is not None:
        so.add_session_config_entry('session.intra_op.allow_spinning', '1' if spinning else '0')
    return so


def make_session(model, cpus, threads=None, pinned=True, spinning=None):
    """An InferenceSession for ``model`` (bytes, ModelProto or path) running on ``cpus``.

    With ``pinned`` the pool threads are placed on cpus[1:]; the thread that calls ``run`` must pin itself to
    cpus[0] (see :func:`pipeit_ros.hw.cpus.pin_current_thread`) — the engine's workers do.
    """
    if hasattr(model, 'SerializeToString'):
        model = model.SerializeToString()
    so = session_options(cpus, threads, pinned, spinning)
    return ort.InferenceSession(model, sess_options=so, providers=['CPUExecutionProvider'])
