"""pipeit_ros.planning.facade (cost table sources, auto_plan) and `pipeit plan` on the tiny net with a saved cost table."""
import json

import numpy as np
import pytest

from pipeit_ros.cost.table import CostTable
from pipeit_ros.errors import PipeitError, PlanError
from pipeit_ros.hw import topology as topology_mod
from pipeit_ros.plan import Plan, check_against
from pipeit_ros.planning import facade as planning

TOPO_NAME = 'emulated-2x1'


@pytest.fixture(scope='module')
def tiny(zoo_model):
    from pipeit_ros.model import graph
    return graph.load(zoo_model('tiny'))


@pytest.fixture(scope='module')
def topo():
    return topology_mod.resolve(TOPO_NAME, check_cpus=False)


def synthetic_profile(graph, topo, seed=0):
    """A cost table of the right shape for ``graph`` on ``topo`` (what `pipeit profile --out` writes)."""
    rng = np.random.default_rng(seed)
    segments = graph.segments()
    configs = [(c.name, k) for c in topo.clusters for k in range(1, c.size + 1)]
    n = len(segments)
    return CostTable(segments=segments, configs=configs, seg_ms=rng.uniform(0.05, 0.5, (len(configs), n)),
                     overhead_ms=np.full(len(configs), 0.02), in_bytes=[12288] * n, weight_bytes=[40_000] * n,
                     act_bytes=[30_000] * n, handover_fixed_ms=0.01, handover_ms_per_mb=0.5, source='profile',
                     model_hash=graph.model_hash, topology_fingerprint=topo.fingerprint())


@pytest.fixture
def profile_file(tiny, topo, tmp_path):
    return str(synthetic_profile(tiny, topo).save(tmp_path / 'tiny-profile.json'))


@pytest.mark.parametrize('search', ['exact', 'pipeit-paper'])
def test_auto_plan_from_a_saved_profile(tiny, topo, profile_file, search):
    lines = []
    plan = planning.auto_plan(tiny, topo, profile_path=profile_file, search=search, log=lines.append)
    check_against(plan, tiny, topo)
    assert plan.model_hash == tiny.model_hash and plan.topology_fingerprint == topo.fingerprint()
    assert plan.search == search and plan.predicted_fps > 0 and plan.predicted_latency_ms > 0
    assert any(profile_file in line for line in lines)


def test_cost_table_reads_the_profile_file(tiny, topo, profile_file):
    table = planning.cost_table(tiny, topo, profile_path=profile_file, log=lambda _: None)
    assert table.segments == [tuple(s) for s in tiny.segments()] and table.source == 'profile'


@pytest.mark.parametrize('kwargs,message', [
    ({'source': 'measured'}, 'source must be one of'),
    ({'profile_path': 'a.json', 'predictor_path': 'b.joblib'}, 'not both'),
    ({'source': 'predictor', 'profile_path': 'a.json'}, 'does not read a profile'),
    ({'source': 'profile', 'predictor_path': 'b.joblib'}, 'does not read a predictor'),
], ids=['bad-source', 'two-files', 'predictor-with-profile', 'profile-with-predictor'])
def test_cost_table_argument_errors(tiny, topo, kwargs, message):
    with pytest.raises(PipeitError, match=message):
        planning.cost_table(tiny, topo, log=lambda _: None, **kwargs)


def test_profile_of_another_model_or_topology_is_refused(tiny, topo, tmp_path):
    other = synthetic_profile(tiny, topo)
    other.model_hash = 'f' * 16
    with pytest.raises(PipeitError, match='is of model'):
        planning.cost_table(tiny, topo, profile_path=str(other.save(tmp_path / 'm.json')), log=print)
    board = topology_mod.resolve('hikey970', check_cpus=False)
    with pytest.raises(PipeitError, match='measured on topology'):
        planning.cost_table(tiny, board, profile_path=str(synthetic_profile(tiny, topo).save(tmp_path / 't.json')),
                            log=print)


def test_a_board_we_do_not_have_cannot_be_profiled(tiny):
    board = topology_mod.resolve('hikey970', check_cpus=False)
    assert not planning.runnable_here(board)
    with pytest.raises(PipeitError, match='cannot profile topology .hikey970. here'):
        planning.cost_table(tiny, board, source='profile', log=print)


def test_the_paper_search_takes_no_constraints(tiny, topo, profile_file):
    with pytest.raises(PlanError, match='--max-latency-ms need.* --search exact'):
        planning.auto_plan(tiny, topo, profile_path=profile_file, search='pipeit-paper', max_latency_ms=5)
    with pytest.raises(PlanError, match='search must be one of'):
        planning.auto_plan(tiny, topo, profile_path=profile_file, search='random')


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_prints_the_plan(run_cli, tiny, profile_file):
    code, out, err = run_cli('plan', tiny.path, '--topology', TOPO_NAME, '--profile', profile_file)
    assert code == 0, err
    assert 'stage 0: layers 0-' in out and tiny.layers[0].name in out and tiny.layers[-1].name in out
    assert 'predicted:' in out and 'frames/s' in out and 'exact search' in out
    assert profile_file in err


def test_cli_json_and_out_give_the_plan_bench_runs(run_cli, tiny, topo, profile_file, tmp_path):
    out_file = tmp_path / 'plan.json'
    code, out, err = run_cli('plan', 'tiny', '--topology', TOPO_NAME, '--profile', profile_file, '--json',
                             '--out', out_file, '--no-replicas')
    assert code == 0, err
    printed = Plan.from_dict(json.loads(out))
    saved = Plan.load(out_file)
    assert printed == saved
    check_against(saved, tiny, topo)
    assert saved.search == 'exact' and saved.predicted_fps > 0 and saved.notes['replicas_allowed'] is False
    assert all(s.replicas == 1 for s in saved.stages)


@pytest.mark.parametrize('argv,message', [
    (['--max-latency-ms', '0.001'], 'no plan meets --max-latency-ms 0.001: the fastest has'),
    (['--memory-mb', '0.01'], 'no plan fits --memory-mb 0.01: the smallest needs'),
    (['--min-fps', '1e9'], 'no plan reaches --min-fps 1e+09'),
    (['--search', 'pipeit-paper', '--objective', 'latency'], '--objective latency need'),
], ids=['latency', 'memory', 'fps', 'paper-with-objective'])
def test_cli_infeasible_or_unsupported_exits_2(run_cli, tiny, profile_file, argv, message):
    code, out, err = run_cli('plan', tiny.path, '--topology', TOPO_NAME, '--profile', profile_file, *argv)
    last = err.strip().splitlines()[-1]
    assert code == 2 and out == '' and last.startswith('pipeit: error: ') and message in last


@pytest.mark.parametrize('argv', [['--objective', 'speed'], ['--search', 'greedy']], ids=['objective', 'search'])
def test_cli_bad_choice_exits_2(run_cli, tiny, profile_file, argv):
    with pytest.raises(SystemExit) as exc:
        run_cli('plan', tiny.path, '--profile', profile_file, *argv)
    assert exc.value.code == 2


def test_cli_unknown_model_exits_2(run_cli):
    code, _, err = run_cli('plan', 'no_such_net', '--topology', TOPO_NAME)
    assert code == 2 and 'not a zoo network' in err


@pytest.mark.slow
def test_cli_plans_a_board_on_paper(run_cli):
    """hikey970 is not this machine: the host predictor (a quick one trained now) scaled for the board."""
    code, out, err = run_cli('plan', 'tiny', '--topology', 'hikey970', '--json')
    assert code == 0, err
    plan = Plan.from_dict(json.loads(out))
    board = topology_mod.resolve('hikey970', check_cpus=False)
    assert plan.topology_fingerprint == board.fingerprint() and plan.notes['cost_source'] == 'predictor-scaled'
    assert {c for s in plan.stages for c in s.cpus} <= set(board.cpus) and plan.predicted_fps > 0
    assert 'on paper' in err
    code, out, _ = run_cli('plan', 'tiny', '--topology', 'hikey970', '--search', 'pipeit-paper')
    assert code == 0 and 'pipeit-paper search' in out and 'on paper' in out
    from pipeit_ros.cost import predictor
    trained = predictor.default_path(topology_mod.detect(), quick=True)     # the one the first call trained
    code, out, err = run_cli('plan', 'tiny', '--topology', 'hikey970', '--predictor', trained, '--json')
    assert code == 0 and f'predictor {trained}' in err
    assert Plan.from_dict(json.loads(out)).predicted_fps == pytest.approx(plan.predicted_fps, rel=1e-9)
