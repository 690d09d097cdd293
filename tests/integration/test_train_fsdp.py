"""FSDP on CPU (gloo, two processes).

torch's FSDP2 (``fully_shard``) runs on CPU: two processes shard a tiny DiT per block, each
computes the ProSeCo loss of its micro-batch, and one AdamW step gives the same weights as one
process accumulating both micro-batches (relative 1e-4: only float summation order differs).

Accelerate 1.15 only switches to FSDP on accelerators (its state sets ``DistributedType.FSDP``
for multi-GPU/XPU/NPU/... setups, never for ``MULTI_CPU``): ``accelerate launch`` with the
shipped FSDP config on a CPU-only machine runs plain data parallel. ``proseco train`` says so in
a warning; the slow test checks that the shipped config starts, takes its steps and warns.

This file is also the worker script: ``torchrun --nproc_per_node 2 test_train_fsdp.py OUT``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEP_SEEDS = (11, 12)  # the noise seed of micro-batch 0 and 1
TOLERANCE = 1e-4


def _setup():
    """A tiny DiT (fixed weights, adaLN gates non-zero), its batch ``[8, 24]`` and the loss."""
    from proseco.losses import LossConfig
    from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig
    from proseco.schedules import get_schedule

    config = ProsecoDiTConfig.from_preset(
        "cpu-tiny", vocab_size=16, max_length=24, hidden_size=32, num_layers=2, num_heads=2,
        cond_dim=16, dropout=0.0, mask_token_id=15, pad_token_id=14, bos_token_id=0,
        eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ProsecoDiT(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 14, (8, 24), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    batch = {"input_ids": ids, "loss_mask": mask, "noise_mask": mask}
    return model, batch, get_schedule("loglinear"), LossConfig(sc_weight=1.0)


def _micro_loss(model, batch, schedule, loss_config, part: int):
    from proseco.training.step import batch_loss

    rows = slice(4 * part, 4 * part + 4)
    micro = {k: v[rows] for k, v in batch.items()}
    generator = torch.Generator().manual_seed(STEP_SEEDS[part])
    out = batch_loss(
        model, micro, mask_id=15, schedule=schedule, loss_config=loss_config, step=0,
        generator=generator,
    )  # fmt: skip
    return out.loss


def _single_process_step() -> tuple[float, dict[str, torch.Tensor]]:
    model, batch, schedule, loss_config = _setup()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = [_micro_loss(model, batch, schedule, loss_config, part) for part in (0, 1)]
    (0.5 * (losses[0] + losses[1])).backward()
    optimizer.step()
    loss = 0.5 * float(losses[0].detach() + losses[1].detach())
    return loss, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fsdp_worker(out: str) -> None:
    """One of two processes: FSDP2-shard the DiT, one step, save the full weights (rank 0)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    model, batch, schedule, loss_config = _setup()
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = _micro_loss(model, batch, schedule, loss_config, rank)
    loss.backward()  # FSDP averages the gradients over the two processes
    optimizer.step()
    total = loss.detach().clone()
    dist.all_reduce(total)
    state = {k: v.full_tensor() for k, v in model.state_dict().items()}
    shards = [p.to_local().numel() for p in model.parameters()]
    if rank == 0:
        full = sum(v.numel() for v in state.values())
        torch.save({"loss": float(total) / 2, "state": state, "local": sum(shards),
                    "full": full}, out)  # fmt: skip
    dist.barrier()
    dist.destroy_process_group()


def test_fsdp2_on_cpu_takes_one_proseco_step_like_one_process(tmp_path):
    out = tmp_path / "fsdp.pt"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        __file__, str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fsdp = torch.load(out)
    assert fsdp["local"] < fsdp["full"]  # the parameters really are sharded
    loss, state = _single_process_step()
    assert fsdp["loss"] == pytest.approx(loss, rel=TOLERANCE)
    assert sorted(fsdp["state"]) == sorted(state)
    for name, value in state.items():
        torch.testing.assert_close(fsdp["state"][name], value, rtol=TOLERANCE, atol=1e-6)


@pytest.mark.slow
def test_shipped_fsdp_config_starts_on_cpu_and_warns_that_it_runs_data_parallel(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_cpu import tiny

    from proseco.training import save_config
    from proseco.training.launch import accelerate_config
    from proseco.training.metrics import read_metrics

    config = tiny(
        tmp_path, model={"dropout": 0.0},
        train={"max_steps": 2, "global_batch_size": 8, "micro_batch_size": 4, "log_every": 1,
               "eval_every": 0, "ema_decay": 0.0},
    )  # fmt: skip
    recipe = save_config(config, tmp_path / "recipe.yaml")
    cmd = [
        "accelerate", "launch", "--config_file", str(accelerate_config("fsdp")),
        "--num_processes", "2", "--mixed_precision", "no", "-m", "proseco", "train",
        str(recipe), "--output-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "runs as plain data parallel" in proc.stderr
    assert [r["step"] for r in read_metrics(tmp_path / "run", "train")] == [1, 2]


if __name__ == "__main__":
    _fsdp_worker(sys.argv[1])
