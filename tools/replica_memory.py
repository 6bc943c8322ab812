"""What a second replica of a stage costs, sessions built as given or from the optimised stage (docs/memory.md).

``python tools/replica_memory.py [NET ...]``: per zoo network, the whole model as one session, 1 then 2 replicas in
one process; PSS and anonymous MiB grown over the loaded model, with ``make_session(optimize=False)`` (the engine
before ``engine.optimized``) and ``optimize=True`` (now, the stage optimised before the first replica is built);
one fresh process per cell. Prints a markdown table.
"""
import json
import subprocess
import sys
import time

NETS = sys.argv[1:] or ['alexnet', 'googlenet', 'mobilenet_v1', 'mobilenet_v2', 'resnet50', 'squeezenet1_1', 'yolov8n',
                        'lraspp_mobilenet_v3_large']
CHILD = r'''
import json, sys, time
from pipeit_ros.cli.common import resolve_model
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.engine.sessions import make_session, optimize_stages
from pipeit_ros.plan import Plan, Stage
from pipeit_ros.hw import memory as procmem
net, opt = sys.argv[1], sys.argv[2] == '1'
g = graph_mod.load(resolve_model(net))
b = g.extract_bytes(0, len(g.layers) - 1)
if opt:
    optimize_stages(g, Plan(stages=[Stage(0, len(g.layers) - 1, 'c', (0,))]))
x = {g.input_name: g.sample_input(0)}
procmem.trim(); base = procmem.usage(); out = {}
ss = []
for r in (1, 2):
    t = time.perf_counter(); s = make_session(b, (0,), weights=g.weights, optimize=opt); out[f'build{r}_s'] = time.perf_counter() - t
    s.run(None, x); ss.append(s)
    procmem.trim(); u = procmem.usage()
    out[f'pss{r}'] = (u.pss - base.pss) / 2**20; out[f'anon{r}'] = (u.anonymous - base.anonymous) / 2**20
out['peak_above'] = (u.hwm - u.rss) / 2**20
print(json.dumps(out))
'''
print(f'# {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; one fresh process per cell; MiB grown over the loaded model')
print('| net | as given: 1 / 2 replicas PSS (anon) | optimised: 1 / 2 replicas PSS (anon) | 2nd replica as given / optimised | build s as given / optimised |')
print('|---|--:|--:|--:|--:|')
for net in NETS:
    r = {}
    for opt in ('0', '1'):
        p = subprocess.run([sys.executable, '-c', CHILD, net, opt], capture_output=True, text=True)
        if p.returncode:
            print(net, opt, 'FAILED', p.stderr.strip().splitlines()[-1:])
            break
        r[opt] = json.loads(p.stdout.strip().splitlines()[-1])
    else:
        a, o = r['0'], r['1']
        print(f"| {net} | {a['pss1']:.1f} / {a['pss2']:.1f} ({a['anon1']:.1f} / {a['anon2']:.1f}) "
              f"| {o['pss1']:.1f} / {o['pss2']:.1f} ({o['anon1']:.1f} / {o['anon2']:.1f}) "
              f"| {a['pss2'] - a['pss1']:.1f} / {o['pss2'] - o['pss1']:.1f} | {a['build1_s']:.2f} / {o['build1_s']:.2f} |",
              flush=True)
