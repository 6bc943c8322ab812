"""One reader for the YAML files users give (topologies, parameter files, model sidecars), so each bad file
fails with the same kind of one-line reason naming the file."""
import os

import yaml

from pipeit_ros.errors import PipeitError, check_regular_file


def read_yaml(path, what, error=PipeitError):
    """The parsed content of the YAML file ``path`` (None when empty); ``error`` naming the file and why when
    it is not a readable, UTF-8, valid YAML ``what``."""
    path = os.fspath(path)
    try:
        check_regular_file(path, what, error)
        with open(path, encoding='utf-8') as f:
            return yaml.safe_load(f)
    except OSError as exc:
        raise error(f'{path}: cannot read {what}: {exc.strerror or exc}') from None
    except UnicodeDecodeError as exc:
        raise error(f'{path}: not a text (UTF-8) {what} (byte {exc.start} cannot be decoded)') from None
    except RecursionError:
        raise error(f'{path}: YAML nested too deeply to be a {what}') from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        at = f'line {mark.line + 1}: ' if mark is not None else ''
        reason = getattr(exc, 'problem', None) or str(exc).splitlines()[0]
        raise error(f'{path}: not valid YAML: {at}{reason}') from None
