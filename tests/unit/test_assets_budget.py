"""The package's shipped assets (QM9 checkpoints, text tokenizers) stay within 40 MB (issue 25),
so `pip install proseco` stays small; ship new checkpoints in float16 to stay under it."""

from __future__ import annotations

from pathlib import Path

import proseco

BUDGET = 40_000_000


def test_the_packaged_assets_stay_within_the_budget():
    assets = Path(proseco.__file__).parent / "assets"
    sizes = {f: f.stat().st_size for f in assets.rglob("*") if f.is_file()}
    assert any(f.name == "model.safetensors" for f in sizes), f"no checkpoints in {assets}"
    total = sum(sizes.values())
    largest = sorted(sizes, key=sizes.get, reverse=True)[:3]
    assert total <= BUDGET, (
        f"assets hold {total / 1e6:.1f} MB, over {BUDGET / 1e6:.0f} MB; largest: "
        + ", ".join(f"{f.relative_to(assets)} ({sizes[f] / 1e6:.1f} MB)" for f in largest)
    )
