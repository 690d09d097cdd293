"""The QM9 benchmark's claim rules (benchmarks/qm9_claims.py), report logic (benchmarks/qm9.py)
and training-curve helpers (benchmarks/qm9_training_curve.py), on synthetic rows: both verdicts of
every claim, interpolation and frontier edge cases, the guidance figure and the embedded curve."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.unit.benchmark_scripts import BENCHMARKS, load_benchmark

if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))  # qm9.py imports its sibling qm9_claims

import qm9_claims as claims  # noqa: E402


def _load_benchmark():
    return load_benchmark("qm9.py", "qm9_benchmark")


def row(steps, nfe, validity, method="x", **extra):
    return {"method": method, "steps": steps, "nfe": nfe, "validity": validity, **extra}


def guided(ring_mean, novel, steps=8, gamma=2.0, prop="ring_count", **extra):
    return {
        "steps": steps,
        "gamma": gamma,
        f"{prop}_novel_mean": ring_mean,
        "num_novel_unique": novel,
        **extra,
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


def test_claim_c_judges_any_property_and_names_it():
    mdlm = [guided(0.40, 300, prop="qed"), guided(0.45, 200, prop="qed")]
    proseco = [guided(0.50, 350, prop="qed"), guided(0.42, 100, prop="qed")]
    result = claims.judge_guidance_frontier(
        mdlm, proseco, prop="qed_novel_mean", property_name="QED"
    )
    assert result.verdict == claims.HELD
    assert "QED" in result.statement and "up and to the right" in result.statement
    assert [d["QED mean"] for d in result.details] == [0.40, 0.45]
    assert "mean QED of the novel molecules" in result.explanation
    worse = claims.judge_guidance_frontier(
        proseco, mdlm, prop="qed_novel_mean", property_name="QED"
    )
    assert worse.verdict == claims.NOT_HELD  # ProSeCo's (0.5, 350) point is beyond MDLM's range


# --------------------------------------------------------------------- benchmark script
@pytest.fixture(scope="module")
def bench():
    return _load_benchmark()


def test_grids_cover_every_sampler_at_every_t(bench):
    uncond = bench.unconditional_settings([4, 2])
    assert len(uncond) == 19  # 9 samplers at each T, plus AR (no T)
    assert [s.steps for s in uncond[:2]] == [2, 4]
    assert [(s.model, s.steps) for s in uncond if s.method == bench.AR] == [("ar", None)]
    assert {s.model for s in uncond} == {"mdlm", "proseco", "udlm", "prism", "ar"}
    prism = [s for s in uncond if s.model == "prism"]
    assert [s.summary()["unmasking"] for s in prism] == ["prism"] * 4
    assert {(s.config.unmasking.eta, s.config.unmasking.num_remask) for s in prism} == {
        (0.01, 0), (0.0, 1)
    }  # fmt: skip
    by_method = {s.method: s for s in uncond}
    assert by_method["MDLM + ReMDM loop (eta 0.02)"].summary()["remdm"] == "loop"
    cap = by_method["MDLM + ReMDM cap (eta 0.02)"].summary()
    assert (cap["unmasking"], cap["remdm"], cap["eta"]) == ("remdm", "cap", 0.02)
    assert {(s.corrector_steps, s.corrector_every) for s in uncond if s.model == "proseco"} == {
        (0, 1),
        (1, 1),
        (2, 2),
    }
    guided_grid = bench.guidance_settings([8, 32], [0.0, 1.0, 2.0], ("ring_count", "qed"))
    # per property: MDLM, ProSeCo, ReMDM, UDLM at 2 T x 3 gammas, and AR at 3 gammas
    assert len(guided_grid) == 2 * (4 * 2 * 3 + 3)
    assert all(s.condition == 1 and s.guided_corrector for s in guided_grid)
    assert {s.model for s in guided_grid} == {
        "mdlm-ring", "proseco-ring", "ar-ring", "udlm-ring",
        "mdlm-qed", "proseco-qed", "ar-qed", "udlm-qed",
    }  # fmt: skip
    remdm = [s for s in guided_grid if bench.family({"method": s.method}) == "ReMDM"]
    assert len(remdm) == 12 and {s.model for s in remdm} == {"mdlm-ring", "mdlm-qed"}
    assert {s.summary()["remdm"] for s in remdm} == {"loop"}
    assert {s.steps for s in guided_grid if s.model.startswith("ar-")} == {None}
    for key in ("proseco-ring", "proseco-qed"):
        assert {(s.corrector_steps, s.corrector_every) for s in guided_grid if s.model == key} == {
            (1, 1)
        }
    assert {s.corrector_steps for s in guided_grid if s.model.startswith("mdlm")} == {0}
    assert {bench.property_of(s.model) for s in guided_grid} == {"ring_count", "qed"}
    assert len(bench.guidance_settings([8], [1.0])) == 5  # ring count only by default


def test_proseco_at_interpolates_each_budget_inside_its_range_and_takes_the_best(bench):
    pro = [
        {"method": "S1", "nfe": 4.0, "validity": 0.2},
        {"method": "S1", "nfe": 16.0, "validity": 0.6},
        {"method": "S2", "nfe": 8.0, "validity": 0.3},
        {"method": "S2", "nfe": 32.0, "validity": 0.9},
    ]
    # at NFE 8: S1 is halfway in log2 between 4 and 16 -> 0.4; S2 measured 0.3 -> S1 wins
    assert bench.proseco_at(pro, 8.0) == (pytest.approx(0.4), "S1")
    # at NFE 32 only S2 covers it
    assert bench.proseco_at(pro, 32.0) == (pytest.approx(0.9), "S2")
    assert bench.proseco_at(pro, 2.0) == (None, None)  # below every range: not compared


def test_the_baseline_section_counts_wins_at_equal_nfe(bench):
    def row(method, model, steps, nfe, validity, s=0):
        return {"method": method, "model": model, "steps": steps, "nfe": nfe,
                "validity": validity, "corrector_steps": s}  # fmt: skip

    uncond = [
        row("ProSeCo S=1 every=1", "proseco", 2, 4.0, 0.50, 1),
        row("ProSeCo S=1 every=1", "proseco", 8, 16.0, 0.90, 1),
        row(bench.UDLM, "udlm", 4, 4.0, 0.10),
        row(bench.UDLM, "udlm", 8, 8.0, 0.95),
        row(bench.UDLM, "udlm", 64, 64.0, 0.99),
        row(bench.AR, "ar", None, 20.0, 0.97),
    ]
    text = bench.baseline_uncond_section(uncond, 1000)
    # UDLM at NFE 4 (0.10 < 0.50: win) and 8 (ProSeCo 0.70 < 0.95: loss); 64 is outside
    assert "**UDLM**: ProSeCo sampling is higher at 1 of 2 of its points" in text
    assert "**AR (left to right)**: no point inside ProSeCo's NFE range" in text
    assert "| UDLM | T=8 | 8.0 | 95.0% | 70.0% | ProSeCo S=1 every=1 | no |" in text
    assert "| AR (left to right) | AR (no T) | 20.0 | 97.0% | – |" in text


def test_quick_flag_sets_small_defaults_that_explicit_values_override(bench):
    quick = bench.parse_args(["--quick"])
    assert (quick.num_samples, quick.steps, quick.guidance_steps) == (64, [2, 4], [2, 4])
    full = bench.parse_args(["--steps", "8", "2"])
    assert (full.num_samples, full.steps, full.guidance_steps) == (1000, [2, 8], [8, 16, 32])
    assert full.gammas == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
    assert full.properties == ["ring_count", "qed"]
    assert bench.parse_args(["--quick", "--num-samples", "10"]).num_samples == 10
    assert bench.parse_args(["--properties", "qed", "--gammas", "2", "1"]).gammas == [1.0, 2.0]


def test_row_keys_separate_decoding_rules_and_old_rows_count_as_research(bench):
    row = {k: 1 for k in bench.KEY_FIELDS if k != "eos_rule"}
    assert bench.row_key(row) == bench.row_key({**row, "eos_rule": "research"})
    assert bench.row_key(row) != bench.row_key({**row, "eos_rule": "first"})
    assert bench.row_property({"model": "proseco-qed"}) == "qed"
    assert bench.row_property({"model": "mdlm", "property": None}) is None


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
        "validity_other_rule": validity / 2,
        "uniqueness": 0.9,
        "novelty": None,
        "seconds": 1.0,
        "num_samples": 1000,
    }


SKIPPED = {"ring_count": "the ring models are missing", "qed": "the QED models are missing"}


def _meta(**extra):
    return {
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
        "guidance_skipped": SKIPPED,
        "fcd_skipped": "the optional package `fcd-torch` is not installed",
        "checkpoints": {"mdlm": {"path": "m", "info": "1 M params", "sequences": 128_000}},
        **extra,
    }


def _uncond_rows():
    mdlm_validity = {2: 0.1, 4: 0.2, 8: 0.4}
    proseco_validity = {2: 0.4, 4: 0.5, 8: 0.7}  # at twice the NFE
    uncond = []
    for t in (2, 4, 8):
        uncond += [
            _uncond_row("MDLM", "mdlm", t, 0, 1, float(t), mdlm_validity[t]),
            _uncond_row("ProSeCo model + MDLM sampling", "proseco", t, 0, 1, float(t), 0.1),
            _uncond_row("ProSeCo S=1 every=1", "proseco", t, 1, 1, 2.0 * t, proseco_validity[t]),
        ]
    return uncond


def test_report_states_each_verdict_and_tabulates_every_row(bench):
    uncond = _uncond_rows()
    verdicts = bench.judge(uncond, [], SKIPPED)
    assert [v.verdict for v in verdicts] == [
        claims.HELD,
        claims.HELD,
        claims.NOT_TESTABLE,
        claims.NOT_TESTABLE,
        claims.HELD,
    ]
    text = bench.render(_meta(), uncond, [], verdicts, {"a": "A", "b": "B", "c": "C"})
    assert text.count("**Verdict: held.**") == 2
    assert "**Verdict: not testable.** The ring count guidance study was not run" in text
    assert "**Verdict: not testable.** The QED guidance study was not run" in text
    assert " Tried: C" not in text  # nothing was tried for a study that did not run
    assert "### QED\n\nNot run (no panel in the figure): the QED models are missing." in text
    assert "| validity | validity (research rule) | uniqueness | novelty | sec |" in text
    assert "| ProSeCo S=1 every=1 | 4 | 1 | 1 | 8.0 | 50.0% | 25.0% | 90.0% | – | 1.0 |" in text
    assert "| MDLM | 10.0% (2.0) | 20.0% (4.0) | 40.0% (8.0) |" in text
    assert "stop-at-first-`<eos>` rule" in text and "glued onto the molecule" in text
    assert "FCD (Fréchet ChemNet Distance) is not reported: the optional package" in text
    assert "qm9_training_curve.py --run mdlm=RUN_DIR" in text  # no curve: how to make one
    assert "python benchmarks/qm9.py --quick" in text and "`abc1234`" in text
    assert "128,000 training sequences" in text


def test_fcd_column_appears_only_when_computed(bench):
    uncond = _uncond_rows()
    for i, r in enumerate(uncond):
        r["fcd"] = 1.5 + i if i else None
    verdicts = bench.judge(uncond, [], SKIPPED)
    meta = _meta(fcd_skipped=None, fcd_reference="the QM9 validation split (6,541 molecules)")
    text = bench.render(meta, uncond, [], verdicts, {"a": "", "b": "", "c": ""})
    assert "| novelty | FCD | sec |" in text
    assert "| MDLM | 2 | 0 | 1 | 2.0 | 10.0% | 5.0% | 90.0% | – | – | 1.0 |" in text
    assert (
        "| ProSeCo model + MDLM sampling | 2 | 0 | 1 | 2.0 | 10.0% | 5.0% | 90.0% | – | 2.50 |"
        in text
    )
    assert "to the QM9 validation split (6,541 molecules)" in text
    assert (
        "FCD"
        not in bench.render(_meta(), uncond, [], verdicts, {"a": "", "b": "", "c": ""})
        .split("All metrics:")[1]
        .split("## Validity against")[0]
    )


def _guided_rows(bench):
    rows = []
    for prop, scale in (("ring_count", 1.0), ("qed", 0.1)):
        p = bench.PROPERTIES[prop]
        for t in (8, 32):
            for g in (0.0, 1.0, 2.0):
                for method, model, novel, mean in (
                    (p.mdlm_method, p.mdlm_key, 100 - 30 * g, scale * (1 + g)),
                    (p.proseco_method, p.proseco_key, 150 - 30 * g, scale * (1.5 + g)),
                ):
                    rows.append(
                        guided(
                            mean,
                            int(novel) + t,
                            steps=t,
                            gamma=g,
                            prop=prop,
                            method=method,
                            model=model,
                            nfe=float(t),
                            validity=0.5,
                            uniqueness=0.9,
                            seconds=1.0,
                            **{f"{prop}_novel_std": 0.1 * scale, f"{prop}_valid_mean": mean},
                        )
                    )
    return rows


def test_guidance_verdicts_are_judged_per_property(bench):
    rows = _guided_rows(bench)
    # QED: make MDLM better everywhere, so the two properties get different verdicts
    for r in rows:
        if r["model"] == "mdlm-qed":
            r["num_novel_unique"] += 500
            r["qed_novel_mean"] += 1.0
    verdicts = bench.judge(_uncond_rows(), rows, {})
    ring, qed = verdicts[2], verdicts[3]
    assert (ring.verdict, qed.verdict) == (claims.HELD, claims.NOT_HELD)
    assert "ring count" in ring.statement and "QED" in qed.statement
    assert len(ring.details) == 4  # gamma 0 is the reference, not judged
    text = bench.render(
        _meta(guidance_skipped={}), _uncond_rows(), rows, verdicts, {"a": "", "b": "", "c": "C"}
    )
    assert "### ring count\n\n| method | T | gamma |" in text
    assert "| QED mean (novel) | QED std (novel) | QED mean (valid) | sec |" in text
    assert (
        "| MDLM-qed + MDLM sampling | 8 | 1 | 8.0 | 50.0% | 90.0% | 578 | 1.200 | 0.010 |" in text
    )
    assert "![guidance frontier](qm9_guidance_frontier.png)" in text


def test_guidance_figure_has_one_panel_per_property_with_rows(bench, tmp_path):
    rows = _guided_rows(bench)
    path = tmp_path / "frontier.png"
    assert bench.plot_guidance(rows, path, 1000) == ["ring_count", "qed"]
    assert path.stat().st_size > 10_000
    only_ring = [r for r in rows if r["model"].endswith("ring")]
    assert bench.plot_guidance(only_ring, path, 1000, {"qed": "missing"}) == ["ring_count"]
    empty = tmp_path / "none.png"
    assert bench.plot_guidance([], empty, 1000) == []
    assert not empty.exists()
    assert bench.gamma_marker_area(3.0) > bench.gamma_marker_area(1.0) > bench.gamma_marker_area(0)


def _curve_rows():
    rows = []
    for step, nelbo, v in ((500, 1.2, 0.1), (1000, 1.0, 0.3)):
        rows.append({"run": "mdlm", "step": step, "method": "MDLM", "validity": v, "nelbo": nelbo})
        rows.append(
            {
                "run": "proseco",
                "step": step,
                "method": "ProSeCo S=1 every=1",
                "validity": v + 0.1,
                "nelbo": nelbo + 0.05,
                "source": "final" if step == 1000 else "checkpoint",
            }
        )
    return rows


def test_training_curve_is_embedded_as_a_table_and_image(bench, tmp_path):
    data = {"meta": {"steps": 32, "num_samples": 1000, "seed": 0}, "rows": _curve_rows()}
    text = bench.curve_markdown(data)
    assert "| step | mdlm: MDLM | proseco: ProSeCo S=1 every=1 | mdlm: val. NELBO |" in text
    assert "| 1,000 | 30.0% | 40.0% | 1.000 | 1.050 |" in text
    assert "![validity vs training steps](qm9_training_curve.png)" in text
    assert "exported `final/` model (proseco: step 1,000)" in text
    assert "Not available" in bench.training_curve_section(tmp_path)
    (tmp_path / bench.CURVE_JSON).write_text(__import__("json").dumps(data))
    section = bench.training_curve_section(tmp_path)
    assert "| 500 | 10.0% | 20.0% |" in section and "![validity" not in section  # no png yet


@pytest.fixture(scope="module")
def curve():
    return load_benchmark("qm9_training_curve.py")


def test_training_curve_helpers(curve, tmp_path):
    assert curve.parse_run("mdlm=runs/a=b") == ("mdlm", Path("runs/a=b"))
    with pytest.raises(Exception, match="NAME=DIR"):
        curve.parse_run("runs/a")
    assert curve.is_proseco_run("x", {"loss": {"sc_weight": 1.0}})
    assert not curve.is_proseco_run("proseco", {"loss": {"sc_weight": 0.0}})
    assert curve.is_proseco_run("proseco-big", {})
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 3, "split": "train", "loss": 2.0}\n'
        '{"step": 3, "split": "validation", "nelbo": 1.5}\n'
        '{"step": 6, "split": "validation", "nelbo": 1.4}\n'
        '{"step": 6, "split": "validation", "nelbo": 1.3}\n'
        '{"step": 9, "spl'
    )
    assert curve.validation_nelbo(tmp_path) == {3: 1.5, 6: 1.3}
    assert curve.validation_nelbo(tmp_path / "nothing") == {}
    path = tmp_path / "curve.png"
    curve.plot_curve(_curve_rows(), path, "t")
    assert path.stat().st_size > 10_000


def test_rows_from_before_per_row_nfe_are_marked(bench):
    fresh = {"method": "MDLM", "nfe": 7.88}
    reused = {"method": "MDLM", "nfe": 8.0, "nfe_accounting": bench.NFE_WHOLE_BATCH}
    text = bench.rows_table([fresh, reused], [("method", "method", ""), ("NFE", "nfe", "1")])
    assert "| MDLM | 7.9 |" in text and "| MDLM | 8.0* |" in text
    assert bench.reused_rows_caveat({"batch_counted_rows": 0}) == []
    assert "2 rows (NFE marked `*`)" in bench.reused_rows_caveat({"batch_counted_rows": 2})[0]


def test_curve_every_thins_checkpoints_but_keeps_final():
    curve = load_benchmark("qm9_training_curve.py")
    found = [(500, "checkpoint", Path("a")), (1000, "checkpoint", Path("b")),
             (1500, "checkpoint", Path("c")), (1700, "final", Path("f"))]  # fmt: skip
    assert curve.thin(found, 0) == found
    assert [f[0] for f in curve.thin(found, 1000)] == [1000, 1700]
    assert curve.parse_args(["--run", f"m={Path.cwd()}", "--every", "1000"]).every == 1000
    with pytest.raises(SystemExit):
        curve.parse_args(["--run", f"m={Path.cwd()}", "--every", "-1"])


def test_curve_resume_keeps_rows_it_did_not_resample():
    curve = load_benchmark("qm9_training_curve.py")

    def r(run, step, validity):
        return {"run": run, "step": step, "source": "checkpoint", "method": "MDLM", "steps": 32,
                "num_samples": 1000, "seed": 0, "batch_size": 500, "validity": validity}  # fmt: skip

    other = {**r("m", 1500, 0.9), "num_samples": 200}  # sampled with other settings: dropped
    final = {**r("m", 2000, 0.1), "source": "checkpoint"}  # the same point, now from final/
    earlier = (r("m", 500, 0.1), r("m", 1000, 0.2), r("gone", 500, 0.3), other, final)
    done = {curve.row_key(x): x for x in earlier}
    new = [{**r("m", 1000, 0.2), "nelbo": 0.5}, {**r("m", 2000, 0.4), "source": "final"}]
    settings = {"steps": 32, "num_samples": 1000, "seed": 0, "batch_size": 500}
    out = curve.sort_rows(curve.keep_done(new, done, settings), ["m"])
    assert [(x["run"], x["step"]) for x in out] == [
        ("gone", 500),  # measured by an earlier call: first
        ("m", 500),
        ("m", 1000),
        ("m", 2000),
    ]
    assert [x for x in out if x["step"] == 1000] == [new[0]]  # the fresh row wins, once
    assert [x for x in out if x["step"] == 2000] == [new[1]]


def test_weights_fingerprint_follows_the_bytes_and_enters_the_row_key(bench, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    first = bench.weights_fingerprint(tmp_path)
    assert len(first) == 16 and first == bench.weights_fingerprint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 9 + b"\x01")
    assert bench.weights_fingerprint(tmp_path) != first
    row = {k: 1 for k in bench.KEY_FIELDS if k != "weights"}
    assert bench.row_key({**row, "weights": first}) != bench.row_key({**row, "weights": "other"})
    assert bench.row_key(row) != bench.row_key({**row, "weights": first})  # unstamped rows
    with pytest.raises(SystemExit) as stop:
        bench.weights_fingerprint(tmp_path / "missing")
    assert stop.value.code == 2


def test_rows_of_absent_checkpoints_are_kept_once_and_only_for_their_study(bench, tmp_path):
    present = tmp_path / "present"
    present.mkdir()
    base = {"study": "unconditional", "method": "AR", "steps": 32}
    rows = [
        {**base, "model": "ar", "checkpoint": str(tmp_path / "gone"), "weights": None, "v": 1},
        {**base, "model": "ar", "checkpoint": str(tmp_path / "gone"), "weights": "ab", "v": 2},
        {**base, "model": "prism", "checkpoint": str(present)},  # on disk: re-measured, not kept
        {**base, "model": "mdlm", "checkpoint": str(tmp_path / "gone")},  # loaded: not kept
        {**base, "study": "guidance", "model": "ar-qed", "checkpoint": "runs/none", "gamma": 1},
    ]
    done = {bench.row_key(r): r for r in rows}
    kept = bench.absent_model_rows(done, {"mdlm": None}, "unconditional")
    assert [r["v"] for r in kept] == [2]
    assert bench.absent_model_rows(done, {}, "guidance", ("ring_count",)) == []
    assert [r["model"] for r in bench.absent_model_rows(done, {}, "guidance", ("qed",))] == [
        "ar-qed"
    ]


def test_regenerating_measures_new_weights_and_keeps_rows_of_absent_models(bench, tmp_path):
    """End to end on the shipped tiny checkpoints: a merged row measured on other weights at the
    same path is measured again, a merged row whose checkpoint is gone is kept and flagged."""
    import json

    from proseco.pretrained import shipped_checkpoints

    root = tmp_path / "ckpts"
    root.mkdir()
    for key in ("mdlm", "proseco"):
        (root / key).symlink_to(shipped_checkpoints()[key])
    common = {"study": "unconditional", "batch_size": 16, "seed": 0, "num_samples": 16}
    common |= {"eos_rule": "first", "steps": 2, "gamma": None, "nfe": 2.0, "seconds": 1.0}
    stale = {**common, "method": "MDLM", "model": "mdlm", "validity": 0.999, "weights": "0" * 16}
    stale["checkpoint"] = bench._short(root / "mdlm")
    gone = {**common, "method": "AR (left to right)", "model": "ar", "validity": 0.97}
    gone["checkpoint"] = "runs/qm9-ar-that-is-not-here/final"
    old_meta = {
        "checkpoints": {"ar": {"path": gone["checkpoint"], "info": "AR-TINY", "sequences": 9}}
    }
    merged = tmp_path / "old.json"
    merged.write_text(json.dumps({"meta": old_meta, "rows": [stale, gone]}))
    out = tmp_path / "out"
    args = ["--checkpoints", str(root), "--out", str(out), "--steps", "2", "--num-samples", "16"]
    args += ["--batch-size", "16", "--skip-guidance", "--skip-fcd", "--threads", "1"]
    assert bench.main([*args, "--merge-rows", str(merged)]) == 0
    rows = json.loads((out / "qm9_rows.json").read_text())["rows"]
    mdlm = [r for r in rows if r["method"] == "MDLM"]
    assert len(mdlm) == 1 and mdlm[0]["validity"] != 0.999
    assert mdlm[0]["weights"] == bench.weights_fingerprint(root / "mdlm")
    assert [r["validity"] for r in rows if r["model"] == "ar"] == [0.97]
    page = (out / "qm9.md").read_text()
    assert "AR-TINY" + bench.ABSENT_NOTE in page
    assert "1 rows (ar) come from checkpoints that were not present" in page


@pytest.mark.parametrize("content", [None, "{not json", '{"meta": {}}', "[1, 2]", '{"rows": 5}'])
def test_a_missing_or_corrupt_rows_file_is_one_line_and_exit_2(bench, tmp_path, capsys, content):
    rows = tmp_path / "rows.json"
    if content is not None:
        rows.write_text(content)
    args = ["--out", str(tmp_path / "out"), "--skip-guidance", "--merge-rows", str(rows)]
    with pytest.raises(SystemExit) as stop:
        bench.main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"qm9.py: error: {rows}") and "\n" not in err


def test_the_curve_places_final_at_its_exported_step(tmp_path):
    """A run resumed with a raised max_steps keeps its earlier final/ until it ends: the curve
    must place that final/ at the step it was exported at, not at the new max_steps."""
    curve = load_benchmark("qm9_training_curve.py")
    final = tmp_path / "final"
    final.mkdir()
    (final / "config.json").write_text("{}")
    config = {"train": {"max_steps": 40000}}
    assert curve.checkpoints_of(tmp_path, config) == [(40000, "final", final)]  # older exports
    (final / "export_info.json").write_text('{"step": 32000}')
    assert curve.checkpoints_of(tmp_path, config) == [(32000, "final", final)]


def test_a_fine_tuned_run_is_placed_after_its_base(bench, tmp_path):
    """ProSeCo fine-tuned from the shipped MDLM: its checkpoints sit at the base's steps plus its
    own, in the run's description, the table of qm9.md and the plot."""
    curve = load_benchmark("qm9_training_curve.py")
    base = tmp_path / "base"
    base.mkdir()
    (base / "export_info.json").write_text('{"step": 40000}')
    config = {"model": {"pretrained": str(base)}, "train": {"max_steps": 2500}}
    assert curve.base_step(config) == 40000
    assert curve.base_step({"model": {"preset": "cpu-small"}}) == 0
    assert curve.base_step({"model": {"pretrained": str(tmp_path)}}) == 0  # no step recorded
    assert f"fine-tuned from `{base}` (step 40,000); 2500 steps" in curve.run_info(config)
    row = {"run": "ft", "step": 1000, "base_step": 40000, "method": "ProSeCo S=1 every=1"}
    assert curve.total_step(row) == 41000 and curve.total_step({"step": 7}) == 7
    rows = [{**row, "validity": 0.7, "source": "final"}]
    rows.append({"run": "mdlm", "step": 40000, "method": "MDLM", "validity": 0.6})
    text = bench.curve_markdown({"meta": {}, "rows": rows})
    assert "| 40,000 | – | 60.0% |" in text and "| 41,000 | 70.0% | – |" in text
    assert "base's training steps plus its own" in text and "ft: step 41,000" in text
    curve.plot_curve(rows, tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_provenance_names_the_base_of_a_fine_tuned_checkpoint(bench, tmp_path):
    from types import SimpleNamespace

    import torch

    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(num_layers=5, hidden_size=256)
    (tmp_path / "config.yaml").write_text(
        "model: {pretrained: 'package:assets/qm9/mdlm', preset: cpu-tiny}\n"
        "train: {max_steps: 2500, global_batch_size: 128}\nloss: {sc_weight: 1.0}\n"
    )
    (tmp_path / "README.md").write_text("# x\n\nProduced by the recipe `r` on a CPU:\n")
    text, seen = bench.provenance(tmp_path, model)
    assert "config.yaml: fine-tuned from package:assets/qm9/mdlm, 2500 steps" in text
    assert "preset" not in text and text.endswith("on a CPU") and seen == 2500 * 128
