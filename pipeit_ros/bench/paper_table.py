"""The Pipe-it paper's experiment over the zoo (`pipeit bench --paper-table`, :mod:`pipeit_ros.cli.paper_cmd`).

For every network: the three baselines (``ort_all_cores``: one session with kernel-level parallelism over both
clusters; ``best_cluster``: the fastest cluster alone; ``data_parallel``: one replica per cluster), the paper's
DSE plan (``search='pipeit-paper'``) and our exact DSE plan (``search='exact'``), measured in one
``bench.run_benchmark`` run (all built once, alternated in rounds), each with its ratio to the best of the three
baselines ("best antecedent" in the paper's words), the geometric mean of the ratios over the networks, and
predicted vs measured frames/s of the two plans. The paper compared against kernel-level parallelism only
(``ort_all_cores``, ``best_cluster``); that ratio is given too. The table is markdown, ready for the README.

On a machine of identical cores the default topology is ``emulated-biglittle-1+1``: the little cluster is made
slow by co-runners (:mod:`pipeit_ros.hw.emulation`), and the table says so.
"""
from dataclasses import asdict, dataclass, field, replace
import math
import time

import numpy as np

from pipeit_ros.bench import benchmark as bench
from pipeit_ros.bench import report
from pipeit_ros.errors import PipeitError
from pipeit_ros.hw import topology as topo
from pipeit_ros.hw.emulation import emulated
from pipeit_ros.model import graph as graph_mod
from pipeit_ros.model import zoo
from pipeit_ros.planning import facade as planning
from pipeit_ros.planning import prediction
from pipeit_ros.planning.baselines import baselines

PAPER_NETS = ('alexnet', 'googlenet', 'mobilenet_v1', 'mobilenet_v2', 'resnet50', 'squeezenet1_1')
BASELINES = {'ort_all_cores': 'ort_all_cores', 'best_cluster': 'best_cluster',
             'data_parallel': 'data_parallel_cluster'}           # column -> baselines.baselines() name
PLANS = {'pipeit_paper': 'pipeit-paper', 'pipeit_exact': 'exact'}  # column -> planning.plan_from_cost(search=)
COLUMNS = (*BASELINES, *PLANS)
KERNEL_LEVEL = ('ort_all_cores', 'best_cluster')                  # the paper's antecedents
TITLES = {'ort_all_cores': 'ORT all cores', 'best_cluster': 'best cluster', 'data_parallel': 'data parallel',
          'pipeit_paper': 'paper DSE', 'pipeit_exact': 'ours (exact DSE)'}
DEFAULT_TOPOLOGY = 'emulated-biglittle-1+1'
DEFAULT_SECONDS = 8.0      # per candidate per network: 6 networks x 5 candidates x 8 s + profiles + warm-up ~ 8 min
DEFAULT_ROUNDS = 4


@dataclass
class NetResult:
    net: str
    layers: int
    model_hash: str
    fps: dict                  # column -> measured frames/s (None: no plan)
    fps_rounds: dict
    predicted: dict            # column -> predicted frames/s (None: not predictable, e.g. ort_all_cores)
    specs: dict                # column -> plan spec
    best_baseline: str
    ratio: dict                # column -> fps / fps of the best baseline
    ratio_kernel: dict         # column -> fps / fps of the best kernel-level baseline
    ours_vs_paper: float | None = None
    notes: list = field(default_factory=list)
    noise: list = field(default_factory=list)   # report.same_spec_spread() of the columns


@dataclass
class PaperTable:
    rows: list
    geomean: dict              # column -> geometric mean over networks of ratio
    geomean_kernel: dict
    geomean_ours_vs_paper: float | None
    topology: dict
    emulation: str
    machine: dict
    method: dict
    wall_s: float = 0.0

    def to_dict(self):
        return asdict(self)


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def resolve_topology(spec, log):
    """The topology of the table: ``spec``, or for 'auto' the detected one when it has several clusters and
    otherwise :data:`DEFAULT_TOPOLOGY` (identical cores: heterogeneity must be emulated)."""
    if spec in (None, 'auto'):
        detected = topo.detect()
        if len(detected.clusters) > 1:
            return detected
        log(f'paper table: this machine\'s cores are identical; using topology {DEFAULT_TOPOLOGY}')
        spec = DEFAULT_TOPOLOGY
    return topo.resolve(spec)


def parse_nets(text):
    if text is None:
        return list(PAPER_NETS)
    nets = [n.strip() for n in str(text).split(',') if n.strip()]
    unknown = [n for n in nets if n not in zoo.NETWORKS]
    if unknown or not nets:
        raise PipeitError(f'--nets: unknown network(s) {", ".join(unknown) or "(none given)"} '
                          f'(choose from {", ".join(zoo.NETWORKS)})')
    return nets


def _candidates(graph, topology, log, progress=True):
    """{column: Plan}, {column: predicted fps}, notes. Both DSEs plan on one cost table (planning.cost_table: a
    cached profile or one measured now, inside the emulation), which also predicts every candidate."""
    base = baselines(graph, topology)
    plans = {col: replace(base[name], name=col) for col, name in BASELINES.items()}
    notes = []
    cost = planning.cost_table(graph, topology, log=log, progress=progress)
    for col, search in PLANS.items():
        try:
            plans[col] = replace(planning.plan_from_cost(cost, graph, topology, search=search), name=col)
        except PipeitError as exc:
            notes.append(f'{col}: no plan: {exc}')
            log(f'paper table: {graph.path}: {col}: no plan: {exc}')
    predicted = {}
    for col, plan in plans.items():
        try:
            predicted[col] = prediction.predict(plan, cost, topology)[0]
        except PipeitError:
            predicted[col] = None
    return plans, predicted, notes


def make_row(net, fps, predicted, specs, *, notes=(), fps_rounds=None, layers=0, model_hash=''):
    """A NetResult from measured frames/s per column: the best baselines and every ratio."""
    fps = {col: fps.get(col) for col in COLUMNS}
    fps_rounds = fps_rounds or {}
    best = max(BASELINES, key=lambda col: fps[col] or 0.0)
    kernel = max(KERNEL_LEVEL, key=lambda col: fps[col] or 0.0)

    def ratio(a, b):
        """Paired by round where both have rounds (report.round_ratio), else the ratio of the figures."""
        if not (fps[a] and fps[b]):
            return None
        paired = report.round_ratio(fps_rounds.get(a) or [], fps_rounds.get(b) or [])
        return fps[a] / fps[b] if paired is None else paired
    return NetResult(
        net=net, layers=layers, model_hash=model_hash, fps=fps, fps_rounds=fps_rounds,
        predicted={col: predicted.get(col) for col in COLUMNS}, specs={col: specs.get(col) for col in COLUMNS},
        best_baseline=best, ratio={col: ratio(col, best) for col in COLUMNS},
        ratio_kernel={col: ratio(col, kernel) for col in COLUMNS},
        ours_vs_paper=ratio('pipeit_exact', 'pipeit_paper'), notes=list(notes),
        noise=report.same_spec_spread(fps, specs))


def assemble(rows, topology, emulation, machine, method, wall_s=0.0):
    """The PaperTable of measured rows: geometric means of the ratios over the networks."""
    return PaperTable(
        rows=rows, geomean={col: geomean(r.ratio[col] for r in rows) for col in COLUMNS},
        geomean_kernel={col: geomean(r.ratio_kernel[col] for r in rows) for col in COLUMNS},
        geomean_ours_vs_paper=geomean(r.ours_vs_paper for r in rows), topology=topology.to_dict(), emulation=emulation,
        machine=machine, method=method, wall_s=wall_s)


def measure_net(net, topology, *, seconds, rounds, warmup, progress, log,
                max_cut_tensors=graph_mod.DEFAULT_MAX_CUT_TENSORS):
    graph = graph_mod.load(zoo.zoo_path(net), max_cut_tensors=max_cut_tensors)
    plans, predicted, notes = _candidates(graph, topology, log, progress)
    # bench knows the baselines by their own names (it picks its best baseline among them)
    by_bench = {BASELINES.get(col, col): plan for col, plan in plans.items()}
    log(f'paper table: {net}: ' + '; '.join(f'{col} {plan.to_spec()}' for col, plan in plans.items()))
    result = bench.run_benchmark(graph, topology, by_bench, seconds=seconds, rounds=rounds, warmup=warmup,
                                 progress=progress, log=log)
    got = {col: result.candidates.get(BASELINES.get(col, col)) for col in COLUMNS}
    fps = {col: c.fps if c else None for col, c in got.items()}
    fps_rounds = {col: list(c.fps_rounds) if c else [] for col, c in got.items()}
    row = make_row(net, fps, predicted, {col: plan.to_spec() for col, plan in plans.items()}, notes=notes,
                   fps_rounds=fps_rounds, layers=len(graph.layers), model_hash=graph.model_hash)
    return row, result


def build_table(nets, topology, *, seconds=DEFAULT_SECONDS, rounds=DEFAULT_ROUNDS, warmup=20, progress=True,
                log=print, max_cut_tensors=graph_mod.DEFAULT_MAX_CUT_TENSORS):
    """Measure every network of ``nets`` on ``topology`` (inside the emulation when it has one)."""
    started = time.perf_counter()
    rows, method = [], {}
    with emulated(topology, log=log) as emulation:
        said = emulation.describe() if emulation else 'none (the clusters are really different)'
        for i, net in enumerate(nets):
            log(f'paper table: [{i + 1}/{len(nets)}] {net}')
            row, result = measure_net(net, topology, seconds=seconds, rounds=rounds, warmup=warmup,
                                      progress=progress, log=log, max_cut_tensors=max_cut_tensors)
            rows.append(row)
            method = result.method
    method = dict(method, seconds_per_candidate=seconds, networks=list(nets), max_cut_tensors=max_cut_tensors,
                  ratio='fps / fps of the best of ort_all_cores, best_cluster, data_parallel in the same run',
                  predicted='prediction.predict(plan, cost table the DSE planned with)')
    return assemble(rows, topology, said, bench.machine_info(), method,
                    wall_s=round(time.perf_counter() - started, 1))


# ---------------------------------------------------------------- output

def _f(value, fmt='{:.1f}', none='–'):
    return none if value is None else fmt.format(value)


def _x(value):
    return _f(value, '{:.2f}×')


def format_markdown(table):
    """The table as markdown: title, what was emulated, machine, method, one row per network, geomean, plans."""
    t, m, mc = table.topology, table.method, table.machine
    clusters = ', '.join(f'{c["name"]} cpus {c["cpus"]}' for c in t['clusters'])
    emulated = 'emulated on identical cores — ' if any(c.get('emulate') for c in t['clusters']) else ''
    lines = [
        f'### Pipe-it reproduced: frames/s per network on topology `{t["name"]}` ({clusters})',
        '',
        f'- **Heterogeneity**: {emulated}{table.emulation}.',
        f'- **Machine**: {mc.get("cpu_model")}, {mc.get("cpus_online")} CPUs online (allowed '
        f'{mc.get("cpus_allowed")}), onnxruntime {mc.get("onnxruntime")}, Python {mc.get("python")}, '
        f'kernel {mc.get("kernel")}.',
        f'- **Method**: per network the five candidates are built once, warmed up ({m.get("warmup_frames")} '
        f'frames) and measured alternately by `bench.run_benchmark`: {m.get("rounds")} rounds × '
        f'{_f(m.get("seconds_per_round"), "{:.2f}")} s each, order rotated per round; frames/s = {m.get("fps")}. '
        f'× best = frames/s ÷ the best of the three baselines in the same run (the paper\'s "best antecedent"); '
        f'predicted = the DSE\'s model on the cost table it planned with. Total {table.wall_s:.0f} s.',
        '',
        '| network | ' + ' | '.join(TITLES[c] for c in COLUMNS) + ' | best baseline | paper × best | ours × best '
        '| ours × paper | paper pred. / meas. | ours pred. / meas. |',
        '|---|' + '--:|' * len(COLUMNS) + '---|--:|--:|--:|--:|--:|',
    ]
    for r in table.rows:
        lines.append(f'| {r.net} | ' + ' | '.join(_f(r.fps[c]) for c in COLUMNS)
                     + f' | {r.best_baseline} | {_x(r.ratio["pipeit_paper"])} | {_x(r.ratio["pipeit_exact"])}'
                     f' | {_x(r.ours_vs_paper)} | {_f(r.predicted["pipeit_paper"])} / {_f(r.fps["pipeit_paper"])}'
                     f' | {_f(r.predicted["pipeit_exact"])} / {_f(r.fps["pipeit_exact"])} |')
    g = table.geomean
    lines.append('| **geomean × best** | ' + ' | '.join(_x(g[c]) for c in COLUMNS)
                 + f' | | **{_x(g["pipeit_paper"])}** | **{_x(g["pipeit_exact"])}** | '
                 f'**{_x(table.geomean_ours_vs_paper)}** | | |')
    warnings = [w for r in table.rows for w in report.noise_warnings(r.noise, f'{r.net}: ')]
    if warnings:
        lines += [''] + [f'> {w}' for w in warnings]
    k = table.geomean_kernel
    lines += ['', 'Against the paper\'s own antecedents (kernel-level parallelism only: ORT all cores, best '
              f'cluster), geomean: paper DSE {_x(k["pipeit_paper"])}, ours {_x(k["pipeit_exact"])}, '
              f'data parallel {_x(k["data_parallel"])}.', '', 'Plans (layers@cluster[cpus]:threads x replicas):']
    for r in table.rows:
        same = ' (the same plan)' if r.specs['pipeit_paper'] == r.specs['pipeit_exact'] else ''
        lines.append(f'- {r.net}: paper `{r.specs["pipeit_paper"]}`; ours `{r.specs["pipeit_exact"]}`{same}'
                     + ''.join(f'; {n}' for n in r.notes))
    return '\n'.join(lines)


def plot(table, path):
    """Grouped bars: each candidate's frames/s ÷ the best baseline, per network and for the geomean."""
    import matplotlib  # noqa: PLC0415 - only plots need it, and it is slow to import
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # noqa: PLC0415 - as above

    groups = [r.net for r in table.rows] + ['geomean']
    width = 0.8 / len(COLUMNS)
    colors = {'ort_all_cores': 'tab:blue', 'best_cluster': 'tab:cyan', 'data_parallel': 'tab:purple',
              'pipeit_paper': 'tab:green', 'pipeit_exact': 'tab:orange'}
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(groups)), 4.5))
    for k, col in enumerate(COLUMNS):
        values = [r.ratio[col] or 0.0 for r in table.rows] + [table.geomean[col] or 0.0]
        x = np.arange(len(groups)) + (k - (len(COLUMNS) - 1) / 2) * width
        bars = ax.bar(x, values, width, label=TITLES[col], color=colors[col])
        if col in PLANS:
            for bar, v in zip(bars, values):
                if v:
                    ax.annotate(f'{v:.2f}', (bar.get_x() + bar.get_width() / 2, v), ha='center', va='bottom',
                                fontsize=7)
    ax.axhline(1.0, color='black', linewidth=0.8)
    ax.set_xticks(range(len(groups)), groups, rotation=15)
    ax.set_ylabel('frames/s ÷ best baseline')
    emulated = any(c.get('emulate') for c in table.topology['clusters'])
    ax.set_title(f'Pipe-it reproduced on {table.topology["name"]}' + (' (emulated big.LITTLE)' if emulated else ''),
                 fontsize=10)
    ax.legend(fontsize=8, ncol=len(COLUMNS), loc='upper center', bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
