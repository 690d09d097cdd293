"""A hub name that is neither cached nor reachable fails at once, in one line, instead of after
a minute of the hub client's retries."""

import socket
import time

import pytest

from proseco import pretrained
from proseco.errors import ModelLoadError


def _no_network(*args, **kwargs):
    raise OSError(-2, "Name or service not known")


def test_an_unreachable_hub_is_one_clear_error_at_once(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="cannot be reached .Name or service not known.") as e:
        pretrained.load_pretrained("someorg/no-such-model")
    assert time.monotonic() - start < 30  # the retries took about a minute; imports take seconds
    assert "\n" not in str(e.value) and "proseco train" in str(e.value)


def test_offline_mode_and_cached_models_skip_the_probe(monkeypatch):
    calls = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: calls.append(a))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pretrained._check_hub_reachable("someorg/no-such-model")
    assert calls == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: "/cache/x")
    pretrained._check_hub_reachable("someorg/no-such-model")
    assert calls == []


def test_the_generate_command_says_it_in_one_line(monkeypatch, capsys):
    from proseco.cli import main

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    assert main(["generate", "someorg/no-such-model", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be reached" in err[0], err
