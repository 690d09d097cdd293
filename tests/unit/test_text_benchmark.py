"""The text study's judgement (``benchmarks/text_verdict.py``): the gate, comparisons at equal NFE
with bootstrap intervals, and the verdict rule (pure functions on hand-made rows; no model, no
evaluator)."""

from __future__ import annotations

import json
import math

import pytest

from tests.unit.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def tv():
    return load_benchmark("text_verdict.py")


def _row(method, steps, nfe, ppl, mauve, entropy=4.0, spread=0.0):
    """A point whose replicates are the value plus a fixed spread pattern (-s, 0, +s, ...)."""
    pattern = [-1.0, 0.0, 1.0] * 40
    boot = {
        "gen_ppl": [ppl + spread * 10 * p for p in pattern],
        "mauve": [mauve + spread * p for p in pattern],
    }
    return {"method": method, "steps": steps, "nfe": nfe, "gen_ppl": ppl, "mauve": mauve,
            "entropy": entropy, "boot": boot}  # fmt: skip


def test_interpolation_is_linear_in_log_nfe_and_refuses_to_extrapolate(tv):
    plan = tv.interpolation([16.0, 64.0], 32.0)  # halfway in log2
    assert [i for i, _ in plan] == [0, 1] and [w for _, w in plan] == pytest.approx([0.5, 0.5])
    assert tv.interpolation([16.0, 64.0], 8.0) is None
    assert tv.interpolation([16.0, 64.0], 128.0) is None
    assert tv.interpolation([16.0, 64.0], 16.0) == [(0, 1.0), (1, 0.0)]


def test_read_curve_interpolates_values_and_replicates_alike(tv):
    rows = [_row(tv.MDLM, 16, 16.0, 100.0, 0.2, spread=0.01), _row(tv.MDLM, 64, 64.0, 50.0, 0.4)]
    value, boot = tv.read_curve(rows, 32.0, "mauve")
    assert value == pytest.approx(0.3)
    assert boot[:3].tolist() == pytest.approx([0.295, 0.3, 0.305])


def test_outcomes_follow_the_intervals_and_the_entropy_band(tv):
    def d(low, high):
        return {"diff": (low + high) / 2, "low": low, "high": high}

    assert tv.outcome(d(0.01, 0.05), d(-9.0, -1.0), True) == "better"
    assert tv.outcome(d(-0.01, 0.05), d(-9.0, -1.0), True) == "tie"  # MAUVE not separated
    assert tv.outcome(d(0.01, 0.05), d(-9.0, -1.0), False) == "worse"  # entropy collapse
    assert tv.outcome(d(-0.05, -0.01), d(-9.0, -1.0), True) == "worse"  # MAUVE lower
    assert tv.outcome(d(0.01, 0.05), d(1.0, 9.0), True) == "worse"  # gen-PPL higher
    assert tv.outcome(None, d(1.0, 9.0), True) == "not judged"
    assert tv.entropy_ok(3.81, 4.0) and not tv.entropy_ok(3.79, 4.0)


def test_a_clear_win_below_the_gate_is_still_inconclusive(tv):
    rows = [
        _row(tv.DATA, None, None, 30.0, 0.95),
        _row(tv.MDLM, 16, 16.0, 900.0, 0.10, spread=0.01),
        _row(tv.MDLM, 64, 64.0, 800.0, 0.20, spread=0.01),
        _row("ProSeCo S=1 every=1", 16, 32.0, 100.0, 0.60, spread=0.01),
    ]
    comps = tv.comparisons(rows)
    assert [c["outcome"] for c in comps] == ["better"]
    assert comps[0]["mauve"]["diff"] == pytest.approx(0.6 - 0.15)
    g = tv.gate(rows, mdlm_nelbo=4.0, bigram_nelbo=3.8)
    assert g["mdlm_mauve"] == 0.20 and g["mdlm_T"] == 64 and not g["passed"]
    assert tv.verdict(g, comps)["verdict"] == "inconclusive"
    # past the gate (MAUVE and NELBO), the same comparison holds
    rows[2]["mauve"] = 0.35
    rows[2]["boot"]["mauve"] = [0.35] * 120
    g = tv.gate(rows, mdlm_nelbo=3.7, bigram_nelbo=3.8)
    assert g["passed"]
    assert tv.verdict(g, tv.comparisons(rows))["verdict"] == "held"
    # a NELBO above the bigram's fails the gate even with MAUVE above 0.3
    assert not tv.gate(rows, mdlm_nelbo=3.9, bigram_nelbo=3.8)["passed"]


def test_one_worse_comparison_or_too_few_wins_is_did_not_hold(tv):
    rows = [
        _row(tv.DATA, None, None, 30.0, 0.95),
        _row(tv.MDLM, 16, 16.0, 300.0, 0.40),
        _row(tv.MDLM, 64, 64.0, 200.0, 0.50),
        _row(tv.REMDM, 16, 16.0, 300.0, 0.40),
        _row(tv.REMDM, 64, 64.0, 200.0, 0.50),
        _row("ProSeCo S=1 every=1", 8, 16.0, 100.0, 0.60, spread=0.01),
        _row("ProSeCo S=1 every=1", 32, 64.0, 150.0, 0.45, spread=0.01),  # lower MAUVE at 64
    ]
    g = tv.gate(rows, mdlm_nelbo=3.0, bigram_nelbo=3.8)
    result = tv.verdict(g, tv.comparisons(rows))
    assert result["per_baseline"][tv.MDLM] == {
        "better": 1, "tie": 0, "worse": 1, "judged": 2, "held": False
    }  # fmt: skip
    assert result["verdict"] == "did not hold"


def test_a_point_outside_the_baselines_nfe_range_is_not_judged(tv):
    rows = [
        _row(tv.MDLM, 16, 16.0, 300.0, 0.40),
        _row(tv.MDLM, 64, 64.0, 200.0, 0.50),
        _row("ProSeCo S=1 every=1", 64, 128.0, 100.0, 0.60),
    ]
    (comp,) = tv.comparisons(rows)
    assert comp["outcome"] == "not judged" and comp["mauve"] is None
    g = tv.gate(rows, mdlm_nelbo=3.0, bigram_nelbo=3.8)
    assert tv.verdict(g, [comp])["verdict"] == "inconclusive"


def test_entropy_within_five_percent_uses_the_data_row(tv):
    rows = [
        _row(tv.DATA, None, None, 30.0, 0.95, entropy=4.0),
        _row(tv.MDLM, 16, 16.0, 300.0, 0.40),
        _row(tv.MDLM, 64, 64.0, 200.0, 0.50),
        _row("ProSeCo S=1 every=1", 16, 32.0, 20.0, 0.60, entropy=2.0, spread=0.01),
    ]
    (comp,) = tv.comparisons(rows)
    assert comp["entropy_ok"] is False and comp["outcome"] == "worse"
    assert math.isclose(comp["gen_ppl"]["diff"], 20.0 - 250.0)


def _text_module():
    return load_benchmark("text.py", "text_benchmark")


def test_corrector_budgets_run_only_where_the_baselines_cover_their_nfe():
    module = _text_module()
    # every=1 costs 2T: T=8 (NFE 16) .. T=32 (NFE 64); every=4 costs T + T/4: T=16, 32
    assert module.corrector_steps([16, 32, 64], 1, 1) == [8, 16, 32]
    assert module.corrector_steps([16, 32, 64], 1, 4) == [16, 32]
    assert module.corrector_steps([16, 32, 64, 128], 1, 1) == [8, 16, 32, 64]


def _page_row(method, steps, mauve):
    return {"method": method, "steps": steps, "nfe": steps, "corrector_nfe": 0.0, "seconds": 1.0,
            "gen_ppl": 400.0, "mauve": mauve, "entropy": 4.3, "distinct2": 0.9, "distinct3": 0.99,
            "mean_tokens": 128.0, "num_samples": 4, "examples": ["a b c"], "boot": {"mauve": [mauve] * 3},
            "intervals": {"mauve": [mauve, mauve], "gen_ppl": [390.0, 410.0]}}  # fmt: skip


def _info(command):
    return {"command": command, "date": "2026-12-05 00:00 UTC", "platform": "x86_64",
            "threads": 1, "seed": 0, "draws": 0, "device": "cpu", "framing": "research",
            "num_samples": 4, "num_reference": 4, "mdlm_nelbo": 3.5, "bigram_nelbo": 3.8,
            "bigram_lambda": 0.97, "evaluator_precision": "float32", "models": "mdlm `m`"}  # fmt: skip


def test_a_page_from_merged_rows_names_every_run_and_writes_the_rows(tmp_path):
    module = _text_module()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"rows": [_page_row("MDLM", 16, 0.05), _page_row("MDLM", 64, 0.12)],
                             "info": _info("python benchmarks/text.py --steps 16 64")}))  # fmt: skip
    b.write_text(json.dumps({"rows": [_page_row("MDLM", 128, 0.09), _page_row("MDLM", 64, 0.9)],
                             "info": _info("python benchmarks/text.py --steps 128")}))  # fmt: skip
    out = tmp_path / "page"
    assert module.main(["--from-json", str(a), str(b), "--out", str(out)]) == 0
    page = (out / "text_kjv.md").read_text()
    assert "--steps 16 64" in page and "--steps 128" in page and "--from-json" in page
    rows = json.loads((out / "text_kjv_rows.json").read_text())["rows"]
    # the first file wins a (method, T) both hold; the largest T is the gate's point
    assert [(r["steps"], r["mauve"]) for r in rows] == [(16, 0.05), (64, 0.12), (128, 0.09)]
    summary = json.loads((out / "text_summary.json").read_text())
    assert summary["gate"]["mdlm_mauve"] == 0.09 and summary["verdict"] == "inconclusive"


def test_the_page_says_how_each_rows_mauve_was_computed():
    module = _text_module()
    old, new = (
        _page_row("MDLM", 64, 0.1),
        {**_page_row("MDLM", 128, 0.1), "mauve_quantizations": 10},
    )
    assert "held fixed" in module.mauve_method([old]) and "seeds" not in module.mauve_method([old])
    assert "mean over 10 k-means seeds" in module.mauve_method([new])
    mixed = module.mauve_method([old, new])
    assert "(MDLM T=64)" in mixed and "(MDLM T=128)" in mixed


def test_bad_counts_are_one_line_and_exit_2(capsys):
    module = _text_module()
    for flag in ("--mauve-quantizations", "--draws", "--num-samples"):
        with pytest.raises(SystemExit) as e:
            module.parse_args([flag, "0"])
        assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
