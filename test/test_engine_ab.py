"""tools/engine_ab.py on the tiny net: every variant is built and run in one process and paired by round."""
import re

import engine_ab  # tools/
import pytest


def test_pairs_every_variant_by_round(capsys):
    engine_ab.main(['tiny', '--topology', 'emulated-2x1', '--rounds', '2', '--seconds', '0.2', '--warmup', '2',
                    '--variants', 'before,after,after+prepack'])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith('| tiny | data parallelism'))
    ratios = re.findall(r'\| ([\d.]+) \(([\d.]+)–([\d.]+)\)', row)
    assert len(ratios) == 2, row                       # after and after+prepack, each against before
    for median, low, high in ratios:       # the range is printed to 2 decimals, the median to 3
        assert 0 < float(low) - 0.005 <= float(median) <= float(high) + 0.005, row
    fps = [float(v) for v in row.rstrip(' |').split('|')[-3:]]
    assert len(fps) == 3 and min(fps) > 0, row
    assert '2 rounds x 0.2 s each' in out


def test_an_unknown_variant_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        engine_ab.main(['tiny', '--variants', 'before,fastest'])
    assert exc.value.code == 2
    assert '--variants: two or more of before, after' in capsys.readouterr().err
