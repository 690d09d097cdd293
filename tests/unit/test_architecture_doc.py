"""docs/architecture.md is true to the code: it names every module, its layer table is the one
tests/unit/test_layers.py enforces, and library code below the commands prints and parses
arguments exactly where the page says it does."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.unit.test_layers import LAYERS, SRC, all_modules, allowed_layers, layer_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"

# Modules below layer 6 that may print, parse arguments or read sys.argv, and why (the page's
# "Commands on top" decision names the same ones).
SCRIPTS = {
    "proseco.data.synthetic": "python -m proseco.data.synthetic (README)",
    "proseco.eval._humaneval_harness": "the HumanEval child process",
    "proseco.training.rundir": "records the launching command in the run lock",
}


def prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_every_module_is_named_on_the_page():
    named = set(re.findall(r"`([^`\n]+)`", prose(DOC.read_text(encoding="utf-8"))))
    missing = []
    for module in all_modules():
        short = module.removeprefix("proseco.")
        if not {module, short, module + ".*"} & named:
            missing.append(module)
    assert not missing, (
        f"docs/architecture.md names no line for {missing}; add one (`name` — what it does) to "
        "'What each part does'"
    )


def layer_table() -> dict[int, tuple[set[str], set[int]]]:
    """``layer -> (module prefixes, layers it may import)`` from the page's table."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            prefixes = {p.removesuffix(".*") for p in re.findall(r"`([^`]+)`", cells[2])}
            rows[int(cells[0])] = (prefixes, {int(n) for n in re.findall(r"\d+", cells[3])})
    return rows


def test_the_layer_table_is_the_rule_of_test_layers():
    table = layer_table()
    assert sorted(table) == sorted(set(LAYERS.values()))
    for layer, (prefixes, may_import) in table.items():
        assert prefixes == {k for k, v in LAYERS.items() if v == layer}, layer
        assert may_import == allowed_layers(layer), layer


def _prints_or_parses(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
            lines.append(node.lineno)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if "argparse" in names:
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "argv"
            and getattr(node.value, "id", None) == "sys"
        ):
            lines.append(node.lineno)
    return lines


def test_nothing_below_the_commands_prints_or_parses_arguments_but_the_named_scripts():
    found = {}
    for module, path in all_modules(SRC).items():
        layer = layer_of(module)
        if layer is None or layer >= 6 or module == "proseco":
            continue
        lines = _prints_or_parses(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            found[module] = lines
    assert set(found) == set(SCRIPTS), found
    page = DOC.read_text(encoding="utf-8")
    for module in SCRIPTS:
        assert module.removeprefix("proseco.") in page
