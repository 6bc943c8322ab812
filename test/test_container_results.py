"""What the last stage publishes and /diagnostics reports: top-k, layout, latency and stage windows."""
import math

import numpy as np
import pytest

from pipeit_ros.app import results
from pipeit_ros.engine.pipeline import StageStats
from pipeit_ros.errors import PipeitError


@pytest.mark.parametrize('n,k', [(10, 3), (1000, 5), (4, 10), (7, 0)], ids=['tiny', 'imagenet', 'k>n', 'k=0'])
def test_top_k_matches_full_sort(n, k):
    rng = np.random.default_rng(n + k)
    logits = rng.standard_normal(n).astype(np.float32) * 4
    top = results.top_k(logits[None], k)
    e = np.exp(logits.astype(np.float64) - logits.max())
    probs = e / e.sum()
    order = np.argsort(-probs, kind='stable')[:min(k, n)]
    assert [t['class_id'] for t in top] == order.tolist()
    np.testing.assert_allclose([t['score'] for t in top], probs[order], rtol=1e-9)
    assert all('label' not in t for t in top)


def test_top_k_ties_are_ordered_by_class_id_and_labels_attach():
    top = results.top_k([1.0, 3.0, 3.0, 0.0, 3.0], 4, labels=['a', 'b', 'c', 'd'])
    assert [t['class_id'] for t in top] == [1, 2, 4, 0]
    assert [t.get('label') for t in top] == ['b', 'c', None, 'a']   # class 4 has no label line
    assert math.isclose(sum(t['score'] for t in results.top_k(np.zeros(5), 5)), 1.0)


def test_softmax_is_stable_for_large_logits():
    p = results.softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0]])


def test_load_labels(tmp_path):
    path = tmp_path / 'labels.txt'
    path.write_text('cat\n dog \n\n')
    assert results.load_labels(path) == ['cat', 'dog']
    with pytest.raises(PipeitError, match='cannot read'):
        results.load_labels(tmp_path / 'missing.txt')
    (tmp_path / 'empty.txt').write_text('\n')
    with pytest.raises(PipeitError, match='empty'):
        results.load_labels(tmp_path / 'empty.txt')


@pytest.mark.parametrize('shape,expected', [
    ((1, 1000), [('batch', 1, 1000), ('class', 1000, 1000)]),
    ((1, 8, 4, 5), [('batch', 1, 160), ('channel', 8, 160), ('height', 4, 20), ('width', 5, 5)]),
    ((6,), [('dim0', 6, 6)]),
], ids=['logits', 'nchw', 'vector'])
def test_multiarray_layout_row_major(shape, expected):
    layout = results.multiarray_layout(shape)
    assert layout == expected
    # MultiArrayLayout.msg: element [i, j, k] sits at data_offset + dim[1].stride * i + dim[2].stride * j + k
    arr = np.arange(int(np.prod(shape))).reshape(shape)
    idx = tuple(s - 1 for s in shape)
    strides = [d[2] for d in layout[1:]] + [1]
    assert arr.ravel()[sum(i * s for i, s in zip(idx, strides))] == arr[idx]


def test_classification_dict_carries_stamp_and_seq():
    d = results.classification_dict(12, 345, 'camera', 9, [{'class_id': 1, 'score': 0.5}], generation=2,
                                    latency_ms=3.14159)
    assert d == {'header': {'stamp': {'sec': 12, 'nanosec': 345}, 'frame_id': 'camera'}, 'seq': 9,
                 'top_k': [{'class_id': 1, 'score': 0.5}], 'generation': 2, 'latency_ms': 3.142}


def test_latency_window_percentiles_over_last_values():
    w = results.LatencyWindow(size=100)
    assert all(math.isnan(v) for v in w.percentiles())
    rng = np.random.default_rng(5)
    values = rng.exponential(10, 250)
    for v in values:
        w.add(v)
    assert len(w) == 100
    np.testing.assert_allclose(w.percentiles(), np.percentile(values[-100:], [50, 99]))


def test_stage_window_rates_from_cumulative_stats():
    now = [100.0]
    win = results.StageWindow(clock=lambda: now[0])
    st = StageStats(name='stage_0', cluster='c0', cpus=(0,), frames=10, busy_s=0.5, replicas=2)
    assert win.update(st).frames == 0                      # first call only sets the baseline
    now[0] += 2.0
    st.frames, st.busy_s = 50, 2.5                         # 40 frames, 2.0 busy-seconds in 2 s over 2 replicas
    f = win.update(st)
    assert (f.frames, f.fps, f.busy_pct, f.measured_ms) == (40, 20.0, 50.0, 50.0)
    now[0] += 1.0
    f = win.update(st)
    assert f.fps == 0.0 and math.isnan(f.measured_ms)


def test_stage_diagnostic_values_use_contract_keys():
    fig = results.WindowFigures(fps=30.0, busy_pct=75.0, measured_ms=25.0, frames=30)
    values = dict(results.stage_diagnostic_values(generation=3, figures=fig, queue_depth=2,
                                                  drops={'queue': 4, 'encoding': 1}, predicted_ms=20.0,
                                                  latency=(40.0, 80.5)))
    assert values == {'generation': '3', 'fps': '30.000', 'busy_pct': '75.000', 'queue_depth': '2',
                      'predicted_ms': '20.000', 'measured_ms': '25.000', 'drops_encoding': '1',
                      'drops_queue': '4', 'latency_p50_ms': '40.000', 'latency_p99_ms': '80.500'}
    from pipeit_ros.app.adapt import parse_stage_status
    report = parse_stage_status('pipeit/stage_1', values, 'c0')
    assert (report.stage, report.generation, report.measured_ms) == (1, 3, 25.0)
