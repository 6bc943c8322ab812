"""The few exception classes of the core; the CLI turns them into one line, the nodes into a log line."""
import os
import stat


class PipeitError(Exception):
    """Bad input the user can fix (a file, a parameter, a plan): CLI exit code 2."""


class PlanError(PipeitError):
    """A plan that does not fit its model or topology."""


class TopologyError(PipeitError):
    """A topology that cannot be detected or that a YAML file describes wrongly."""


class ModelError(PipeitError):
    """A model file that is not a usable ONNX CNN."""


class ImageError(PipeitError):
    """A frame that cannot become a model input; ``kind`` names the reason for the drop counters."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


class StageError(RuntimeError):
    """A pipeline stage failed while running; the message names the stage."""

    def __init__(self, stage_name, cause):
        super().__init__(f'{stage_name}: {type(cause).__name__}: {cause}')
        self.stage_name = stage_name
        self.cause = cause


def check_regular_file(path, what, error=PipeitError):
    """Raise ``error`` unless ``path`` is a regular file, before anything opens it: a FIFO would block the read,
    a directory or a device is not a ``what``."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return                      # missing or unreadable: the caller's open() says so in its own words
    if stat.S_ISDIR(mode):
        raise error(f'{path}: is a directory, not a {what}')
    if not stat.S_ISREG(mode):
        raise error(f'{path}: not a regular file (a FIFO, socket or device), not a {what}')
