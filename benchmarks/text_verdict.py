"""The text study's judgement, as pure functions on result rows (``benchmarks/text.py`` uses them;
``tests/unit/test_text_benchmark.py`` pins them on hand-made rows).

A row is one point: ``method``, ``steps`` (T; None for the data and AR rows), ``nfe``, the point
values (``gen_ppl``, ``mauve``, ``entropy``, ...) and ``boot``: ``{metric: [draws] replicates}``
from resampling that point's samples (:mod:`proseco.eval.intervals`). Points are sampled
independently, so two points are compared replicate by replicate.

The rules, fixed before any result was seen:

* **Gate.** Methods are ranked only when MDLM at its largest T reaches MAUVE >= 0.3 and its
  validation NELBO is below the corpus's interpolated-bigram NLL; otherwise the verdict is
  ``inconclusive``.
* **Comparison.** Every ProSeCo-sampling point against each diffusion baseline at ProSeCo's NFE
  (the baseline's curve interpolated linearly in log NFE between its two nearest points, replicate
  by replicate; no extrapolation). ``better``: the 95 % intervals of the MAUVE difference lie
  above 0 and of the gen-PPL difference below 0, and ProSeCo's entropy is within 5 % of the
  data's. ``worse``: either interval on the wrong side of 0, or the entropy outside 5 %.
  Otherwise ``tie``.
* **Verdict.** ``held`` when, against every baseline present, at least half of the judged
  comparisons are ``better`` and none is ``worse``; else ``did not hold``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from proseco.eval.intervals import percentile_interval

MDLM, REMDM, PROSECO_PLAIN = "MDLM", "ReMDM loop (eta 0.02)", "ProSeCo model, no corrector"
PRISM, UDLM = "MDLM + PRISM (fine-tuned head)", "UDLM"
DATA, AR = "Data (KJV training chunks)", "AR (left to right)"
BASELINES = (MDLM, REMDM, PRISM, UDLM)  # judged against ProSeCo at equal NFE
GATE_MAUVE = 0.3
ENTROPY_TOLERANCE = 0.05


def is_proseco_sampling(method: str) -> bool:
    return method.startswith("ProSeCo S=")


def interpolation(nfes: list[float], nfe: float) -> list[tuple[int, float]] | None:
    """How to read a curve at ``nfe``: ``[(index, weight), ...]`` into ``nfes`` (sorted
    ascending), linear in log NFE between the two nearest points; None outside the range."""
    if not nfes or nfe < nfes[0] * 0.999 or nfe > nfes[-1] * 1.001:
        return None
    for i, (x0, x1) in enumerate(zip(nfes, nfes[1:])):
        if x0 <= nfe <= x1:
            if x1 == x0:
                return [(i, 1.0)]
            w = (math.log(nfe) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return [(i, 1.0 - w), (i + 1, w)]
    nearest = min(range(len(nfes)), key=lambda i: abs(nfes[i] - nfe))
    return [(nearest, 1.0)]


def read_curve(rows: list[dict[str, Any]], nfe: float, key: str) -> tuple | None:
    """``(point value, [draws] replicates)`` of the curve ``rows`` at ``nfe`` (or None)."""
    rows = sorted((r for r in rows if r.get(key) is not None), key=lambda r: r["nfe"])
    plan = interpolation([r["nfe"] for r in rows], nfe)
    if plan is None:
        return None
    value = sum(w * rows[i][key] for i, w in plan)
    boot = sum(w * torch.tensor(rows[i]["boot"][key], dtype=torch.float64) for i, w in plan)
    return value, boot


def difference(a: tuple, b: tuple) -> dict[str, float]:
    """``a - b`` and its 95 % interval from two ``(value, replicates)`` pairs."""
    diff = a[0] - b[0]
    low, high = percentile_interval(a[1] - b[1], center=diff)
    return {"diff": diff, "low": low, "high": high}


def entropy_ok(entropy: float | None, data_entropy: float | None) -> bool | None:
    if entropy is None or data_entropy is None:
        return None
    return abs(entropy - data_entropy) <= ENTROPY_TOLERANCE * data_entropy


def outcome(mauve: dict | None, ppl: dict | None, entropy_within: bool | None) -> str:
    """``better`` / ``worse`` / ``tie`` by the rule in the module docstring."""
    if mauve is None or ppl is None:
        return "not judged"
    if mauve["high"] < 0 or ppl["low"] > 0 or entropy_within is False:
        return "worse"
    if mauve["low"] > 0 and ppl["high"] < 0 and entropy_within:
        return "better"
    return "tie"


def comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ProSeCo-sampling point against each baseline present, at the point's NFE."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    data_entropy = next((r["entropy"] for r in rows if r["method"] == DATA), None)
    out = []
    for row in rows:
        if not is_proseco_sampling(row["method"]):
            continue
        for base in BASELINES:
            if base not in by_method:
                continue
            entry = {"proseco": row["method"], "T": row["steps"], "nfe": row["nfe"], "vs": base}
            for key in ("mauve", "gen_ppl"):
                other = read_curve(by_method[base], row["nfe"], key)
                mine = (row[key], torch.tensor(row["boot"][key], dtype=torch.float64))
                entry[key] = None if other is None or row[key] is None else difference(mine, other)
            entry["entropy_ok"] = entropy_ok(row["entropy"], data_entropy)
            entry["outcome"] = outcome(entry["mauve"], entry["gen_ppl"], entry["entropy_ok"])
            out.append(entry)
    return out


def gate(rows: list[dict[str, Any]], mdlm_nelbo: float, bigram_nelbo: float) -> dict[str, Any]:
    """The gate on MDLM's largest-T point and its validation NELBO."""
    mdlm = [r for r in rows if r["method"] == MDLM and r.get("mauve") is not None]
    top = max(mdlm, key=lambda r: r["steps"], default=None)
    mauve = None if top is None else top["mauve"]
    passed = mauve is not None and mauve >= GATE_MAUVE and mdlm_nelbo < bigram_nelbo
    return {"mdlm_mauve": mauve, "mdlm_T": None if top is None else top["steps"],
            "mdlm_nelbo": mdlm_nelbo, "bigram_nelbo": bigram_nelbo,
            "passed": bool(passed)}  # fmt: skip


def verdict(gate_result: dict[str, Any], comps: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"verdict": held | did not hold | inconclusive, "per_baseline": {...}}``."""
    per: dict[str, dict[str, int]] = {}
    for c in comps:
        tally = per.setdefault(c["vs"], {"better": 0, "tie": 0, "worse": 0, "judged": 0})
        if c["outcome"] != "not judged":
            tally[c["outcome"]] += 1
            tally["judged"] += 1
    for tally in per.values():
        tally["held"] = (
            tally["judged"] > 0 and tally["worse"] == 0 and 2 * tally["better"] >= tally["judged"]
        )
    if not gate_result["passed"] or not any(t["judged"] for t in per.values()):
        word = "inconclusive"
    else:
        judged = [t for t in per.values() if t["judged"]]
        word = "held" if all(t["held"] for t in judged) else "did not hold"
    return {"verdict": word, "per_baseline": per}
