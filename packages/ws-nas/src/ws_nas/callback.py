"""``NablaQDARTS``: the ∇QDARTS / DARTS bi-level search as a Lightning callback.

The LightningModule (:class:`~ws_nas.module.SearchModule`, or any module with a ``network`` that is a
:class:`~ws_nas.supernet.CellSuperNet` and a ``complexity_weight`` attribute) trains the lower level —
weights ``w`` and precision parameters ``γ`` on the train split with ``CE + λ · C`` — by Lightning's
ordinary optimisation. This callback adds the upper level: before every training step (after the
warm-up) it updates the architecture parameters ``α`` (and ``β``) with Adam on a batch of the
held-out split, minimising the held-out cross-entropy:

* **first order** (default, ``unrolled=False``): ``∇_α L_val(w, α)``;
* **second order** (``unrolled=True``, DARTS): ``∇_α L_val(w', α) − ξ ∇²_{α,w} L_train(w, α) ∇_{w'} L_val(w', α)``
  with ``w' = w − ξ (μ·v + ∇_w L_train + wd·w)`` one step of the weights' SGD (its learning rate ``ξ``,
  momentum buffer ``v`` and weight decay), ``γ`` treated like ``w`` (∇QDARTS), and the
  Hessian-vector product by central finite differences at ``w ± ε ∇_{w'} L_val``,
  ``ε = hessian_eps / ‖∇_{w'} L_val‖`` (DARTS: ``hessian_eps = 0.01``).

Training batches must be ``{"train": (x, y), "held_out": (x, y)}``
(:class:`~ws_nas.data.ImageClassificationData` with ``held_out_fraction`` set).

Distributed training (DDP): each rank computes the architecture gradient on its own held-out batch;
the gradients are averaged across ranks (:func:`average_across_ranks`, one all-reduce) before the
Adam step, so ``α``/``β`` — and Adam's moments — stay identical on every rank, as the weights do
under DDP; the step then follows the gradient of the global held-out batch.
Plain DARTS is this callback with ``complexity_weight=0`` on a network without precision mixtures
(``bits=None``) or with one fixed bit-width.

At the end of training the genotype is derived (``self.genotype``) and, with ``genotype_path``,
written as JSON; the genotype after every epoch is kept in ``self.history``.

Example::

    >>> trainer = L.Trainer(max_epochs=50, callbacks=[NablaQDARTS(complexity_weight=1e-4, warmup_epochs=15)])
    >>> trainer.fit(SearchModule(bits=(2, 4)), ImageClassificationData(held_out_fraction=0.5))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.func import functional_call

from .genotype import Genotype
from .supernet import CellSuperNet, MixedOp

__all__ = ["NablaQDARTS", "average_across_ranks"]


def average_across_ranks(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The element-wise mean of ``tensors`` over all ranks when ``torch.distributed`` is initialised with
    more than one process (one all-reduce of the flattened tensors); the tensors themselves otherwise.

    Example::

        >>> average_across_ranks([torch.ones(2)])       # a single process: unchanged
        [tensor([1., 1.])]
    """
    tensors = list(tensors)
    if not tensors or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return tensors
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


class NablaQDARTS(Callback):
    """∇QDARTS architecture search (see the module docstring).

    Args:
        complexity_weight: ``λ`` of the expected-BitOps term (∇QDARTS default 1e-4; 0 = plain DARTS).
        warmup_epochs: epochs of weight (and precision) training before the first architecture update
            (PC-DARTS / ∇QDARTS on CIFAR: 15 of 50).
        arch_lr: Adam learning rate of ``α``/``β`` (∇QDARTS CIFAR: 6e-4; DARTS: 3e-4).
        arch_betas: Adam betas (0.5, 0.999).
        arch_weight_decay: Adam weight decay (1e-3).
        unrolled: second-order (DARTS unrolled) architecture gradient instead of first order.
        hessian_eps: the finite-difference step of the second-order term is ``hessian_eps / ‖∇_{w'} L_val‖``
            (DARTS: 0.01).
        genotype_path: where to write the final genotype's JSON (optional).
    """

    def __init__(
        self,
        complexity_weight: float = 1e-4,
        warmup_epochs: int = 15,
        arch_lr: float = 6e-4,
        arch_betas: Sequence[float] = (0.5, 0.999),
        arch_weight_decay: float = 1e-3,
        unrolled: bool = False,
        hessian_eps: float = 0.01,
        genotype_path: str | None = None,
    ):
        super().__init__()
        if isinstance(complexity_weight, bool) or not isinstance(complexity_weight, (int, float)) \
                or not math.isfinite(complexity_weight) or complexity_weight < 0:
            raise ValueError(
                f"NablaQDARTS: complexity_weight (λ) must be a finite number >= 0, got {complexity_weight!r}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"NablaQDARTS: warmup_epochs must be an int >= 0, got {warmup_epochs!r}")
        if not (math.isfinite(arch_lr) and arch_lr > 0):
            raise ValueError(f"NablaQDARTS: arch_lr must be a finite number > 0, got {arch_lr!r}")
        betas = tuple(float(b) for b in arch_betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"NablaQDARTS: arch_betas must be two numbers in [0, 1), got {arch_betas!r}")
        if not (math.isfinite(arch_weight_decay) and arch_weight_decay >= 0):
            raise ValueError(f"NablaQDARTS: arch_weight_decay must be a finite number >= 0, got {arch_weight_decay!r}")
        self.complexity_weight = float(complexity_weight)
        self.warmup_epochs = warmup_epochs
        self.arch_lr = float(arch_lr)
        self.arch_betas = betas
        self.arch_weight_decay = float(arch_weight_decay)
        if not (math.isfinite(hessian_eps) and hessian_eps > 0):
            raise ValueError(f"NablaQDARTS: hessian_eps must be a finite number > 0, got {hessian_eps!r}")
        self.unrolled = bool(unrolled)
        self.hessian_eps = float(hessian_eps)
        self.genotype_path = genotype_path
        self.genotype: Genotype | None = None
        self.history: list[Genotype] = []
        self.arch_steps = 0
        self._optimizer: torch.optim.Adam | None = None
        self._pending_state: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(complexity_weight=self.complexity_weight, unrolled=self.unrolled)

    # Setup ------------------------------------------------------------------------------------------
    def _network(self, pl_module: L.LightningModule) -> CellSuperNet:
        net = getattr(pl_module, "network", None)
        if not isinstance(net, CellSuperNet) or not any(isinstance(m, MixedOp) for m in net.modules()):
            raise ValueError(
                "NablaQDARTS needs a LightningModule whose `network` is a ws_nas.CellSuperNet with mixed "
                f"operations (e.g. ws_nas.SearchModule), got network={type(net).__name__}"
            )
        return net

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        net = self._network(pl_module)
        if self.complexity_weight > 0 and not net.has_precision_mixtures:
            raise ValueError(
                f"NablaQDARTS: complexity_weight={self.complexity_weight:g} needs precision mixtures, but the network "
                f"has none (bits={net.bits}); build it with two or more bit-widths, e.g. bits=(2, 4), or set "
                "complexity_weight=0 for a plain DARTS search"
            )
        if not hasattr(pl_module, "complexity_weight"):
            raise ValueError("NablaQDARTS: the LightningModule must have a `complexity_weight` attribute "
                             "that its training_step multiplies into the complexity term (see ws_nas.SearchModule)")
        pl_module.complexity_weight = self.complexity_weight
        self._optimizer = torch.optim.Adam(net.arch_parameters(), lr=self.arch_lr, betas=self.arch_betas,
                                           weight_decay=self.arch_weight_decay)
        if self._pending_state is not None:
            self._optimizer.load_state_dict(self._pending_state["arch_optimizer"])
            self._pending_state = None

    # The architecture step ----------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not isinstance(batch, Mapping) or "held_out" not in batch or "train" not in batch:
            raise ValueError(
                "NablaQDARTS: training batches must be {'train': (x, y), 'held_out': (x, y)}, e.g. from "
                "ws_nas.ImageClassificationData(held_out_fraction=0.5); got "
                f"{type(batch).__name__}{'' if not isinstance(batch, Mapping) else ' with keys ' + str(list(batch))}"
            )
        if trainer.current_epoch < self.warmup_epochs:
            return
        net = self._network(pl_module)
        arch = net.arch_parameters()
        if self.unrolled:
            loss, grads = self._unrolled_grads(trainer, pl_module, net, batch)
        else:
            x, y = batch["held_out"]
            loss = F.cross_entropy(net(x), y)
            grads = torch.autograd.grad(loss, arch)
        # DDP: every rank has its own held-out batch; average before the step or α, β diverge across ranks
        grads = average_across_ranks([g.detach() for g in grads])
        for p, g in zip(arch, grads):
            p.grad = g
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        self.arch_steps += 1
        n = batch["held_out"][0].shape[0]
        pl_module.log("arch_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n)

    @staticmethod
    def _lower_loss(pl_module, net: CellSuperNet, x: Tensor, y: Tensor) -> Tensor:
        """The lower-level objective ``CE_train + λ · C`` at the current weights."""
        loss = F.cross_entropy(net(x), y)
        if pl_module.complexity_weight > 0:
            loss = loss + pl_module.complexity_weight * net.complexity()
        return loss

    def _unrolled_grads(self, trainer: L.Trainer, pl_module, net: CellSuperNet, batch) -> tuple[Tensor, list[Tensor]]:
        """DARTS second-order architecture gradient (γ unrolled together with w)."""
        (xt, yt), (xv, yv) = batch["train"], batch["held_out"]
        arch = net.arch_parameters()
        arch_ids = {id(p) for p in arch}
        named = [(n, p) for n, p in net.named_parameters() if id(p) not in arch_ids and p.requires_grad]
        names = [n for n, _ in named]
        w = [p for _, p in named]
        # Each parameter's SGD settings (lr = ξ, momentum, weight decay) from the module's optimizer.
        settings = {}
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    buf = opt.state.get(p, {}).get("momentum_buffer")
                    settings[id(p)] = (group["lr"], group.get("momentum", 0.0), group.get("weight_decay", 0.0), buf)
        buffers = {n: b.clone() for n, b in net.named_buffers()}

        lower = self._lower_loss(pl_module, net, xt, yt)
        g_w = torch.autograd.grad(lower, w, allow_unused=True)
        w_prime = []
        for p, g in zip(w, g_w):
            lr, mom, wd, buf = settings.get(id(p), (0.0, 0.0, 0.0, None))
            step = (torch.zeros_like(p) if g is None else g.detach()) + wd * p.detach()
            if buf is not None:
                step = step + mom * buf
            w_prime.append((p.detach() - lr * step).requires_grad_(True))
        params_prime = dict(zip(names, w_prime))
        loss_v = F.cross_entropy(functional_call(net, {**params_prime, **buffers}, (xv,)), yv)
        grads = torch.autograd.grad(loss_v, [*arch, *w_prime], allow_unused=True)
        d_arch = [torch.zeros_like(a) if g is None else g for a, g in zip(arch, grads[: len(arch)])]
        d_w = [torch.zeros_like(p) if g is None else g for p, g in zip(w_prime, grads[len(arch):])]
        norm = torch.sqrt(sum((g * g).sum() for g in d_w))
        if not torch.isfinite(norm) or norm == 0:
            return loss_v, d_arch
        eps = self.hessian_eps / norm
        hvp = []  # ∇_α L_train at w ± ε ∇_{w'} L_val (the complexity term does not depend on α)
        for sign in (1.0, -1.0):
            shifted = {n: p.detach() + sign * eps * g for n, p, g in zip(names, w, d_w)}
            loss_s = F.cross_entropy(functional_call(net, {**shifted, **buffers}, (xt,)), yt)
            hvp.append(torch.autograd.grad(loss_s, arch, allow_unused=True))
        xi = settings.get(id(w[0]), (0.0,))[0]
        out = []
        for a, da, gp, gm in zip(arch, d_arch, *hvp):
            gp = torch.zeros_like(a) if gp is None else gp
            gm = torch.zeros_like(a) if gm is None else gm
            out.append(da - xi * (gp - gm) / (2 * eps))
        return loss_v, out

    # Results ----------------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.history.append(self._network(pl_module).genotype())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.genotype = self._network(pl_module).genotype()
        if self.genotype_path and trainer.is_global_zero:
            self.genotype.save(Path(self.genotype_path))

    # Checkpointing ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "arch_optimizer": None if self._optimizer is None else self._optimizer.state_dict(),
            "arch_steps": self.arch_steps,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.arch_steps = int(state_dict.get("arch_steps", 0))
        if state_dict.get("arch_optimizer") is not None:
            if self._optimizer is not None:
                self._optimizer.load_state_dict(state_dict["arch_optimizer"])
            else:
                self._pending_state = {"arch_optimizer": state_dict["arch_optimizer"]}

