"""Tiny models for the generate / chat / serve tests: one trained by ``proseco train
sft-cpu-tiny`` (a few steps, cached for the session) and random DiTs with the char tokenizer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

_TRAINED: dict[str, Path] = {}

# a small chat template (ChatML-like) for the template paths
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def trained_sft_model() -> Path:
    """``final/`` of a 4-step ``proseco train sft-cpu-tiny`` run (trained once per session)."""
    if "final" not in _TRAINED:
        from proseco.commands import main

        out = Path(tempfile.mkdtemp(prefix="proseco-serve-test-")) / "sft-tiny"
        code = main([
            "train", "sft-cpu-tiny", "--output-dir", str(out), "--train.max_steps", "4",
            "--train.global_batch_size", "8", "--train.eval_every", "0",
            "--train.eval_batches", "1", "--train.save_every", "0",
            "--train.progress_bar", "false", "--model.num_layers", "1",
        ])  # fmt: skip
        assert code == 0
        _TRAINED["final"] = out / "final"
    return _TRAINED["final"]


def save_dit(path: Path, *, chat_template: str | None = None, max_length: int = 48,
             seed: int = 0) -> Path:  # fmt: skip
    """A random ProsecoDiT (non-trivial logits) with the char tokenizer saved at ``path``."""
    from proseco.data.char_tokenizer import char_tokenizer
    from proseco.models.dit import ProsecoDiT
    from proseco.models.dit_config import ProsecoDiTConfig

    torch.manual_seed(seed)
    tokenizer = char_tokenizer()
    config = ProsecoDiTConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_layers=1, num_heads=2, cond_dim=8,
        max_length=max_length, mask_token_id=tokenizer.mask_token_id, dropout=0.0,
    )  # fmt: skip
    model = ProsecoDiT(config)
    with torch.no_grad():  # the DiT starts with zero output weights; make the logits non-trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        model.lm_head.bias.zero_()
    model.save_pretrained(str(path))
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(path))
    return Path(path)
