"""Block decoding with a window KV cache: ``SamplingConfig.cache`` = ``"prefix"`` / ``"dual"``.

Two kinds of checks. The sampler's bookkeeping (windows, row gathers, guidance's two caches,
EOS stops, ragged prompts, NFE counts) is tested with :class:`TokenCache`, whose cache is exact:
without a corrector, decoding with it must give the tokens of ``cache="none"``. The bundled
DiT's cache is tested at the model level: a window call against the cache of a whole-sequence
call gives that call's logits (within float error).
"""

from __future__ import annotations

import pytest
import torch

from proseco.errors import ConfigError
from proseco.models.dit import ProsecoDiT
from proseco.models.dit_config import ProsecoDiTConfig
from proseco.models.kv_cache import KVCache
from proseco.sampling import Corrector, Guidance, Prism, ReMDM, SamplingConfig, sample
from proseco.sampling.testing import TokenCache, ToyDenoiser

V, MASK, EOS, PAD = 12, 11, 10, 0


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class RowWise(torch.nn.Module):
    """``inner`` run one row at a time, so that a row's output never depends on the others."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids: torch.Tensor, **kwargs):
        batch = input_ids.shape[0]
        rows = []
        for i in range(batch):
            kw = {
                k: v[i : i + 1] if isinstance(v, torch.Tensor) and v.dim() and len(v) == batch
                else v
                for k, v in kwargs.items()
            }  # fmt: skip
            rows.append(self.inner(input_ids[i : i + 1], **kw))
        return torch.cat(rows)


def cached_toy(**kwargs) -> TokenCache:
    return TokenCache(RowWise(ToyDenoiser(vocab_size=V, **kwargs).eval()))


def dit(**kwargs) -> ProsecoDiT:
    config = ProsecoDiTConfig.from_preset(
        "cpu-tiny", vocab_size=V, mask_token_id=MASK, max_length=64, dropout=0.0, **kwargs
    )
    torch.manual_seed(0)
    model = ProsecoDiT(config)
    with torch.no_grad():  # zero adaLN gates would make every block the identity
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


CASES = {
    "ancestral": dict(batch_size=3, length=16, steps=8, block_length=4),
    "confidence, ragged prompts": dict(
        prompt=[[1, 2, 3], [4]],
        pad_id=PAD,
        length=12,
        steps=12,
        block_length=4,
        unmasking="confidence",
    ),  # fmt: skip
    "threshold": dict(
        prompt=torch.tensor([1, 2]),
        batch_size=3,
        length=12,
        steps=6,
        block_length=4,
        unmasking="threshold:threshold=0.3",
    ),  # fmt: skip
    "remdm": dict(batch_size=2, length=12, steps=12, block_length=4, unmasking=ReMDM(eta=0.05)),
    "guidance": dict(
        model=dict(num_classes=2),
        batch_size=2,
        length=12,
        steps=6,
        block_length=4,
        guidance=Guidance(gamma=2.0, condition=1),
    ),  # fmt: skip
    "EOS stops": dict(
        prompt=[[1, 2, 3], [4], [5, 6]],
        length=16,
        steps=16,
        block_length=4,
        unmasking="confidence",
        eos_id=EOS,
        stop_at_eos=True,
    ),  # fmt: skip
    "time-conditioned, top-p": dict(
        model=dict(time_conditioning=True),
        batch_size=2,
        length=12,
        steps=6,
        block_length=4,
        top_p=0.8,
    ),  # fmt: skip
    "one block": dict(prompt=torch.tensor([1, 2, 3]), batch_size=2, length=8, steps=8),
    "shorter last block": dict(batch_size=2, length=10, steps=6, block_length=4),
}


@pytest.mark.parametrize("shrink", [True, False])
@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("case", list(CASES))
def test_an_exact_cache_gives_the_tokens_of_no_cache(case, cache, shrink):
    kwargs = dict(CASES[case])
    model_kwargs = kwargs.pop("model", {})
    ref = sample(cached_toy(**model_kwargs), mask_id=MASK, generator=gen(), shrink_batch=shrink,
                 **kwargs)  # fmt: skip
    model = cached_toy(**model_kwargs)
    out = sample(model, mask_id=MASK, generator=gen(), shrink_batch=shrink, cache=cache, **kwargs)
    assert torch.equal(out.tokens, ref.tokens)
    assert any(window for _, _, window in model.calls)
    # every call counts once, windowed or not, per row it covers
    passes = 2 if "guidance" in kwargs else 1
    assert out.model_calls == len(model.calls)
    assert int(out.nfe_per_row.sum()) == sum(rows for rows, _, _ in model.calls)
    # a block's first call may be made where a row's logits could have been reused (at most
    # one per block and pass), never more
    blocks = -(-kwargs["length"] // kwargs.get("block_length", kwargs["length"]))
    assert ref.model_calls <= out.model_calls <= ref.model_calls + blocks * passes


@pytest.mark.parametrize("cache, width", [("prefix", None), ("dual", 4)])
def test_calls_after_a_blocks_first_run_the_window_only(cache, width):
    model = cached_toy()
    prompt = torch.tensor([1, 2, 3, 4, 5])
    sample(model, mask_id=MASK, prompt=prompt, batch_size=2, length=12, steps=12,
           block_length=4, unmasking="confidence", cache=cache, generator=gen())  # fmt: skip
    # 3 blocks of 4 steps: a whole-sequence call (17 columns), then 3 window calls
    assert [w for _, _, w in model.calls] == [False, True, True, True] * 3
    widths = [n for _, n, w in model.calls if w]
    if cache == "prefix":  # the block and everything after it
        assert widths == [12] * 3 + [8] * 3 + [4] * 3
    else:
        assert widths == [width] * 9
    assert {n for _, n, w in model.calls if not w} == {17}


def test_guidance_keeps_a_cache_for_each_pass():
    model = cached_toy(num_classes=2)
    out = sample(model, mask_id=MASK, batch_size=2, length=8, steps=8, block_length=4,
                 unmasking="confidence", guidance=Guidance(gamma=2.0, condition=1),
                 cache="dual", generator=gen())  # fmt: skip
    # per block: conditional and unconditional whole-sequence calls, then pairs of window calls
    assert [w for _, _, w in model.calls] == ([False] * 2 + [True] * 6) * 2
    assert out.model_calls == 16 and out.nfe == 16


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_rows_that_left_the_batch_get_their_cache_rows_gathered(cache):
    def stop_row_1(block, end, tokens, history):
        return torch.tensor([False, block == 0, False])

    kwargs = dict(prompt=[[1, 2, 3], [4], [5, 6]], pad_id=PAD, length=16, steps=16,
                  block_length=4, unmasking="confidence", on_block=stop_row_1)  # fmt: skip
    ref = sample(cached_toy(), mask_id=MASK, generator=gen(3), **kwargs)
    model = cached_toy()
    out = sample(model, mask_id=MASK, generator=gen(3), cache=cache, **kwargs)
    assert torch.equal(out.tokens, ref.tokens)
    assert (out.tokens[1, 7:] == 0).all()  # stopped after its first block
    assert [rows for rows, _, w in model.calls if w][-1] == 2  # windows of the 2 rows left


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize(
    "corrector",
    [Corrector(2), Corrector(3, every=2, update="top_k_positions:positions=1"),
     Corrector(1, final_steps=2), Corrector(2, update="sample")],
)  # fmt: skip
def test_in_one_block_an_exact_cache_gives_the_corrected_tokens_of_no_cache(cache, corrector):
    """One block after a prompt: the corrector's region is the block either way, so an exact
    cache must reproduce ``cache="none"`` with the corrector too."""
    kwargs = dict(mask_id=MASK, prompt=[[1, 2, 3], [4]], pad_id=PAD, length=8, steps=8,
                  unmasking="confidence", corrector=corrector, return_history=True)  # fmt: skip
    ref = sample(cached_toy(), generator=gen(2), **kwargs)
    model = cached_toy()
    out = sample(model, generator=gen(2), cache=cache, **kwargs)
    assert torch.equal(out.tokens, ref.tokens)
    assert torch.equal(out.num_corrected, ref.num_corrected)
    assert torch.equal(out.corrector_changes.new, ref.corrector_changes.new)
    assert any(w for _, _, w in model.calls) and ref.nfe == out.nfe


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("final_steps", [0, 1])
def test_the_corrector_revises_only_the_current_block(cache, final_steps):
    out = sample(
        dit(), mask_id=MASK, prompt=torch.tensor([1, 2, 3]), batch_size=2, length=12, steps=12,
        block_length=4, unmasking="confidence", temperature=0.0, return_history=True,
        corrector=Corrector(2, every=1, final_steps=final_steps), cache=cache, generator=gen(),
    )  # fmt: skip
    for record in out.history:
        start = 3 + 4 * record.block
        cols = record.corrected.any(dim=0).nonzero().flatten()
        assert ((cols >= start) & (cols < start + 4)).all()
    # once a block is over its tokens stay
    done = {}
    for record in out.history:
        for b, tokens in done.items():
            assert torch.equal(record.tokens[:, 3 + 4 * b : 7 + 4 * b], tokens)
        if record.kind in ("fill", "polish") or record is out.history.records[-1]:
            done[record.block] = record.tokens[:, 3 + 4 * record.block : 7 + 4 * record.block]
    assert not (out.tokens == MASK).any()
    if final_steps:
        assert any(r.kind == "polish" for r in out.history)
    changes = out.corrector_changes
    assert len(changes.rows) == int(out.num_corrected.sum())
    starts = 3 + 4 * ((changes.positions - 3) // 4)
    assert ((changes.positions >= starts) & (changes.positions < starts + 4)).all()


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize(
    "settings_",
    [
        dict(corrector=Corrector(3)),
        dict(corrector=Corrector(3, every=2), unmasking="threshold"),
        dict(
            corrector=Corrector(2, update="top_k_positions:positions=1"),
            eos_id=EOS,
            stop_at_eos=True,
        ),  # fmt: skip
        dict(corrector=Corrector(2), guidance=Guidance(gamma=2.0, condition=1, in_corrector=False)),
        dict(corrector=Corrector(2, final_steps=2), prompt=[[1, 2, 3], [4], [5, 6]]),
    ],
)
def test_under_a_cache_shrinking_the_batch_changes_no_token(cache, settings_):
    kwargs = {**dict(mask_id=MASK, batch_size=3, length=12, steps=12, block_length=4,
                     unmasking="confidence", cache=cache), **settings_}  # fmt: skip
    if "prompt" in kwargs:
        kwargs.pop("batch_size")
    classes = 2 if "guidance" in kwargs else 0
    shrunk, full = (
        sample(cached_toy(num_classes=classes), generator=gen(1), shrink_batch=s, **kwargs)
        for s in (True, False)
    )
    assert torch.equal(shrunk.tokens, full.tokens)
    assert torch.equal(shrunk.num_corrected, full.num_corrected)
    assert shrunk.nfe <= full.nfe


def test_the_dit_samples_with_every_setting_under_both_caches():
    model = dit(num_classes=2)
    for cache in ("prefix", "dual"):
        for extra in (
            dict(guidance=Guidance(gamma=1.5, condition=1), corrector=Corrector(2)),
            dict(prompt=[[1, 2, 3], [4]], pad_id=PAD, corrector=Corrector(1, final_steps=1)),
            dict(unmasking=ReMDM(eta=0.1), batch_size=2),
        ):
            kwargs = {"batch_size": 2, **extra}
            if "prompt" in kwargs:
                kwargs.pop("batch_size")
            out = sample(model, mask_id=MASK, length=12, steps=12, block_length=4, cache=cache,
                         generator=gen(), **kwargs)  # fmt: skip
            assert not (out.tokens == MASK).any()


def test_prism_reads_the_quality_logits_of_the_window():
    model = dit(quality_head=True)
    ref = sample(model, mask_id=MASK, batch_size=2, length=8, steps=8, block_length=4,
                 unmasking=Prism(eta=0.0, num_remask=1, step_on=0.0), generator=gen())  # fmt: skip
    out = sample(model, mask_id=MASK, batch_size=2, length=8, steps=8, block_length=4,
                 unmasking=Prism(eta=0.0, num_remask=1, step_on=0.0), generator=gen(),
                 cache="dual")  # fmt: skip
    assert out.tokens.shape == ref.tokens.shape and not (out.tokens == MASK).any()


def test_a_whole_window_of_a_dit_matches_no_cache():
    """One block and no prompt: the window is the whole sequence, the cache empty."""
    model = dit()
    kwargs = dict(mask_id=MASK, batch_size=2, length=12, steps=12, unmasking="confidence",
                  temperature=0.0, corrector=Corrector(2))  # fmt: skip
    ref = sample(model, **kwargs)
    out = sample(model, cache="dual", **kwargs)
    assert torch.equal(out.tokens, ref.tokens) and out.nfe == ref.nfe


def test_a_model_without_the_cache_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"cache='none'") as err:
        sample(ToyDenoiser(vocab_size=V).eval(), mask_id=MASK, length=8, block_length=4,
               cache="dual")  # fmt: skip
    assert "\n" not in str(err.value) and "ToyDenoiser" in str(err.value)


def test_other_samplers_refuse_the_cache():
    from proseco.sampling import sample_autoregressive, sample_uniform

    ar = ProsecoDiT(ProsecoDiTConfig.from_preset(
        "cpu-tiny", vocab_size=V, mask_token_id=MASK, max_length=64, causal=True)).eval()  # fmt: skip
    with pytest.raises(ConfigError, match="autoregressive"):
        sample_autoregressive(ar, prompt=torch.tensor([1]), length=4, cache="prefix")
    udlm = ProsecoDiT(ProsecoDiTConfig.from_preset(
        "cpu-tiny", vocab_size=V, mask_token_id=MASK, max_length=64, diffusion="uniform")).eval()  # fmt: skip
    with pytest.raises(ConfigError, match="UDLM"):
        sample_uniform(udlm, length=4, cache="dual")


def test_the_setting_is_validated_and_round_trips():
    with pytest.raises(ConfigError, match="cache must be one of"):
        SamplingConfig(cache="full")
    config = SamplingConfig(cache="dual", block_length=4)
    assert SamplingConfig.from_json(config.to_json()) == config
    assert "cache" not in SamplingConfig().to_dict()  # configs saved before it read back equal
    assert config.to_dict()["cache"] == "dual"


# ----------------------------------------------------------------------------- the DiT's cache
def _inputs(batch=3, length=20):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, MASK, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, :4] = 0
    mask[2, :7] = 0
    return x, mask


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(quality_head=True, num_classes=3, time_conditioning=True)],
)
def test_a_window_call_on_the_dits_cache_gives_the_whole_calls_logits(kwargs):
    model = dit(**kwargs)
    x, mask = _inputs()
    extra = {}
    if kwargs:
        extra = dict(class_labels=torch.tensor([0, 1, 3]), timesteps=torch.tensor([0.2, 0.5, 0.9]))
    with torch.no_grad():
        whole = model(x, attention_mask=mask, use_cache=True, **extra)
        plain = model(x, attention_mask=mask, **extra)
        assert torch.equal(whole.logits, plain.logits)  # caching changes nothing of the call
        cache = whole.past_key_values
        assert isinstance(cache, KVCache) and cache.positions.tolist() == list(range(20))
        assert len(cache.keys) == 4 + bool(kwargs.get("quality_head"))
        for start, stop in ((8, 12), (8, 20), (0, 4)):
            context = torch.cat((torch.arange(0, start), torch.arange(stop, 20)))
            window = model(x[:, start:stop], attention_mask=mask[:, start:stop],
                           position_ids=torch.arange(start, stop),
                           past_key_values=cache.select(context), **extra)  # fmt: skip
            torch.testing.assert_close(window.logits, plain.logits[:, start:stop],
                                       atol=1e-5, rtol=1e-5)  # fmt: skip
            if kwargs.get("quality_head"):
                torch.testing.assert_close(window.quality_logits,
                                           plain.quality_logits[:, start:stop],
                                           atol=1e-5, rtol=1e-5)  # fmt: skip
        rows = torch.tensor([2, 0])
        context = torch.cat((torch.arange(0, 8), torch.arange(12, 20)))
        picked = model(x[rows, 8:12], position_ids=torch.arange(8, 12),
                       past_key_values=cache.select(context).rows(rows),
                       **{k: v[rows] for k, v in extra.items()})  # fmt: skip
        torch.testing.assert_close(picked.logits, plain.logits[rows, 8:12], atol=1e-5, rtol=1e-5)


def test_kv_cache_rows_are_put_back_where_they_belong():
    model = dit()
    x, mask = _inputs()
    with torch.no_grad():
        cache = model(x, attention_mask=mask, use_cache=True).past_key_values
    part = cache.rows(torch.tensor([2]))
    grown = part.empty_rows(3)
    grown.put_rows(torch.tensor([2]), part)
    assert torch.equal(grown.keys[0][2], cache.keys[0][2]) and not grown.keys[0][0].any()
    assert torch.equal(grown.key_mask[2], cache.key_mask[2]) and bool(grown.key_mask[0].all())


def test_the_dit_refuses_bad_cache_arguments():
    model = dit()
    x = _inputs()[0][:2]
    with torch.no_grad():
        cache = model(x, use_cache=True).past_key_values
        with pytest.raises(ValueError, match="position_ids"):
            model(x[:, :4], past_key_values=cache.select(torch.arange(4, 20)))
        with pytest.raises(ValueError, match="rows"):
            model(x[:1, :4], position_ids=torch.arange(4),
                  past_key_values=cache.select(torch.arange(4, 20)))  # fmt: skip
        with pytest.raises(ValueError, match="max_length"):
            model(x[:, :4], position_ids=torch.arange(62, 66),
                  past_key_values=cache.select(torch.arange(4, 20)))  # fmt: skip
    causal = ProsecoDiT(ProsecoDiTConfig.from_preset(
        "cpu-tiny", vocab_size=V, mask_token_id=MASK, max_length=64, causal=True)).eval()  # fmt: skip
    with pytest.raises(ValueError, match="bidirectional"):
        causal(x, use_cache=True)
