"""benchmarks/gpu_check.py: without a GPU it says so, exits 0 and leaves the page alone; its page
renders from measured rows; MFU arithmetic."""

from __future__ import annotations

import pytest
import torch

from tests.unit.benchmark_scripts import load_benchmark

gpu_check = load_benchmark("gpu_check.py")


def test_without_a_gpu_it_says_so_and_exits_0_leaving_the_page(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    page = tmp_path / "gpu.md"
    page.write_text("not measured yet\n")
    assert gpu_check.main(["--out", str(page)]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out
    assert page.read_text() == "not measured yet\n"
    assert not page.with_suffix(".json").exists()


def test_peak_and_flops():
    assert gpu_check.peak_tflops("NVIDIA H200") == 989.0
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.peak_tflops("NVIDIA L40S") == 362.0  # not L40's
    assert gpu_check.peak_tflops("Mystery GPU") is None
    assert gpu_check.model_flops_per_token(100, 2, 8, 16) == 600 + 12 * 2 * 8 * 16


def test_the_page_renders_from_measured_rows():
    data = {
        "meta": {"generated": "2026-01-01 00:00 UTC", "seconds": 200.0, "gpu": "NVIDIA H200",
                 "memory_gib": 139.8, "torch": "2.x", "cuda": "12.x", "python": "3.11",
                 "peak_tflops": 989.0},
        "training": {"params": 169_600_000, "params_no_embedding": 131_000_000, "batch": 64,
                     "length": 1024, "preset": "small", "steps": 10, "rows": [
                         {"mode": "mdlm", "step_s": 0.2, "ratio": 1.0, "tokens_per_s": 327_680,
                          "tflops": 300.0, "mfu": 0.303, "peak_gib": 40.0},
                         {"mode": "proseco", "step_s": 0.41, "ratio": 2.05, "tokens_per_s": 159_844,
                          "tflops": 290.0, "mfu": 0.293, "peak_gib": 41.0}]},
        "sampling": {"prompt": 384, "new": 128, "skipped": ["batch 64, corrector, cache dual"],
                     "rows": [{"batch": 1, "corrector": False, "cache": c, "seconds": 1.0,
                               "tokens_per_s": t, "nfe": 128}
                              for c, t in (("none", 100.0), ("prefix", 200.0), ("dual", 400.0))]},
    }  # fmt: skip
    page = gpu_check.render(data)
    assert "| mdlm | 0.200 | 327,680 | 1.00 | 300 | 30.3 % | 40.0 |" in page
    assert "| 1 | plain | 100 | 200 | 400 | 4.00x |" in page
    assert "Skipped (time budget): batch 64, corrector, cache dual." in page


def test_every_code_path_runs_at_toy_size_on_a_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.md"
    assert gpu_check.main(["--device", "cpu", "--preset", "cpu-tiny", "--length", "32",
                           "--vocab", "40", "--batch", "2", "--steps", "1", "--warmup", "0",
                           "--batches", "1", "3", "--out", str(out)]) == 0  # fmt: skip
    page = out.read_text()
    assert "## Training: `cpu-tiny` DiT, bf16, length 32" in page
    assert "| mdlm |" in page and "| proseco |" in page and "n/a" in page
    assert "| 3 | Corrector(1, every=1) |" in page


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_it_runs_on_a_gpu(tmp_path):
    assert gpu_check.main(["--out", str(tmp_path / "gpu.md"), "--steps", "2", "--warmup", "1",
                           "--batch", "4"]) == 0  # fmt: skip
    assert "Training" in (tmp_path / "gpu.md").read_text()
