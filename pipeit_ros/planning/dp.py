"""The exact DSE's search space and its dynamic programmes (the search itself is driven by :mod:`pipeit_ros.planning.dse`).

A plan is built stage by stage from the first segment. A stage is segments ``i..j`` on an *option*
``o = (k threads, r_c replicas in each cluster c)``, which takes ``k * r_c`` cores of cluster ``c``; ``k`` is the
same for every replica because :class:`~pipeit_ros.plan.Stage` has one thread count. A stage's rate is the sum
over its replicas of 1 / replica time (replicas share one queue), its latency the slowest replica's time, its
memory its weights once (one mapped file, shared by the replicas) + each replica's session memory
(:meth:`~pipeit_ros.cost.CostTable.private_bytes`) + its outputs in flight (``CostTable.flight_bytes``: a
fixed number before another stage; and, for a replicated stage, the model's outputs held for their turn, from
its rate x latency: for the last one what the engine's reorder window lets it start past the oldest frame not yet
delivered, for an earlier one the frames that overtake its slowest replica), and the stage that starts at segment 0 also carries the
process's base memory, so every plan counts it once; in a ROS layout it and every stage that receives from
another container carry a run's ``host_bytes`` (``CostTable.plan_runs``); times include the hand-over of the
stage's input.

Every table is indexed ``[u, i]``: ``u`` a *state* and ``i`` the first segment still to place. A state is a
core *budget* (a vector of cores per cluster, flattened; a plan may leave cores idle, so tables are monotone in
the budget) and, when the table predicts one container per cluster (``CostTable.containers``), a *hop mode*:
the cluster ``h`` hosting the previous stage and whether the stage placed next must be hosted by ``h`` (an
in-process hand-over) or by another cluster (a hop between containers: the receiving stage pays the receive
side instead of the in-process hand-over, the previous stage the send side, ``CostTable.stage_ms``). The
first stage starts in the free mode (any host, nothing received); a stage chooses, with its option, whether
the next one is hosted elsewhere (``send``), and the last stage cannot send. So each stage's time is known
when it is placed and the programmes stay exact; with one process (or one cluster) there is one mode.
An *extended option* is (receive, send, option); a *pair* is a state and an extended option that fits it. The DP walks
``i`` from the last segment down; one step is vectorised over every (budget, option) *pair* that fits and
every stage end ``j``, so a 200-segment model on 8 cores in 3 clusters takes tens of milliseconds per pass.
"""
import itertools

import numpy as np

from pipeit_ros.errors import PlanError


class Space:
    """Options, budgets and per-start stage arrays of one cost table on one topology."""

    def __init__(self, cost, topology, replicas=True):
        self.cost = cost
        self.clusters = list(topology.clusters)
        self.n = cost.n_segments
        index = {cfg: r for r, cfg in enumerate(cost.configs)}
        avail = {(ci, k): index[(c.name, k)] for ci, c in enumerate(self.clusters)
                 for k in range(1, c.size + 1) if (c.name, k) in index}
        if not avail:
            raise PlanError(f'the cost table has no core configuration of this topology (table: '
                            f'{", ".join(f"{c}:{k}" for c, k in cost.configs)}; clusters: '
                            f'{", ".join(f"{c.name}:{c.size}" for c in self.clusters)})')
        sizes = [c.size for c in self.clusters]
        opts = []
        for k in sorted({k for _, k in avail}):
            ranges = [range(s // k + 1) if (ci, k) in avail else range(1) for ci, s in enumerate(sizes)]
            opts += [(k, r) for r in itertools.product(*ranges)
                     if sum(r) and (replicas or sum(r) == 1)]
        self.rows = sorted(set(avail.values()))              # cost-table rows in use
        local = {row: x for x, row in enumerate(self.rows)}
        self.opt_k = np.array([k for k, _ in opts])
        self.opt_r = np.array([r for _, r in opts])          # (options, clusters)
        self.reps = self.opt_r.sum(1)
        need = self.opt_r * self.opt_k[:, None]
        self.A = np.zeros((len(opts), len(self.rows)))       # replicas per cost row
        for o, (k, r) in enumerate(opts):
            for ci, rc in enumerate(r):
                if rc:
                    self.A[o, local[avail[(ci, k)]]] = rc
        self.uses = self.A > 0
        # budgets: row-major over (size_c + 1) per cluster; the last index is "every core"
        self.dims = tuple(s + 1 for s in sizes)
        n_b = int(np.prod(self.dims))
        budgets = np.array(list(np.ndindex(*self.dims))).reshape(n_b, len(sizes))
        # hop modes (module docstring): 0 free; 1 + 2h + x: previous stage hosted by cluster h, next on h (x=0)
        # or elsewhere (x=1)
        self.n_opt = len(opts)
        self.cross = cost.containers == 'per_cluster' and len(self.clusters) > 1
        self.host = (self.opt_r > 0).argmax(1)                # the first cluster with a replica hosts
        self.n_var = 4 if self.cross else 1                   # (receive, send) variants of an option
        self.n_mode = 1 + 2 * len(self.clusters) if self.cross else 1
        self.n_u = n_b * self.n_mode
        self.budget = np.repeat(budgets, self.n_mode, axis=0)
        self.mode = np.tile(np.arange(self.n_mode), n_b)
        self.cores = self.budget.sum(1)
        self.full = (n_b - 1) * self.n_mode                   # every core, free mode
        self.start_state = self.mode == 0
        self.end_ok = ~((self.mode > 0) & ((self.mode - 1) % 2 == 1))   # nothing left to receive a hop
        left = budgets[:, None, :] - need[None]
        b, o = np.nonzero((left >= 0).all(-1))
        after = np.ravel_multi_index(tuple(left[b, o].T), self.dims)
        pu, pe, pv = [], [], []
        for m in range(self.n_mode):
            if m == 0:
                ok, recv = np.ones(len(o), bool), 0
            else:
                h, x = divmod(m - 1, 2)
                ok, recv = (self.host[o] != h) if x else (self.host[o] == h), x
            for send in range(2 if self.cross else 1):
                nxt = 1 + 2 * self.host[o[ok]] + send if self.cross else 0
                pu.append(b[ok] * self.n_mode + m)
                pe.append((2 * recv + send) * self.n_opt + o[ok])
                pv.append(after[ok] * self.n_mode + nxt)
        pu, pe, pv = (np.concatenate(a).astype(np.int64) for a in (pu, pe, pv))
        order = np.argsort(pu, kind='stable')                 # sorted by state
        self.pair_u, self.pair_o, self.pair_v = pu[order], pe[order], pv[order]
        self.has_pair = np.bincount(self.pair_u, minlength=self.n_u) > 0
        self.starts = np.minimum(np.searchsorted(self.pair_u, np.arange(self.n_u)), len(self.pair_u) - 1)
        # per-segment data
        seg = cost.seg_ms[self.rows]
        self.prefix = np.concatenate([np.zeros((len(self.rows), 1)), np.cumsum(seg, axis=1)], axis=1)
        self.overhead = cost.overhead_ms[self.rows]
        half = cost.cut_ms[self.rows] / 2                     # a stage pays half a cut at each end
        self.cut_in, self.cut_out = half, np.concatenate([half[:, 1:], np.zeros((len(self.rows), 1))], axis=1)
        self.handover = np.array([0.0] + [cost.handover_ms(b) for b in cost.in_bytes[1:self.n]])
        self.hop_recv = np.array([0.0] + [cost.hop_recv_ms(b) for b in cost.in_bytes[1:self.n]])
        self.hop_send = np.array([cost.hop_send_ms(b) for b in cost.in_bytes[1:self.n]] + [np.inf])  # after j
        self.wsum = np.concatenate([[0.0], np.cumsum(np.asarray(cost.held_bytes, dtype=float))])
        self.session = cost.session_bytes[self.rows]
        self.arena = cost.arena_bytes[self.rows]
        self.pair = cost.pair_arena_bytes[self.rows]
        self.tail = cost.tail_arena_bytes[self.rows]
        self.base = cost.process_bytes
        # outputs in flight (CostTable.flight_bytes): a stage before another holds a fixed number more
        self.queued = np.array([cost.flight_bytes(j) for j in range(self.n - 1)] + [0.0])
        self.last_out = float(cost.out_bytes[-1])
        self.host_bytes = cost.host_bytes                     # per run of stages a container hosts
        self._arrays = [None] * self.n

    def option(self, o):
        """(threads, {cluster index: replicas}) of (extended) option ``o``."""
        o = o % self.n_opt
        return int(self.opt_k[o]), {ci: int(r) for ci, r in enumerate(self.opt_r[o]) if r}

    def arrays(self, i):
        """(rate per ms, latency ms, memory bytes), each (extended options, n - i): stage i..j for j = i..n-1.
        Row ``(2 * receive + send) * n_opt + o``: option o, its input from another container or not, its output
        to another container or not (a last stage that sends: rate 0, latency inf)."""
        if self._arrays[i] is None:
            base = (self.prefix[:, i + 1:] - self.prefix[:, i:i + 1] + self.overhead[:, None]
                    + self.cut_in[:, i:i + 1] + self.cut_out[:, i:])
            rates, lats = [], []
            for v in range(self.n_var):
                recv, send = divmod(v, 2)
                t = base + (self.hop_recv[i] if recv else self.handover[i]) + (self.hop_send[i:] if send else 0.0)
                t = np.maximum(t, 1e-9)
                rates.append(self.A @ (1.0 / t))
                lats.append(np.where(self.uses[:, :, None], t[None], -np.inf).max(axis=1))
            pair = np.maximum.accumulate(np.concatenate([np.zeros((len(self.rows), 1)), self.pair[:, i + 1:]], axis=1),
                                         axis=1)        # CostTable.private_bytes: pairs inside the stage
            arena = np.maximum(np.maximum.accumulate(self.arena[:, i:], axis=1), pair)
            if i < self.n - 1:      # a session of several segments that ends with the model's last
                arena[:, -1] = np.maximum(arena[:, -1], self.arena[:, -1] + self.tail)
            private = np.cumsum(self.session[:, i:], axis=1) + arena
            mem = self.wsum[i + 1:] - self.wsum[i] + self.A @ private + self.queued[i:]
            if i == 0:
                mem = mem + self.base + self.host_bytes
            # a stage that receives from another container starts a run of stages there (CostTable.plan_runs);
            # a replicated stage's frames in flight, its rate x its slowest replica's time, bring the model's
            # outputs to the output thread out of turn (CostTable.flight_bytes)
            mems = []
            for v in range(self.n_var):
                m = mem + (self.host_bytes if v >= 2 else 0.0)
                r, lat = rates[v], lats[v]      # a last stage that sends: rate 0, latency inf
                with np.errstate(invalid='ignore'):
                    frames = np.where(np.isfinite(lat), r * lat, 1.0)
                m += self.last_out * self.cost.reordered_outputs(frames, self.reps[:, None])
                mems.append(m)
            self._arrays[i] = (np.concatenate(rates), np.concatenate(lats), np.concatenate(mems))
        return self._arrays[i]

    def candidate_rates(self, lo, hi):
        """Every stage rate in [lo, hi], sorted: the bottleneck of an optimal plan is one of them."""
        vals = np.concatenate([self.arrays(i)[0].ravel() for i in range(self.n)])
        return np.unique(vals[(vals >= lo) & (vals <= hi)])

    def _per_budget(self, values, reduce, empty):
        out = reduce.reduceat(values, self.starts)
        return np.where(self.has_pair, out, empty)

    # ------------------------------------------------------------------------------------- programmes
    def max_rate(self):
        """F[u, i]: the best bottleneck rate of segments i.. within budget u (rate per ms)."""
        F = np.full((self.n_u, self.n + 1), -np.inf)
        F[self.end_ok, self.n] = np.inf
        for i in range(self.n - 1, -1, -1):
            G = F[self.pair_v, i + 1:]
            np.minimum(G, self.arrays(i)[0][self.pair_o], out=G)
            F[:, i] = self._per_budget(G.max(1), np.maximum, -np.inf)
        F[~self.start_state, 0] = -np.inf
        return F

    def min_cost(self, what, rate_floor):
        """Least total ``what`` ('lat' or 'mem') of segments i.. within budget u with every stage's rate
        >= rate_floor: (C[u, i], end[u, i], option[u, i]) — the first stage's last segment and option."""
        k = {'lat': 1, 'mem': 2}[what]
        C = np.full((self.n_u, self.n + 1), np.inf)
        C[self.end_ok, self.n] = 0.0
        end = np.full((self.n_u, self.n), -1)
        opt = np.full((self.n_u, self.n), -1)
        rows = np.arange(len(self.pair_o))
        for i in range(self.n - 1, -1, -1):
            arr = self.arrays(i)
            ok = arr[0] >= rate_floor
            span = np.flatnonzero(ok.any(0))
            if not len(span):
                continue
            L = span[-1] + 1
            cost = np.where(ok[:, :L], arr[k][:, :L], np.inf)
            G = C[self.pair_v, i + 1:i + 1 + L] + cost[self.pair_o]
            a = G.argmin(1)
            m = G[rows, a]
            best = self._per_budget(m, np.minimum, np.inf)
            C[:, i] = best
            hit = np.flatnonzero(m == best[self.pair_u])
            first = hit[np.unique(self.pair_u[hit], return_index=True)[1]]
            u = self.pair_u[first]
            end[u, i] = i + a[first]
            opt[u, i] = self.pair_o[first]
        C[~self.start_state, 0] = np.inf
        return C, end, opt

    def walk(self, u, end, opt):
        """The stages [(i, j, o)] that the choice tables of :meth:`min_cost` give from budget u."""
        stages, i = [], 0
        while i < self.n:
            j, o = int(end[u, i]), int(opt[u, i])
            if j < 0:
                raise AssertionError(f'no stage from segment {i} with budget {self.budget[u]}')
            stages.append((i, j, o))
            u = self._after(u, o)
            i = j + 1
        return stages

    def _after(self, u, e):
        """The state after placing extended option ``e`` in state ``u``."""
        hit = np.flatnonzero((self.pair_u == u) & (self.pair_o == e))
        if not len(hit):
            raise AssertionError(f'option {e} does not fit state {u}')
        return int(self.pair_v[hit[0]])

    def totals(self, stages):
        """(rate per ms, latency ms, memory bytes) of a stage list."""
        rate, lat, mem = np.inf, 0.0, 0.0
        for i, j, o in stages:
            r, la, me = (a[o, j - i] for a in self.arrays(i))
            rate, lat, mem = min(rate, r), lat + la, mem + me
        return rate, lat, mem

    def head_min(self, rate_floor, k):
        """H[i]: least latency (k=1) or memory (k=2) of any stages covering segments 0..i-1 with every stage
        rate >= rate_floor, cores not counted — a lower bound on what precedes a state at segment i."""
        H = np.full(self.n + 1, np.inf)
        H[0] = 0.0
        for i in range(self.n):
            arr = self.arrays(i)
            best = np.where(arr[0] >= rate_floor, arr[k], np.inf).min(0)
            np.minimum(H[i + 1:], H[i] + best, out=H[i + 1:])
        return H

    def pareto(self, rate_floor, lat_bound, mem_bound, lb_lat, lb_mem):
        """Exact (latency, memory) Pareto fronts, for when a latency and a memory bound both bind and the
        single-cost programmes cannot decide. Returns :class:`Fronts`: for each (segment i, budget u) the
        non-dominated (latency, memory) of plans of segments i.. within u, every stage rate >= rate_floor,
        both sums within their bounds. Pruned by lower bounds on what precedes (:meth:`head_min`) and what
        follows (``lb_lat``/``lb_mem``: min_cost tables at the same floor). One step per segment, vectorised
        over every candidate label; fronts are kept as one pool of labels with (j, option, next label)."""
        n, n_u = self.n, self.n_u
        head_lat, head_mem = self.head_min(rate_floor, 1), self.head_min(rate_floor, 2)
        fr = Fronts(n, n_u, self.end_ok)
        for i in range(n - 1, -1, -1):
            rate, lat, mem = self.arrays(i)
            L = n - i
            v, o = self.pair_v, self.pair_o
            lat_left, mem_left = lat_bound - head_lat[i], mem_bound - head_mem[i]
            keep = ((rate[o] >= rate_floor) & (lat[o] + lb_lat[v, i + 1:i + 1 + L] <= lat_left)
                    & (mem[o] + lb_mem[v, i + 1:i + 1 + L] <= mem_left))
            p, jj = np.nonzero(keep)
            first, count = fr.start[i + 1 + jj, v[p]], fr.count[i + 1 + jj, v[p]]
            rep = np.repeat(np.arange(len(p)), count)
            label = first[rep] + np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count)
            op, jc = o[p][rep], jj[rep]
            cl, cm = lat[op, jc] + fr.lat[label], mem[op, jc] + fr.mem[label]
            ok = (cl <= lat_left) & (cm <= mem_left)
            u = self.pair_u[p][rep][ok]
            cl, cm, op, jc, label = cl[ok], cm[ok], op[ok], jc[ok], label[ok]
            order = np.lexsort((cm, cl, -u))   # budgets descending, then latency, then memory
            big = (cm.max() + 1.0) if len(cm) else 1.0
            key = cm[order] + u[order] * big   # a budget's keys all lie below the previous budget's
            prev = np.concatenate([[np.inf], np.minimum.accumulate(key)[:-1]])
            order = order[key < prev]          # less memory than every faster label of the same budget
            fr.add(i, u[order], cl[order], cm[order], i + jc[order], op[order], label[order])
        return fr


class Fronts:
    """Pareto labels in one pool; the labels of state (i, u) are pool[start[i, u]:start + count], by latency."""

    def __init__(self, n, n_u, end_ok):
        self.start = np.zeros((n + 1, n_u), dtype=np.int64)
        self.count = np.zeros((n + 1, n_u), dtype=np.int64)
        self.start[n], self.count[n] = np.arange(n_u), end_ok.astype(np.int64)
        self.lat, self.mem = np.zeros(n_u), np.zeros(n_u)
        self.end = self.opt = self.next = np.full(n_u, -1)

    def add(self, i, u, lat, mem, end, opt, nxt):
        base = len(self.lat)
        budgets, first, count = np.unique(u, return_index=True, return_counts=True)
        self.start[i, budgets], self.count[i, budgets] = base + first, count
        self.lat, self.mem = np.concatenate([self.lat, lat]), np.concatenate([self.mem, mem])
        self.end, self.opt = np.concatenate([self.end, end]), np.concatenate([self.opt, opt])
        self.next = np.concatenate([self.next, nxt])

    def best(self, u):
        """(latency, pool index) of the fastest plan of the whole model within budget u, or None."""
        if not self.count[0, u]:
            return None
        x = int(self.start[0, u])
        return float(self.lat[x]), x

    def walk(self, x):
        """The stages [(i, j, o)] of pool label x of a state at segment 0."""
        stages, i = [], 0
        while x >= 0 and self.end[x] >= 0:
            stages.append((i, int(self.end[x]), int(self.opt[x])))
            i, x = int(self.end[x]) + 1, int(self.next[x])
        return stages
