"""Data-parallel training with ``fit(..., distributed=True)``: two gloo processes on the CPU.

Each process builds its model from a *different* seed (other weights, other masks and
orders), so the test also shows that ``DistributedDataParallel`` starts every process
from rank 0's state. After a few steps every process must hold the same parameters and
buffers (bitwise: every process applies the same averaged gradients), equal within float
tolerance to one process trained from rank 0's model on the concatenated minibatches
(``batch_size`` times two rows per step), and draw the same samples from the same seed.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flowkit
from flowkit.training import History

WORLD_SIZE = 2
ROWS, BATCH, EPOCHS = 64, 8, 2  # 4 steps per epoch: 8 rows from each process per step
SHUFFLE_SEED = 11
KINDS = ("maf", "maf_act_norm", "bernoulli", "bernoulli_sampled")


def build(kind: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "maf":
        return flowkit.maf(3, num_transforms=2, hidden_dims=[8], permutation="random", seed=seed).double()
    if kind == "maf_act_norm":
        return flowkit.maf(3, num_transforms=2, hidden_dims=[8], act_norm=True, seed=seed).double()
    if kind == "bernoulli_sampled":
        return flowkit.BernoulliMADE(4, [8], conditioner=flowkit.MADEConfig(order="random"), seed=seed).double()
    mask_sets = flowkit.MADEConfig(num_masks=3, order="random")
    return flowkit.BernoulliMADE(4, [8], conditioner=mask_sets, seed=seed).double()


def data(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    dim = 4 if kind.startswith("bernoulli") else 3
    x = torch.randn(ROWS + 16, dim, generator=g, dtype=torch.float64)
    if kind.startswith("bernoulli"):
        x = (x > 0).double()
    return x[:ROWS], x[ROWS:]


def train(kind: str, seed: int, batch_size: int, distributed: bool) -> tuple[torch.nn.Module, History]:
    model = build(kind, seed)
    train_rows, valid_rows = data(kind)
    if kind == "bernoulli":  # no validation, so no best state is loaded at the end
        valid_rows = None
    history = flowkit.fit(
        model, train_rows, valid_rows, epochs=EPOCHS, batch_size=batch_size, lr=1e-2, patience=None,
        cycle_masks=kind == "bernoulli", progress=False, seed=SHUFFLE_SEED + seed, distributed=distributed,
        # mask sampling: every process draws the same masks from rank 0's seed
        resample_masks="full" if kind == "bernoulli_sampled" else None,
        valid_masks=3 if kind == "bernoulli_sampled" else None,
    )  # fmt: skip
    return model, history


def samples(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(5)
    return model.sample((4,))


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        results = {}
        for kind in KINDS:
            model, history = train(kind, seed=rank, batch_size=BATCH, distributed=True)
            results[kind] = {"state": model.state_dict(), "history": history, "samples": samples(model)}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of the two processes ended with."""
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(str(tmp / "rendezvous"), str(tmp)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(tmp / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize("kind", KINDS)
def test_every_rank_ends_with_the_same_model(ranks, kind):
    first, second = ranks[0][kind], ranks[1][kind]
    assert first["state"].keys() == second["state"].keys()
    for key, value in first["state"].items():
        assert torch.equal(value, second["state"][key]), f"{kind}: {key} differs between ranks"
    assert first["history"] == second["history"]
    assert torch.equal(first["samples"], second["samples"])


@pytest.mark.parametrize("kind", ["maf", "bernoulli", "bernoulli_sampled"])
def test_two_processes_match_one_process_on_the_concatenated_batches(ranks, kind):
    # Rank 0's model, seed and shuffle, trained alone on minibatches twice as large.
    reference, history = train(kind, seed=0, batch_size=WORLD_SIZE * BATCH, distributed=False)
    distributed = ranks[0][kind]
    assert history.steps == distributed["history"].steps == EPOCHS * ROWS // (WORLD_SIZE * BATCH)
    start = build(kind, seed=0).state_dict()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(distributed["state"][key], value, rtol=1e-9, atol=1e-10, msg=f"{kind}: {key}")
        if value.is_floating_point() and "running" not in key:
            assert not torch.equal(value, start[key]) or "base" in key, f"{kind}: {key} did not train"
    ours = distributed["history"]
    assert ours.train_nll == pytest.approx(history.train_nll, rel=1e-9)
    assert ours.valid_nll == pytest.approx(history.valid_nll, rel=1e-9)
    torch.testing.assert_close(distributed["samples"], samples(reference), rtol=1e-9, atol=1e-10)


def test_distributed_needs_a_process_group():
    with pytest.raises(ValueError, match="distributed: True needs an initialised process group"):
        flowkit.fit(build("maf", 0), data("maf")[0], epochs=1, progress=False, distributed=True)
