"""Throughput of the engine's sessions against the way they were built before the memory work, paired in one run.

``python tools/engine_ab.py [NET ...] [--variants A,B,...] [--rounds R] [--seconds S] [--topology T]``: per
network, the same plan built once per variant in one process, alive together and run alternately (order
rotated each round, as ``pipeit bench`` does). Variants (``VARIANTS``):

- ``before``: each session from the stage's model bytes with its weights inline (``graph.load(store=False)``),
  onnxruntime's defaults for pre-packing and the memory pattern (on), as the engine built them before
  docs/memory.md's changes;
- ``after``: the engine as it is (weights as OrtValues over one mapping of the prepared model's external-data
  file, pre-packing and the memory pattern off, each stage built from its optimised model: engine.optimized);
- ``inline``, ``after+prepack``, ``after+pattern``, ``given``: one of the four changes undone, to tell them apart
  (``given``: the stage built from its model as given, optimised by onnxruntime in each session).

The plans: data parallelism over the first two clusters for every network, and the exact 2-stage plans of the
nets whose best plan is a pipeline there (fixed specs, so no profiling). glibc's mmap threshold is process-wide,
so every variant runs with the engine's fixed threshold; it was compared on its own in alternated processes
(docs/memory.md). Prints per plan each variant's frames/s over the first's, paired by round (median, range),
and each one's median frames/s.
"""
import argparse
import functools
import time

import numpy as np
import onnxruntime as ort

from pipeit_ros.bench.benchmark import _EngineCandidate, input_array, machine_info
from pipeit_ros.engine import pipeline, sessions
from pipeit_ros.hw.emulation import emulated
from pipeit_ros.hw.topology import resolve
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import zoo
from pipeit_ros.plan import parse_spec

NETS = ('alexnet', 'googlenet', 'mobilenet_v1', 'mobilenet_v2', 'resnet50', 'squeezenet1_1', 'yolov8n',
        'lraspp_mobilenet_v3_large')
engine_make_session = sessions.make_session
PIPELINES = {'resnet50': '0-22@little,23-70@big', 'yolov8n': '0-31@little,32-110@big',
             'lraspp_mobilenet_v3_large': '0-84@big,85-96@little'}


VARIANTS = {   # name: (weights inline in each stage's bytes, pre-packing on, memory pattern on, optimised stage)
    'before': (True, True, True, False),
    'after': (False, False, False, True),
    'inline': (True, False, False, False),
    'after+prepack': (False, True, False, True),
    'after+pattern': (False, False, True, True),
    'given': (False, False, False, False),
}


def _options(prepack, pattern):
    """The engine's session options with pre-packing / the memory pattern turned back on."""
    engine_options = sessions.session_options

    def options(*args, **kwargs):
        so = engine_options(*args, **kwargs)
        if prepack:
            so.add_session_config_entry('session.disable_prepacking', '0')
        if pattern:
            so.enable_mem_pattern = True
        return so
    return engine_options, options


def _candidates(name, topo, warmup, variants):
    path = zoo.zoo_path(name)
    graphs = {False: graph_mod.load(path), True: graph_mod.load(path, store=False)}
    assert graphs[True].weights is None, 'the inline graph must keep its weights inline'
    last = len(graphs[False].layers) - 1
    a, b = topo.clusters[:2]
    specs = {'data parallelism': f'0-{last}@{a.name}+{b.name}[{a.cpus[0]}+{b.cpus[0]}]:1x2'}
    if name in PIPELINES:
        specs['2-stage'] = PIPELINES[name]
    x = input_array(graphs[False])
    for label, spec in specs.items():
        plan = parse_spec(spec, topo, len(graphs[False].layers))
        runners = {}
        for v in variants:
            inline, prepack, pattern, optimize = VARIANTS[v]
            engine_options, options = _options(prepack, pattern)
            sessions.session_options = options   # read by make_session while start() builds the sessions
            pipeline.make_session = functools.partial(engine_make_session, optimize=optimize)
            try:
                runners[v] = _EngineCandidate(graphs[inline], plan, x, warmup, queue_size=2)
            finally:
                sessions.session_options = engine_options
                pipeline.make_session = engine_make_session
        yield label, spec, runners


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('nets', nargs='*', default=NETS)
    ap.add_argument('--topology', default='emulated-biglittle-1+1')
    ap.add_argument('--rounds', type=int, default=6)
    ap.add_argument('--seconds', type=float, default=3.0, help='seconds per candidate per round')
    ap.add_argument('--warmup', type=int, default=10)
    ap.add_argument('--variants', default='before,after',
                    help=f'two or more of {", ".join(VARIANTS)}; ratios are against the first')
    args = ap.parse_args(argv)
    topo = resolve(args.topology)
    ort.set_default_logger_severity(3)   # not the notice that pre-packing's entry is set again
    info = machine_info()
    print(f'# {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; {info.get("cpu_model", "")} '
          f'{info.get("cpus_online", "")} CPUs, onnxruntime {info.get("onnxruntime")}; {args.topology}; {args.rounds} rounds x {args.seconds:g} s each, '
          f'{args.warmup} warm-up frames, alternated, order rotated per round')
    variants = args.variants.split(',')
    if len(variants) < 2 or any(v not in VARIANTS for v in variants):
        ap.error(f'--variants: two or more of {", ".join(VARIANTS)}')
    ref = variants[0]
    print('| net | plan | spec | ' + ' | '.join(f'{v} ÷ {ref}, median (range)' for v in variants[1:])
          + ' | ' + ' | '.join(f'{v} fps' for v in variants) + ' |')
    print('|---|---|---|' + '--:|' * (2 * len(variants) - 1))
    with emulated(topo):
        for name in args.nets:
            for label, spec, runners in _candidates(name, topo, args.warmup, variants):
                fps = {k: [] for k in runners}
                try:
                    for r in range(args.rounds):
                        order = list(runners)
                        for k in order[r % len(order):] + order[:r % len(order)]:
                            done = runners[k].round(args.seconds, False)[0]
                            fps[k].append((len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 else 0.0)
                finally:
                    for runner in runners.values():
                        runner.close()
                cells = []
                for v in variants[1:]:
                    ratio = np.array(fps[v]) / np.array(fps[ref])
                    cells.append(f'{np.median(ratio):.3f} ({ratio.min():.2f}–{ratio.max():.2f})')
                cells += [f'{np.median(fps[v]):.1f}' for v in variants]
                print(f'| {name} | {label} | `{spec}` | ' + ' | '.join(cells) + ' |', flush=True)

if __name__ == '__main__':
    main()
