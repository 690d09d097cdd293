"""The ``proseco`` dispatcher: lazy command modules, one-line input errors, ``--debug``."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import proseco.cli
from proseco import commands
from proseco.errors import ConfigError, DataError


@pytest.fixture
def fake(monkeypatch):
    """A command ``fake`` whose ``run`` raises ``args.raised`` (a ``ProsecoError`` by default)."""
    module = types.ModuleType("proseco_fake_command")

    def add_arguments(parser):
        parser.add_argument("--fail", choices=["config", "data", "bug", "none"], default="config")

    def run(args):
        if args.fail == "config":
            raise ConfigError("bad setting 'x'\n  (choose one of a, b)")
        if args.fail == "data":
            raise DataError("")
        if args.fail == "bug":
            raise RuntimeError("a real bug")
        return 0

    module.add_arguments, module.run = add_arguments, run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(commands.COMMANDS, "fake", (module.__name__, "a test command"))
    monkeypatch.delenv("PROSECO_DEBUG", raising=False)
    return module


def test_an_input_error_is_one_line_on_stderr_with_status_2(fake, capsys):
    assert commands.main(["fake"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "proseco fake: error: bad setting 'x' (choose one of a, b)\n"
    assert commands.main(["fake", "--fail", "data"]) == 2
    assert capsys.readouterr().err == "proseco fake: error: DataError\n"
    assert commands.main(["fake", "--fail", "none"]) == 0


def test_debug_flag_or_env_shows_the_traceback(fake, monkeypatch):
    with pytest.raises(ConfigError, match="bad setting"):
        commands.main(["--debug", "fake"])
    monkeypatch.setenv("PROSECO_DEBUG", "1")
    with pytest.raises(ConfigError, match="bad setting"):
        commands.main(["fake"])
    monkeypatch.setenv("PROSECO_DEBUG", "0")
    assert commands.main(["fake"]) == 2


def test_other_exceptions_are_bugs_and_keep_their_traceback(fake):
    with pytest.raises(RuntimeError, match="a real bug"):
        commands.main(["fake", "--fail", "bug"])


def test_without_a_command_the_help_is_printed(capsys):
    assert commands.main([]) == 2
    assert commands.main(["--debug"]) == 2
    out = capsys.readouterr().out
    assert "--debug" in out and all(name in out for name in commands.COMMANDS)


def test_only_the_chosen_command_module_is_imported(fake, monkeypatch):
    imported = []
    real = commands.importlib.import_module
    monkeypatch.setattr(
        commands.importlib, "import_module", lambda name: imported.append(name) or real(name)
    )
    commands.build_parser("fake")
    assert imported == [fake.__name__]


def test_every_command_module_provides_add_arguments_and_run():
    for name, (module_name, help_text) in commands.COMMANDS.items():
        module = commands.importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name
        assert help_text, name


def test_python_dash_m_proseco_cli_runs_commands_with_the_dispatchers_exit_codes(tmp_path):
    """``python -m proseco.cli`` (the module ``accelerate launch -m`` needs) runs a command: its
    output, exit status 0, and a user error as one line with status 2."""
    import subprocess

    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "proseco.cli", *argv], capture_output=True,
                              text=True, cwd=tmp_path)  # fmt: skip

    ok = cli("accelerate-config", "ddp")
    assert ok.returncode == 0, ok.stderr
    path = Path(ok.stdout.strip())
    assert path.name == "ddp.yaml" and path.is_file() and "distributed_type" in path.read_text()
    listed = cli("accelerate-config", "--list")
    assert listed.returncode == 0 and listed.stdout.split() == ["ddp", "deepspeed-zero3", "fsdp"]
    bad = cli("accelerate-config", "nosuch")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "proseco accelerate-config: error: no shipped Accelerate config named 'nosuch'; "
        "choose one of ddp, deepspeed-zero3, fsdp"
    ]


def test_the_command_line_starts_without_torch():
    """``import proseco`` and parsing ``proseco --help`` / ``eval --help`` load no torch or
    transformers (every command used to spend 6-19 s importing them before doing anything)."""
    import subprocess

    code = (
        "import sys, proseco, proseco.commands as c\n"
        "c.build_parser(None); c.build_parser('eval'); c.build_parser('accelerate-config')\n"
        "assert proseco.__version__\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    assert proseco.ProsecoDiT.__name__ == "ProsecoDiT" and "sample" in dir(proseco)
