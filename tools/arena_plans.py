"""Plans' memory with the engine's per-session arenas and with one process-wide arena (docs/memory.md).

``python tools/arena_plans.py NET SPEC [SPEC ...]``: each plan (with its predictions) on emulated-biglittle-1+1,
measured as ``pipeit_ros.engine.footprint`` measures it (a fresh process, 60 frames, peak PSS with the weights
whole) under the emulation, twice each way, alternated: as the engine builds sessions, and with the child
registering one kSameAsRequested CPU arena for the process (``OrtArenaCfg``) that every session opts into
(``session.use_env_allocators``) before it builds anything. Prints the predicted figure and the four measures.
"""
import json
import os
import subprocess
import sys

from pipeit_ros.cost import profiler
from pipeit_ros.engine.sessions import optimize_stages
from pipeit_ros.hw.emulation import emulated
from pipeit_ros.hw.topology import resolve
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import zoo
from pipeit_ros.plan import parse_spec
from pipeit_ros.planning import prediction

CHILD = r'''
import sys
if sys.argv[1] == 'env':
    sys.path.insert(0, sys.argv[2])
    from arena_held import use_process_arena
    use_process_arena(1)
from pipeit_ros.engine import footprint
footprint.main()
'''
if len(sys.argv) < 3:
    raise SystemExit('usage: python tools/arena_plans.py NET SPEC [SPEC ...]')
topo = resolve('emulated-biglittle-1+1')
net = sys.argv[1]
g = graph_mod.load(zoo.zoo_path(net))
cost = profiler.profile(g, topo, progress=False, log=lambda *_: None)
env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}
for spec in sys.argv[2:]:
    plan = prediction.with_predictions(parse_spec(spec, topo, len(g.layers)), cost, topo)
    optimize_stages(g, plan)
    req = json.dumps({'model': g.path, 'input_shape': g.input_shape_given,
                      'prepared': os.path.dirname(g.weights.path), 'plan': plan.to_dict(), 'frames': 60})
    res = {}
    with emulated(topo, log=lambda *a: None):
        for mode in ('default', 'env', 'default', 'env'):
            out = subprocess.run([sys.executable, '-c', CHILD, mode, os.path.dirname(os.path.abspath(__file__))], input=req, capture_output=True, text=True, env=env)
            m = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {'memory_mb': float('nan')}
            res.setdefault(mode, []).append(round(m['memory_mb'], 1))
    print(net, spec, 'predicted', plan.notes['memory_mib'], res, flush=True)
