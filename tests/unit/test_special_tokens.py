"""One resolver for the special ids: explicit > model config > tokenizer for the mask, explicit >
tokenizer > model config for pad / BOS / EOS; the commands, the server and the data code use it."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from proseco.errors import ConfigError
from proseco.special_tokens import (
    SpecialIds,
    model_special_ids,
    resolve_special_ids,
    token_id,
    tokenizer_special_ids,
)


def tokenizer(**ids):
    names = ("mask", "pad", "bos", "eos", "sep", "cls")
    return SimpleNamespace(**{f"{n}_token_id": ids.get(n) for n in names})


def model(**ids):
    names = ("mask", "pad", "bos", "eos")
    return SimpleNamespace(config=SimpleNamespace(**{f"{n}_token_id": ids.get(n) for n in names}))


MODEL = model(mask=10, pad=11, bos=12, eos=13)
TOKENIZER = tokenizer(mask=20, pad=21, bos=22, eos=23)


def test_the_mask_is_the_models_and_the_layout_ids_are_the_tokenizers():
    ids = resolve_special_ids(MODEL, TOKENIZER)
    assert ids == SpecialIds(mask=10, pad=21, bos=22, eos=23)
    assert resolve_special_ids(MODEL) == SpecialIds(mask=10, pad=11, bos=12, eos=13)
    assert resolve_special_ids(None, TOKENIZER) == SpecialIds(mask=20, pad=21, bos=22, eos=23)
    assert resolve_special_ids(model(), TOKENIZER).mask == 20  # no model mask: the tokenizer's
    assert resolve_special_ids(MODEL, tokenizer()).eos == 13  # no tokenizer EOS: the model's


def test_explicit_arguments_win_over_both():
    ids = resolve_special_ids(MODEL, TOKENIZER, mask=1, pad=2, bos=3, eos=4)
    assert ids == SpecialIds(mask=1, pad=2, bos=3, eos=4)
    assert resolve_special_ids(MODEL, TOKENIZER, mask=True).mask is True  # checked by samplers


def test_tokenizer_fallbacks():
    assert tokenizer_special_ids(tokenizer(sep=5)).eos == 5  # EOS -> SEP
    assert tokenizer_special_ids(tokenizer(cls=6, eos=7)).bos == 6  # BOS -> CLS
    assert tokenizer_special_ids(tokenizer(eos=7)).bos == 7  # -> EOS
    assert tokenizer_special_ids(tokenizer(sep=5)).bos == 5  # -> SEP through EOS
    assert tokenizer_special_ids(None) == SpecialIds()


def test_config_values_are_read_as_ids():
    assert token_id([7, 8]) == 7  # several EOS ids: the first
    assert token_id(True) is None and token_id("3") is None and token_id([]) is None
    assert model_special_ids(model(eos=[5, 6])).eos == 5
    assert model_special_ids(object()) == SpecialIds()


def test_padding_and_require():
    assert SpecialIds(mask=3, pad=4, eos=5).padding() == 4
    assert SpecialIds(mask=3, eos=5).padding() == 5
    assert SpecialIds(mask=5, pad=5, eos=5).padding() == 0  # an inherited mask is skipped
    assert SpecialIds(mask=0).padding() == 1 and SpecialIds().padding() == 0
    assert SpecialIds(mask=1, eos=2).require(["mask", "eos"]) == {"mask": 1, "eos": 2}
    with pytest.raises(ConfigError, match="run: no pad/bos token id"):
        SpecialIds(mask=1).require(["mask", "pad", "bos"], where="run")


def test_the_data_code_and_the_commands_use_the_same_rule():
    from proseco.commands.sample import _mask_id
    from proseco.data.text import prompt_ids, special_ids

    full = tokenizer(mask=20, pad=21, cls=24, sep=25)
    assert special_ids(full) == {"bos": 24, "eos": 25, "pad": 21, "mask": 20}
    with pytest.raises(ValueError, match="tokenizer has no mask token"):
        special_ids(tokenizer(pad=1, bos=2, eos=3))

    class Chars(SimpleNamespace):
        chat_template = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    assert prompt_ids(Chars(**vars(tokenizer(cls=24, sep=25))), "ab", "none") == [24, 97, 98]
    assert prompt_ids(Chars(**vars(tokenizer(sep=25))), "ab", "none") == [25, 97, 98]
    args = argparse.Namespace(mask_id=None)
    assert _mask_id(args, MODEL, TOKENIZER) == 10
    assert _mask_id(argparse.Namespace(mask_id=3), MODEL, TOKENIZER) == 3
    assert _mask_id(args, model(), TOKENIZER) == 20
    with pytest.raises(ConfigError, match="no mask id"):
        _mask_id(args, model(), tokenizer())
