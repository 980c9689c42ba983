"""NablaQDARTS under DDP: two gloo processes (spawned), different held-out data per rank, one architecture step.

Each rank computes ∇_α L_val on its own held-out batch; the callback averages the gradients across ranks
before Adam, so α stays the same on both ranks — and equals one Adam step on the mean of the two gradients.
"""

from __future__ import annotations

import copy
import socket
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ws_nas import NablaQDARTS, SearchModule
from ws_nas.callback import average_across_ranks

ARCH_LR = 0.01


def _module() -> SearchModule:
    torch.manual_seed(0)
    return SearchModule(in_chans=1, input_size=8, C=4, layers=3, steps=2, multiplier=2, bits=(2, 4))


def _batch(seed: int, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _held_out(rank: int):
    return _batch(100 + rank)  # different data on each rank


def _flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def _arch_step_on_rank(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        module = _module()  # the same initial weights and α on both ranks (as DDP's broadcast would make them)
        search = NablaQDARTS(complexity_weight=1e-3, warmup_epochs=0, arch_lr=ARCH_LR)
        trainer = SimpleNamespace(current_epoch=0, optimizers=[])
        search.setup(trainer, module, "fit")
        search.on_train_batch_start(trainer, module, {"train": _batch(0), "held_out": _held_out(rank)}, 0)
        alpha = _flat(module.network.arch_parameters())
        both = [torch.empty_like(alpha) for _ in range(2)]
        dist.all_gather(both, alpha)
        torch.save({"alphas": both}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _adam_step(grads_per_batch: list[list[torch.Tensor]]) -> torch.Tensor:
    """α after one Adam step (the callback's settings) on the mean of the given per-batch gradients."""
    net = _module().network
    arch = net.arch_parameters()
    adam = torch.optim.Adam(arch, lr=ARCH_LR, betas=(0.5, 0.999), weight_decay=1e-3)
    for i, p in enumerate(arch):
        p.grad = sum(g[i] for g in grads_per_batch) / len(grads_per_batch)
    adam.step()
    return _flat(arch)


@pytest.fixture
def one_thread():
    """The workers run with one intra-op thread; the same here keeps the forwards bit-identical (the
    quantizers' rounding would otherwise amplify last-bit differences of multi-threaded reductions)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or sys.platform == "win32", reason="needs torch.distributed with gloo")
def test_architecture_gradients_are_averaged_across_ranks(tmp_path, one_thread):
    mp.spawn(_arch_step_on_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    a0, a1 = (torch.load(tmp_path / f"rank{r}.pt")["alphas"] for r in (0, 1))
    assert torch.equal(a0[0], a0[1]) and torch.equal(a1[0], a1[1])  # rank 0's α == rank 1's α, bit for bit

    # by hand: each rank's held-out gradient at the common initial α, their mean, one Adam step
    grads = []
    for rank in range(2):
        net = copy.deepcopy(_module().network)
        x, y = _held_out(rank)
        grads.append(list(torch.autograd.grad(F.cross_entropy(net(x), y), net.arch_parameters())))
    assert not torch.allclose(_flat(grads[0]), _flat(grads[1]))  # the ranks' data differ...
    expected = _adam_step(grads)
    assert torch.allclose(a0[0], expected, atol=1e-7)
    local = [_adam_step([g]) for g in grads]  # ...so without the all-reduce each rank's α would differ
    assert not torch.allclose(local[0], local[1], atol=1e-6)


def test_average_across_ranks_is_the_identity_in_one_process():
    t = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    assert not dist.is_initialized()
    assert all(torch.equal(a, b) for a, b in zip(average_across_ranks(t), t))
