"""One JSONL reader: proseco.fileio.read_jsonl_objects, used by every module that reads JSONL."""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

import pytest

from proseco.errors import DataError
from proseco.fileio import BadLine, read_jsonl_objects

SRC = Path(__file__).resolve().parents[2] / "src" / "proseco"

# Modules that parse whole JSON documents (one object per file or string), not JSONL.
WHOLE_JSON = {
    "data/text.py",  # a .json data file
    "models/hub.py",  # config.json
    "models/llada.py",  # config.json
    "pretrained.py",  # adapter_config.json
    "sampling/config.py",  # sampling_config.json
    "training/checkpoint.py",  # the training state
    "training/lora.py",  # adapter_config.json
    "training/rundir.py",  # the run lock
}


def test_only_the_reader_parses_jsonl_lines():
    """``json.loads`` outside fileio only parses whole documents; a new hand-written JSONL
    reader (or a new whole-document one) must be looked at and listed here."""
    found = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "loads"
                and getattr(node.func.value, "id", None) == "json"
            ):
                found.add(path.relative_to(SRC).as_posix())
    assert found - {"fileio.py"} == WHOLE_JSON


def test_the_options_of_the_reader(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n[2]\n{"b": ')
    with pytest.raises(DataError, match=r"a\.jsonl:3 is not a JSON object"):
        read_jsonl_objects(path)
    assert read_jsonl_objects(path, objects=False, torn_tail=True) == [(1, {"a": 1}), (3, [2])]
    assert read_jsonl_objects(path, max_objects=1) == [(1, {"a": 1})]
    with pytest.raises(DataError, match=r"a\.jsonl:4 is not valid JSON"):
        read_jsonl_objects(path, objects=False)  # terminated by a newline: not torn

    def bad(line: BadLine) -> Exception:
        return KeyError((line.lineno, line.kind, line.text))

    with pytest.raises(KeyError, match="'object'"):
        read_jsonl_objects(path, on_bad_line=bad)
    (tmp_path / "e.jsonl").write_text("\n \n")
    assert read_jsonl_objects(tmp_path / "e.jsonl", empty=None) == []
    with pytest.raises(DataError, match="records file .*e.jsonl is empty"):
        read_jsonl_objects(tmp_path / "e.jsonl", what="records file", empty="is empty")
    with pytest.raises(DataError, match=r"records file \S+ does not exist$"):
        read_jsonl_objects(tmp_path / "missing.jsonl", what="records file", hint="")
    packed = tmp_path / "p.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"x": "\xc3\xa9"}\n'))
    assert read_jsonl_objects(packed, opener=gzip.open) == [(1, {"x": "é"})]
    (tmp_path / "u.jsonl").write_bytes(b'{"x": 1}\n{"y": "\xff"}\n')
    with pytest.raises(DataError, match=r"u\.jsonl:2 is not UTF-8 text \(byte 0xff at column 8"):
        read_jsonl_objects(tmp_path / "u.jsonl")
