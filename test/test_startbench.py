"""startbench end to end on the tiny net: it times bringup -> first result and a re-plan, and says why when the
planner refuses the parameter."""
import re

import pytest

pytest.importorskip('rclpy')

import startbench  # tools/

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_times_start_and_replan(zoo_model, capsys):
    code = startbench.main([zoo_model('tiny'), '--topology', 'emulated-2x1', '--set', 'stages=0-6@c0,7-8@c1',
                            '--runs', '1', '--timeout', '60'])
    out = capsys.readouterr()
    assert code == 0, out.err
    m = re.search(r'run 1: bringup -> first result ([\d.]+) s; param set -> first result on the new plan '
                  r'([\d.]+) s', out.out)
    assert m and 0 < float(m[1]) < 60 and 0 < float(m[2]) < 60, out.out
    assert 'median:' in out.out


def test_a_refused_parameter_is_reported(zoo_model, capsys):
    code = startbench.main([zoo_model('tiny'), '--topology', 'emulated-2x1', '--set', 'objective=fastest',
                            '--runs', '1', '--timeout', '60'])
    err = capsys.readouterr().err
    assert code == 1 and "the planner refused objective='fastest'" in err, err
