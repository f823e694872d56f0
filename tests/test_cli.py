import importlib
import subprocess
import sys

import pytest

from hrvlm.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_a_parser_and_a_runner(name, capsys):
    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.configure_parser) and callable(module.run)
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    assert "usage: hrvlm " + name in capsys.readouterr().out


def test_help_lists_every_subcommand_without_importing_them():
    code = "import sys; from hrvlm.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert all(name in out for name in COMMANDS)
    assert out.strip().endswith("False"), "hrvlm --help must not import torch"


def test_missing_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        main([])
    assert done.value.code == 2
