"""`pipeit bench --plot`: a per-stage Gantt chart of frames over time and the frames/s bar chart (Agg backend)."""
import numpy as np

from pipeit_ros.planning.baselines import NAMES as BASELINE_NAMES

GANTT_FRAMES = 30        # about this many frames of the last round are drawn: enough to see the rhythm
GANTT_SECONDS = 0.5


def _gantt_candidate(result):
    for name, c in result.candidates.items():
        if name not in BASELINE_NAMES and name != 'bare' and c.timeline:
            return name
    return next((n for n, c in result.candidates.items() if c.timeline), None)


def plot(result, path, candidate=None):
    """Write a PNG with the Gantt chart of ``candidate`` (default: the first plan that is no baseline) and the
    frames/s of every candidate, each bar labelled with its ratio to ort_all_cores."""
    import matplotlib  # noqa: PLC0415 - only plots need it, and it is slow to import
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # noqa: PLC0415 - as above

    candidate = candidate or _gantt_candidate(result)
    fig, (ax_g, ax_b) = plt.subplots(2, 1, figsize=(10, 7), gridspec_kw={'height_ratios': [3, 2]})
    if candidate:
        events = result.candidates[candidate].timeline
        if events:
            t_first = min(e[3] for e in events)
            rows = sorted({(e[0], e[1]) for e in events})
            slowest = max(float(np.median([e[4] - e[3] for e in events if (e[0], e[1]) == row])) for row in rows)
            horizon = t_first + min(GANTT_SECONDS, GANTT_FRAMES * slowest)
            cmap = plt.get_cmap('tab10')
            for y, row in enumerate(rows):
                bars = [(e[3] - t_first, e[4] - e[3], e[2]) for e in events
                        if (e[0], e[1]) == row and e[3] < horizon]
                ax_g.broken_barh([(a * 1e3, w * 1e3) for a, w, _ in bars], (y - 0.4, 0.8),
                                 facecolors=[cmap(seq % 10) for *_, seq in bars])
            ax_g.set_yticks(range(len(rows)), [f'{s} r{r}' for s, r in rows])
            ax_g.invert_yaxis()
        ax_g.set_xlabel('ms since the first recorded frame (colour = frame)')
        ax_g.set_title(f'{candidate}: frames through the stages')
    names = list(result.candidates)
    fps = [result.candidates[n].fps for n in names]
    bars = ax_b.bar(range(len(names)), fps, color=['tab:blue' if n in BASELINE_NAMES else 'tab:gray' if n == 'bare'
                                                   else 'tab:orange' for n in names])
    ax_b.set_xticks(range(len(names)), names, rotation=20, ha='right')
    ax_b.set_ylabel('frames/s')
    for bar, n in zip(bars, names):
        r = result.candidates[n].ratio_ort
        if r is not None:
            ax_b.annotate(f'{r:.2f}x', (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha='center', va='bottom', fontsize=8)
    ax_b.set_title(f'frames/s ({result.model.get("path", "")}, {result.topology.get("name", "")})', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
