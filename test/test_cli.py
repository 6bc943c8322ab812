"""The `pipeit` command's edge: help, version, exit codes."""
import subprocess
import sys

import pytest

from pipeit_ros.cli import COMMANDS, error


def test_help_exits_0():
    with pytest.raises(SystemExit) as exc:
        from pipeit_ros.cli import main
        main(['--help'])
    assert exc.value.code == 0


def test_no_command_prints_help_and_exits_2(run_cli):
    code, out, _ = run_cli()
    assert code == 2
    assert 'COMMAND' in out


def test_unknown_command_is_a_usage_error():
    proc = subprocess.run([sys.executable, '-m', 'pipeit_ros', 'no-such-command'], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr


def test_module_entry_point_prints_version():
    proc = subprocess.run([sys.executable, '-m', 'pipeit_ros', '--version'], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith('pipeit ')


def test_error_is_one_line_on_stderr(capsys):
    assert error('bad thing', 2) == 2
    err = capsys.readouterr().err
    assert err == 'pipeit: error: bad thing\n'


def test_every_command_module_exists():
    import importlib
    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run), name


def test_inspect_takes_a_zoo_name(run_cli):
    code, out, err = run_cli('inspect', 'tiny')
    assert code == 0, err
    assert 'cut' in out.lower()


def test_unknown_model_name_is_one_line_exit_2(run_cli):
    code, _, err = run_cli('inspect', 'no-such-net')
    assert code == 2
    assert err.count('\n') == 1 and 'no-such-net' in err
