"""The keys of a stage's DiagnosticStatus on ``/diagnostics``: written by the containers
(:func:`pipeit_ros.app.results.stage_diagnostic_values`), read by adaptation (:mod:`pipeit_ros.app.adapt`),
bringup's monitor and the tests. Defined here only."""
import re

GENERATION = 'generation'
FPS = 'fps'
BUSY_PCT = 'busy_pct'
QUEUE_DEPTH = 'queue_depth'
QUEUE_HIGH_WATER = 'queue_high_water'
PREDICTED_MS = 'predicted_ms'
MEASURED_MS = 'measured_ms'
FRAMES = 'frames'
CPUS = 'cpus'
LATENCY_P50_MS = 'latency_p50_ms'
LATENCY_P99_MS = 'latency_p99_ms'
PUBLISHED_OUTPUT = 'published_output'
PUBLISHED_CLASSIFICATION = 'published_classification'
PUBLISHED_DETECTIONS = 'published_detections'
DROPS_PREFIX = 'drops_'
PROCESS_PID = 'process_pid'          # the container process hosting the stage, and its memory
PROCESS_RSS_MB = 'process_rss_mb'    # (pipeit_ros.hw.memory: PSS shares weight pages mapped by other
PROCESS_PSS_MB = 'process_pss_mb'    # containers; summed over containers it counts them once)

STAGE_NAME_RE = re.compile(r'(?:^|/)stage_(\d+)$')   # a stage status' name: '<container>/stage_<i>'


def drops_key(reason):
    """'queue' -> 'drops_queue'."""
    return DROPS_PREFIX + reason


def drops_of(values):
    """{reason: count} from a status' {key: value} (the ``drops_*`` keys)."""
    return {k[len(DROPS_PREFIX):]: int(v) for k, v in values.items() if k.startswith(DROPS_PREFIX)}
