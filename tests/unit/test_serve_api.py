"""``proseco serve``: the OpenAI-compatible API exercised with the real ``openai`` client against
127.0.0.1 — models, chat, completions, streaming, 400s that leave the server up, batching of
concurrent requests, clients that leave."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from proseco.serving.app import create_app  # noqa: E402
from proseco.serving.engine import Engine  # noqa: E402
from tests.unit.serve_helpers import save_dit, trained_sft_model  # noqa: E402


class Server:
    """uvicorn serving ``app`` on a free port of 127.0.0.1 in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0)

    @property
    def stats(self):
        return self.app.state.batcher.stats

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def engine():
    from proseco.pretrained import load_pretrained

    model, tok, saved = load_pretrained(trained_sft_model())
    return Engine(model, tok, saved, mask_id=tok.mask_token_id, preset="fast", name="sft-tiny")


@pytest.fixture(scope="module")
def server(engine):
    s = Server(create_app(engine, max_batch_size=16))
    yield s
    s.close()


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    """A random DiT: its answers are random characters (a 4-step SFT model answers padding)."""
    from proseco.pretrained import load_pretrained

    model, tok, saved = load_pretrained(save_dit(tmp_path_factory.mktemp("dit") / "model"))
    engine = Engine(model, tok, saved, mask_id=tok.mask_token_id, preset="fast", name="dit")
    s = Server(create_app(engine))
    yield s
    s.close()


def _post(server, path, body, timeout=30):
    request = urllib.request.Request(server.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


CHAT = [{"role": "user", "content": "What is 7 + 10?"}]


def test_models_lists_the_served_model(server):
    models = server.client.models.list()
    assert [m.id for m in models.data] == ["sft-tiny"]
    assert server.client.models.retrieve("sft-tiny").id == "sft-tiny"


def test_chat_completion_answers_with_usage_and_nfe(server, engine):
    r = server.client.chat.completions.create(model="sft-tiny", messages=CHAT, max_tokens=16)
    assert r.object == "chat.completion" and r.model == "sft-tiny"
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    prompt = engine.format.chat(CHAT)
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.completion_tokens <= 16
    extra = r.usage.model_extra
    assert extra["nfe"] > 0 and extra["nfe"] == extra["denoiser_nfe"] + extra["corrector_nfe"]


def test_same_answer_as_the_engine_for_a_seeded_request(server, engine):
    body = dict(model="sft-tiny", messages=CHAT, max_tokens=8, temperature=1.0, seed=3)
    a = server.client.chat.completions.create(**body).choices[0].message.content
    b = server.client.chat.completions.create(**body).choices[0].message.content
    assert a == b
    prompt = engine.format.chat(CHAT)
    config, length = engine.plan(len(prompt), 8)
    config = config.replace(temperature=1.0)
    (direct,), _ = engine.generate([prompt], config, length,
                                   generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert a == direct.text


def test_completions_take_strings_lists_and_n(server):
    r = server.client.completions.create(model="sft-tiny", prompt="What is 7", max_tokens=8)
    assert r.object == "text_completion" and len(r.choices) == 1
    assert isinstance(r.choices[0].text, str)
    r = server.client.completions.create(model="sft-tiny", prompt=["ab", "What is 7 + 1"],
                                         max_tokens=8, n=2)  # fmt: skip
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.usage.model_extra["nfe"] > 0
    r = server.client.completions.create(model="sft-tiny", prompt=[5, 6, 7], max_tokens=4,
                                         extra_body={"ignore_eos": True})  # fmt: skip
    assert r.usage.completion_tokens == 4 and r.choices[0].finish_reason == "length"


def test_prosecos_knobs_are_extra_body_fields(server):
    r = server.client.chat.completions.create(
        model="sft-tiny", messages=CHAT, max_tokens=8,
        extra_body={"preset": "max", "corrector_steps": 2, "corrector_every": 1,
                    "block_length": 4, "steps": 8, "top_p": 0.9, "ignore_eos": True},
    )  # fmt: skip
    extra = r.usage.model_extra
    assert extra["corrector_nfe"] > 0 and r.usage.completion_tokens == 8
    r = server.client.chat.completions.create(model="sft-tiny", messages=CHAT, max_tokens=8,
                                              extra_body={"corrector_steps": 0})  # fmt: skip
    assert r.usage.model_extra["corrector_nfe"] == 0


def test_streaming_sends_a_chunk_per_block_then_done(text_server):
    server = text_server
    stream = server.client.chat.completions.create(
        model="dit", messages=CHAT, max_tokens=16, stream=True,
        stream_options={"include_usage": True},
        extra_body={"block_length": 4, "steps": 8, "ignore_eos": True, "corrector_steps": 0},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks[1:] if c.choices and
             c.choices[0].delta.content]  # fmt: skip
    assert 1 <= len(texts) <= 4  # one per block (a block of special tokens adds no text)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    whole = server.client.chat.completions.create(
        model="dit", messages=CHAT, max_tokens=16,
        extra_body={"block_length": 4, "steps": 8, "ignore_eos": True, "corrector_steps": 0},
    ).choices[0].message.content  # fmt: skip
    assert "".join(texts) == whole  # presets are greedy: the same answer
    # the raw stream is server-sent events ending with [DONE]
    status, raw = _post(server, "/v1/completions",
                        {"prompt": "ab", "max_tokens": 8, "stream": True})  # fmt: skip
    assert status == 200
    events = [line for line in raw.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize(
    "body, param",
    [
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"preset": "nope"}, "preset"),
        ({"steps": "x"}, "steps"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 2}, "top_p"),
        ({"corrector_steps": -1}, "corrector_steps"),
        ({"block_length": 0}, "block_length"),
        ({"n": 0}, "n"),
        ({"seed": "s"}, "seed"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_bad_requests_get_openai_400s_and_the_server_stays_up(server, body, param):
    standard = {"max_tokens", "temperature", "top_p", "n", "seed", "messages", "logprobs"}
    kwargs = {k: v for k, v in body.items() if k in standard}
    extra = {k: v for k, v in body.items() if k not in standard}
    with pytest.raises(openai.BadRequestError) as info:
        server.client.chat.completions.create(
            **{"model": "sft-tiny", "messages": CHAT, **kwargs}, extra_body=extra
        )
    err = info.value
    assert err.status_code == 400
    assert err.body["type"] == "invalid_request_error" and err.body["param"] == param
    assert err.body["message"] and "code" in err.body
    # still answering
    assert server.client.models.list().data[0].id == "sft-tiny"


def test_malformed_bodies_unknown_models_and_paths_get_openai_errors(server):
    request = urllib.request.Request(server.url + "/v1/completions", data=b"{not json",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400 and "error" in json.loads(info.value.read())
    with pytest.raises(openai.NotFoundError) as info:
        server.client.chat.completions.create(model="gpt-4", messages=CHAT)
    assert info.value.body["code"] == "model_not_found"
    status, raw = _post(server, "/v1/nothing", {})
    assert status == 404 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    r = server.client.chat.completions.create(model="sft-tiny", messages=CHAT, max_tokens=4)
    assert r.choices


def test_sixteen_concurrent_requests_are_all_answered_in_fewer_batches(server, engine):
    gate, entered = threading.Event(), threading.Event()
    original = engine.generate
    first_rows = []

    def held(prompts, *args, **kwargs):  # the first batch waits until the others have queued up
        if not entered.is_set():
            first_rows.append(len(prompts))  # requests that arrived together share it
            entered.set()
            assert gate.wait(300)
        return original(prompts, *args, **kwargs)

    engine.generate = held
    before = server.stats.batches
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = [
                pool.submit(server.client.chat.completions.create, model="sft-tiny",
                            messages=[{"role": "user", "content": f"What is {i} + 1?"}],
                            max_tokens=8)
                for i in range(16)
            ]  # fmt: skip
            # generous limits: on a loaded 2-core machine 15 HTTP requests took over 30 s to queue
            assert entered.wait(120)
            deadline = time.monotonic() + 180
            while first_rows[0] + server.app.state.batcher._queue.qsize() < 16:
                assert time.monotonic() < deadline, "requests did not queue"
                time.sleep(0.01)
            gate.set()
            answers = [f.result(timeout=300) for f in futures]
    finally:
        engine.generate = original
        gate.set()
    assert len(answers) == 16 and all(isinstance(a.choices[0].message.content, str)
                                      for a in answers)  # fmt: skip
    batches = server.stats.batches - before
    # the first batch, then one batch of all that arrived meanwhile
    assert batches == 2 < 16
    assert server.stats.largest_batch >= max(first_rows[0], 16 - first_rows[0])
    assert server.client.models.list().data


def test_a_client_that_leaves_frees_its_row(server, engine):
    original = engine.generate
    slow = threading.Event()

    def slowly(*args, **kwargs):  # every block takes a while, so the client leaves mid-way
        on_text, cancelled = kwargs.get("on_text"), kwargs.get("cancelled")

        def waiting(row):
            blocks.append(row)
            time.sleep(0.2)
            return cancelled(row)

        kwargs["cancelled"] = waiting
        slow.set()
        return original(*args, on_text=on_text, **{k: v for k, v in kwargs.items()
                                                   if k != "on_text"})  # fmt: skip

    blocks = []
    engine.generate = slowly
    before = server.stats.cancelled
    try:
        stream = server.client.chat.completions.create(
            model="sft-tiny", messages=CHAT, max_tokens=32, stream=True,
            extra_body={"block_length": 1, "steps": 32, "ignore_eos": True},
        )  # fmt: skip
        next(iter(stream))  # the role chunk: the request is running
        assert slow.wait(10)
        stream.close()  # the client leaves
        deadline = time.monotonic() + 20
        while server.stats.cancelled == before:
            assert time.monotonic() < deadline, "the row was not freed"
            time.sleep(0.05)
    finally:
        engine.generate = original
    assert len(blocks) < 32  # the row stopped sampling before its 32 blocks; others are served
    r = server.client.chat.completions.create(model="sft-tiny", messages=CHAT, max_tokens=4)
    assert r.choices


def test_sequential_serving_runs_one_request_per_batch(engine):
    s = Server(create_app(engine, batching=False))
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(
                lambda i: s.client.completions.create(model="sft-tiny", prompt=f"{i}",
                                                      max_tokens=4),
                range(4),
            ))  # fmt: skip
        assert len(answers) == 4 and s.stats.batches == 4 and s.stats.largest_batch == 1
    finally:
        s.close()


def test_a_non_streaming_client_that_leaves_frees_its_row_too(server, engine):
    import socket

    original, blocks = engine.generate, []

    def slowly(*args, **kwargs):
        cancelled = kwargs["cancelled"]

        def waiting(row):
            blocks.append(row)
            time.sleep(0.2)
            return cancelled(row)

        kwargs["cancelled"] = waiting
        return original(*args, **kwargs)

    engine.generate = slowly
    before = server.stats.cancelled
    try:
        body = json.dumps({"messages": CHAT, "max_tokens": 32, "block_length": 1, "steps": 32,
                           "ignore_eos": True}).encode()  # fmt: skip
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            deadline = time.monotonic() + 10
            while not blocks:  # sampling started
                assert time.monotonic() < deadline
                time.sleep(0.02)
        deadline = time.monotonic() + 20  # the socket is closed: the client left
        while server.stats.cancelled == before:
            assert time.monotonic() < deadline, "the row was not freed"
            time.sleep(0.05)
    finally:
        engine.generate = original
    assert len(blocks) < 32
    assert server.client.chat.completions.create(model="sft-tiny", messages=CHAT, max_tokens=4)
