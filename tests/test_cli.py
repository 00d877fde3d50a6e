import subprocess
import sys

from mfpipe.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_python_dash_m_and_version():
    res = subprocess.run([sys.executable, "-m", "mfpipe", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("mfpipe ")


def test_unknown_command_exits_2(capsys):
    try:
        main(["no-such-command"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("expected exit 2")
    assert "invalid choice" in capsys.readouterr().err


def test_cli_does_not_import_torch_for_help():
    code = "import sys; from mfpipe.cli import build_parser; build_parser(None); print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
