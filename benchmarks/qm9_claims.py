"""Judging the paper's three QM9 claims from benchmark rows: pure functions, no torch, no RDKit.

``benchmarks/qm9.py`` measures; this module decides. A row is a dict with at least ``steps``,
``nfe`` (model calls per sample) and ``validity`` for the unconditional claims, and
``{prop}_novel_mean`` / ``num_novel_unique`` for the guidance claim (the keys of
:func:`proseco.eval.molecules.molecule_metrics`). Every judgement returns a :class:`ClaimResult`
with a verdict (``"held"``, ``"did not hold"`` or ``"not testable"``), a one-paragraph plain
explanation with the numbers, and the per-point comparisons it rests on.

The rules, fixed before looking at any result:

(a) *At equal NFE, ProSeCo sampling gives higher validity than MDLM when T is small.* Every
    ProSeCo-sampling row with ``T <= 4`` (or, without such rows, the two smallest ``T``) is
    compared with MDLM's validity interpolated linearly in ``log2(NFE)`` at that row's NFE. Outside
    MDLM's NFE range the nearest MDLM value is used (clamped, never extrapolated) and the
    explanation says so. Held iff ProSeCo is strictly higher at every compared point.
(b) *ProSeCo reaches MDLM's best validity with at most half its NFEs.* ``v*`` = MDLM's best
    validity, ``n*`` = the fewest NFE at which MDLM reaches it; ``n_p`` = the fewest NFE of a
    ProSeCo-sampling row with validity ``>= v*`` (measured rows only, no interpolation). Held iff
    ``n_p <= n*/2``.
(c) *Guidance: ProSeCo's novelty-property frontier lies up and to the right of MDLM's*, judged
    separately for each guided property (ring count, QED). ProSeCo's frontier is the upper
    envelope (Pareto set, joined by straight lines) of its novel-molecule count as a function of
    the novel molecules' mean property. Each MDLM point is beaten if that frontier, at the MDLM
    point's property mean, is strictly above the MDLM point's novel count. Below ProSeCo's
    smallest property mean the frontier is the count of its leftmost point (that point dominates);
    above ProSeCo's largest property mean the frontier does not exist and the MDLM point is *not*
    beaten. Held iff more than half of the MDLM points with defined values are beaten.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ClaimResult",
    "HELD",
    "NOT_HELD",
    "NOT_TESTABLE",
    "interpolate_log2",
    "pareto_frontier",
    "frontier_value",
    "small_steps",
    "validity_se",
    "judge_small_t_validity",
    "judge_half_nfe",
    "judge_guidance_frontier",
    "claim_c_statement",
]

HELD, NOT_HELD, NOT_TESTABLE = "held", "did not hold", "not testable"
Position = Literal["inside", "below", "above"]


@dataclass(frozen=True)
class ClaimResult:
    """The judgement of one claim.

    Attributes:
        claim: ``"a"``, ``"b"`` or ``"c"``.
        statement: the paper's claim, in words.
        verdict: ``"held"``, ``"did not hold"`` or ``"not testable"``.
        explanation: one plain paragraph with the numbers behind the verdict.
        details: the per-point comparisons (dicts, for a table).
    """

    claim: str
    statement: str
    verdict: str
    explanation: str
    details: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------- numerics
def interpolate_log2(points: Iterable[tuple[float, float]], x: float) -> tuple[float, Position]:
    """``y`` at ``x`` on the polyline through ``points`` ``(x, y)``, linear in ``log2(x)``.

    Points with the same ``x`` are averaged. Outside the range of ``x`` the end value is returned
    (clamped, never extrapolated) and the position says which side: ``"below"`` / ``"above"``.

    Raises:
        ValueError: with no points, or a non-positive ``x``.
    """
    by_x: dict[float, list[float]] = {}
    for px, py in points:
        if px <= 0:
            raise ValueError(f"interpolate_log2 needs x > 0 (an NFE), got {px}")
        by_x.setdefault(float(px), []).append(float(py))
    if not by_x:
        raise ValueError("interpolate_log2 needs at least one (x, y) point")
    if x <= 0:
        raise ValueError(f"interpolate_log2 needs x > 0 (an NFE), got {x}")
    xs = sorted(by_x)
    ys = [sum(by_x[v]) / len(by_x[v]) for v in xs]
    if x < xs[0]:
        return ys[0], "below"
    if x > xs[-1]:
        return ys[-1], "above"
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            w = (math.log2(x) - math.log2(x0)) / (math.log2(x1) - math.log2(x0))
            return y0 + w * (y1 - y0), "inside"
    return ys[-1], "inside"  # x == xs[0] == xs[-1]


def pareto_frontier(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points ``(x, y)`` not dominated when maximising both, sorted by ``x`` ascending.

    Along the result ``x`` increases and ``y`` strictly decreases. A point equal to another on one
    coordinate and lower on the other is dominated; exact duplicates appear once.
    """
    frontier: list[tuple[float, float]] = []
    for x, y in sorted({(float(x), float(y)) for x, y in points}, key=lambda p: (-p[0], -p[1])):
        if not frontier or y > frontier[-1][1]:
            frontier.append((x, y))
    return frontier[::-1]


def frontier_value(frontier: Sequence[tuple[float, float]], x: float) -> float | None:
    """Height of a :func:`pareto_frontier` at ``x`` (straight lines between its points).

    Left of the frontier the height of its leftmost point (which dominates there); right of it
    ``None``: the frontier does not reach ``x``.
    """
    if not frontier:
        return None
    if x > frontier[-1][0]:
        return None
    if x <= frontier[0][0]:
        return frontier[0][1]
    for (x0, y0), (x1, y1) in zip(frontier, frontier[1:]):
        if x0 <= x <= x1:
            return y0 + (x - x0) / (x1 - x0) * (y1 - y0)
    return frontier[-1][1]  # unreachable: x lies within [first x, last x]


def small_steps(steps: Iterable[int], limit: int = 4) -> list[int]:
    """The step counts ``T <= limit``, or, if there are none, the two smallest."""
    distinct = sorted(set(int(t) for t in steps))
    small = [t for t in distinct if t <= limit]
    return small or distinct[:2]


def validity_se(p: float, n: int) -> float:
    """Binomial standard error of a validity ``p`` estimated from ``n`` samples."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n > 0 else float("nan")


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _usable(rows: Iterable[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) is not None for k in keys)]


def _label(row: dict[str, Any]) -> str:
    return f"{row.get('method', '?')} T={row['steps']}"


# --------------------------------------------------------------------- claim (a)
CLAIM_A = "At equal NFE, ProSeCo sampling gives higher validity than MDLM when T is small."


def judge_small_t_validity(
    mdlm_rows: Sequence[dict[str, Any]],
    proseco_rows: Sequence[dict[str, Any]],
    *,
    limit: int = 4,
    reference_name: str = "MDLM",
) -> ClaimResult:
    """Claim (a); see the module docstring. ``proseco_rows``: ProSeCo-sampling rows only."""
    ref = _usable(mdlm_rows, "nfe", "validity")
    cand = _usable(proseco_rows, "nfe", "validity", "steps")
    if not ref or not cand:
        missing = "MDLM" if not ref else "ProSeCo-sampling"
        return ClaimResult("a", CLAIM_A, NOT_TESTABLE, f"No {missing} rows with a validity.")
    chosen = small_steps((r["steps"] for r in cand), limit)
    curve = [(r["nfe"], r["validity"]) for r in ref]
    details, parts, clamped = [], [], []
    for r in sorted(
        (r for r in cand if r["steps"] in chosen), key=lambda r: (r["steps"], r["nfe"])
    ):
        v_ref, where = interpolate_log2(curve, r["nfe"])
        n = int(r.get("num_samples") or 0)
        se = math.hypot(validity_se(r["validity"], n), validity_se(v_ref, n)) if n else None
        margin = r["validity"] - v_ref
        details.append(
            {
                "point": _label(r),
                "NFE": r["nfe"],
                "validity": r["validity"],
                f"{reference_name} at same NFE": v_ref,
                "margin": margin,
                "reference": "interpolated" if where == "inside" else f"clamped ({where} range)",
                "higher": margin > 0,
            }
        )
        noisy = se is not None and abs(margin) < 2 * se
        parts.append(
            f"{_label(r)} ({r['nfe']:.1f} NFE): {_pct(r['validity'])} vs {_pct(v_ref)}"
            + (" (within 2 standard errors)" if noisy else "")
        )
        if where != "inside":
            clamped.append(f"{_label(r)} ({where} {reference_name}'s NFE range)")
    wins = sum(d["higher"] for d in details)
    verdict = HELD if wins == len(details) else NOT_HELD
    text = (
        f"Compared {len(details)} ProSeCo-sampling points at T in {chosen} with {reference_name}'s "
        f"validity interpolated linearly in log2(NFE) at the same NFE; ProSeCo was higher at "
        f"{wins} of {len(details)}: " + "; ".join(parts) + "."
    )
    if clamped:
        text += (
            f" Extrapolation would have been needed for {', '.join(clamped)}; there the nearest "
            f"measured {reference_name} value was used instead."
        )
    return ClaimResult("a", CLAIM_A, verdict, text, details)


# --------------------------------------------------------------------- claim (b)
CLAIM_B = "ProSeCo reaches MDLM's best validity with at most half of MDLM's NFEs."


def judge_half_nfe(
    mdlm_rows: Sequence[dict[str, Any]], proseco_rows: Sequence[dict[str, Any]]
) -> ClaimResult:
    """Claim (b); see the module docstring. ``proseco_rows``: ProSeCo-sampling rows only."""
    ref = _usable(mdlm_rows, "nfe", "validity")
    cand = _usable(proseco_rows, "nfe", "validity")
    if not ref or not cand:
        missing = "MDLM" if not ref else "ProSeCo-sampling"
        return ClaimResult("b", CLAIM_B, NOT_TESTABLE, f"No {missing} rows with a validity.")
    best = max(ref, key=lambda r: (r["validity"], -r["nfe"]))
    v_star, n_star = best["validity"], best["nfe"]
    if v_star <= 0:
        return ClaimResult("b", CLAIM_B, NOT_TESTABLE, "MDLM produced no valid molecule at all.")
    reached = sorted((r for r in cand if r["validity"] >= v_star), key=lambda r: r["nfe"])
    details = [{"MDLM best validity": v_star, "at NFE": n_star, "point": _label(best)}]
    head = (
        f"MDLM's best validity is {_pct(v_star)}, first reached at {n_star:.1f} NFE "
        f"({_label(best)})."
    )
    if not reached:
        top = max(cand, key=lambda r: (r["validity"], -r["nfe"]))
        text = (
            f"{head} No ProSeCo-sampling point reached it; the best was {_pct(top['validity'])} "
            f"at {top['nfe']:.1f} NFE ({_label(top)})."
        )
        return ClaimResult("b", CLAIM_B, NOT_HELD, text, details)
    first = reached[0]
    ratio = first["nfe"] / n_star
    details[0].update(
        {"ProSeCo point": _label(first), "ProSeCo NFE": first["nfe"], "NFE ratio": ratio}
    )
    verdict = HELD if first["nfe"] <= n_star / 2 else NOT_HELD
    text = (
        f"{head} ProSeCo sampling first reached at least that with {_label(first)}: "
        f"{_pct(first['validity'])} at {first['nfe']:.1f} NFE, {ratio:.2f}x MDLM's NFE "
        f"(the claim needs at most 0.50x, i.e. {n_star / 2:.1f} NFE)."
    )
    return ClaimResult("b", CLAIM_B, verdict, text, details)


# --------------------------------------------------------------------- claim (c)
def claim_c_statement(property_name: str = "ring count") -> str:
    """The paper's claim (c) for guidance towards a high ``property_name``."""
    return (
        f"With guidance towards a high {property_name}, ProSeCo's frontier (novel molecules vs "
        f"their mean {property_name}) lies up and to the right of MDLM's."
    )


CLAIM_C = claim_c_statement()


def judge_guidance_frontier(
    mdlm_rows: Sequence[dict[str, Any]],
    proseco_rows: Sequence[dict[str, Any]],
    *,
    prop: str = "ring_count_novel_mean",
    count: str = "num_novel_unique",
    property_name: str = "ring count",
    reference_name: str = "MDLM",
) -> ClaimResult:
    """Claim (c) for one property; see the module docstring. Rows are guided samples of each
    model; ``prop`` is the row key of the novel molecules' mean property, ``property_name`` its
    name in the statement, the explanation and the details; ``reference_name`` names the method
    of ``mdlm_rows`` (another baseline than MDLM: AR, UDLM, ReMDM)."""
    statement = claim_c_statement(property_name)
    ref = _usable(mdlm_rows, prop, count)
    cand = _usable(proseco_rows, prop, count)
    skipped = len(mdlm_rows) - len(ref)
    if not ref or not cand:
        missing = reference_name if not ref else "ProSeCo"
        return ClaimResult(
            "c", statement, NOT_TESTABLE, f"No {missing} guidance rows with novel molecules."
        )
    frontier = pareto_frontier((r[prop], r[count]) for r in cand)
    details, beyond = [], 0
    for r in sorted(ref, key=lambda r: r[prop]):
        height = frontier_value(frontier, r[prop])
        beyond += height is None
        details.append(
            {
                f"{reference_name} point": f"T={r['steps']} gamma={r.get('gamma')}",
                f"{property_name} mean": r[prop],
                f"{reference_name} novel": r[count],
                "ProSeCo frontier": height,
                "beaten": height is not None and height > r[count],
            }
        )
    wins = sum(d["beaten"] for d in details)
    verdict = HELD if wins > len(details) / 2 else NOT_HELD
    text = (
        f"ProSeCo's frontier (the upper envelope of novel-molecule count against mean "
        f"{property_name} of the novel molecules, over its {len(cand)} guided points; "
        f"{len(frontier)} of them on the envelope) is above {reference_name} at {wins} of "
        f"{len(details)} {reference_name} points (held needs more than {len(details) / 2:g})."
    )
    if beyond:
        text += (
            f" At {beyond} of them {reference_name}'s {property_name} mean is higher than any ProSeCo "
            f"point's (max {frontier[-1][0]:.3g}); the frontier does not reach there, so they "
            "count as not beaten."
        )
    if skipped:
        text += f" {skipped} {reference_name} point(s) had no novel molecule and were left out."
    return ClaimResult("c", statement, verdict, text, details)
