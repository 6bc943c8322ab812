"""The folders are the architecture: each layer imports only layers below it, no module cycles, and the core
works without rclpy (docs/architecture.md)."""
import ast
import os
import subprocess
import sys

from conftest import REPO
import pytest

PACKAGE_DIR = os.path.join(REPO, 'pipeit_ros')
# bottom to top; a module may import its own layer and the layers before it
LAYERS = ('shared', 'hw', 'model', 'engine', 'cost', 'planning', 'app', 'bench', 'ros', 'testing', 'cli')
ROS_LAYERS = {'ros', 'testing', 'cli'}
TOP_LEVEL_API = {'pipeit_ros', 'pipeit_ros.__main__'}        # the public API and `python -m` sit above every layer


def _modules():
    out = {}
    for dirpath, _, files in os.walk(PACKAGE_DIR):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
                out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = path
    return out


MODULES = _modules()


def layer_of(module):
    parts = module.split('.')
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    if len(parts) > 1 and parts[1] == 'app':
        return 'app'
    return 'shared'


def imports_of(module):
    """Every pipeit_ros module that ``module`` imports, at top level or inside functions."""
    path = MODULES[module]
    tree = ast.parse(open(path).read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in MODULES else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split('.')[0] == 'pipeit_ros' and n in MODULES and n != module)
    # a package's __init__ runs on import of any of its modules; they are empty here, so no edge for them
    return {n for n in found if not (n != 'pipeit_ros' and MODULES[n].endswith('__init__.py')
                                     and os.path.getsize(MODULES[n]) == 0)}


def test_layer_names_match_the_folders():
    folders = {d for d in os.listdir(PACKAGE_DIR) if os.path.isfile(os.path.join(PACKAGE_DIR, d, '__init__.py'))}
    assert folders == set(LAYERS) - {'shared'}


@pytest.mark.parametrize('module', sorted(set(MODULES) - TOP_LEVEL_API))
def test_imports_point_down(module):
    mine = LAYERS.index(layer_of(module))
    upward = sorted(t for t in imports_of(module) if t not in TOP_LEVEL_API and LAYERS.index(layer_of(t)) > mine)
    assert not upward, f'{module} ({layer_of(module)}) imports higher layers: {upward}'


def test_no_import_cycles():
    graph = {m: imports_of(m) - TOP_LEVEL_API for m in MODULES if m not in TOP_LEVEL_API}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 'open'
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 'open':
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 'done'

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, 'import cycles: ' + '; '.join(' -> '.join(c) for c in cycles)


def test_core_imports_without_rclpy():
    """Every module outside ros/, testing/ and cli/ imports with rclpy unavailable (a finder that refuses it)."""
    core = sorted(m for m in MODULES if layer_of(m) not in ROS_LAYERS and m not in TOP_LEVEL_API)
    code = ('import importlib, sys\n'
            'class Block:\n'
            '    def find_spec(self, name, path=None, target=None):\n'
            '        if name.split(".")[0] in ("rclpy", "rosidl_runtime_py", "std_msgs", "sensor_msgs"):\n'
            '            raise ImportError("blocked by test: " + name)\n'
            'sys.meta_path.insert(0, Block())\n'
            f'for m in {core!r}:\n'
            '    importlib.import_module(m)\n'
            'import pipeit_ros\n'
            'for name in pipeit_ros.__all__:\n'
            '    getattr(pipeit_ros, name)\n'
            'assert "rclpy" not in sys.modules\n'
            'print("ok", len(' + repr(core) + '))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('ok')


def test_only_the_ros_layers_name_rclpy():
    offenders = []
    for module, path in MODULES.items():
        if layer_of(module) in ROS_LAYERS:
            continue
        tree = ast.parse(open(path).read(), path)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f'{module}: {n}' for n in names if n.split('.')[0] == 'rclpy']
    assert not offenders
