from __future__ import annotations

import copy
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ws_nas import Genotype, ImageClassificationData, NablaQDARTS, SearchModule


def _trainer(tmp_path, callbacks, **kwargs):
    return L.Trainer(max_epochs=kwargs.pop("max_epochs", 2), limit_train_batches=2, limit_val_batches=1,
                     callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, **kwargs)


def _module(**kwargs):
    torch.manual_seed(0)
    kw = dict(in_chans=1, input_size=8, C=4, layers=3, steps=2, multiplier=2, bits=(2, 4))
    kw.update(kwargs)
    return SearchModule(**kw)


def _data(**kwargs):
    return ImageClassificationData("digits", batch_size=16, held_out_fraction=0.5, train_limit=64, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(complexity_weight=-1e-4), r"complexity_weight \(λ\) must be a finite number >= 0, got -0.0001"),
    (dict(complexity_weight=float("nan")), "complexity_weight"),
    (dict(warmup_epochs=-1), "warmup_epochs must be an int >= 0"),
    (dict(arch_lr=0.0), "arch_lr must be"),
    (dict(arch_betas=(0.5, 1.0)), "arch_betas"),
    (dict(arch_weight_decay=-1.0), "arch_weight_decay"),
    (dict(hessian_eps=0.0), "hessian_eps"),
])
def test_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NablaQDARTS(**kwargs)


class _Snapshots(L.Callback):
    def __init__(self):
        self.alphas, self.gammas = [], []

    def on_train_epoch_end(self, trainer, pl_module):
        self.alphas.append(pl_module.network.alphas_normal.detach().clone())
        self.gammas.append(pl_module.network.precision_parameters()[0].detach().clone())


def test_search_warms_up_then_updates_the_architecture(tmp_path):
    module = _module()
    alpha0 = module.network.alphas_normal.detach().clone()
    gamma0 = module.network.precision_parameters()[0].detach().clone()
    search = NablaQDARTS(complexity_weight=1e-3, warmup_epochs=1, genotype_path=str(tmp_path / "g.json"))
    snaps = _Snapshots()
    _trainer(tmp_path, [search, snaps]).fit(module, _data())
    assert module.complexity_weight == 1e-3
    assert torch.equal(snaps.alphas[0], alpha0)               # warm-up: α frozen ...
    assert not torch.equal(snaps.alphas[1], alpha0)           # ... then updated on the held-out split
    assert not torch.equal(snaps.gammas[0], gamma0)           # γ trains with the weights from the start
    assert search.arch_steps == 2
    assert len(search.history) == 2
    assert Genotype.load(tmp_path / "g.json") == search.genotype == module.genotype()
    assert search.genotype.precision is not None


def test_plain_darts_is_the_same_callback_without_precision(tmp_path):
    module = _module(bits=None)
    search = NablaQDARTS(complexity_weight=0.0, warmup_epochs=0)
    _trainer(tmp_path, [search], max_epochs=1).fit(module, _data())
    assert search.arch_steps == 2 and search.genotype.precision is None


def test_misconfigured_searches_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"complexity_weight=0.001 needs precision mixtures.*bits=None"):
        _trainer(tmp_path, [NablaQDARTS(complexity_weight=1e-3)]).fit(_module(bits=None), _data())

    class NoMixedOps(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.network = nn.Linear(64, 10)
            self.complexity_weight = 0.0

        def training_step(self, batch, batch_idx):
            x, y = batch["train"]
            return F.cross_entropy(self.network(x.flatten(1)), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(ValueError, match=r"needs a LightningModule whose `network` is a ws_nas\.CellSuperNet"):
        _trainer(tmp_path, [NablaQDARTS()]).fit(NoMixedOps(), _data())
    plain = ImageClassificationData("digits", batch_size=16, train_limit=64)
    with pytest.raises(ValueError, match=r"batches must be \{'train': \(x, y\), 'held_out'"):
        _trainer(tmp_path, [NablaQDARTS(warmup_epochs=0)]).fit(_module(), plain)


def _batch(seed, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_first_order_step_is_adam_on_the_held_out_gradient():
    module = _module()
    reference = copy.deepcopy(module.network)
    search = NablaQDARTS(complexity_weight=1e-3, warmup_epochs=0, arch_lr=0.01)
    trainer = SimpleNamespace(current_epoch=0, optimizers=[])
    search.setup(trainer, module, "fit")
    batch = {"train": _batch(0), "held_out": _batch(1)}
    search.on_train_batch_start(trainer, module, batch, 0)
    x, y = batch["held_out"]
    arch = reference.arch_parameters()
    grads = torch.autograd.grad(F.cross_entropy(reference(x), y), arch)
    adam = torch.optim.Adam(arch, lr=0.01, betas=(0.5, 0.999), weight_decay=1e-3)
    for p, g in zip(arch, grads):
        p.grad = g
    adam.step()
    for got, want in zip(module.network.arch_parameters(), arch):
        assert torch.allclose(got, want, atol=1e-7)
    assert not torch.equal(module.network.alphas_normal, _module().network.alphas_normal)


def _unrolled_setup(lr, hessian_eps=0.01):
    module = _module(bits=None).double()
    net = module.network
    weights = net.weight_parameters()
    opt = torch.optim.SGD(weights, lr=lr, momentum=0.9, weight_decay=3e-4)
    for p in weights:   # a momentum buffer, as after some SGD steps
        opt.state[p]["momentum_buffer"] = 0.01 * torch.randn_like(p)
    search = NablaQDARTS(complexity_weight=0.0, warmup_epochs=0, unrolled=True, hessian_eps=hessian_eps)
    trainer = SimpleNamespace(current_epoch=0, optimizers=[opt])
    search.setup(trainer, module, "fit")
    (xt, yt), (xv, yv) = _batch(0), _batch(1)
    batch = {"train": (xt.double(), yt), "held_out": (xv.double(), yv)}
    return module, net, opt, search, trainer, batch


def test_second_order_gradient_matches_the_exact_hessian_vector_product():
    torch.manual_seed(0)
    # A small finite-difference step (float64): DARTS' 0.01 is too coarse for this tiny kinked network.
    module, net, opt, search, trainer, batch = _unrolled_setup(lr=0.05, hessian_eps=1e-5)
    reference = copy.deepcopy(net)
    _, got = search._unrolled_grads(trainer, module, net, batch)

    (xt, yt), (xv, yv) = batch["train"], batch["held_out"]
    arch, weights = reference.arch_parameters(), reference.weight_parameters()
    names = [n for n, p in reference.named_parameters() if any(p is w for w in weights)]
    orig = {n: p for n, p in net.named_parameters()}
    g_w = torch.autograd.grad(F.cross_entropy(reference(xt), yt), weights)
    w_prime = {n: (w.detach() - 0.05 * (0.9 * opt.state[orig[n]]["momentum_buffer"] + g + 3e-4 * w.detach()))
               .requires_grad_() for n, w, g in zip(names, weights, g_w)}
    buffers = {n: b.clone() for n, b in reference.named_buffers()}
    loss_v = F.cross_entropy(torch.func.functional_call(reference, {**w_prime, **buffers}, (xv,)), yv)
    grads = torch.autograd.grad(loss_v, [*arch, *w_prime.values()])
    d_arch, v = grads[: len(arch)], grads[len(arch):]
    # Exact ∇²_{α,w} L_train · v by double backward.
    g_w = torch.autograd.grad(F.cross_entropy(reference(xt), yt), weights, create_graph=True)
    hvp = torch.autograd.grad(sum((g * u).sum() for g, u in zip(g_w, v)), arch)
    for a, d, h in zip(got, d_arch, hvp):
        want = d - 0.05 * h
        assert torch.allclose(a, want, rtol=1e-4, atol=1e-8 * want.abs().max())
    assert any(not torch.allclose(a, d) for a, d in zip(got, d_arch))   # the second-order term matters


def test_second_order_with_zero_step_is_first_order():
    module, net, _opt, search, trainer, batch = _unrolled_setup(lr=1e-30)
    _, got = search._unrolled_grads(trainer, module, net, batch)
    x, y = batch["held_out"]
    first = torch.autograd.grad(F.cross_entropy(net(x), y), net.arch_parameters())
    for a, b in zip(got, first):
        assert torch.allclose(a, b, atol=1e-10)


def test_callback_state_round_trip():
    module = _module()
    search = NablaQDARTS(warmup_epochs=0)
    trainer = SimpleNamespace(current_epoch=0, optimizers=[])
    search.setup(trainer, module, "fit")
    search.on_train_batch_start(trainer, module, {"train": _batch(0), "held_out": _batch(1)}, 0)
    state = search.state_dict()
    restored = NablaQDARTS(warmup_epochs=0)
    restored.load_state_dict(copy.deepcopy(state))
    restored.setup(trainer, module, "fit")
    assert restored.arch_steps == 1
    a, b = restored._optimizer.state_dict()["state"], state["arch_optimizer"]["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)
    assert search.state_key != NablaQDARTS(complexity_weight=1.0).state_key


def test_partial_channels_default_is_nabla_qdarts_k4_where_the_width_allows():
    small = dict(in_chans=1, input_size=8, layers=3, steps=2, multiplier=2, bits=None)
    # ∇QDARTS on CIFAR: K = 4 (C = 16: 4 channels through each mixed op); C / K must be even (FactorizedReduce)
    assert SearchModule(C=16, **small).network.partial_channels == 4
    assert SearchModule(C=8, **small).network.partial_channels == 4
    assert SearchModule(C=4, **small).network.partial_channels == 2  # 4 / 4 = 1 is odd: the largest K that fits
    assert SearchModule(C=4, partial_channels=1, **small).network.partial_channels == 1  # explicit K is kept
