"""`mfpipe status`: bad config files are reported (exit 2, file and line), never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mfpipe.cli import main

BAD_YAML = "studies:\n  s:\n    kind: train\n    grid: {depth: [2, 4]\n    settings: {steps: 10}\n"


@pytest.mark.parametrize("flag", ["--configfile", "--config"])
def test_yaml_syntax_error_exit_2_with_the_line(tmp_path, capsys, flag):
    # before issue 9: a yaml.parser.ParserError traceback (exit 1); `--config` was ambiguous
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_YAML)
    assert main(["status", flag, str(bad)]) == 2
    err = capsys.readouterr().err
    assert "config" in err and str(bad) in err and "line 5" in err and "YAML" in err
    assert "Traceback" not in err


def test_yaml_syntax_error_in_a_subprocess(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("studies: [\n")
    out = subprocess.run([sys.executable, "-m", "mfpipe", "status", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "line 2" in out.stderr


def test_config_that_is_a_directory_exit_2(tmp_path, capsys):
    assert main(["status", "--configfile", str(tmp_path)]) == 2
    assert "config" in capsys.readouterr().err
