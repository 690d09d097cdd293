"""Regenerate ``docs/results/qm9.md``: MDLM vs ProSeCo on QM9, from trained checkpoints.

Two studies, every point with the same seed and ``--num-samples`` molecules, every molecule
decoded with the stop-at-first-``<eos>`` rule (the research code's rule is reported alongside):

* **Unconditional**, for every ``T`` in ``--steps``: MDLM model + MDLM sampling; MDLM model +
  ReMDM (``loop`` with the public defaults, ``cap`` with eta 0.02); ProSeCo model + MDLM sampling;
  ProSeCo model + ProSeCo sampling (S=1 every=1, S=2 every=2). Validity / uniqueness / novelty
  (and FCD against held-out QM9 where ``fcd-torch`` is installed) against the exact NFE the
  sampler reports (table, ``qm9_validity_vs_nfe.png``).
* **Guidance** (the paper's QM9 figure), for each property in ``--properties`` whose
  class-conditional models exist (ring count: ``mdlm-ring/`` ``proseco-ring/``; QED:
  ``mdlm-qed/`` ``proseco-qed/``): MDLM sampling of the MDLM model vs ProSeCo sampling (S=1
  every=1, guided corrector) of the ProSeCo model, condition 1 (property above the dataset's 90th
  percentile), gamma in ``--gammas``, T in ``--guidance-steps``; number of novel molecules against
  the mean (and std) of the property over the novel molecules (table, one panel per property in
  ``qm9_guidance_frontier.png``).

The paper's three claims are then judged by the fixed rules of ``benchmarks/qm9_claims.py`` (claim
(c) once per property) and the verdicts written into the report with their numbers. Raw rows go
to ``qm9_rows.json``. If ``qm9_training_curve.json`` (from ``benchmarks/qm9_training_curve.py``)
is in ``--out``, its validity-vs-training-steps table and plot are embedded too.

Usage::

    python benchmarks/qm9.py --checkpoints DIR --out docs/results [--num-samples 1000]
        [--batch-size 500] [--seed 0] [--steps 2 4 8 16 32] [--guidance-steps 8 16 32]
        [--gammas 0 0.5 1 1.5 2 3] [--properties ring_count qed] [--skip-guidance] [--quick]

``DIR`` holds model directories ``mdlm/``, ``proseco/`` and optionally ``mdlm-ring/``,
``proseco-ring/``, ``mdlm-qed/``, ``proseco-qed/`` (each a ``save_pretrained`` directory, or a
``proseco train`` run directory with ``final/``); default: the checkpoints shipped in
``proseco/assets/qm9``. A property whose two models are missing is skipped with a note.
``--quick`` (64 samples, T in {2, 4}) is a smoke test.
``--resume`` reuses the rows of an interrupted run (same samples, seed, batch size, checkpoint
path and weights, decoding rule); ``--merge-rows`` adds rows of parallel runs (e.g.
``--only-models``). Rows carry a fingerprint of their model's weights, so rows measured on
earlier weights saved at the same path are measured again. Reused rows of a model whose
checkpoint path is absent on this machine are kept as measured and flagged on the page.
On a CPU shared with other jobs pass ``--threads 1``: two busy-waiting torch threads competing for
two cores made sampling ~8x slower in our measurements.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import qm9_claims as claims

REPO = Path(__file__).resolve().parents[1]
UNCOND_KEYS = ("mdlm", "proseco")
MDLM, PROSECO_MODEL_MDLM = "MDLM", "ProSeCo model + MDLM sampling"
EOS_RULE = "first"  # a molecule ends at its first <eos>; rows record it (key field eos_rule)


@dataclass(frozen=True)
class GuidedProperty:
    """One panel of the guidance figure: a QM9 property and its class-conditional models.

    Attributes:
        name: the data label and metric name (``"ring_count"``, ``"qed"``).
        title: how the page and the figure name it.
        tag: suffix of the model keys (``mdlm-<tag>``, ``proseco-<tag>``).
        decimals: decimals of its means in tables.
    """

    name: str
    title: str
    tag: str
    decimals: int = 2

    @property
    def mdlm_key(self) -> str:
        return f"mdlm-{self.tag}"

    @property
    def proseco_key(self) -> str:
        return f"proseco-{self.tag}"

    @property
    def mdlm_method(self) -> str:
        return f"MDLM-{self.tag} + MDLM sampling"

    @property
    def proseco_method(self) -> str:
        return f"ProSeCo-{self.tag} + ProSeCo S=1 every=1"

    @property
    def ar_key(self) -> str:
        return f"ar-{self.tag}"

    @property
    def udlm_key(self) -> str:
        return f"udlm-{self.tag}"

    @property
    def remdm_method(self) -> str:
        return f"MDLM-{self.tag} + ReMDM loop (eta 0.02)"

    @property
    def ar_method(self) -> str:
        return f"AR-{self.tag} (left to right)"

    @property
    def udlm_method(self) -> str:
        return f"UDLM-{self.tag}"

    @property
    def baseline_keys(self) -> tuple[str, str]:
        """Optional models of this panel: used when their directories exist."""
        return (self.ar_key, self.udlm_key)


PROPERTIES = {
    p.name: p
    for p in (
        GuidedProperty("ring_count", "ring count", "ring"),
        GuidedProperty("qed", "QED", "qed", 3),
    )
}
GUIDED_KEYS = tuple(k for p in PROPERTIES.values() for k in (p.mdlm_key, p.proseco_key))
# The other baselines of the paper (issue 13): optional, used when their model dirs exist.
AR, UDLM, PRISM = "AR (left to right)", "UDLM", "MDLM + PRISM (fine-tuned head)"
PRISM_ONE = "MDLM + PRISM, 1 remask per step"
BASELINE_KEYS = ("ar", "udlm", "prism")
GUIDED_BASELINE_KEYS = tuple(k for p in PROPERTIES.values() for k in p.baseline_keys)
OPTIONAL_KEYS = BASELINE_KEYS + GUIDED_BASELINE_KEYS
ALL_KEYS = UNCOND_KEYS + GUIDED_KEYS + OPTIONAL_KEYS
# Method families: one colour each in the guidance figure; a new baseline adds an entry.
FAMILIES = {
    **{p.mdlm_method: "MDLM" for p in PROPERTIES.values()},
    **{p.proseco_method: "ProSeCo" for p in PROPERTIES.values()},
    **{p.remdm_method: "ReMDM" for p in PROPERTIES.values()},
    **{p.ar_method: "AR" for p in PROPERTIES.values()},
    **{p.udlm_method: "UDLM" for p in PROPERTIES.values()},
}
FAMILY_COLORS = {
    "MDLM": "tab:gray",
    "ProSeCo": "tab:green",
    "ReMDM": "tab:purple",
    "AR": "tab:blue",
    "UDLM": "tab:orange",
}
PAPER_BUDGET = "a DiT 'small' (~86 M non-embedding parameters) for 25,000 steps at batch 2048"
PAPER_SEQUENCES = 25_000 * 2048
PERCENT_KEYS = ("validity", "same NFE", "margin")
CURVE_JSON, CURVE_PNG = "qm9_training_curve.json", "qm9_training_curve.png"


# --------------------------------------------------------------------- settings
def unconditional_settings(steps: list[int], keys: Sequence[str] | None = None) -> list:
    """The unconditional grid, in table order (method-major); ``keys``: only the settings of
    these models (default: all)."""
    from proseco.eval.study import SamplerSetting as S
    from proseco.sampling import Corrector, ReMDM, SamplingConfig

    grid = []
    for t in steps:
        c = SamplingConfig(steps=t)
        grid += [
            S(MDLM, "mdlm", c),
            S("MDLM + ReMDM loop (eta 0.02)", "mdlm", c.replace(unmasking=ReMDM("loop", eta=0.02))),
            S("MDLM + ReMDM cap (eta 0.02)", "mdlm", c.replace(unmasking=ReMDM("cap", eta=0.02))),
            S(PROSECO_MODEL_MDLM, "proseco", c),
            S("ProSeCo S=1 every=1", "proseco", c.replace(corrector=Corrector(steps=1, every=1))),
            S("ProSeCo S=2 every=2", "proseco", c.replace(corrector=Corrector(steps=2, every=2))),
            S(UDLM, "udlm", c),
        ]
        if keys is None or "prism" in keys:
            grid.append(S(PRISM, "prism", c.replace(unmasking=prism_strategy())))
            one = prism_strategy(eta=0.0, num_remask=1)
            grid.append(S(PRISM_ONE, "prism", c.replace(unmasking=one)))
    grid.append(S(AR, "ar", SamplingConfig()))  # one point: one call per generated token
    if keys is not None:
        grid = [s for s in grid if s.model in keys]
    order = list(dict.fromkeys(s.method for s in grid))
    return sorted(grid, key=lambda s: (order.index(s.method), s.steps or 0))


def prism_strategy(**settings: Any) -> Any:
    """PRISM's sampler (:class:`proseco.Prism`): the public code's schedule (eta 0.01 on the
    second half of the steps), or ``settings`` (``eta=0, num_remask=1``: one remask per step,
    which suits 32-token molecules better: eta 0.01 remasks a token on about 1 step in 3)."""
    from proseco.sampling import get_unmasking

    return get_unmasking({"name": "prism", **settings})


def guidance_settings(
    steps: list[int], gammas: list[float], properties: Sequence[str] = ("ring_count",)
) -> list:
    """The guidance grid: for each property, its models at every (T, gamma), condition 1 (above
    the 90th percentile): MDLM, ProSeCo with S=1 every=1 and the guided corrector, ReMDM (loop,
    eta 0.02) on the MDLM model, UDLM; AR at every gamma (it has no T). Settings of models that
    are not there are dropped by the caller."""
    from proseco.eval.study import SamplerSetting as S
    from proseco.sampling import Corrector, Guidance, ReMDM, SamplingConfig

    grid = []
    remdm = ReMDM("loop", eta=0.02)
    for prop in properties:
        p = PROPERTIES[prop]
        for method, key, s, unmasking in (
            (p.mdlm_method, p.mdlm_key, 0, None),
            (p.proseco_method, p.proseco_key, 1, None),
            (p.remdm_method, p.mdlm_key, 0, remdm),
            (p.udlm_method, p.udlm_key, 0, None),
        ):
            corrector = Corrector(steps=s, every=1) if s else None
            for t in steps:
                for g in gammas:
                    guidance = Guidance(gamma=g, condition=1, in_corrector=True)
                    config = SamplingConfig(t, corrector=corrector, guidance=guidance)
                    if unmasking is not None:
                        config = config.replace(unmasking=unmasking)
                    grid.append(S(method, key, config))
        for g in gammas:  # AR has no T: one call per generated token, two when guided
            guidance = Guidance(gamma=g, condition=1)
            grid.append(S(p.ar_method, p.ar_key, SamplingConfig(guidance=guidance)))
    return grid


def property_of(model_key: str) -> str | None:
    """The guided property of a model key (``"proseco-qed"`` -> ``"qed"``), else None."""
    for p in PROPERTIES.values():
        if model_key in (p.mdlm_key, p.proseco_key, *p.baseline_keys):
            return p.name
    return None


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2 (bad input: a missing or unreadable file or dir)."""
    print(f"qm9.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# --------------------------------------------------------------------- checkpoints
def find_model_dir(root: Path, key: str) -> Path | None:
    """``root/key`` or ``root/key/final`` if it holds a ``config.json``, else None."""
    for path in (root / key, root / key / "final"):
        if (path / "config.json").is_file():
            return path
    return None


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def weights_fingerprint(path: Path) -> str:
    """The first 16 hex digits of a SHA-256 over the weight files of the model dir ``path``
    (``*.safetensors``, else ``*.bin``, in name order). Rows carry it in their key, so a row measured
    on other weights saved at the same path is never reused."""
    import hashlib

    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files:
        fail(f"{path} holds no *.safetensors or *.bin weights")
    digest = hashlib.sha256()
    for f in files:
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def provenance(path: Path, model: Any) -> tuple[str, int | None]:
    """One line (size, then the training recipe read from files next to the model, if any) and
    the number of training sequences seen, if known."""
    import yaml

    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    bits = [f"{n / 1e6:.2f} M params ({cfg.num_layers} layers x {cfg.hidden_size})"]
    seen = None
    for where in (path, path.parent):
        info = where / "training_info.json"
        if info.is_file():
            record = json.loads(info.read_text())
            bits += [f"{k}={v}" for k, v in record.items() if isinstance(v, (str, int, float))][:10]
        recipe = where / "config.yaml"
        if recipe.is_file():
            c = yaml.safe_load(recipe.read_text()) or {}
            tr, loss, data = c.get("train", {}), c.get("loss", {}), c.get("data", {})
            if tr.get("max_steps") and tr.get("global_batch_size"):
                seen = int(tr["max_steps"]) * int(tr["global_batch_size"])
            spec = c.get("model", {})
            start = (
                f"fine-tuned from {spec['pretrained']}"
                if spec.get("pretrained")
                else f"preset {spec.get('preset')}"
            )
            bits.append(
                f"config.yaml: {start}, "
                f"{tr.get('max_steps')} steps x batch {tr.get('global_batch_size')}, "
                f"sc_weight {loss.get('sc_weight')}, label {data.get('label')}"
            )
        readme = where / "README.md"
        if readme.is_file():
            lines = [x.strip() for x in readme.read_text().splitlines()]
            bits += [x.rstrip(":") for x in lines if x and not x.startswith("#")][:1]
    return "; ".join(bits), seen


def load_models(
    root: Path,
    skip_guidance: bool,
    only: tuple[str, ...] | None = None,
    properties: Sequence[str] = tuple(PROPERTIES),
) -> tuple[dict, dict, dict[str, str]]:
    """``(models, paths, skipped)``: ``skipped`` maps each guided property that will not be run
    to the reason (a note for the page). ``only`` limits the models loaded (and so the settings
    run) to these keys."""
    from proseco.eval.study import load_model_dir

    skipped = {p: "not among --properties" for p in PROPERTIES if p not in properties}
    if only:
        unknown = sorted(set(only) - set(ALL_KEYS))
        if unknown:
            fail(f"unknown model keys {unknown}; use {ALL_KEYS}")
        paths = {k: find_model_dir(root, k) for k in only}
        missing = [k for k, p in paths.items() if p is None]
        if missing:
            fail(f"{root} lacks the model dirs {missing}")
        for prop in properties:
            p = PROPERTIES[prop]
            if skip_guidance:
                skipped[prop] = "--skip-guidance was given"
            elif not {p.mdlm_key, p.proseco_key, *p.baseline_keys} & set(only):
                skipped[prop] = "its models are not among --only-models"
        return {k: load_model_dir(p) for k, p in paths.items()}, paths, skipped

    paths = {k: find_model_dir(root, k) for k in ALL_KEYS}
    absent = ", ".join(f"{k}/" for k in UNCOND_KEYS if paths[k] is None)
    if absent:
        fail(
            f"{root} lacks the model dirs {absent} (each needs a config.json); train them "
            "with `proseco train qm9-mdlm-cpu` / `qm9-proseco-cpu` or pass --checkpoints DIR"
        )
    for prop in properties:
        p = PROPERTIES[prop]
        absent = ", ".join(f"{k}/" for k in (p.mdlm_key, p.proseco_key) if paths[k] is None)
        if skip_guidance:
            skipped[prop] = "--skip-guidance was given"
        elif absent:
            skipped[prop] = f"the {p.title} model dirs {absent} are missing in {root}"
    keys = list(UNCOND_KEYS) + [k for k in BASELINE_KEYS if paths[k] is not None]
    for prop in properties:
        if prop not in skipped:
            p = PROPERTIES[prop]
            keys += [p.mdlm_key, p.proseco_key]
            keys += [k for k in p.baseline_keys if paths[k] is not None]
    models = {k: load_model_dir(paths[k]) for k in keys}
    for prop in properties:
        p = PROPERTIES[prop]
        if prop in skipped:
            continue
        flat = [
            k
            for k in (p.mdlm_key, p.proseco_key, *p.baseline_keys)
            if k in models and not getattr(models[k][0].config, "num_classes", 0)
        ]
        if flat:
            skipped[prop] = f"{', '.join(flat)} are not class-conditional (config.num_classes = 0)"
            for k in (p.mdlm_key, p.proseco_key, *p.baseline_keys):
                models.pop(k, None)
    skipped = {p: skipped[p] for p in PROPERTIES if p in skipped}
    return models, {k: paths[k] for k in models}, skipped


# --------------------------------------------------------------------- running
KEY_FIELDS = (
    "study",
    "method",
    "steps",
    "gamma",
    "num_samples",
    "seed",
    "batch_size",
    "checkpoint",
    "weights",
    "eos_rule",
)
# Rows written before the decoding rule was recorded were decoded with the research rule; rows
# written before weights were fingerprinted (``weights`` None) match no checkpoint.
KEY_DEFAULTS = {"eos_rule": "research"}


def row_key(row: dict) -> tuple:
    """The identity of a row for --resume / --merge-rows."""
    return tuple(row.get(k, KEY_DEFAULTS.get(k)) for k in KEY_FIELDS)


def row_property(row: dict) -> str | None:
    """The guided property of a guidance row (older rows carry only the model key)."""
    return row.get("property") or property_of(str(row.get("model", "")))


def fcd_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("fcd_torch") is not None


def fcd_of(smiles: list[str], reference: list[str]) -> float | None:
    """FCD of the valid molecules among ``smiles`` (canonical, duplicates kept) to
    ``reference``; None (with a warning) when ``fcd-torch`` cannot compute it."""
    from proseco.chem import canonicalize
    from proseco.eval.molecules import fcd

    valid = [c for c in (canonicalize(s) for s in smiles) if c is not None]
    return fcd(valid, reference)


def run_study(
    models, paths, settings, study, args, train_smiles, done, save, fcd_reference=None
) -> list[dict]:
    """Evaluate ``settings`` in order (tqdm), reusing rows of ``done`` with the same key.

    Guidance rows get the statistics of their model's property (``property`` names it); with an
    ``fcd_reference`` every new row gets ``fcd``.
    """
    from tqdm.auto import tqdm

    from proseco.eval.study import evaluate_setting

    rows = []
    prints = {k: weights_fingerprint(p) for k, p in paths.items()}
    for setting in tqdm(settings, desc=study, unit="setting"):
        prop = property_of(setting.model) if study == "guidance" else None
        meta = {
            "study": study,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "num_samples": args.num_samples,
            "checkpoint": _short(paths[setting.model]),
            "weights": prints[setting.model],
            "eos_rule": EOS_RULE,
        }
        key = row_key({**meta, **setting.summary()})
        if key not in done:
            row, smiles = evaluate_setting(
                models,
                setting,
                train_smiles=train_smiles,
                num_samples=args.num_samples,
                batch_size=args.batch_size,
                seed=args.seed,
                properties=(prop,) if prop else (),
                eos_rule=EOS_RULE,
            )
            if prop:
                row["property"] = prop
            if fcd_reference is not None:
                row["fcd"] = fcd_of(smiles, fcd_reference)
            done[key] = {**meta, **row}
            save(rows + [done[key]])
        rows.append(done[key])
    return rows


def checkpoint_absent(row: dict) -> bool:
    """Whether the checkpoint path a row records is missing on this machine."""
    path = Path(str(row.get("checkpoint", "")))
    return not (path if path.is_absolute() else REPO / path).exists()


def absent_model_rows(
    done: dict, models: dict, study: str, props: Sequence[str] = ()
) -> list[dict]:
    """Reused rows (``--resume``, ``--merge-rows``) of ``study`` for models that were not loaded
    because their checkpoint is not on this machine: they are kept as measured. Guidance rows only
    for the properties in ``props``; of rows that differ only in ``weights``, the last one."""
    kept: dict[tuple, dict] = {}
    for r in done.values():
        if r.get("study") != study or r.get("model") in models or not checkpoint_absent(r):
            continue
        if study == "guidance" and row_property(r) not in props:
            continue
        kept[row_key({**r, "weights": None})] = r
    return list(kept.values())


def judge(uncond: list[dict], guided: list[dict], skipped: dict[str, str] | None) -> list:
    """The claim verdicts (a), (b), (c) once per property of :data:`PROPERTIES`, then the
    ablation (a) against the ProSeCo model + MDLM sampling."""
    skipped = skipped or {}
    mdlm = [r for r in uncond if r["method"] == MDLM]
    pro = [r for r in uncond if r["model"] == "proseco" and r["corrector_steps"] > 0]
    frontier = []
    for p in PROPERTIES.values():
        on = [r for r in guided if row_property(r) == p.name and (r.get("gamma") or 0) > 0]
        if on:
            frontier.append(
                claims.judge_guidance_frontier(
                    [r for r in on if family(r) == "MDLM"],
                    [r for r in on if family(r) == "ProSeCo"],
                    prop=f"{p.name}_novel_mean",
                    property_name=p.title,
                )
            )
        else:
            reason = skipped.get(p.name) or "no guided rows (gamma > 0)"
            frontier.append(
                claims.ClaimResult(
                    "c",
                    claims.claim_c_statement(p.title),
                    claims.NOT_TESTABLE,
                    f"The {p.title} {NOT_RUN}: {reason}.",
                )
            )
    ablation_ref = [r for r in uncond if r["method"] == PROSECO_MODEL_MDLM]
    return [
        claims.judge_small_t_validity(mdlm, pro),
        claims.judge_half_nfe(mdlm, pro),
        *frontier,
        claims.judge_small_t_validity(ablation_ref, pro, reference_name=PROSECO_MODEL_MDLM),
    ]


def family(row: dict) -> str:
    """The method family of a guidance row (its colour in the figure)."""
    return row.get("family") or FAMILIES.get(row["method"], row["method"])


FAMILY_LABELS = {
    "MDLM": "MDLM model + MDLM sampling",
    "ProSeCo": "ProSeCo model + ProSeCo sampling (S=1 every=1)",
    "ReMDM": "MDLM model + ReMDM loop (eta 0.02)",
    "AR": "AR model, left to right",
    "UDLM": "UDLM model + its sampler",
}
LINESTYLES = (":", "--", "-", "-.")


def gamma_marker_area(gamma: float) -> float:
    """Marker area (points^2) of a guidance point: grows with gamma."""
    return 10.0 + 30.0 * max(float(gamma), 0.0)


def plot_guidance(
    rows: list[dict[str, Any]],
    path: Path,
    num_samples: int,
    skipped: dict[str, str] | None = None,
) -> list[str]:
    """The paper's QM9 guidance figure: one panel per property with rows; x = novel molecules,
    y = their mean property; colour = method, line style = T, marker size = gamma. Returns the
    names of the properties drawn (none: no file is written)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    props = [p for p in PROPERTIES.values() if any(row_property(r) == p.name for r in rows)]
    if not props:
        return []
    steps = sorted_steps(rows)
    style = {t: LINESTYLES[i % len(LINESTYLES)] for i, t in enumerate(steps)}
    style[None] = "-"  # AR: no T
    gammas = sorted({float(r["gamma"]) for r in rows if r.get("gamma") is not None})
    families = list(dict.fromkeys(family(r) for r in rows))
    spare = iter(c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"])
    color = {f: FAMILY_COLORS.get(f) or next(spare) for f in families}
    fig, axes = plt.subplots(1, len(props), figsize=(5.4 * len(props), 4.6), dpi=120, squeeze=False)
    for ax, p in zip(axes[0], props):
        key, drawn = f"{p.name}_novel_mean", False
        mine = [r for r in rows if row_property(r) == p.name]
        for method in dict.fromkeys(r["method"] for r in mine):
            c = color[family(next(r for r in mine if r["method"] == method))]
            for t in steps:
                pts = sorted(
                    (float(r["gamma"]), r["num_novel_unique"], r[key])
                    for r in mine
                    if r["method"] == method and r["steps"] == t and r.get(key) is not None
                )
                if not pts:
                    continue
                drawn = True
                g, x, y = zip(*pts)
                ax.plot(x, y, style[t], color=c, lw=1.3, zorder=2)
                ax.scatter(
                    x,
                    y,
                    s=[gamma_marker_area(v) for v in g],
                    color=c,
                    zorder=3,
                    edgecolors="white",
                    linewidths=0.5,
                )
        ax.set_xlabel(f"novel molecules (valid, unique, not in QM9; of {num_samples})")
        ax.set_ylabel(f"mean {p.title} of the novel molecules")
        ax.set_title(f"guidance towards high {p.title}")
        ax.grid(True, alpha=0.3)
        if not drawn:
            ax.text(
                0.5, 0.5, "no novel molecules at any point", ha="center", transform=ax.transAxes
            )
    handles = [
        Line2D([], [], color=color[f], marker="o", label=FAMILY_LABELS.get(f, f)) for f in families
    ]
    handles += [Line2D([], [], color="black", ls=style[t], label=step_label(t)) for t in steps]
    handles += [
        Line2D(
            [],
            [],
            color="gray",
            marker="o",
            ls="",
            markersize=math.sqrt(gamma_marker_area(g)),
            label=f"gamma = {g:g}",
        )
        for g in gammas
    ]
    ncol = min(len(handles), 4 if len(props) == 1 else 6)
    rows_of_legend = math.ceil(len(handles) / ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    title = "QM9 classifier-free guidance towards class 1 (property above its 90th percentile)"
    missing = [PROPERTIES[k].title for k in (skipped or {}) if k in PROPERTIES]
    if missing:
        title += f"\n(no panel for {', '.join(missing)}: not run, see the results page)"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.045 * rows_of_legend + 0.02, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return [p.name for p in props]


# --------------------------------------------------------------------- report
def fmt(v: Any, kind: str = "") -> str:
    """A table cell: ``kind`` ``"pct"`` (fraction as %), ``"g"``, ``"1"`` / ``"2"`` / ``"3"``
    (that many decimals) or auto (two decimals for floats)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "g":
        return f"{v:g}"
    if isinstance(v, float):
        return f"{v:.{int(kind)}f}" if kind in ("1", "2", "3") else f"{v:.2f}"
    return str(v)


def table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def rows_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: ``(header, row key, fmt kind)``; a key a row lacks is shown as "–". The NFE of
    a row measured before rows left the batch (whole-batch calls) is marked with a ``*``."""

    def cell(r: dict, key: str, kind: str) -> str:
        text = fmt(r.get(key), kind)
        return text + "*" if key == "nfe" and batch_counted(r) else text

    return table([c[0] for c in columns], [[cell(r, k, f) for _, k, f in columns] for r in rows])


NFE_WHOLE_BATCH = "whole-batch calls (measured before rows left the batch)"


def batch_counted(row: dict) -> bool:
    """Whether ``row`` came from a run made before the sampler counted NFE per row
    (``--batch-counted``)."""
    return row.get("nfe_accounting") == NFE_WHOLE_BATCH


UNCOND_COLUMNS = [
    ("method", "method", ""),
    ("T", "steps", ""),
    ("S", "corrector_steps", ""),
    ("every", "corrector_every", ""),
    ("NFE", "nfe", "1"),
    ("validity", "validity", "pct"),
    ("validity (research rule)", "validity_other_rule", "pct"),
    ("uniqueness", "uniqueness", "pct"),
    ("novelty", "novelty", "pct"),
    ("sec", "seconds", "1"),
]
FCD_COLUMN = ("FCD", "fcd", "2")


def uncond_columns(with_fcd: bool) -> list[tuple[str, str, str]]:
    """The unconditional table's columns; FCD (before ``sec``) only when it was computed."""
    return UNCOND_COLUMNS[:-1] + [FCD_COLUMN] + UNCOND_COLUMNS[-1:] if with_fcd else UNCOND_COLUMNS


def guided_columns(prop: str) -> list[tuple[str, str, str]]:
    """The guidance table of one property: the number of novel molecules and the mean and std
    of the property over them (and the mean over all valid samples)."""
    p = PROPERTIES[prop]
    d = str(p.decimals)
    return [
        ("method", "method", ""),
        ("T", "steps", ""),
        ("gamma", "gamma", "g"),
        ("NFE", "nfe", "1"),
        ("validity", "validity", "pct"),
        ("uniqueness", "uniqueness", "pct"),
        ("novel", "num_novel_unique", ""),
        (f"{p.title} mean (novel)", f"{prop}_novel_mean", d),
        (f"{p.title} std (novel)", f"{prop}_novel_std", d),
        (f"{p.title} mean (valid)", f"{prop}_valid_mean", d),
        ("sec", "seconds", "1"),
    ]


def validity_pivot(rows: list[dict]) -> str:
    """Validity (NFE) with one row per method and one column per T."""
    steps = sorted_steps(rows)
    cell = {(r["method"], r["steps"]): r for r in rows}
    body = [
        [m]
        + [
            f"{fmt(cell[m, t]['validity'], 'pct')} ({cell[m, t]['nfe']:.1f})"
            if (m, t) in cell
            else "–"
            for t in steps
        ]
        for m in dict.fromkeys(r["method"] for r in rows)
    ]
    return table(["method"] + [step_label(t, "=") for t in steps], body)


def sorted_steps(rows: list[dict]) -> list[int | None]:
    """The rows' step counts ascending; ``None`` (AR: no T) last."""
    return sorted({r["steps"] for r in rows}, key=lambda t: (t is None, t or 0))


def step_label(t: int | None, sep: str = " = ") -> str:
    """``T = 8``; the AR baseline has no T (one call per generated token)."""
    return f"T{sep}{t}" if t is not None else "AR (no T)"


def claim_section(result: claims.ClaimResult, tried: str) -> str:
    text = f"### ({result.claim}) {result.statement}\n\n**Verdict: {result.verdict}.** "
    text += result.explanation + (
        f" Tried: {tried}" if tried and result.verdict != claims.HELD else ""
    )
    if result.details:
        keys = list(dict.fromkeys(k for d in result.details for k in d))
        kinds = ["pct" if any(p in k for p in PERCENT_KEYS) else "" for k in keys]
        body = [[fmt(d.get(k), f) for k, f in zip(keys, kinds)] for d in result.details]
        text += "\n\n" + table(keys, body)
    return text + "\n"


# --------------------------------------------------------------------- training curve
CURVE_MISSING = (
    "Not available: no `{name}` in this directory. Measure it with "
    "`python benchmarks/qm9_training_curve.py --run mdlm=RUN_DIR --run proseco=RUN_DIR --out "
    "{out}` (run directories of `proseco train` with intermediate checkpoints), then regenerate "
    "this page."
)


def curve_markdown(data: dict, image: bool = True) -> str:
    """The training-curve section from ``qm9_training_curve.json``'s content: validity of each
    (run, sampler) and the runs' validation NELBO, one row per training step."""
    rows, meta = data.get("rows", []), data.get("meta", {})
    if not rows:
        return "Not available: `qm9_training_curve.json` holds no rows."
    columns = list(dict.fromkeys((r["run"], r["method"]) for r in rows))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    rows = [{**r, "step": r["step"] + (r.get("base_step") or 0)} for r in rows]  # fine-tunes
    cell = {(r["run"], r["method"], r["step"]): r for r in rows}
    nelbo = {(r["run"], r["step"]): r["nelbo"] for r in rows if r.get("nelbo") is not None}
    header = ["step"] + [f"{run}: {m}" for run, m in columns]
    header += [f"{run}: val. NELBO" for run in runs if any(k[0] == run for k in nelbo)]
    body = []
    for step in sorted({r["step"] for r in rows}):
        line = [f"{step:,}"]
        line += [
            fmt(cell[run, m, step]["validity"], "pct") if (run, m, step) in cell else "–"
            for run, m in columns
        ]
        line += [
            fmt(nelbo.get((run, step)), "3") for run in runs if any(k[0] == run for k in nelbo)
        ]
        body.append(line)
    finals = sorted({(r["run"], r["step"]) for r in rows if r.get("source") == "final"})
    text = (
        f"Validity at T = {meta.get('steps', '?')} (stop-at-first-`<eos>` rule, "
        f"{meta.get('num_samples', '?')} samples, seed {meta.get('seed', '?')}) of every saved "
        "checkpoint of the training runs, with the EMA weights the released model would have "
        "had at that step; validation NELBO (nats per token, MDLM term, EMA weights) as the run "
        "logged it at that step."
    )
    if any(r.get("base_step") for r in rows):
        text += (
            " A run fine-tuned from another model is listed at the base's training steps plus "
            "its own."
        )
    if finals:
        text += (
            " The last step of each run is its exported `final/` model ("
            + ", ".join(f"{run}: step {step:,}" for run, step in finals)
            + ")."
        )
    runs_info = meta.get("runs", {})
    if runs_info:
        text += "\n\n" + table(
            ["run", "directory", "training"],
            [[k, f"`{v.get('path', '?')}`", v.get("info", "")] for k, v in runs_info.items()],
        )
    if meta.get("command"):
        text += f"\n\nMeasured with `{meta['command']}` ({meta.get('date', '?')})."
    if image:
        text += f"\n\n![validity vs training steps]({CURVE_PNG})"
    return text + "\n\n" + table(header, body)


def training_curve_section(out: Path) -> str:
    """:func:`curve_markdown` of ``out/qm9_training_curve.json``, or a note how to make it."""
    path = out / CURVE_JSON
    if not path.is_file():
        return CURVE_MISSING.format(name=CURVE_JSON, out=_short(out))
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"Not available: `{CURVE_JSON}` cannot be read ({e})."
    return curve_markdown(data, image=(out / CURVE_PNG).is_file())


# --------------------------------------------------------------------- report
EOS_TEXT = (
    "Every number on this page decodes a generated token row with the **stop-at-first-`<eos>` "
    "rule**: the molecule is the tokens before its first `<eos>`. The research code's rule "
    "instead drops `<bos>`/`<eos>`/`<pad>` wherever they occur, so tokens generated after the "
    "first `<eos>` are glued onto the molecule; the column *validity (research rule)* of the "
    "unconditional table gives the validity of the same samples decoded that way."
)

REPORT = """\
# QM9: ProSeCo vs MDLM, ReMDM, PRISM, UDLM and AR (validity vs compute, guided ring count and QED)

Generated by `benchmarks/qm9.py`; do not edit by hand. Regenerate with:

    {command}

{info}

{eos}

## Checkpoints

{checkpoints}

## Paper claims at this scale

All verdicts use the stop-at-first-`<eos>` rule; claim (c) is judged once per guided property.

{claims}
*Ablation, not a paper claim: rule (a) against the ProSeCo model with MDLM sampling
({ablation.verdict}).* {ablation.explanation}

## Unconditional generation: validity, uniqueness, novelty vs NFE

NFE = model calls per sample, as counted by the sampler. Decoding: stop at the first `<eos>`
(main columns); *validity (research rule)*: the same samples with tokens after `<eos>` glued on.
{fcd}

![validity vs NFE](qm9_validity_vs_nfe.png)

Validity (NFE) by sampler and unmasking steps T (stop-at-first-`<eos>` rule):

{pivot}

All metrics:

{uncond}

## Validity against training steps

{curve}

## Guidance: novel molecules vs mean property

{guidance}

## The other baselines at equal NFE: ReMDM, PRISM, UDLM, AR

{baselines}

## Caveats

{caveats}
"""

GUIDANCE = """\
Classifier-free guidance towards class 1 (property above the dataset's 90th percentile) with the
class-conditional models of each property; decoded with the stop-at-first-`<eos>` rule. *novel* =
number of novel molecules (valid, unique, not in the QM9 training split); the property's mean and
standard deviation are over those novel molecules, so that more novel molecules cannot hide a
collapse in diversity. gamma = 0 is the unconditional reference and is not used for claim (c); a
guided call with gamma not in {{0, 1}} costs 2 NFE; the ProSeCo corrector is guided. The figure is
drawn as the paper's: x = novel molecules, y = their mean property; colour = method, line style =
T, marker size = gamma.

{figure}

{tables}"""


BASELINE_METHODS = (
    "MDLM + ReMDM loop (eta 0.02)",
    "MDLM + ReMDM cap (eta 0.02)",
    PRISM,
    PRISM_ONE,
    UDLM,
    AR,
)
GUIDED_BASELINE_FAMILIES = ("ReMDM", "UDLM", "AR")


def proseco_at(pro: list[dict], nfe: float) -> tuple[float | None, str | None]:
    """ProSeCo sampling's best validity at ``nfe``: for each ProSeCo budget, validity
    interpolated linearly in log2(NFE) between its measured points (inside its NFE range only),
    then the best budget. ``(None, None)`` when ``nfe`` is outside every budget's range."""
    best, which = None, None
    for method in dict.fromkeys(r["method"] for r in pro):
        pts = [(r["nfe"], r["validity"]) for r in pro if r["method"] == method]
        value, where = claims.interpolate_log2(pts, nfe)
        if where == "inside" and (best is None or value > best):
            best, which = value, method
    return best, which


def baseline_uncond_section(uncond: list[dict], n: int) -> str:
    """Each other baseline's unconditional points against ProSeCo sampling at the same NFE."""
    pro = [r for r in uncond if r["model"] == "proseco" and r["corrector_steps"] > 0]
    se2 = 2 * claims.validity_se(0.5, n)
    lines, body = [], []
    for method in BASELINE_METHODS:
        mine = sorted((r for r in uncond if r["method"] == method), key=lambda r: r["nfe"])
        if not mine or not pro:
            continue
        wins = compared = 0
        for r in mine:
            value, which = proseco_at(pro, r["nfe"])
            higher = None if value is None else value > r["validity"]
            if value is not None:
                compared += 1
                wins += bool(higher)
            close = value is not None and abs(value - r["validity"]) < se2
            body.append([
                method, step_label(r["steps"], "="), fmt(r["nfe"], "1"),
                fmt(r["validity"], "pct"), fmt(value, "pct"), which or "outside ProSeCo's range",
                "–" if higher is None else ("yes" if higher else "no") + (" (noise)" if close else ""),
            ])  # fmt: skip
        if compared:
            lines.append(
                f"* **{method}**: ProSeCo sampling is higher at {wins} of {compared} of its "
                "points inside ProSeCo's NFE range."
            )
        else:
            lines.append(f"* **{method}**: no point inside ProSeCo's NFE range; not compared.")
    if not body:
        return "No other baseline was run (their model dirs were missing)."
    head = ["baseline", "T", "NFE", "validity", "ProSeCo at same NFE", "ProSeCo budget", "higher"]
    return "\n".join(lines) + "\n\n" + table(head, body)


def baseline_guided_section(guided: list[dict]) -> str:
    """For each property and other baseline, rule (c) with that baseline in MDLM's place."""
    lines = []
    for p in PROPERTIES.values():
        on = [r for r in guided if row_property(r) == p.name and (r.get("gamma") or 0) > 0]
        pro = [r for r in on if family(r) == "ProSeCo"]
        for fam in GUIDED_BASELINE_FAMILIES:
            ref = [r for r in on if family(r) == fam]
            if not ref or not pro:
                continue
            result = claims.judge_guidance_frontier(
                ref, pro, prop=f"{p.name}_novel_mean", property_name=p.title,
                reference_name=fam,
            )  # fmt: skip
            lines.append(
                f"* **{p.title}, ProSeCo vs {fam}: {result.verdict}.** {result.explanation}"
            )
    return "\n".join(lines) if lines else "No other guided baseline was run."


def baselines_markdown(uncond: list[dict], guided: list[dict], meta: dict) -> str:
    """The section comparing ProSeCo with the paper's other baselines (ReMDM, PRISM, UDLM, AR)."""
    missing = meta.get("baselines_missing") or []
    note = (
        f" Not run here (model dir missing or not selected): {', '.join(missing)}."
        if missing
        else ""
    )
    if meta.get("notes"):
        note += "\n\n" + meta["notes"].strip()
    return BASELINES.format(
        note=note,
        uncond=baseline_uncond_section(uncond, meta["num_samples"]),
        guided=baseline_guided_section(guided),
    )


BASELINES = """The paper's other baselines, each trained on the same data as MDLM (sizes and budgets under
Checkpoints; PRISM: the MDLM checkpoint plus a fine-tuned quality head) and sampled with the same NFE
accounting.
Unconditional: each baseline point against ProSeCo sampling's validity at the same NFE (linear in
log2 NFE between ProSeCo's measured points, the better of its two budgets; "(noise)" marks a gap
under two binomial standard errors). Guidance: rule (c) of the claims above, with the baseline in
MDLM's place (ProSeCo's novel-molecules frontier above the baseline's points).{note}

### Unconditional

{uncond}

### Guidance

{guided}"""


def guidance_markdown(guided: list[dict], skipped: dict[str, str], figure: bool) -> str:
    """The guidance section: the shared text, the figure, then one table (or note) per property."""
    parts = []
    for p in PROPERTIES.values():
        mine = [r for r in guided if row_property(r) == p.name]
        if mine:
            parts.append(f"### {p.title}\n\n{rows_table(mine, guided_columns(p.name))}")
        else:
            reason = skipped.get(p.name) or "no rows"
            parts.append(f"### {p.title}\n\nNot run (no panel in the figure): {reason}.")
    if not guided:
        return "\n\n".join(parts)
    image = "![guidance frontier](qm9_guidance_frontier.png)" if figure else "(no figure)"
    return GUIDANCE.format(figure=image, tables="\n\n".join(parts))


def fcd_note(meta: dict, uncond: list[dict]) -> str:
    reason = meta.get("fcd_skipped")
    if reason:
        return f"FCD (Fréchet ChemNet Distance) is not reported: {reason}."
    text = (
        "FCD = Fréchet ChemNet Distance of the valid molecules (duplicates kept) to "
        f"{meta.get('fcd_reference', 'held-out QM9')}; lower is closer to QM9."
    )
    if any(r.get("fcd") is None for r in uncond):
        text += ' A "–" is a row without FCD (fewer than two valid molecules, or a reused row).'
    return text


NOT_RUN = "guidance study was not run"


def tried_for(result: claims.ClaimResult, tried: dict) -> str:
    """What was tried for a claim; nothing for a property whose study was not run."""
    return "" if NOT_RUN in result.explanation else tried.get(result.claim, "")


def render(
    meta: dict, uncond: list, guided: list, verdicts: list, tried: dict, curve: str | None = None
) -> str:
    """The whole ``qm9.md``; ``verdicts`` = :func:`judge`'s list (claims a, b, c per property,
    then the ablation); ``curve`` = the training-curve section (default: a note that it is
    missing)."""
    *paper, ablation = verdicts
    skipped = meta.get("guidance_skipped") or {}
    if isinstance(skipped, str):
        skipped = dict.fromkeys(PROPERTIES, skipped)
    info = [
        ["git commit", f"`{meta['commit']}`"],
        ["date (UTC)", meta["date"]],
        ["torch / rdkit / python", meta["versions"]],
        ["samples per point", f"{meta['num_samples']} (batch {meta['batch_size']})"],
        ["seed", f"{meta['seed']} for every point (one generator per point)"],
        ["decoding rule", "stop at the first `<eos>` (research rule in one extra column)"],
        [
            "wall time",
            f"{meta['elapsed']:.0f} s for this invocation on {meta['machine']}; sampling time "
            f"summed over all rows: {meta['row_seconds']:.0f} s",
        ],
    ]
    ckpts = [
        [k, f"`{v['path']}`", v["info"] + (ABSENT_NOTE if v.get("absent") else "")]
        for k, v in meta["checkpoints"].items()
    ]
    with_fcd = not meta.get("fcd_skipped") and any(r.get("fcd") is not None for r in uncond)
    return REPORT.format(
        command=meta["command"],
        info=table(["", ""], info),
        eos=EOS_TEXT,
        checkpoints=table(["model", "path", "size and training"], ckpts),
        claims="\n".join(claim_section(v, tried_for(v, tried)) for v in paper),
        ablation=ablation,
        fcd=fcd_note(meta, uncond),
        pivot=validity_pivot(uncond),
        uncond=rows_table(uncond, uncond_columns(with_fcd)),
        curve=curve or CURVE_MISSING.format(name=CURVE_JSON, out="docs/results"),
        guidance=guidance_markdown(guided, skipped, meta.get("guidance_figure", True)),
        baselines=baselines_markdown(uncond, guided, meta),
        caveats="\n".join(f"* {c}" for c in caveats(meta)),
    )


ABSENT_NOTE = (
    " **Not present where this page was generated: its rows are reused as measured from an "
    "earlier run of this script.**"
)


def caveats(meta: dict) -> list[str]:
    n = meta["num_samples"]
    seen = [c["sequences"] for c in meta["checkpoints"].values() if c["sequences"]]
    budget = (
        f"these checkpoints saw at most {max(seen):,} training sequences "
        f"({100 * max(seen) / PAPER_SEQUENCES:.2g}% of that)"
        if seen
        else "the training budget of these checkpoints is not recorded next to them"
    )
    return [
        f"Scale: the paper trained {PAPER_BUDGET} ({PAPER_SEQUENCES / 1e6:.1f} M sequences); "
        f"{budget}; model sizes are under Checkpoints. Absolute validities are therefore far "
        "below the paper's, and these runs test the direction of each effect, not its size.",
        f"Sampling noise: with {n} samples a validity near 50% has a binomial standard error of "
        f"{100 * claims.validity_se(0.5, n):.1f} points; differences under about twice that are "
        "not resolved. One seed per point, no error bars.",
        "Novelty compares RDKit-canonical SMILES with the canonical QM9 training split, which is "
        "stricter than the research code (raw strings).",
        "Decoding: the research code glued tokens generated after `<eos>` onto the molecule; "
        "here a molecule ends at its first `<eos>`, which changes validity by different amounts "
        "per sampler (see the research-rule column).",
        *reused_rows_caveat(meta),
        *absent_rows_caveat(meta),
        "NFE counts network evaluations: a guided call with gamma not in {0, 1} costs 2 (the "
        "research code counted 1), so ProSeCo guidance runs (S=1 every=1) spend about twice "
        "MDLM's NFE at the same T. The research code also bypassed guidance inside the "
        "corrector; here the corrector is guided (`Guidance(in_corrector=True)`).",
    ]


def reused_rows_caveat(meta: dict) -> list[str]:
    """A caveat for rows reused from a run made before NFE was counted per row, if any."""
    n = meta.get("batch_counted_rows", 0)
    if not n:
        return []
    return [
        f"{n} rows (NFE marked `*`) were reused from the run before the sampler let finished rows "
        "leave the batch: the same checkpoints, seed and tokens (re-running 10 of them gave "
        "identical validity and novel counts), but their NFE counts whole-batch calls, up to "
        "~15% above the per-sample count of the other rows. The guidance verdicts do not use NFE."
    ]


def absent_rows_caveat(meta: dict) -> list[str]:
    """A caveat for rows of models whose checkpoints were not present, if any."""
    n = meta.get("absent_rows", 0)
    if not n:
        return []
    names = ", ".join(k for k, v in meta["checkpoints"].items() if v.get("absent"))
    return [
        f"{n} rows ({names}) come from checkpoints that were not present where this page was "
        "generated; they are reused as measured by an earlier run of this script. Their size and "
        "training budget (Checkpoints) may differ from the models measured here."
    ]


# --------------------------------------------------------------------- main
def _git(*cmd: str) -> str:
    try:
        out = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoints",
        default=None,
        help="dir with mdlm/ proseco/ [mdlm-ring/ proseco-ring/ mdlm-qed/ proseco-qed/]",
    )
    p.add_argument("--out", default=str(REPO / "docs" / "results"), help="where qm9.md etc. go")
    p.add_argument("--num-samples", type=int, default=None, help="molecules per point (1000)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, nargs="+", default=None, help="T grid (2 4 8 16 32)")
    p.add_argument(
        "--guidance-steps", type=int, nargs="+", default=None, help="guidance T grid (8 16 32)"
    )
    p.add_argument(
        "--gammas",
        type=float,
        nargs="+",
        default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0],
        help="guidance strengths (0 0.5 1 1.5 2 3)",
    )
    p.add_argument(
        "--properties",
        nargs="+",
        choices=list(PROPERTIES),
        default=list(PROPERTIES),
        help="guided properties, one figure panel each (ring_count qed)",
    )
    p.add_argument("--skip-guidance", action="store_true")
    p.add_argument(
        "--skip-unconditional",
        action="store_true",
        help="run only the guidance grid (e.g. in a second process; merge with --resume)",
    )
    p.add_argument(
        "--skip-fcd", action="store_true", help="no FCD column even if fcd-torch is installed"
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 64 samples, T in {2, 4}")
    p.add_argument("--resume", action="store_true", help="reuse matching rows of qm9_rows.json")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument(
        "--only-models",
        nargs="+",
        default=[],
        metavar="KEY",
        help="run only the settings of these models (e.g. mdlm while proseco still trains)",
    )
    p.add_argument(
        "--merge-rows",
        nargs="+",
        default=[],
        metavar="ROWS_JSON",
        help="reuse matching rows from these qm9_rows.json files (e.g. from parallel runs)",
    )
    p.add_argument("--notes", help="a markdown file added to the baselines section (observations)")
    p.add_argument(
        "--batch-counted",
        nargs="+",
        default=[],
        metavar="ROWS_JSON",
        help="like --merge-rows, for rows measured before the sampler counted NFE per row "
        "(same tokens; their NFE is marked as whole-batch calls on the page)",
    )
    args = p.parse_args(argv)
    args.num_samples = args.num_samples or (64 if args.quick else 1000)
    args.steps = sorted(set(args.steps or ([2, 4] if args.quick else [2, 4, 8, 16, 32])))
    args.guidance_steps = sorted(
        set(args.guidance_steps or ([2, 4] if args.quick else [8, 16, 32]))
    )
    args.gammas = sorted(set(args.gammas))
    args.properties = list(dict.fromkeys(args.properties))
    if args.num_samples < 1 or args.batch_size < 1 or min(args.steps + args.guidance_steps) < 1:
        p.error("--num-samples, --batch-size and every step count must be >= 1")
    if min(args.gammas) < 0:
        p.error("--gammas must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    import rdkit
    import torch

    from proseco.data.qm9 import load_qm9
    from proseco.eval.study import plot_pareto
    from proseco.pretrained import shipped_checkpoints

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.checkpoints) if args.checkpoints else shipped_checkpoints()["mdlm"].parent
    out = Path(args.out)
    rows_path = out / "qm9_rows.json"
    done = {}
    earlier_checkpoints: dict[str, dict] = {}  # the checkpoint table entries of reused files

    def read_rows(path: Path) -> list[dict]:
        try:
            data = json.loads(path.read_text())
            rows = data["rows"]
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise TypeError("'rows' is not a list of row objects")
            earlier_checkpoints.update(data.get("meta", {}).get("checkpoints") or {})
        except FileNotFoundError:
            fail(f"{path}: no such file (rows to reuse come from an earlier qm9_rows.json)")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            fail(f"{path} is not a readable qm9_rows.json ({type(e).__name__}: {e})")
        return rows

    if args.resume and rows_path.is_file():
        done = {row_key(r): r for r in read_rows(rows_path)}
        print(f"resuming: {len(done)} rows found in {rows_path}")
    for extra in args.batch_counted:  # first: rows measured again in --merge-rows win
        found = read_rows(Path(extra))
        done.update({row_key(r): {**r, "nfe_accounting": NFE_WHOLE_BATCH} for r in found})
        print(f"reusing: {len(found)} rows with whole-batch NFE counts from {extra}")
    for extra in args.merge_rows:
        found = read_rows(Path(extra))
        for r in found:
            old = done.get(row_key(r))
            same = old is not None and all(old.get(k) == r.get(k) for k in ("nfe", "seconds"))
            if same and batch_counted(old):
                continue  # a copy of a reused row (a part run merged it): keep its mark
            done[row_key(r)] = r
        print(f"merging: {len(found)} rows from {extra}")
    models, paths, skipped = load_models(
        root, args.skip_guidance, tuple(args.only_models), args.properties
    )
    out.mkdir(parents=True, exist_ok=True)
    for prop, reason in skipped.items():
        print(f"guidance study for {prop} skipped: {reason}")
    fcd_reference, fcd_skipped = None, None
    if args.skip_unconditional:
        fcd_skipped = "--skip-unconditional was given"
    elif args.skip_fcd:
        fcd_skipped = "--skip-fcd was given"
    elif not fcd_available():
        fcd_skipped = (
            "the optional package `fcd-torch` is not installed where this page was generated "
            "(`pip install fcd-torch`, then regenerate)"
        )
    meta: dict[str, Any] = {
        "command": "python benchmarks/qm9.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "commit": _git("rev-parse", "--short", "HEAD")
        + (
            " (with uncommitted changes)"
            if _git("status", "--porcelain", "-uno") not in ("", "unknown")
            else ""
        ),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "versions": f"{torch.__version__} / {rdkit.__version__} / {platform.python_version()}",
        "machine": f"{platform.machine()} CPU (torch threads: {torch.get_num_threads()})",
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "eos_rule": EOS_RULE,
        "checkpoints": {
            k: dict(zip(("path", "info", "sequences"), (_short(p), *provenance(p, models[k][0]))))
            for k, p in paths.items()
        },
        "guidance_skipped": skipped,
        "fcd_skipped": fcd_skipped,
        "notes": Path(args.notes).read_text(encoding="utf-8") if args.notes else "",
    }
    rows: dict[str, list[dict]] = {"unconditional": [], "guidance": []}

    def save(current: list[dict], complete: bool = False) -> None:
        done_rows = [r for v in rows.values() for r in v] + current
        rows_path.write_text(
            json.dumps({"meta": {**meta, "complete": complete}, "rows": done_rows}, indent=1)
        )

    print("loading the QM9 training set for novelty ...")
    train = set(load_qm9("train").smiles)
    if fcd_skipped is None:
        fcd_reference = list(load_qm9("validation").smiles)
        meta["fcd_reference"] = (
            f"the QM9 validation split ({len(fcd_reference):,} molecules, held out from training)"
        )
    grids = {}
    if not args.skip_unconditional:
        grids["unconditional"] = unconditional_settings(args.steps, tuple(models))
    guided_props = [p for p in args.properties if p not in skipped]
    if guided_props:
        grids["guidance"] = guidance_settings(args.guidance_steps, args.gammas, guided_props)
    # Baselines whose model dirs are absent (and --only-models) drop their settings here.
    grids = {k: [g for g in v if g.model in models] for k, v in grids.items()}
    for study, grid in grids.items():
        ref = fcd_reference if study == "unconditional" else None
        rows[study] = run_study(models, paths, grid, study, args, train, done, save, ref)
    absent = {study: absent_model_rows(done, models, study, guided_props) for study in grids}
    for study, kept in absent.items():
        rows[study] += kept
        for r in kept:
            entry = earlier_checkpoints.get(r["model"]) or {"info": "", "sequences": None}
            meta["checkpoints"][r["model"]] = {**entry, "path": r["checkpoint"], "absent": True}
    meta["absent_rows"] = sum(len(v) for v in absent.values())
    meta["baselines_missing"] = [
        k for k in OPTIONAL_KEYS if k not in models and k not in meta["checkpoints"]
    ]
    uncond, guided = rows["unconditional"], rows["guidance"]
    plot_pareto(
        uncond,
        out / "qm9_validity_vs_nfe.png",
        title=f"QM9, {args.num_samples} samples per point: validity vs NFE",
    )
    figure = out / "qm9_guidance_frontier.png"
    drawn = plot_guidance(guided, figure, args.num_samples, skipped) if guided else []
    if not drawn:  # a plot from an earlier run would no longer match the report
        figure.unlink(missing_ok=True)
    meta["guidance_figure"] = bool(drawn)
    verdicts = judge(uncond, guided, skipped)
    grid_text = (
        f"T in {args.steps}, ProSeCo budgets S=1 every=1 and S=2 every=2, "
        f"{args.num_samples} samples, seed {args.seed}."
    )
    gammas = ", ".join(f"{g:g}" for g in args.gammas if g > 0)
    tried = {
        "a": grid_text,
        "b": grid_text,
        "c": f"T in {args.guidance_steps}, gamma in {{{gammas}}}, ProSeCo S=1 every=1 with "
        f"guided corrector, {args.num_samples} samples, seed {args.seed}."
        if guided
        else "",
    }
    meta["elapsed"] = time.perf_counter() - start
    meta["row_seconds"] = sum(r.get("seconds", 0.0) for r in uncond + guided)
    meta["batch_counted_rows"] = sum(batch_counted(r) for r in uncond + guided)
    save([], complete=True)
    curve = training_curve_section(out)
    (out / "qm9.md").write_text(render(meta, uncond, guided, verdicts, tried, curve))
    for v in verdicts[:-1]:
        print(f"claim ({v.claim}) {v.statement}: {v.verdict}")
    print(f"wrote {out}/qm9.md, qm9_rows.json and plots in {meta['elapsed']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
