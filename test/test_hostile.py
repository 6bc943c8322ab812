"""Hostile input to every `pipeit` subcommand: each case must end within a deadline, exit 2 and say why in one
line on stderr, with no traceback (README: exit codes; the project's bad-input rule).

The real console script runs as a subprocess with a private cache (XDG_CACHE_HOME) and a bound on its address
space, so a case that would hang or allocate without limit fails here instead of taking the machine. Cache
cases that a command must survive (a corrupt entry is moved aside with a warning and rebuilt) expect exit 0.
A fast subset runs by default; the rest is marked slow.

Each case waits mostly on its subprocess's start (Python, numpy, onnx), so the module starts the selected cases
that need no ROS graph a few at a time ahead of their tests (``PIPEIT_HOSTILE_JOBS``); every case still runs alone
in its own process with its own cache, and its test asserts on its own result. `bringup` cases run in their test,
one at a time, so no two graphs share a ROS domain.
"""
import concurrent.futures
import json
import os
import random
import resource
import shutil
import subprocess
import sys

import pytest

DEADLINE_S = float(os.environ.get('PIPEIT_HOSTILE_DEADLINE_S', 60))
JOBS = int(os.environ.get('PIPEIT_HOSTILE_JOBS', 0)) or min(4, (os.cpu_count() or 1) + 1)
ADDRESS_SPACE = 6 * 2**30     # a case that allocates gigabytes fails with MemoryError, not the machine
TOPO = 'emulated-2x1'          # two 1-core clusters c0, c1 on CPUs 0 and 1
BRINGUP = ('--topology', TOPO, '--duration', '3', '--stop-timeout', '2', '--quiet')


def pipeit_command():
    exe = os.path.join(os.path.dirname(sys.executable), 'pipeit')
    return [exe] if os.path.exists(exe) else [sys.executable, '-m', 'pipeit_ros']


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_pipeit(argv, cache, cwd):
    env = {**os.environ, 'XDG_CACHE_HOME': str(cache), 'PYTHONWARNINGS': 'ignore'}
    env.pop('PIPEIT_DEBUG', None)
    return subprocess.run(pipeit_command() + list(argv), capture_output=True, text=True, errors='replace',
                          timeout=DEADLINE_S, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          preexec_fn=_limit_memory)


# ------------------------------------------------------------------ files the cases name

def _tiny_model(path, *, input_shape=(1, 3, 32, 32), broken_weight=False, runtime_failure=False):
    """A small conv net written with the onnx helper API; variants that load in onnx but fail in onnxruntime."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    c = input_shape[1]
    w = rng.standard_normal((8, c if not broken_weight else c + 2, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, 'w')]
    nodes = [helper.make_node('Conv', ['x', 'w'], ['y'], pads=[1, 1, 1, 1], name='conv'),
             helper.make_node('Relu', ['y'], ['r'], name='relu'),
             helper.make_node('GlobalAveragePool', ['r'], ['g'], name='gap'),
             helper.make_node('Flatten', ['g'], ['out'], name='flat')]
    out_shape = [1, 8]
    if runtime_failure:
        # the Reshape's target comes from a tensor onnx cannot see through, so onnx accepts the model and
        # onnxruntime fails on the first run (8 elements into 3 x ?)
        inits.append(numpy_helper.from_array(np.array([3, -1], dtype=np.int64), 'shape'))
        nodes[-1] = helper.make_node('Flatten', ['g'], ['f'], name='flat')
        nodes += [helper.make_node('Identity', ['shape'], ['shape2'], name='id'),
                  helper.make_node('Reshape', ['f', 'shape2'], ['out'], name='reshape')]
        out_shape = [3, None]
    graph = helper.make_graph(nodes, 'hostile', [helper.make_tensor_value_info('x', TensorProto.FLOAT,
                                                                                 list(input_shape))],
                              [helper.make_tensor_value_info('out', TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


TOPOLOGY_YAML = {
    'cap_inf': 'clusters:\n  - {name: a, cpus: [0], capacity: .inf}\n  - {name: b, cpus: [1], capacity: 1}\n',
    'cap_nan': 'clusters:\n  - {name: a, cpus: [0], capacity: .nan}\n  - {name: b, cpus: [1], capacity: 1}\n',
    'cap_neg': 'clusters:\n  - {name: a, cpus: [0], capacity: -1}\n  - {name: b, cpus: [1], capacity: 1}\n',
    'cap_text': 'clusters:\n  - {name: a, cpus: [0], capacity: fast}\n',
    'cpus_huge': 'clusters:\n  - {name: a, cpus: "0-99999999"}\n',
    'cpus_high': 'clusters:\n  - {name: a, cpus: [4096]}\n',
    'cpus_bad': 'clusters:\n  - {name: a, cpus: "a-b"}\n',
    'cpus_reversed': 'clusters:\n  - {name: a, cpus: "1-0"}\n',
    'cpus_negative': 'clusters:\n  - {name: a, cpus: [-1]}\n',
    'cpus_empty': 'clusters:\n  - {name: a, cpus: []}\n',
    'cpus_shared': 'clusters:\n  - {name: a, cpus: [0]}\n  - {name: b, cpus: [0]}\n',
    'share_nan': 'clusters:\n  - {name: a, cpus: [0], emulate: {share: .nan}}\n',
    'freq_inf': 'clusters:\n  - {name: a, cpus: [0], max_freq_khz: .inf}\n',
    'name_dup': 'clusters:\n  - {name: a, cpus: [0]}\n  - {name: a, cpus: [1]}\n',
    'no_clusters': 'name: x\n',
    'list_top': '- 1\n- 2\n',
    'empty': '',
    'bad_yaml': 'clusters: [\n',
    'deep_yaml': '[' * 5000 + ']' * 5000 + '\n',
    'alias_bomb': 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
                  'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
                  'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n'
                  'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nclusters: *g\n',
}


@pytest.fixture(scope='session')
def hostile(tmp_path_factory):
    """name -> path of every hostile file, and a warm cache (zoo `tiny`, its profile on emulated-2x1)."""
    root = tmp_path_factory.mktemp('hostile')
    files = {'root': str(root)}
    files['dir'] = str(root / 'a_dir.onnx')
    os.mkdir(files['dir'])
    files['fifo'] = str(root / 'fifo.onnx')
    os.mkfifo(files['fifo'])
    files['loop'] = str(root / 'loop.onnx')
    os.symlink(files['loop'], files['loop'])
    # 'garbage': fixed random bytes that FFmpeg probes as an MP3 and complains about on stderr (seed 4 does)
    for name, data in {'empty': b'', 'garbage': random.Random(4).randbytes(4096), 'text': b'hello, not a model\n',
                       'binary_yaml': b'\xff\xfe\x00clusters\x80\x81: [\xc3\x28]\n',
                       'garbage_json': b'{"stages": [', 'plan_wrong': json.dumps({'stages': 5}).encode()}.items():
        path = root / name
        path.write_bytes(data)
        files[name] = str(path)
    files['good'] = _tiny_model(root / 'good.onnx')
    files['ortfail'] = _tiny_model(root / 'ortfail.onnx', broken_weight=True)
    files['runfail'] = _tiny_model(root / 'runfail.onnx', runtime_failure=True)
    files['huge'] = _tiny_model(root / 'huge.onnx', input_shape=(1, 3, 20000, 20000))
    with open(files['good'], 'rb') as f:
        data = f.read()
    (root / 'truncated.onnx').write_bytes(data[:len(data) // 2])
    files['truncated'] = str(root / 'truncated.onnx')
    for name, text in TOPOLOGY_YAML.items():
        path = root / f'topo_{name}.yaml'
        path.write_text(text)
        files[f'topo_{name}'] = str(path)
    params = root / 'params_bad_topic.yaml'
    params.write_text('pipeit_planner:\n  ros__parameters:\n    image_topic: "bad topic!"\n')
    files['params_bad_topic'] = str(params)
    files['params_list'] = str(root / 'params_list.yaml')
    (root / 'params_list.yaml').write_text('- 1\n')
    files['images'] = str(root / 'images')
    os.mkdir(files['images'])
    (root / 'images' / 'broken.png').write_bytes(b'\x89PNG not really')
    files['no_images'] = str(root / 'no_images')
    os.mkdir(files['no_images'])
    files['not_a_dir'] = str(root / 'garbage') + '/sub/x'      # ENOTDIR, whoever runs the tests (root too)
    files['readonly_fs'] = '/proc/pipeit-hostile/x'            # ENOENT/EACCES on /proc
    files['cache_file'] = str(root / 'text')                    # XDG_CACHE_HOME that is a file: unwritable
    cache = root / 'cache'
    files['cache'] = str(cache)
    for argv in (['profile', 'tiny', '--topology', TOPO, '--reps', '1', '--no-progress'],
                 ['plan', 'tiny', '--topology', TOPO]):
        proc = run_pipeit(argv, cache, str(root))
        assert proc.returncode == 0, proc.stderr
    return files


# ------------------------------------------------------------------ the cases

MODELS = ('missing', 'dir', 'fifo', 'loop', 'empty', 'garbage', 'text', 'devnull', 'truncated', 'ortfail',
          'runfail', 'huge', 'unknown_name')
MODEL_ARG = {'missing': '{root}/no-such.onnx', 'devnull': '/dev/null', 'unknown_name': 'no-such-net'}
MODEL_COMMANDS = {
    'inspect': ('inspect', '{model}'),
    'profile': ('profile', '{model}', '--topology', TOPO, '--reps', '1', '--no-progress'),
    'plan': ('plan', '{model}', '--topology', TOPO),
    'bench': ('bench', '{model}', '--topology', TOPO, '--seconds', '1', '--rounds', '1', '--no-progress'),
    'bringup': ('bringup', '--model', '{model}', *BRINGUP),
}
FAST_MODELS = {'dir', 'fifo', 'garbage', 'ortfail', 'runfail', 'huge'}
# every model case for `inspect` (the cheapest command that loads a model); the others get a representative few
MODELS_BEYOND_INSPECT = {'missing', 'dir', 'fifo', 'garbage', 'ortfail', 'huge'}

TOPOLOGIES = tuple(f'topo_{name}' for name in TOPOLOGY_YAML) + ('binary_yaml', 'dir', 'fifo', 'missing',
                                                                  'unknown_name')
TOPOLOGY_ARG = {'missing': '{root}/no-such.yaml', 'unknown_name': 'no-such-topology'}
TOPOLOGY_COMMANDS = {
    'topology': ('topology', '--config', '{topology}'),
    'plan': ('plan', 'tiny', '--topology', '{topology}'),
    'profile': ('profile', 'tiny', '--topology', '{topology}', '--reps', '1', '--no-progress'),
    'bench': ('bench', 'tiny', '--topology', '{topology}', '--seconds', '1', '--rounds', '1', '--no-progress'),
    'train': ('train', '--quick', '--topology', '{topology}', '--no-progress'),
    'bringup': ('bringup', '--model', 'tiny', '--topology', '{topology}', '--duration', '3', '--quiet'),
}
FAST_TOPOLOGIES = {'topo_cap_inf', 'topo_cap_nan', 'topo_cpus_huge', 'binary_yaml', 'fifo'}
# every topology case for `topology --config` and `plan`; the others get a representative few
TOPOLOGIES_BEYOND_PLAN = {'topo_cap_inf', 'topo_cpus_huge', 'binary_yaml', 'fifo', 'topo_bad_yaml'}
# 'dir' as a topology is a sysfs root (documented); an empty one is not a machine
# a CPU this machine lacks is fine for `plan`, which plans other boards on paper
SKIP_TOPOLOGY = {('topology', 'dir'), ('plan', 'topo_cpus_high')}

BAD_FLOATS = {'nan': 'nan', 'inf': 'inf', 'neg': '-1', 'zero': '0', 'empty': '', 'text': 'ten', 'huge': '1e308'}
NUMBERS = [
    # (command id, argv before the value, flag, values that are bad for it)
    ('profile', ('profile', 'tiny', '--topology', TOPO, '--no-progress'), '--budget',
     ('nan', 'inf', 'neg', 'zero', 'empty', 'huge')),
    ('profile', ('profile', 'tiny', '--topology', TOPO, '--no-progress'), '--reps', ('neg', 'zero', 'empty', 'text',
                                                                                      'huge')),
    ('plan', ('plan', 'tiny', '--topology', TOPO), '--max-latency-ms', ('nan', 'inf', 'neg', 'zero', 'empty')),
    ('plan', ('plan', 'tiny', '--topology', TOPO), '--min-fps', ('nan', 'inf', 'neg', 'empty', 'huge')),
    ('plan', ('plan', 'tiny', '--topology', TOPO), '--memory-mb', ('nan', 'inf', 'neg', 'zero', 'empty')),
    ('bench', ('bench', 'tiny', '--topology', TOPO, '--rounds', '1', '--no-progress'), '--seconds',
     ('nan', 'inf', 'neg', 'zero', 'empty', 'huge')),
    ('bench', ('bench', 'tiny', '--topology', TOPO, '--seconds', '1', '--no-progress'), '--rounds',
     ('neg', 'zero', 'empty', 'huge')),
    ('bench', ('bench', 'tiny', '--topology', TOPO, '--seconds', '1', '--rounds', '1', '--no-progress'),
     '--warmup', ('neg', 'empty', 'huge')),
    ('bench', ('bench', 'tiny', '--topology', TOPO, '--seconds', '1', '--rounds', '1', '--no-progress'),
     '--queue-size', ('neg', 'zero', 'huge')),
    ('paper_table', ('bench', '--paper-table', '--nets', 'tiny', '--topology', TOPO, '--no-progress'), '--seconds',
     ('nan', 'inf', 'neg', 'zero')),
    ('bringup', ('bringup', '--model', 'tiny', '--topology', TOPO, '--quiet'), '--duration',
     ('nan', 'inf', 'neg', 'zero', 'empty', 'huge')),
    ('bringup', ('bringup', '--model', 'tiny', '--topology', TOPO, '--duration', '3', '--quiet'), '--stop-timeout',
     ('nan', 'inf', 'neg', 'empty', 'huge')),
    ('zoo', ('zoo', 'tiny', '--out', '{root}/seed.onnx'), '--seed', ('neg', 'nan', 'empty', 'huge')),
]
BAD_INTS = {'huge': '99999999999999999999'}
FAST_NUMBERS = {('bench', '--seconds', 'inf'), ('bench', '--seconds', 'nan'), ('bringup', '--duration', 'nan'),
                ('profile', '--budget', 'nan'), ('plan', '--memory-mb', 'nan'), ('zoo', '--seed', 'neg'),
                ('bringup', '--stop-timeout', 'neg'), ('plan', '--max-latency-ms', 'inf')}

BENCH_TINY = ('bench', 'tiny', '--topology', TOPO, '--seconds', '1', '--rounds', '1', '--no-progress')
STAGE_SPECS = {
    'empty': '', 'blank': ' , ', 'garbage': 'garbage', 'past_end': '0-99@c0', 'unknown_cluster': '0-8@nope',
    'zero_threads': '0-8@c0:0', 'zero_replicas': '0-8@c0:1x0', 'reversed': '8-0@c0', 'gap': '0-3@c0',
    'overlap': '0-4@c0,3-8@c1', 'too_many_threads': '0-8@c0:99', 'huge_replicas': '0-8@c0:1x99999999',
    'foreign_cpu': '0-8@c0[7]:1', 'huge_layer': '0-99999999999999999999@c0',
}
FAST_SPECS = {'empty', 'blank', 'huge_replicas', 'foreign_cpu'}

OTHER = {
    # id: (argv, fast)
    'bench_only_empty': ((*BENCH_TINY, '--only', ''), True),
    'bench_only_unknown': ((*BENCH_TINY, '--only', 'nope'), False),
    'bench_plot_dir': ((*BENCH_TINY, '--only', 'ort_all_cores', '--plot', '{dir}'), True),
    'bench_plot_unwritable': ((*BENCH_TINY, '--only', 'ort_all_cores', '--plot', '{not_a_dir}'), False),
    'bench_plan_missing': ((*BENCH_TINY, '--plan', '{root}/no-plan.json'), False),
    'bench_plan_dir': ((*BENCH_TINY, '--plan', '{dir}'), False),
    'bench_plan_fifo': ((*BENCH_TINY, '--plan', '{fifo}'), True),
    'bench_plan_garbage': ((*BENCH_TINY, '--plan', '{garbage}'), False),
    'bench_plan_truncated_json': ((*BENCH_TINY, '--plan', '{garbage_json}'), False),
    'bench_plan_wrong_shape': ((*BENCH_TINY, '--plan', '{plan_wrong}'), False),
    'bench_source_without_auto': ((*BENCH_TINY, '--source', 'profile'), False),
    'bench_stage_alone_no_plan': ((*BENCH_TINY, '--stage-alone'), False),
    'paper_nets_empty': (('bench', '--paper-table', '--nets', '', '--topology', TOPO), True),
    'paper_nets_unknown': (('bench', '--paper-table', '--nets', 'nope', '--topology', TOPO), False),
    'paper_with_model': (('bench', 'tiny', '--paper-table', '--nets', 'tiny', '--topology', TOPO), False),
    'paper_plot_dir': (('bench', '--paper-table', '--nets', 'tiny', '--topology', TOPO, '--seconds', '0.5',
                        '--plot', '{dir}', '--no-progress'), False),
    'plan_out_dir': (('plan', 'tiny', '--topology', TOPO, '--out', '{dir}'), True),
    'plan_out_unwritable': (('plan', 'tiny', '--topology', TOPO, '--out', '{not_a_dir}'), False),
    'plan_out_proc': (('plan', 'tiny', '--topology', TOPO, '--out', '{readonly_fs}'), False),
    'plan_profile_garbage': (('plan', 'tiny', '--topology', TOPO, '--profile', '{garbage}'), False),
    'plan_profile_dir': (('plan', 'tiny', '--topology', TOPO, '--profile', '{dir}'), False),
    'plan_profile_fifo': (('plan', 'tiny', '--topology', TOPO, '--profile', '{fifo}'), True),
    'plan_profile_wrong_shape': (('plan', 'tiny', '--topology', TOPO, '--profile', '{plan_wrong}'), False),
    'plan_predictor_garbage': (('plan', 'tiny', '--topology', TOPO, '--predictor', '{garbage}'), False),
    'plan_predictor_fifo': (('plan', 'tiny', '--topology', TOPO, '--predictor', '{fifo}'), False),
    'plan_predictor_missing': (('plan', 'tiny', '--topology', TOPO, '--predictor', '{root}/no.joblib'), False),
    'profile_out_dir': (('profile', 'tiny', '--topology', TOPO, '--reps', '1', '--no-progress', '--out', '{dir}'),
                        False),
    'profile_out_unwritable': (('profile', 'tiny', '--topology', TOPO, '--reps', '1', '--no-progress', '--out',
                                '{not_a_dir}'), False),
    'train_out_dir': (('train', '--quick', '--topology', TOPO, '--no-progress', '--out', '{dir}'), True),
    'train_out_unwritable': (('train', '--quick', '--topology', TOPO, '--no-progress', '--out', '{not_a_dir}'),
                             False),
    'train_nets_empty': (('train', '--quick', '--report', '--nets', '', '--topology', TOPO), False),
    'train_nets_unknown': (('train', '--quick', '--report', '--nets', 'nope', '--topology', TOPO), False),
    'zoo_unknown': (('zoo', 'nope', '--out', '{root}/nope.onnx'), False),
    'zoo_no_name': (('zoo',), False),
    'zoo_out_dir': (('zoo', 'tiny', '--out', '{dir}'), True),
    'zoo_out_fifo': (('zoo', 'tiny', '--out', '{fifo}'), True),
    'zoo_out_unwritable': (('zoo', 'tiny', '--out', '{not_a_dir}'), False),
    'topology_sysfs_missing': (('topology', '--sysfs-root', '{root}/no-sysfs'), False),
    'topology_sysfs_file': (('topology', '--sysfs-root', '{garbage}'), False),
    'topology_sysfs_empty_dir': (('topology', '--sysfs-root', '{no_images}'), False),
    'topology_cpus_not_here': (('topology', '--config', '{topo_cpus_high}'), False),
    'bringup_namespace_bad': (('bringup', '--model', 'tiny', *BRINGUP, '--namespace', 'bad ns!'), True),
    'bringup_namespace_digit': (('bringup', '--model', 'tiny', *BRINGUP, '--namespace', '/1abc'), False),
    'bringup_namespace_double_slash': (('bringup', '--model', 'tiny', *BRINGUP, '--namespace', '/a//b'), False),
    'bringup_topic_bad': (('bringup', '--model', 'tiny', *BRINGUP, '--image-topic', 'bad topic!'), True),
    'bringup_topic_empty': (('bringup', '--model', 'tiny', *BRINGUP, '--image-topic', ''), False),
    'bringup_topic_trailing_slash': (('bringup', '--model', 'tiny', *BRINGUP, '--image-topic', 'a/'), False),
    'bringup_params_missing': (('bringup', *BRINGUP, '--params-file', '{root}/no.yaml'), False),
    'bringup_params_dir': (('bringup', *BRINGUP, '--params-file', '{dir}'), False),
    'bringup_params_fifo': (('bringup', *BRINGUP, '--params-file', '{fifo}'), True),
    'bringup_params_binary': (('bringup', *BRINGUP, '--params-file', '{binary_yaml}'), False),
    'bringup_params_list': (('bringup', *BRINGUP, '--params-file', '{params_list}'), False),
    'bringup_params_bad_topic': (('bringup', *BRINGUP, '--params-file', '{params_bad_topic}', '--model', 'tiny'),
                                 False),
    'bringup_camera_missing': (('bringup', '--model', 'tiny', *BRINGUP, '--with-camera', '{root}/no.mp4'), False),
    'bringup_camera_empty_dir': (('bringup', '--model', 'tiny', *BRINGUP, '--with-camera', '{no_images}'), False),
    'bringup_camera_fifo': (('bringup', '--model', 'tiny', *BRINGUP, '--with-camera', '{fifo}'), False),
    'bringup_camera_garbage': (('bringup', '--model', 'tiny', *BRINGUP, '--with-camera', '{garbage}'), False),
}

# Cache states. 'unwritable': XDG_CACHE_HOME is a file, so no entry can be written: exit 2.
CACHE_UNWRITABLE = {
    'inspect': ('inspect', 'tiny'),
    'plan': ('plan', 'tiny', '--topology', TOPO),
    'profile': ('profile', 'tiny', '--topology', TOPO, '--reps', '1', '--no-progress'),
    'bench': BENCH_TINY,
    'train': ('train', '--quick', '--topology', TOPO, '--no-progress'),
    'paper_table': ('bench', '--paper-table', '--nets', 'tiny', '--topology', TOPO, '--seconds', '0.5'),
    'bringup': ('bringup', '--model', 'tiny', *BRINGUP),
}
# 'corrupt': an entry of the warm cache is garbage or holds impossible numbers: the command moves it aside with
# a warning, rebuilds it and succeeds (exit 0).
CACHE_CORRUPT = {
    'zoo_garbage': ('zoo', ('inspect', 'tiny')),
    'zoo_empty': ('zoo', ('plan', 'tiny', '--topology', TOPO)),
    'profile_garbage': ('profiles', ('plan', 'tiny', '--topology', TOPO)),
    'profile_negative_times': ('profiles', ('plan', 'tiny', '--topology', TOPO)),
    'profile_nan_times': ('profiles', ('plan', 'tiny', '--topology', TOPO)),
    'profile_garbage_profile_cmd': ('profiles', ('profile', 'tiny', '--topology', TOPO, '--reps', '1',
                                                 '--no-progress')),
    'handover_garbage': ('handover', ('profile', 'tiny', '--topology', TOPO, '--reps', '2', '--no-progress')),
}


def _cases():
    cases = []

    def add(case_id, argv, fast=False, expect=2, cache=None):
        marks = () if fast else (pytest.mark.slow,)
        cases.append(pytest.param(tuple(argv), expect, cache, id=case_id, marks=marks))

    for cmd, argv in MODEL_COMMANDS.items():
        for m in MODELS:
            if cmd != 'inspect' and m not in MODELS_BEYOND_INSPECT:
                continue
            value = MODEL_ARG.get(m, '{%s}' % m)
            add(f'model-{cmd}-{m}', [a.replace('{model}', value) for a in argv],
                fast=(m in FAST_MODELS and cmd in ('inspect', 'plan', 'bringup')))
    for cmd, argv in TOPOLOGY_COMMANDS.items():
        for t in TOPOLOGIES:
            if (cmd, t) in SKIP_TOPOLOGY or (cmd not in ('topology', 'plan') and t not in TOPOLOGIES_BEYOND_PLAN):
                continue
            value = TOPOLOGY_ARG.get(t, '{%s}' % t)
            add(f'topology-{cmd}-{t}', [a.replace('{topology}', value) for a in argv],
                fast=(t in FAST_TOPOLOGIES and cmd in ('topology', 'plan', 'bench')))
    for cmd, argv, flag, values in NUMBERS:
        for v in values:
            value = BAD_INTS.get(v, BAD_FLOATS[v]) if flag in ('--reps', '--rounds', '--warmup', '--queue-size',
                                                                '--seed') else BAD_FLOATS[v]
            add(f'number-{cmd}{flag}={v}', [*argv, flag, value], fast=(cmd, flag, v) in FAST_NUMBERS)
    for name, spec in STAGE_SPECS.items():
        add(f'stages-{name}', [*BENCH_TINY, '--stages', spec], fast=name in FAST_SPECS)
    for name, (argv, fast) in OTHER.items():
        add(name, argv, fast=fast)
    for cmd, argv in CACHE_UNWRITABLE.items():
        add(f'cache-unwritable-{cmd}', argv, fast=cmd in ('inspect', 'plan', 'bringup'), cache='unwritable')
    for name, (kind, argv) in CACHE_CORRUPT.items():
        add(f'cache-corrupt-{name}', argv, fast=name in ('zoo_garbage', 'profile_negative_times'), expect=0,
            cache=(kind, name))
    return cases


def _corrupt(cache, kind, name):
    """Damage every entry of ``kind`` in a copy of the warm cache the way ``name`` says."""
    folder = os.path.join(cache, 'pipeit', kind)
    entries = [os.path.join(folder, f) for f in os.listdir(folder)]
    assert entries, f'the warm cache has no {kind} entry'
    for path in entries:
        if name.endswith('negative_times') or name.endswith('nan_times'):
            with open(path) as f:
                data = json.load(f)
            value = -1.0 if name.endswith('negative_times') else float('nan')
            data['seg_ms'] = [[value for _ in row] for row in data['seg_ms']]
            with open(path, 'w') as f:
                json.dump(data, f)
        elif name.endswith('empty'):
            open(path, 'wb').close()
        else:
            with open(path, 'wb') as f:
                f.write(b'\x00garbage\xff' * 64)


def _run_case(hostile, case_dir, argv, cache_state):
    """The case's subprocess, in ``case_dir`` with its own copy of the warm cache (or the unwritable one)."""
    argv = [a.format(**hostile) if '{' in a else a for a in argv]
    cache = os.path.join(case_dir, 'cache')
    if cache_state == 'unwritable':
        cache = hostile['cache_file']
    else:
        shutil.copytree(hostile['cache'], cache, symlinks=True)
        if cache_state is not None:
            _corrupt(cache, *cache_state)
    return argv, run_pipeit(argv, cache, case_dir)


@pytest.fixture(scope='module')
def prefetched(request, hostile, tmp_path_factory):
    """Case id -> future of :func:`_run_case`, for the selected cases that start no ROS graph."""
    pool = concurrent.futures.ThreadPoolExecutor(JOBS, thread_name_prefix='hostile')
    futures = {}
    for item in request.session.items:
        if getattr(item, 'module', None) is not request.module or getattr(item, 'originalname', '') != 'test_hostile':
            continue
        params = item.callspec.params
        if params['argv'][0] != 'bringup':
            futures[item.callspec.id] = pool.submit(_run_case, hostile, str(tmp_path_factory.mktemp('case')),
                                                    params['argv'], params['cache_state'])
    yield futures
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize('argv,expect,cache_state', _cases())
def test_hostile(hostile, prefetched, request, tmp_path, argv, expect, cache_state):
    try:
        future = prefetched.get(request.node.callspec.id)
        argv, proc = future.result() if future else _run_case(hostile, str(tmp_path), argv, cache_state)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f'{" ".join(map(str, e.cmd))} did not end within {DEADLINE_S:g} s')
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == expect, proc.stderr[-3000:]
    if expect == 2:
        assert len(lines) == 1, proc.stderr[-3000:]
        assert lines[0].startswith('pipeit'), lines
    else:
        assert any('moved aside' in line for line in lines), proc.stderr[-3000:]


def test_at_least_150_cases():
    cases = _cases()
    assert len(cases) >= 150
    assert len({c.id for c in cases}) == len(cases)
    assert sum(1 for c in cases if not c.marks) >= 30
