"""Execution backends: how a worker runs one batch through one served SubNet.

Every backend takes a :class:`~ws_serve.subnetact.SubNetAct` deployment and answers
``backend(x, subnet) -> logits``. All of them keep a single copy of the SuperNet's weights except
TensorRT (see below).

* :class:`EagerBackend` (default, CPU and GPU) — actuate, then run the SuperNet eagerly.
* :class:`CompileBackend` — ``torch.compile`` of the deployed SuperNet. The operators' table lookups
  are guarded by Dynamo, so each served SubNet (and batch size, unless ``dynamic``) compiles once;
  the recompile limit is raised to cover the served set (``torch._dynamo.config.recompile_limit``).
* :class:`CUDAGraphBackend` — one CUDA graph per (SubNet, batch size), captured ahead of time and
  sharing one memory pool: a replay launches the whole SubNet at once. Graphs read the shared weights
  in place, so memory grows only by activations. Batches are padded to the next captured size.
* :class:`TensorRTBackend` (``pip install ws-serve[tensorrt]``) — one Torch-TensorRT engine per served
  SubNet with a dynamic batch dimension. TensorRT engines own their weights, so this costs one weight
  copy per SubNet: use it for a few "anchor" SubNets, not for a large served set.
"""

from __future__ import annotations

import abc
import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .subnetact import SubNetAct

__all__ = ["BACKENDS", "Backend", "CUDAGraphBackend", "CompileBackend", "EagerBackend", "TensorRTBackend",
           "make_backend"]


class Backend(abc.ABC):
    """Runs batches through served SubNets of one deployment.

    Args:
        act: the deployment (already on its device, in eval mode).
    """

    name = ""

    def __init__(self, act: SubNetAct) -> None:
        self.act = act
        self.device = next(act.net.parameters()).device
        act.net.eval()

    def prepare(self, sample_shape: Sequence[int], batch_sizes: Iterable[int]) -> None:  # noqa: B027
        """Optional ahead-of-time work (compilation, graph capture) for inputs ``[b, *sample_shape]``."""

    @abc.abstractmethod
    def __call__(self, x: Tensor, subnet: int | str) -> Tensor:
        """Logits of ``x`` (on any device) through served ``subnet``, on this backend's device."""


class EagerBackend(Backend):
    """Actuate by table lookup, then one eager forward (works everywhere)."""

    name = "eager"

    def __call__(self, x: Tensor, subnet: int | str) -> Tensor:
        with torch.inference_mode():
            self.act.actuate(subnet)
            return self.act.net(x.to(self.device, non_blocking=True))


class CompileBackend(Backend):
    """``torch.compile`` of the deployed SuperNet (one graph per served SubNet, batch dynamic by default).

    Args:
        act: the deployment.
        backend: ``torch.compile`` backend (``"inductor"``; ``"eager"``/``"aot_eager"`` for debugging).
        mode: ``torch.compile`` mode (e.g. ``"reduce-overhead"`` on GPU).
        dynamic: compile the batch dimension dynamically.
    """

    name = "compile"

    def __init__(self, act: SubNetAct, backend: str = "inductor", mode: str | None = None,
                 dynamic: bool | None = True) -> None:
        super().__init__(act)
        import torch._dynamo

        needed = 2 * len(act.ids) + 8
        config = torch._dynamo.config
        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(config, knob) and getattr(config, knob) < needed:
                setattr(config, knob, needed)
        self.compiled = torch.compile(act.net, backend=backend, mode=mode, dynamic=dynamic)

    def prepare(self, sample_shape: Sequence[int], batch_sizes: Iterable[int]) -> None:
        sizes = sorted(set(batch_sizes))
        for row in range(len(self.act.ids)):
            for b in sizes[:1] + sizes[-1:]:
                self(torch.zeros(b, *sample_shape), row)

    def __call__(self, x: Tensor, subnet: int | str) -> Tensor:
        with torch.inference_mode():
            self.act.actuate(subnet)
            return self.compiled(x.to(self.device, non_blocking=True))


class CUDAGraphBackend(Backend):
    """CUDA graphs per (served SubNet, batch size), captured in :meth:`prepare`; CUDA only."""

    name = "cudagraphs"

    def __init__(self, act: SubNetAct) -> None:
        super().__init__(act)
        if self.device.type != "cuda":
            raise RuntimeError(f"CUDAGraphBackend needs the deployment on a CUDA device, it is on {self.device}")
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}
        self.batch_sizes: list[int] = []
        self.pool = torch.cuda.graph_pool_handle()

    def prepare(self, sample_shape: Sequence[int], batch_sizes: Iterable[int]) -> None:
        self.batch_sizes = sorted(set(int(b) for b in batch_sizes))
        net = self.act.net
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for row in range(len(self.act.ids)):
                for b in self.batch_sizes:
                    static_x = torch.zeros(b, *sample_shape, device=self.device)
                    self.act.actuate(row)
                    for _ in range(2):  # warm-up outside the graph (cuDNN autotuning, lazy init)
                        net(static_x)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=self.pool, stream=stream):
                        static_y = net(static_x)
                    self.graphs[(row, b)] = (graph, static_x, static_y)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)

    def __call__(self, x: Tensor, subnet: int | str) -> Tensor:
        row = self.act.row(subnet)
        n = x.shape[0]
        k = bisect.bisect_left(self.batch_sizes, n)
        if k == len(self.batch_sizes):
            raise ValueError(f"CUDAGraphBackend: batch {n} exceeds the captured sizes {self.batch_sizes}")
        graph, static_x, static_y = self.graphs[(row, self.batch_sizes[k])]
        with torch.inference_mode():
            static_x[:n].copy_(x, non_blocking=True)
            graph.replay()
            return static_y[:n].clone()


class TensorRTBackend(Backend):
    """One Torch-TensorRT engine per served SubNet (dynamic batch); needs ``torch_tensorrt`` and CUDA.

    Args:
        act: the deployment.
        precisions: ``enabled_precisions`` for ``torch_tensorrt.compile`` (default FP16 + FP32).
        compile_kwargs: further ``torch_tensorrt.compile`` arguments.
    """

    name = "tensorrt"

    def __init__(self, act: SubNetAct, precisions: Sequence[torch.dtype] | None = None,
                 compile_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__(act)
        try:
            import torch_tensorrt  # noqa: F401
        except ImportError as e:
            raise ImportError("TensorRTBackend needs torch-tensorrt: pip install 'ws-serve[tensorrt]'") from e
        if self.device.type != "cuda":
            raise RuntimeError(f"TensorRTBackend needs the deployment on a CUDA device, it is on {self.device}")
        self.precisions = set(precisions or (torch.float16, torch.float32))
        self.compile_kwargs = dict(compile_kwargs or {})
        self.engines: dict[int, Any] = {}

    def prepare(self, sample_shape: Sequence[int], batch_sizes: Iterable[int]) -> None:
        import torch_tensorrt

        sizes = sorted(set(int(b) for b in batch_sizes))
        spec = torch_tensorrt.Input(min_shape=(sizes[0], *sample_shape), opt_shape=(sizes[-1], *sample_shape),
                                    max_shape=(sizes[-1], *sample_shape), dtype=torch.float32)
        for row in range(len(self.act.ids)):
            sub = self.act.extract(row).to(self.device).eval()
            self.engines[row] = torch_tensorrt.compile(sub, ir="dynamo", arg_inputs=[spec],
                                                       enabled_precisions=self.precisions, **self.compile_kwargs)

    def __call__(self, x: Tensor, subnet: int | str) -> Tensor:
        row = self.act.row(subnet)
        if row not in self.engines:
            raise RuntimeError("TensorRTBackend: call prepare() before serving")
        with torch.inference_mode():
            return self.engines[row](x.to(self.device, non_blocking=True))


BACKENDS: dict[str, type[Backend]] = {
    "eager": EagerBackend,
    "compile": CompileBackend,
    "cudagraphs": CUDAGraphBackend,
    "tensorrt": TensorRTBackend,
}


def make_backend(name: str, act: SubNetAct, **kwargs: Any) -> Backend:
    """Build a backend by name (``eager``, ``compile``, ``cudagraphs``, ``tensorrt``)."""
    cls = BACKENDS.get(name)
    if cls is None:
        raise ValueError(f"unknown backend {name!r}; allowed {sorted(BACKENDS)}")
    return cls(act, **kwargs)
