"""The QM9 benchmark's claim rules (benchmarks/qm9_claims.py) and report logic (benchmarks/qm9.py),
on synthetic rows: both verdicts of every claim, interpolation and frontier edge cases."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))  # qm9.py imports its sibling qm9_claims

import qm9_claims as claims  # noqa: E402


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("qm9_benchmark", BENCHMARKS / "qm9.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(steps, nfe, validity, method="x", **extra):
    return {"method": method, "steps": steps, "nfe": nfe, "validity": validity, **extra}


def guided(ring_mean, novel, steps=8, gamma=2.0):
    return {
        "steps": steps,
        "gamma": gamma,
        "ring_count_novel_mean": ring_mean,
        "num_novel_unique": novel,
    }


MDLM_CURVE = [row(2, 2.0, 0.10), row(4, 4.0, 0.20), row(8, 8.0, 0.40), row(16, 16.0, 0.50)]


# --------------------------------------------------------------------- interpolation
def test_interpolation_is_linear_in_log2_nfe():
    # log2: 1 -> 0.0, 5 -> 0.8; x = 8 is log2 3, halfway: 0.4 (linear in NFE would give 0.16)
    value, where = claims.interpolate_log2([(2, 0.0), (32, 0.8)], 8)
    assert value == pytest.approx(0.4)
    assert where == "inside"


def test_interpolation_hits_measured_points_exactly():
    pts = [(2, 0.1), (4, 0.2), (8, 0.4)]
    assert claims.interpolate_log2(pts, 2) == (pytest.approx(0.1), "inside")
    assert claims.interpolate_log2(pts, 8) == (pytest.approx(0.4), "inside")
    assert claims.interpolate_log2(pts, 6)[0] == pytest.approx(0.2 + 0.2 * (2.5849625 - 2))


def test_interpolation_clamps_outside_the_range_and_says_where():
    pts = [(8, 0.4), (2, 0.1)]  # unsorted on purpose
    assert claims.interpolate_log2(pts, 1) == (0.1, "below")
    assert claims.interpolate_log2(pts, 64) == (0.4, "above")


def test_interpolation_averages_points_with_the_same_nfe_and_handles_one_point():
    assert claims.interpolate_log2([(4, 0.2), (4, 0.4)], 4) == (pytest.approx(0.3), "inside")
    assert claims.interpolate_log2([(4, 0.2)], 4) == (0.2, "inside")


@pytest.mark.parametrize("points, x", [([], 4), ([(0, 0.1)], 4), ([(2, 0.1)], 0)])
def test_interpolation_rejects_empty_or_non_positive_input(points, x):
    with pytest.raises(ValueError):
        claims.interpolate_log2(points, x)


def test_pareto_frontier_keeps_only_undominated_points_sorted_by_x():
    pts = [(1, 10), (2, 8), (1.5, 5), (3, 2), (2, 7), (2, 8)]
    assert claims.pareto_frontier(pts) == [(1.0, 10.0), (2.0, 8.0), (3.0, 2.0)]


def test_frontier_value_interpolates_clamps_left_and_stops_right():
    frontier = [(1.0, 10.0), (2.0, 8.0), (3.0, 2.0)]
    assert claims.frontier_value(frontier, 1.5) == pytest.approx(9.0)
    assert claims.frontier_value(frontier, 2.5) == pytest.approx(5.0)
    assert claims.frontier_value(frontier, 0.2) == 10.0  # the leftmost point dominates there
    assert claims.frontier_value(frontier, 3.0) == 2.0
    assert claims.frontier_value(frontier, 3.01) is None
    assert claims.frontier_value([], 1.0) is None


def test_small_steps_prefers_t_up_to_4_else_the_two_smallest():
    assert claims.small_steps([2, 4, 8, 16, 32]) == [2, 4]
    assert claims.small_steps([32, 8, 16]) == [8, 16]
    assert claims.small_steps([4, 2, 4]) == [2, 4]


# --------------------------------------------------------------------- claim (a)
def test_claim_a_holds_when_proseco_is_higher_at_every_small_t_point():
    proseco = [row(2, 4.0, 0.30), row(4, 8.0, 0.50), row(8, 16.0, 0.10)]  # T=8 is not small
    result = claims.judge_small_t_validity(MDLM_CURVE, proseco)
    assert result.verdict == claims.HELD
    assert [d["point"] for d in result.details] == ["x T=2", "x T=4"]
    assert result.details[0]["MDLM at same NFE"] == pytest.approx(0.20)
    assert result.details[1]["margin"] == pytest.approx(0.10)
    assert "2 of 2" in result.explanation


def test_claim_a_fails_if_one_point_is_lower_or_only_equal():
    lower = claims.judge_small_t_validity(MDLM_CURVE, [row(2, 4.0, 0.3), row(4, 8.0, 0.35)])
    assert lower.verdict == claims.NOT_HELD
    assert "1 of 2" in lower.explanation
    tie = claims.judge_small_t_validity(MDLM_CURVE, [row(2, 4.0, 0.20)])
    assert tie.verdict == claims.NOT_HELD


def test_claim_a_clamps_beyond_mdlm_nfe_range_and_says_so():
    result = claims.judge_small_t_validity(MDLM_CURVE, [row(4, 32.0, 0.6)])
    assert result.verdict == claims.HELD
    assert result.details[0]["MDLM at same NFE"] == pytest.approx(0.50)  # not extrapolated
    assert result.details[0]["reference"] == "clamped (above range)"
    assert "Extrapolation would have been needed" in result.explanation


def test_claim_a_uses_the_two_smallest_t_when_none_is_small():
    proseco = [row(8, 16.0, 0.6), row(16, 32.0, 0.6), row(32, 64.0, 0.1)]
    result = claims.judge_small_t_validity(MDLM_CURVE, proseco)
    assert [d["point"] for d in result.details] == ["x T=8", "x T=16"]
    assert result.verdict == claims.HELD


def test_claim_a_is_not_testable_without_rows():
    assert claims.judge_small_t_validity([], [row(2, 4.0, 0.3)]).verdict == claims.NOT_TESTABLE
    missing = [row(2, 4.0, None)]
    assert claims.judge_small_t_validity(MDLM_CURVE, missing).verdict == claims.NOT_TESTABLE


# --------------------------------------------------------------------- claim (b)
def test_claim_b_holds_at_exactly_half_the_nfe():
    mdlm = MDLM_CURVE + [row(32, 32.0, 0.60), row(64, 64.0, 0.60)]  # best 0.6, first at 32
    result = claims.judge_half_nfe(mdlm, [row(4, 8.0, 0.4), row(8, 16.0, 0.62)])
    assert result.verdict == claims.HELD
    assert result.details[0]["at NFE"] == 32.0
    assert result.details[0]["ProSeCo NFE"] == 16.0
    assert result.details[0]["NFE ratio"] == pytest.approx(0.5)


def test_claim_b_fails_above_half_or_when_never_reached():
    slow = claims.judge_half_nfe(MDLM_CURVE, [row(8, 10.0, 0.5), row(16, 20.0, 0.9)])
    assert slow.verdict == claims.NOT_HELD  # 10 > 16 / 2
    assert "0.62x" in slow.explanation
    never = claims.judge_half_nfe(MDLM_CURVE, [row(8, 4.0, 0.45), row(16, 8.0, 0.49)])
    assert never.verdict == claims.NOT_HELD
    assert "No ProSeCo-sampling point reached it" in never.explanation


def test_claim_b_is_not_testable_when_mdlm_never_makes_a_valid_molecule():
    result = claims.judge_half_nfe([row(2, 2.0, 0.0)], [row(2, 4.0, 0.0)])
    assert result.verdict == claims.NOT_TESTABLE


# --------------------------------------------------------------------- claim (c)
def test_claim_c_holds_when_proseco_frontier_is_above_every_mdlm_point():
    mdlm = [guided(2.0, 500), guided(2.5, 300), guided(3.0, 100)]
    proseco = [guided(2.2, 600), guided(2.8, 400), guided(3.2, 150), guided(2.5, 100)]
    result = claims.judge_guidance_frontier(mdlm, proseco)
    assert result.verdict == claims.HELD
    heights = [d["ProSeCo frontier"] for d in result.details]
    assert heights == pytest.approx([600.0, 500.0, 275.0])
    assert "3 of 3" in result.explanation


def test_claim_c_counts_mdlm_points_beyond_proseco_ring_range_as_not_beaten():
    mdlm = [guided(1.8, 300), guided(2.2, 350), guided(3.0, 50)]
    proseco = [guided(2.0, 400), guided(2.4, 200)]  # frontier at 2.2: 300 < 350
    result = claims.judge_guidance_frontier(mdlm, proseco)
    assert result.verdict == claims.NOT_HELD
    assert [d["beaten"] for d in result.details] == [True, False, False]
    assert "higher than any ProSeCo point" in result.explanation


def test_claim_c_needs_a_strict_majority_and_skips_points_without_novel_molecules():
    mdlm = [guided(2.0, 100), guided(2.0, 900), guided(None, 0)]
    result = claims.judge_guidance_frontier(mdlm, [guided(2.5, 500)])
    assert result.verdict == claims.NOT_HELD  # 1 of 2 is not a majority
    assert "1 of 2" in result.explanation
    assert "left out" in result.explanation


def test_claim_c_is_not_testable_without_proseco_points():
    result = claims.judge_guidance_frontier([guided(2.0, 100)], [guided(None, 0)])
    assert result.verdict == claims.NOT_TESTABLE


# --------------------------------------------------------------------- benchmark script
@pytest.fixture(scope="module")
def bench():
    return _load_benchmark()


def test_grids_cover_every_sampler_at_every_t(bench):
    uncond = bench.unconditional_settings([4, 2])
    assert len(uncond) == 12
    assert [s.steps for s in uncond[:2]] == [2, 4]
    by_method = {s.method: s for s in uncond}
    assert by_method["MDLM + ReMDM loop (eta 0.02)"].summary()["remdm"] == "loop"
    cap = by_method["MDLM + ReMDM cap (eta 0.02)"].summary()
    assert (cap["unmasking"], cap["remdm"], cap["eta"]) == ("remdm", "cap", 0.02)
    assert {(s.corrector_steps, s.corrector_every) for s in uncond if s.model == "proseco"} == {
        (0, 1),
        (1, 1),
        (2, 2),
    }
    guided_grid = bench.guidance_settings([8, 32], [0.0, 1.0, 2.0])
    assert len(guided_grid) == 12
    assert all(s.condition == 1 and s.guided_corrector for s in guided_grid)
    assert {s.corrector_steps for s in guided_grid if s.model == "proseco-ring"} == {1}
    assert {s.corrector_steps for s in guided_grid if s.model == "mdlm-ring"} == {0}


def test_quick_flag_sets_small_defaults_that_explicit_values_override(bench):
    quick = bench.parse_args(["--quick"])
    assert (quick.num_samples, quick.steps, quick.guidance_steps) == (64, [2, 4], [2, 4])
    full = bench.parse_args(["--steps", "8", "2"])
    assert (full.num_samples, full.steps, full.guidance_steps) == (1000, [2, 8], [8, 32])
    assert bench.parse_args(["--quick", "--num-samples", "10"]).num_samples == 10


def test_model_dirs_are_found_directly_or_under_final(bench, tmp_path):
    (tmp_path / "mdlm").mkdir()
    (tmp_path / "mdlm" / "config.json").write_text("{}")
    (tmp_path / "proseco" / "final").mkdir(parents=True)
    (tmp_path / "proseco" / "final" / "config.json").write_text("{}")
    assert bench.find_model_dir(tmp_path, "mdlm") == tmp_path / "mdlm"
    assert bench.find_model_dir(tmp_path, "proseco") == tmp_path / "proseco" / "final"
    assert bench.find_model_dir(tmp_path, "mdlm-ring") is None


def _uncond_row(method, model, steps, s, every, nfe, validity):
    return {
        "method": method,
        "model": model,
        "steps": steps,
        "corrector_steps": s,
        "corrector_every": every,
        "nfe": nfe,
        "validity": validity,
        "uniqueness": 0.9,
        "novelty": None,
        "seconds": 1.0,
        "num_samples": 1000,
    }


def test_report_states_each_verdict_and_tabulates_every_row(bench):
    mdlm_validity = {2: 0.1, 4: 0.2, 8: 0.4}
    proseco_validity = {2: 0.4, 4: 0.5, 8: 0.7}  # at twice the NFE
    uncond = []
    for t in (2, 4, 8):
        uncond += [
            _uncond_row("MDLM", "mdlm", t, 0, 1, float(t), mdlm_validity[t]),
            _uncond_row("ProSeCo model + MDLM sampling", "proseco", t, 0, 1, float(t), 0.1),
            _uncond_row("ProSeCo S=1 every=1", "proseco", t, 1, 1, 2.0 * t, proseco_validity[t]),
        ]
    verdicts = bench.judge(uncond, [], "the ring-count models are missing")
    assert [v.verdict for v in verdicts] == [
        claims.HELD,
        claims.HELD,
        claims.NOT_TESTABLE,
        claims.HELD,
    ]
    meta = {
        "command": "python benchmarks/qm9.py --quick",
        "commit": "abc1234",
        "date": "today",
        "versions": "v",
        "num_samples": 1000,
        "batch_size": 500,
        "seed": 0,
        "elapsed": 1.0,
        "row_seconds": 2.0,
        "machine": "cpu",
        "guidance_skipped": "the ring-count models are missing",
        "checkpoints": {"mdlm": {"path": "m", "info": "1 M params", "sequences": 128_000}},
    }
    text = bench.render(meta, uncond, [], verdicts, {"a": "A", "b": "B", "c": "C"})
    assert text.count("**Verdict: held.**") == 2
    assert "**Verdict: not testable.** The guidance study was not run" in text
    assert "Not run: the ring-count models are missing." in text
    assert "| ProSeCo S=1 every=1 | 4 | 1 | 1 | 8.0 | 50.0% | 90.0% | – | 1.0 |" in text
    assert "| MDLM | 10.0% (2.0) | 20.0% (4.0) | 40.0% (8.0) |" in text
    assert "python benchmarks/qm9.py --quick" in text and "`abc1234`" in text
    assert "128,000 training sequences" in text
