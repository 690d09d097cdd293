"""``benchmarks/text.py``'s verdict: ProSeCo against each baseline at equal NFE, and at the AR
row's NFE (pure functions on hand-made rows; no model, no evaluator)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "text.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("text_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["text_benchmark"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _row(method, steps, nfe, ppl, mauve=None, entropy=3.0):
    return {"method": method, "steps": steps, "nfe": nfe, "gen_ppl": ppl, "mauve": mauve,
            "entropy": entropy}  # fmt: skip


def test_each_baseline_is_judged_at_equal_nfe_and_ar_at_its_own_nfe(bench):
    pro = "ProSeCo S=1 every=1"
    rows = [
        _row(bench.DATA, None, None, 30.0, 0.9, 4.0),
        _row(bench.AR, None, 64.0, 100.0, 0.8),
        _row(bench.MDLM, 16, 16.0, 1000.0, 0.1),
        _row(bench.MDLM, 64, 64.0, 800.0, 0.2),
        _row(bench.PRISM, 16, 16.0, 50.0, 0.3),
        _row(bench.PRISM, 64, 64.0, 40.0, 0.4),
        _row(pro, 8, 16.0, 60.0, 0.25, 2.0),
        _row(pro, 32, 64.0, 20.0, 0.05, 2.5),
    ]
    comparisons, summary = bench.verdict(rows)
    per = summary["per_baseline"]
    assert set(per) == {bench.MDLM, bench.PRISM, bench.AR}  # no ReMDM / UDLM rows: not judged
    assert per[bench.MDLM] == {"ppl_wins": 2, "ppl_judged": 2, "mauve_wins": 1, "mauve_judged": 2}
    assert per[bench.PRISM] == {"ppl_wins": 1, "ppl_judged": 2, "mauve_wins": 0, "mauve_judged": 2}
    # AR at NFE 64: ProSeCo's curve there is its T=32 point (20.0 < 100.0; MAUVE 0.05 < 0.8)
    assert per[bench.AR] == {"ppl_wins": 1, "ppl_judged": 1, "mauve_wins": 0, "mauve_judged": 1}
    ar = next(c for c in comparisons if c["vs"] == bench.AR)
    assert (ar["gen_ppl"], ar["gen_ppl_base"], ar["T"]) == (20.0, 100.0, None)
    # the headline counts only MDLM and ReMDM (the original claim), as before
    assert (summary["ppl_wins"], summary["ppl_judged"]) == (2, 2)
    assert summary["min_proseco_entropy"] == 2.0 and summary["data_entropy"] == 4.0


def test_interpolation_is_linear_in_log_nfe_and_refuses_to_extrapolate(bench):
    points = [(16.0, 100.0), (64.0, 50.0)]
    assert bench.interpolate(points, 32.0) == pytest.approx(75.0)  # halfway in log2
    assert bench.interpolate(points, 8.0) is None and bench.interpolate(points, 128.0) is None
    assert math.isclose(bench.interpolate(points, 16.0), 100.0)
