"""Synthetic reasoning tasks: answers checked independently, fixed lengths, disjoint splits."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from proseco.data import synthetic
from proseco.data.synthetic import (
    RESPONSE_LENGTHS,
    check_answer,
    count_solutions,
    generate_synthetic,
    make_sudoku,
    sudoku_grids,
    write_synthetic,
)
from proseco.errors import ConfigError


@pytest.fixture(scope="module")
def splits():
    return generate_synthetic(60, 20, seed=3)


def _grid_ok(grid: str) -> bool:
    """Every row, column and 2x2 box of a 16-digit grid holds 1-4 once (written out by hand)."""
    rows = [grid[4 * r : 4 * r + 4] for r in range(4)]
    cols = ["".join(row[c] for row in rows) for c in range(4)]
    boxes = [rows[r][c : c + 2] + rows[r + 1][c : c + 2] for r in (0, 2) for c in (0, 2)]
    return all(sorted(unit) == ["1", "2", "3", "4"] for unit in rows + cols + boxes)


def test_pinned_records_by_hand():
    assert check_answer({"task": "add", "prompt": "A:000070+096357=", "response": ""}, "0096427")
    assert not check_answer(
        {"task": "add", "prompt": "A:000070+096357=", "response": ""}, "0096417"
    )
    assert check_answer({"task": "add", "prompt": "A:999999+999999=", "response": ""}, "1999998")
    assert check_answer({"task": "sort", "prompt": "O:cab", "response": ""}, "abc")
    assert not check_answer({"task": "sort", "prompt": "O:cab", "response": ""}, "acb")
    puzzle = {"task": "sudoku", "prompt": "S:1234341221434.2.", "response": ""}
    assert check_answer(puzzle, "31")  # 1234/3412/2143/4321
    assert not check_answer(puzzle, "13")
    assert not check_answer(puzzle, "1")
    with pytest.raises(ConfigError, match="unknown task"):
        check_answer({"task": "mul", "prompt": "M:2*3=", "response": "6"}, "6")


def test_answers_are_right_independently(splits):
    train, test = splits
    for record in train + test:
        prompt, answer = record["prompt"], record["response"]
        assert len(answer) == RESPONSE_LENGTHS[record["task"]]
        if record["task"] == "add":
            a, b = prompt[2:-1].split("+")
            assert prompt == f"A:{a}+{b}=" and len(a) == len(b) == 6
            assert int(answer) == int(a) + int(b)
        elif record["task"] == "sort":
            letters = prompt[2:]
            assert len(letters) == 15 and Counter(letters) == Counter(answer)
            assert all(x <= y for x, y in zip(answer, answer[1:]))
        else:
            grid = prompt[2:]
            assert len(grid) == 16 and grid.count(".") == 7
            filled = iter(answer)
            assert _grid_ok("".join(next(filled) if ch == "." else ch for ch in grid))
            assert count_solutions(grid) == 1
        assert check_answer(record, answer)


def test_splits_disjoint_balanced_and_deterministic(splits):
    train, test = splits
    assert len(train) == 3 * 60 and len(test) == 3 * 20
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert len({r["prompt"] for r in train}) == len(train)
    assert Counter(r["task"] for r in test) == {"add": 20, "sort": 20, "sudoku": 20}
    assert (train, test) == generate_synthetic(60, 20, seed=3)
    assert generate_synthetic(60, 20, seed=4)[1] != test
    # tasks are interleaved in the training file
    assert len({r["task"] for r in train[:12]}) > 1
    # asking for fewer training problems keeps the same test set
    assert generate_synthetic(5, 20, seed=3)[1] == test


def test_sudoku_grids_and_uniqueness():
    grids = sudoku_grids()
    assert len(grids) == len(set(grids)) == 288
    assert all(_grid_ok(g) for g in grids)
    assert count_solutions("1234341221434321") == 1
    assert count_solutions("." * 16, limit=1000) == 288
    assert count_solutions("12..............", limit=1000) == 288 // 12
    record = make_sudoku(random.Random(0))
    assert count_solutions(record["prompt"][2:]) == 1


def test_write_and_cli(tmp_path, capsys):
    train_path, test_path = write_synthetic(tmp_path / "a", n_train=4, n_test=2, seed=1)
    train = [json.loads(line) for line in train_path.read_text().splitlines()]
    test = [json.loads(line) for line in test_path.read_text().splitlines()]
    assert (train, test) == generate_synthetic(4, 2, seed=1)
    assert (
        synthetic._main(
            ["--out-dir", str(tmp_path / "b"), "--n-train", "4", "--n-test", "2", "--seed", "1"]
        )
        == 0
    )
    assert (tmp_path / "b" / "train.jsonl").read_text() == train_path.read_text()
    assert "wrote" in capsys.readouterr().out
    assert synthetic._main(["--out-dir", str(tmp_path / "c"), "--tasks", "sort", "--n-train",
                            "3", "--n-test", "1"]) == 0  # fmt: skip
    assert len((tmp_path / "c" / "test.jsonl").read_text().splitlines()) == 1


def test_bad_arguments(monkeypatch):
    with pytest.raises(ConfigError, match="choose from"):
        generate_synthetic(1, 1, tasks=["mul"])
    with pytest.raises(ConfigError, match=">= 0"):
        generate_synthetic(-1, 1)
    assert len(synthetic.generate_split("sort", 5, random.Random(0), exclude=set())) == 5
    monkeypatch.setitem(synthetic._MAKERS, "sort", lambda rng: {"prompt": "O:a"})
    with pytest.raises(ConfigError, match="1 found before 1000 repeats"):
        synthetic.generate_split("sort", 2, random.Random(0))


def test_chain_and_fill_tasks():
    from proseco.data.synthetic import (
        ALL_TASKS,
        STUDY_TASKS,
        count_solutions,
        make_chain,
        make_fill,
    )

    assert set(STUDY_TASKS) <= set(ALL_TASKS) and "chain" not in synthetic.TASKS
    assert check_answer({"task": "chain", "prompt": "C:1964", "response": ""}, "1060")
    assert not check_answer({"task": "chain", "prompt": "C:1964", "response": ""}, "1061")
    assert not check_answer({"task": "chain", "prompt": "C:1964", "response": ""}, "106")
    rng = random.Random(0)
    for _ in range(20):
        chain, fill = make_chain(rng), make_fill(rng)
        assert len(chain["prompt"]) == 17 and len(chain["response"]) == RESPONSE_LENGTHS["chain"]
        assert check_answer(chain, chain["response"])
        puzzle = fill["prompt"][2:]
        assert puzzle.count(".") == 10 and len(fill["response"]) == RESPONSE_LENGTHS["fill"]
        assert check_answer(fill, fill["response"]) and count_solutions(puzzle, 1000) >= 1
    # fill accepts any valid completion, not only the source grid's
    # 12../34../21../43..: 1234/3412/2143/4321 or 1243/3421/2134/4312
    puzzle = {"task": "fill", "prompt": "F:12..34..21..43..", "response": ""}
    assert check_answer(puzzle, "34124321") and check_answer(puzzle, "43213412")
    assert not check_answer(puzzle, "34124312")  # column 3 would hold 1 twice
    fills = generate_synthetic(0, 200, seed=0, tasks=["fill"])[1]
    several = sum(count_solutions(r["prompt"][2:], 2) > 1 for r in fills)
    assert 60 < several < 140  # about half the puzzles have several completions
