"""rosbench end to end on the tiny net: both phases run, figures come out, containers exit cleanly."""
import json
import os

import numpy as np
import pytest

pytest.importorskip('rclpy')

pytestmark = [pytest.mark.ros, pytest.mark.slow,
              pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='needs CPUs 0 and 1')]


def test_rosbench_reports_fps_ratio_and_latency(zoo_model, capsys):
    import rosbench  # tools/
    code = rosbench.main([zoo_model('tiny'), '--topology', 'emulated-2x1', '--stages', '0-3@c0,4-8@c1',
                          '--layout', 'multi', '--seconds', '1', '--warmup', '0.5', '--interleave', '2', '--json'])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    (row,) = out['results']
    assert row['layout'] == 'multi' and row['containers'] == 2 and row['exit_codes'] == [0, 0]
    assert row['fps'] > 0 and row['engine_fps'] > 0 and row['ratio'] == pytest.approx(row['fps'] / row['engine_fps'])
    assert 0 < row['e2e_p50_ms'] <= row['e2e_p99_ms']
    assert row['paced_rate_hz'] == pytest.approx(0.5 * row['fps'])
    assert 0 < row['paced_e2e_p50_ms'] <= row['paced_e2e_p99_ms']
    assert row['engine_fps_after'] > 0 and row['engine_fps_with_preprocess'] > 0
    assert row['ratio_with_preprocess'] == pytest.approx(row['fps'] / row['engine_fps_with_preprocess'])
    pairs = row['interleaved']             # (ros, engine) frames/s, the graph measured again between references
    assert len(pairs) == 2 and all(r > 0 and e > 0 for r, e in pairs)
    assert row['ratio_interleaved'] == pytest.approx(float(np.median([r / e for r, e in pairs])))
    cpu = row['cpu_ms_per_frame']          # per process, threads named: the stages and the ROS path apart
    assert set(cpu) == {'bench', 'container_c0', 'container_c1'}
    assert cpu['container_c0'].get('stage_0', 0) > 0 and cpu['container_c1'].get('stage_1', 0) > 0
    assert cpu['container_c0'].get('pump.camera_in', 0) > 0 and cpu['bench'].get('pump.results', 0) > 0


def test_rosbench_rejects_a_bad_plan(zoo_model, capsys):
    import rosbench  # tools/
    code = rosbench.main([zoo_model('tiny'), '--topology', 'emulated-2x1', '--stages', '0-3@gpu,4-8@c1'])
    assert code == 2 and "rosbench: error: no cluster 'gpu'" in capsys.readouterr().err
