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


# -- the frame ledger: one status per container, named <container>/ledger (pipeit_ros.app.ledger) ----------
LEDGER_IN = 'ledger_in'
LEDGER_OUT = 'ledger_out'
LEDGER_SENT = 'ledger_sent'
LEDGER_RECEIVED = 'ledger_received'
LEDGER_DROPPED_PREFIX = 'ledger_dropped_'
CAMERA_RECEIVED = 'camera_received'
CAMERA_DROPPED_PREFIX = 'camera_dropped_'
LEDGER_NAME_SUFFIX = '/ledger'          # a ledger status' name: '<container>/ledger'
_FIELDS = {'in': LEDGER_IN, 'out': LEDGER_OUT, 'sent': LEDGER_SENT, 'received': LEDGER_RECEIVED}


def ledger_values(snapshot):
    """[(key, value string)] of a container's ledger status from FrameLedger.snapshot()'s dict."""
    values = [(key, str(int(snapshot[name]))) for name, key in _FIELDS.items()]
    values += [(LEDGER_DROPPED_PREFIX + r, str(int(n))) for r, n in sorted(snapshot['dropped'].items())]
    if 'camera_received' in snapshot:
        values.append((CAMERA_RECEIVED, str(int(snapshot['camera_received']))))
        values += [(CAMERA_DROPPED_PREFIX + r, str(int(n))) for r, n in sorted(snapshot['camera_dropped'].items())]
    return values


def ledger_of(values):
    """The snapshot dict back from a ledger status' {key: value}."""
    out = {name: int(values.get(key, 0)) for name, key in _FIELDS.items()}
    out['dropped'] = {k[len(LEDGER_DROPPED_PREFIX):]: int(v) for k, v in values.items()
                      if k.startswith(LEDGER_DROPPED_PREFIX)}
    out['camera_received'] = int(values.get(CAMERA_RECEIVED, 0))
    out['camera_dropped'] = {k[len(CAMERA_DROPPED_PREFIX):]: int(v) for k, v in values.items()
                             if k.startswith(CAMERA_DROPPED_PREFIX)}
    return out
