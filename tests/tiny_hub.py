"""Tiny hub-style models built locally from a config (no downloads), shared by tests."""

from __future__ import annotations

from pathlib import Path

import torch

CHARS = [chr(c) for c in range(32, 127)]


def char_word_tokenizer(chat_template: str | None = None):
    """A BERT-style tokenizer over printable characters: [PAD] 0, [CLS] 1, [SEP] 2, [MASK] 3."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3, "[UNK]": 4}
    vocab |= {c: i + 5 for i, c in enumerate(CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", unk_token="[UNK]",
    )  # fmt: skip
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def save_tiny_bert(path: Path, *, seed: int = 0, chat_template: str | None = None) -> Path:
    """A 2-layer ``BertForMaskedLM`` (tied input/output embeddings, as BERT's default) and its
    character tokenizer, written with ``save_pretrained`` like a downloaded checkpoint."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = char_word_tokenizer(chat_template)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64, pad_token_id=0,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = BertForMaskedLM(config)
    assert model.config.tie_word_embeddings
    path = Path(path)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


# -- a LLaDA stand-in ----------------------------------------------------------------------------

TINY_LLADA_CODE = '''"""A tiny stand-in for LLaDA-8B's remote modelling code: the same class and module names
(``LLaDAModelLM.model.transformer.blocks[i]`` are ``LLaDALlamaBlock`` with ``q_proj``, ``k_proj``,
``v_proj``, ``attn_out``, ``ff_proj``, ``up_proj``, ``ff_out``), the same calling convention (an
attention mask turns attention causal) and ``set_activation_checkpointing``.

By default: learned positions (``wpe``), LayerNorm and biases. Config keys of LLaDA's own config
switch to LLaDA-8B's layout, computed as LLaDA's code does: ``rope`` (+ ``rope_theta``: rotary
q/k in float32 on the pairs (i, i + d/2)), ``layer_norm_type="rms"`` (+ ``rms_norm_eps``: RMSNorm
in float32), ``include_bias=False``, ``n_kv_heads`` (grouped-query attention) and
``mlp_hidden_size`` (default ``2 * d_model``)."""

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class LLaDAConfig(PretrainedConfig):
    model_type = "llada"

    def __init__(self, vocab_size=128, d_model=32, n_heads=2, n_layers=1,
                 max_sequence_length=1024, mask_token_id=127, **kwargs):
        self.vocab_size, self.d_model, self.n_heads = vocab_size, d_model, n_heads
        self.n_layers, self.max_sequence_length = n_layers, max_sequence_length
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        y = x.to(torch.float32)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


def make_norm(config):
    if getattr(config, "layer_norm_type", "default") == "rms":
        return RMSNorm(config.d_model, getattr(config, "rms_norm_eps", 1e-5))
    return nn.LayerNorm(config.d_model, bias=getattr(config, "include_bias", True))


def rotate(q, k, theta):
    """RoPE on (B, heads, T, hs) queries and keys, as LLaDA's RotaryEmbedding computes it."""
    hs, n = q.shape[-1], q.shape[-2]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=torch.float) / hs))
    freqs = torch.einsum("i , j -> i j", torch.arange(n, dtype=torch.float), inv_freq)
    angles = torch.cat((freqs, freqs), dim=-1)[None, None]

    def one(t):
        b, h, length, width = t.shape
        first, second = t.float().view(b, h, length, 2, width // 2).unbind(dim=-2)
        turned = torch.cat((-second, first), dim=-1)
        return (t.float() * angles.cos() + turned * angles.sin()).type_as(t)

    return one(q), one(k)


class LLaDALlamaBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        d, self.n_heads = config.d_model, config.n_heads
        self.n_kv = getattr(config, "n_kv_heads", None) or config.n_heads
        self.rope = getattr(config, "rope", False) and getattr(config, "rope_theta", 10000.0)
        bias, hidden = getattr(config, "include_bias", True), getattr(config, "mlp_hidden_size", None)
        hidden, kv = hidden or 2 * d, d // self.n_heads * self.n_kv
        self.attn_norm, self.ff_norm = make_norm(config), make_norm(config)
        self.q_proj = nn.Linear(d, d, bias=bias)
        self.k_proj, self.v_proj = nn.Linear(d, kv, bias=bias), nn.Linear(d, kv, bias=bias)
        self.attn_out = nn.Linear(d, d, bias=bias)
        self.ff_proj, self.up_proj = nn.Linear(d, hidden, bias=bias), nn.Linear(d, hidden, bias=bias)
        self.ff_out = nn.Linear(hidden, d, bias=bias)

    def forward(self, x, bias=None):
        b, n, d = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(b, n, self.n_heads, -1).transpose(1, 2)
        k, v = (p(h).view(b, n, self.n_kv, -1).transpose(1, 2) for p in (self.k_proj, self.v_proj))
        if self.rope:
            q, k = rotate(q, k, self.rope)
        if self.n_kv != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.attn_out(y.transpose(1, 2).reshape(b, n, d))
        h = self.ff_norm(x)
        return x + self.ff_out(nn.functional.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDAModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.rope = getattr(config, "rope", False)
        positions = {} if self.rope else {"wpe": nn.Embedding(config.max_sequence_length, config.d_model)}
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.d_model),
            **positions,
            blocks=nn.ModuleList(LLaDALlamaBlock(config) for _ in range(config.n_layers)),
            ln_f=make_norm(config),
            ff_out=nn.Linear(config.d_model, config.vocab_size,
                             bias=getattr(config, "include_bias", True)),
        ))
        self.activation_checkpointing_strategy = None

    def set_activation_checkpointing(self, strategy):
        self.activation_checkpointing_strategy = strategy

    def forward(self, input_ids, attention_mask=None):
        t, n = self.transformer, input_ids.shape[1]
        x = t.wte(input_ids)
        if not self.rope:
            x = x + t.wpe(torch.arange(n, device=input_ids.device))
        bias = None
        if attention_mask is not None and 0.0 in attention_mask:  # as LLaDA: causal with a mask
            low = torch.finfo(x.dtype).min
            bias = torch.triu(torch.full((n, n), low, dtype=x.dtype), diagonal=1)
            bias = (bias + (1.0 - attention_mask.to(x.dtype))[:, None, :] * low)[:, None]
        for block in t.blocks:
            x = block(x, bias)
        return t.ff_out(t.ln_f(x))


class LLaDAModelLM(PreTrainedModel):
    config_class = LLaDAConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDALlamaBlock"]

    def __init__(self, config):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.3)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return CausalLMOutputWithPast(logits=self.model(input_ids, attention_mask))
'''

# LLaDA-8B-Instruct's layout: <|startoftext|><|start_header_id|>user<|end_header_id|>\n\n...
LLADA_CHAT_TEMPLATE = (
    "<|startoftext|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def llada_char_tokenizer():
    """LLaDA's special tokens (``<|startoftext|>`` BOS, ``<|endoftext|>`` EOS and padding, the
    chat headers, ``<|eot_id|>``, ``<|mdm_mask|>`` = 127, not declared as the mask token) around
    single characters (printable ASCII, newline, tab), with LLaDA-8B-Instruct's chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"]  # fmt: skip
    vocab = {token: i for i, token in enumerate(specials)}
    vocab |= {c: i + len(specials) for i, c in enumerate(["\n", "\t", *CHARS])}
    vocab["<|mdm_mask|>"] = 127
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[*specials[2:], "<|mdm_mask|>"],
    )  # fmt: skip
    tokenizer.chat_template = LLADA_CHAT_TEMPLATE
    return tokenizer


def save_tiny_llada(path: Path, *, seed: int = 0, **config) -> Path:
    """A LLaDA-8B stand-in directory: remote code (``auto_map``, ``trust_remote_code=True``), a
    1-layer 32-wide ``LLaDAModelLM`` over 128 ids (1,024 positions) and its tokenizer, laid out
    like a downloaded ``GSAI-ML/LLaDA-8B-Base`` / ``-Instruct`` checkpoint. ``config``: keys of
    its ``LLaDAConfig`` (sizes, or LLaDA's architecture keys: see ``TINY_LLADA_CODE``), written
    to ``config.json``."""
    import json

    path = Path(path)
    path.mkdir(parents=True)
    (path / "modeling_llada.py").write_text(TINY_LLADA_CODE)
    namespace: dict = {}
    exec(compile(TINY_LLADA_CODE, "modeling_llada.py", "exec"), namespace)
    torch.manual_seed(seed)
    model = namespace["LLaDAModelLM"](namespace["LLaDAConfig"](**config))
    model.save_pretrained(str(path))
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "modeling_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    }
    config["architectures"] = ["LLaDAModelLM"]
    (path / "config.json").write_text(json.dumps(config, indent=2))
    llada_char_tokenizer().save_pretrained(str(path))
    return path
