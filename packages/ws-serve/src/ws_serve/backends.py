"""Execution backends: how a worker runs one batch through one served SubNet.

Every backend takes a :class:`~ws_serve.subnetact.SubNetAct` deployment and answers
``backend(x, subnet) -> logits``; :meth:`Backend.prepare` does the ahead-of-time work and records
:attr:`Backend.prepare_seconds`, :meth:`Backend.weight_bytes` reports the weight memory it holds.
The eager, compile and CUDA-graph backends keep a single copy of the SuperNet's weights; ONNX Runtime
and TensorRT hold one weight copy per served SubNet (see below).

The default, ``"auto"`` (:func:`make_backend`), is :class:`OnnxRuntimeBackend` for a deployment on
the CPU and :class:`EagerBackend` on other devices or when ``onnxruntime`` is not installed.

* :class:`OnnxRuntimeBackend` (default on CPU) — one ONNX Runtime session per served SubNet, exported
  from ``SubNetAct.extract`` (the SubNet's weights with its own SubnetNorm statistics folded in).
  Its latency follows the SubNet's MACs, which the eager path's per-layer overhead hides on small
  CPUs. The exported files are cached on disk by content; a SubNet whose export fails is served by
  the eager path, with a warning.
* :class:`EagerBackend` (CPU and GPU) — actuate, then run the SuperNet eagerly.
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
import hashlib
import io
import json
import os
import statistics
import time
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ws_core.io import atomic_write_bytes

from .subnetact import SubNetAct

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "SPINNING",
    "Backend",
    "CUDAGraphBackend",
    "CompileBackend",
    "EagerBackend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "default_cache_dir",
    "make_backend",
    "server_backend_options",
    "server_max_threads",
]

DEFAULT_BACKEND = "auto"


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
        self.sample_shape: tuple[int, ...] | None = None
        self.prepare_seconds = 0.0

    def prepare(self, sample_shape: Sequence[int], batch_sizes: Iterable[int]) -> None:
        """Ahead-of-time work (export, compilation, graph capture) for inputs ``[b, *sample_shape]``.

        Records the sample shape (later inputs are checked against it) and the seconds spent in
        :attr:`prepare_seconds`.
        """
        self.sample_shape = tuple(int(s) for s in sample_shape)
        t0 = time.perf_counter()
        self._prepare(self.sample_shape, [int(b) for b in batch_sizes])
        self.prepare_seconds = time.perf_counter() - t0

    def _prepare(self, sample_shape: tuple[int, ...], batch_sizes: list[int]) -> None:  # noqa: B027
        """The backend's own ahead-of-time work (nothing by default)."""

    @property
    def timing_key(self) -> str:
        """The backend and the settings its latency depends on: a latency profile cached with another key
        is measured again (:func:`ws_serve.profile.profile_served`)."""
        return self.name

    def weight_bytes(self) -> int:
        """Bytes of weights (and per-SubNet statistics) this backend holds for the whole served set.

        One shared copy — the deployment's SuperNet and SubnetNorm tables — unless the backend copies
        weights per SubNet.
        """
        return self.act.nbytes()["total"]

    def _check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` if ``x`` does not fit the prepared sample shape (rank and channels)."""
        shape = self.sample_shape
        if shape is None:
            return
        if x.dim() != len(shape) + 1 or x.shape[1] != shape[0]:
            raise ValueError(f"{type(self).__name__}: input must be [batch, {shape[0]}, ...] like the prepared "
                             f"sample shape {list(shape)}, got {list(x.shape)}")

    @abc.abstractmethod
    def __call__(self, x: Tensor, subnet: int | str) -> Tensor:
        """Logits of ``x`` (on any device) through served ``subnet``, on this backend's device."""


class EagerBackend(Backend):
    """Actuate by table lookup, then one eager forward (works everywhere)."""

    name = "eager"

    def __call__(self, x: Tensor, subnet: int | str) -> Tensor:
        self._check_input(x)
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

    def _prepare(self, sample_shape: tuple[int, ...], batch_sizes: list[int]) -> None:
        sizes = sorted(set(batch_sizes))
        for row in range(len(self.act.ids)):
            for b in sizes[:1] + sizes[-1:]:
                self(torch.zeros(b, *sample_shape), row)

    def __call__(self, x: Tensor, subnet: int | str) -> Tensor:
        self._check_input(x)
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

    def _prepare(self, sample_shape: tuple[int, ...], batch_sizes: list[int]) -> None:
        self.batch_sizes = sorted(set(batch_sizes))
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
        self._check_input(x)
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
        self._weight_bytes = 0

    def _prepare(self, sample_shape: tuple[int, ...], batch_sizes: list[int]) -> None:
        import torch_tensorrt

        sizes = sorted(set(batch_sizes))
        spec = torch_tensorrt.Input(min_shape=(sizes[0], *sample_shape), opt_shape=(sizes[-1], *sample_shape),
                                    max_shape=(sizes[-1], *sample_shape), dtype=torch.float32)
        for row in range(len(self.act.ids)):
            sub = self.act.extract(row).to(self.device).eval()
            self._weight_bytes += _tensor_bytes(sub.state_dict().values())
            self.engines[row] = torch_tensorrt.compile(sub, ir="dynamo", arg_inputs=[spec],
                                                       enabled_precisions=self.precisions, **self.compile_kwargs)

    def weight_bytes(self) -> int:
        """One weight copy per engine (the extracted SubNets' tensor bytes; precision may shrink them)."""
        return self._weight_bytes

    def __call__(self, x: Tensor, subnet: int | str) -> Tensor:
        self._check_input(x)
        row = self.act.row(subnet)
        if row not in self.engines:
            raise RuntimeError("TensorRTBackend: call prepare() before serving")
        with torch.inference_mode():
            return self.engines[row](x.to(self.device, non_blocking=True))


def _tensor_bytes(tensors: Iterable[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _hash_tensors(digest: Any, tensors: Iterable[tuple[str, Tensor]]) -> None:
    """Feed names, dtypes, shapes and raw bytes of tensors into a hashlib digest."""
    for name, t in tensors:
        t = t.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def default_cache_dir() -> Path:
    """Where :class:`OnnxRuntimeBackend` caches exported SubNets by default.

    ``$WS_SERVE_CACHE_DIR/onnx`` if set, else ``$XDG_CACHE_HOME/ws-serve/onnx`` (``~/.cache/ws-serve/onnx``).
    """
    root = os.environ.get("WS_SERVE_CACHE_DIR")
    if root:
        return Path(root) / "onnx"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ws-serve" / "onnx"


def server_max_threads(workers: int = 1) -> int:
    """The most ONNX Runtime intra-op threads a server's sessions may use: one core (of
    ``torch.get_num_threads()``) stays with the request handling (event loop, gRPC, hand-overs), the rest
    is split between the ``workers`` CPU workers; at least one. On 2 cores: one thread.

    A forward on every core is the fastest alone, but in a server it stops the request handling for its
    length: on 2 cores, serving the main job's SubNets with two threads (spinning during the forward)
    instead of one cut the SLO attainment of every policy (docs/benchmarks.md, "Execution backends").
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return max(1, (torch.get_num_threads() - 1) // workers)


def server_backend_options(backend: str, workers: int = 1, *, device: str = "cpu", threads: int | None = None,
                           spinning: str | None = None) -> dict[str, Any]:
    """The :func:`make_backend` options of a server's CPU workers, and of the profile that times them:
    ``threads`` if fixed, else at most :func:`server_max_threads` (a core stays with the request
    handling), and ``spinning`` if given (else the backend's default). Empty for a backend other than
    ONNX Runtime (``auto``/``onnxruntime``) or a device other than the CPU."""
    if backend not in ("auto", "onnxruntime") or device != "cpu":
        return {}
    options: dict[str, Any] = {"threads": threads} if threads is not None else {
        "max_threads": server_max_threads(workers)}
    if spinning is not None:
        options["spinning"] = spinning
    return options


SPINNING = ("off", "run", "on")
"""How ONNX Runtime's idle intra-op threads wait (:class:`OnnxRuntimeBackend`'s ``spinning``)."""


def _spinning_mode(spinning: bool | str | None) -> str:
    """``spinning`` as one of :data:`SPINNING` (``None``: ``"run"`` under ``OMP_WAIT_POLICY=PASSIVE``,
    else ``"on"``)."""
    if spinning is None:
        return "run" if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else "on"
    if isinstance(spinning, bool):
        return "on" if spinning else "off"
    if spinning not in SPINNING:
        raise ValueError(f"spinning must be one of {SPINNING} (or True/False/None), got {spinning!r}")
    return spinning


class _Session:
    """An ONNX Runtime session, the bytes of its weights and its intra-op thread count."""

    __slots__ = ("__weakref__", "session", "threads", "weight_bytes")

    def __init__(self, session: Any, weight_bytes: int, threads: int = 1) -> None:
        self.session, self.weight_bytes, self.threads = session, weight_bytes, threads


# Sessions are shared between backends of one process (e.g. the CPU workers' replicas of one deployment):
# the same exported SubNet with the same session options is loaded once (sessions are thread-safe).
_SESSIONS: weakref.WeakValueDictionary[tuple, _Session] = weakref.WeakValueDictionary()

_ONNX_FORMAT = "ws_serve.onnx/2"  # /2: a SubNet at a lower resolution resizes its input inside the graph


class _ResizedInput(torch.nn.Module):
    """A SubNet behind the bilinear resize to its resolution that SubNetAct applies (exported as ONNX Resize)."""

    def __init__(self, net: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x: Tensor) -> Tensor:
        return self.net(F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False))


class OnnxRuntimeBackend(Backend):
    """One ONNX Runtime session per served SubNet (dynamic batch); CPU deployments.

    :meth:`prepare` exports each served SubNet with ``SubNetAct.extract`` — its slice of the shared
    weights with *its* SubnetNorm statistics, so the output equals the eager deployment's — through
    ``torch.onnx.export(..., dynamo=False)`` (BatchNorm is folded into the convolutions), and opens
    one session per SubNet. Each session owns its weights: memory grows by one weight copy per
    served SubNet (:meth:`weight_bytes`), in exchange for a latency that follows the SubNet's MACs.

    Exported files are cached in ``cache_dir`` as ``<subnet id>-<key>.onnx``, where the key hashes the
    SuperNet's tensors, the SubNet's config and statistics, the input shape, the opset and the torch,
    onnx and onnxruntime versions: a restart with the same deployment reuses them; any change exports
    again. Files are written atomically (temporary file, then ``os.replace``); a cached file that
    ONNX Runtime cannot load is exported again. ONNX files are protobuf, nothing is unpickled.

    Args:
        act: the deployment (on the CPU).
        threads: ONNX Runtime intra-op threads per session. ``None`` (default): chosen per SubNet by
            measurement when :meth:`prepare` opens its session — one thread or ``max_threads``,
            whichever runs the smallest and the largest prepared batch faster in sum. With blocking
            threads small SubNets run faster on one (waking idle threads costs more than they save:
            0.12 vs 0.24 ms at batch 1 for a 0.35-MMAC SubNet on 2 cores), large ones on several (9.6
            vs 14.3 ms for OFA MobileNetV3's max SubNet at 224 px).
        cache_dir: folder of the exported files; ``True`` (default): :func:`default_cache_dir`;
            ``None`` or ``False``: export in memory on every start.
        spinning: how idle intra-op threads wait, one of :data:`SPINNING`: ``"off"`` (block: no CPU
            spent between or inside runs waiting for work, but every run wakes its threads), ``"run"``
            (spin while a run is in progress and block when it returns — ONNX Runtime's
            ``session.force_spinning_stop``), ``"on"`` (spin between runs too: ONNX Runtime's default,
            the fastest on an idle machine, burning cores that a server's request handling needs).
            ``True``/``False`` mean ``"on"``/``"off"``. ``None`` (default): ``"run"`` when
            ``OMP_WAIT_POLICY=PASSIVE``, else ``"on"``.
        opset: ONNX opset of the export.
        fallback: serve a SubNet whose export or session fails through the eager path (with a
            warning) instead of raising.
        providers: ONNX Runtime execution providers (default ``["CPUExecutionProvider"]``).
        max_threads: the most intra-op threads the measurement may choose (``None``:
            ``torch.get_num_threads()``). A server passes :func:`server_max_threads`, keeping a core for
            its request handling.

    Attributes:
        exported: SubNet ids exported by the last :meth:`prepare` (the others came from the cache).
        fallback_ids: SubNet ids served eagerly because their export failed.
    """

    name = "onnxruntime"

    def __init__(self, act: SubNetAct, threads: int | None = None, cache_dir: str | os.PathLike | bool | None = True,
                 spinning: bool | str | None = None, opset: int = 17, fallback: bool = True,
                 providers: Sequence[str] | None = None, max_threads: int | None = None) -> None:
        super().__init__(act)
        try:
            import onnxruntime
        except ImportError as e:
            raise ImportError("OnnxRuntimeBackend needs onnxruntime and onnx: pip install onnxruntime 'onnx<1.23'") \
                from e
        self._ort = onnxruntime
        self.providers = list(providers or ["CPUExecutionProvider"])
        if self.device.type != "cpu" and self.providers == ["CPUExecutionProvider"]:
            raise RuntimeError(f"OnnxRuntimeBackend runs on the CPU; the deployment is on {self.device} "
                               f"(use backend 'eager' there, or pass providers)")
        if threads is not None:
            threads = int(threads)
            if threads < 1:
                raise ValueError(f"threads must be >= 1 or None (chosen per SubNet), got {threads}")
        if max_threads is not None:
            max_threads = int(max_threads)
            if max_threads < 1:
                raise ValueError(f"max_threads must be >= 1 or None (torch's threads), got {max_threads}")
        self.threads, self.max_threads = threads, max_threads
        if cache_dir is True:
            cache_dir = default_cache_dir()
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.spinning = _spinning_mode(spinning)
        self.opset = int(opset)
        self.fallback = fallback
        self.sessions: dict[int, _Session] = {}
        self.exported: list[str] = []
        self.fallback_ids: list[str] = []
        self._input_name = "x"
        self._input_shape: dict[int, tuple[int, ...]] = {}
        self._resizing: set[int] = set()  # rows whose graph resizes the input to their resolution
        self._eager: EagerBackend | None = None

    # Preparation --------------------------------------------------------------------------------
    def _prepare(self, sample_shape: tuple[int, ...], batch_sizes: list[int]) -> None:
        self.sessions.clear()
        self.exported, self.fallback_ids = [], []
        base = self._base_key()
        warm = sorted(set(batch_sizes))[:1] + sorted(set(batch_sizes))[-1:] or [1]
        self._resizing.clear()
        for row, sid in enumerate(self.act.ids):
            shape = tuple(sample_shape)  # a SubNet at a lower resolution resizes inside its graph
            try:
                entry = self._session(row, shape, base, warm)
                for b in warm:  # first runs allocate and plan; keep them out of serving
                    entry.session.run(None, {self._input_name: torch.zeros(b, *shape).numpy()})
            except Exception as e:  # any exporter or runtime failure falls back to eager
                if not self.fallback:
                    raise
                warnings.warn(f"OnnxRuntimeBackend: SubNet {sid} could not be exported or loaded "
                              f"({type(e).__name__}: {e}); serving it with the eager backend", RuntimeWarning,
                              stacklevel=3)
                self.fallback_ids.append(sid)
                continue
            self.sessions[row] = entry
            self._input_shape[row] = shape
            if self._resize_to(row, shape) is not None:
                self._resizing.add(row)

    def _resize_to(self, row: int, shape: tuple[int, ...]) -> int | None:
        """The resolution an input of ``shape`` is resized to inside SubNet ``row``'s graph, if any."""
        size = self.act._resolution[row]
        if size is None or len(shape) != 3 or tuple(shape[1:]) == (size, size):
            return None
        return int(size)

    def _base_key(self) -> str:
        import onnx

        digest = hashlib.sha256()
        versions = {"format": _ONNX_FORMAT, "torch": torch.__version__, "onnx": onnx.__version__,
                    "onnxruntime": self._ort.__version__, "opset": self.opset,
                    "model": getattr(type(self.act.net), "_subnetact_base", type(self.act.net)).__name__}
        digest.update(json.dumps(versions, sort_keys=True).encode())
        _hash_tensors(digest, sorted(self.act.net.state_dict().items()))
        return digest.hexdigest()

    def _key(self, row: int, shape: tuple[int, ...], base: str) -> str:
        digest = hashlib.sha256(base.encode())
        digest.update(self.act.served[row].to_json().encode())
        digest.update(json.dumps(list(shape)).encode())
        _hash_tensors(digest, sorted(self.act.statistics(row).state_dict().items()))
        return digest.hexdigest()[:24]

    def _session(self, row: int, shape: tuple[int, ...], base: str, batches: Sequence[int] = (1,)) -> _Session:
        """The session of one SubNet: shared in-process, else from the cache file, else exported."""
        key = self._key(row, shape, base)
        pool_key = (key, self.threads, self.max_threads, self.spinning, tuple(self.providers), tuple(batches))
        entry = _SESSIONS.get(pool_key)
        if entry is not None:
            return entry
        session = None
        sid = self.act.ids[row]
        path = None if self.cache_dir is None else self.cache_dir / f"{sid}-{key}.onnx"
        model: bytes | None = None
        if path is not None and path.is_file():
            try:
                model = path.read_bytes()
                session, threads = self._open_fastest(model, shape, batches)
            except Exception as e:  # a damaged cache entry is exported again
                warnings.warn(f"OnnxRuntimeBackend: cached {path} could not be loaded ({type(e).__name__}: {e}); "
                              f"exporting it again", RuntimeWarning, stacklevel=4)
                session = None
        if session is None:
            model = self._export(row, shape)
            self.exported.append(sid)
            if path is not None:
                atomic_write_bytes(path, model)
            session, threads = self._open_fastest(model, shape, batches)
        entry = _Session(session, _initializer_bytes(model), threads)
        _SESSIONS[pool_key] = entry
        return entry

    def _export(self, row: int, shape: tuple[int, ...]) -> bytes:
        sub = self.act.extract(row).eval()
        axes = {0: "batch"}
        if (size := self._resize_to(row, shape)) is not None:  # any image size in, resized as SubNetAct does
            sub, axes = _ResizedInput(sub, size).eval(), {0: "batch", 2: "height", 3: "width"}
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer notes
            torch.onnx.export(sub, (torch.zeros(1, *shape),), buf, dynamo=False, opset_version=self.opset,
                              input_names=[self._input_name], output_names=["logits"],
                              dynamic_axes={self._input_name: axes, "logits": {0: "batch"}})
        return buf.getvalue()

    def _open_fastest(self, model: bytes, shape: tuple[int, ...], batches: Sequence[int]) -> tuple[Any, int]:
        """A session with ``self.threads`` intra-op threads, or, when that is ``None``, with one thread or
        ``self.max_threads`` (default ``torch.get_num_threads()``), whichever runs ``batches`` faster (sum of
        medians of 5 interleaved runs after 2 warm-up runs each); returns it with its thread count."""
        most = self.max_threads or torch.get_num_threads()
        candidates = [self.threads] if self.threads is not None else sorted({1, most})
        sessions = {t: self._open(model, t) for t in candidates}
        if len(sessions) == 1:
            return sessions[candidates[0]], candidates[0]
        inputs = [{self._input_name: torch.zeros(b, *shape).numpy()} for b in batches]
        times: dict[int, list[list[float]]] = {t: [[] for _ in inputs] for t in sessions}
        for repeat in range(7):
            for t, session in sessions.items():
                for i, feed in enumerate(inputs):
                    start = time.perf_counter()
                    session.run(None, feed)
                    if repeat >= 2:
                        times[t][i].append(time.perf_counter() - start)
        best = min(sessions, key=lambda t: (sum(statistics.median(m) for m in times[t]), t))
        return sessions[best], best

    def threads_by_subnet(self) -> dict[str, int]:
        """Intra-op threads of each SubNet's session (after :meth:`prepare`)."""
        return {self.act.ids[row]: entry.threads for row, entry in sorted(self.sessions.items())}

    def _open(self, model: bytes, threads: int) -> Any:
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0" if self.spinning == "off" else "1")
        if self.spinning == "run":
            options.add_session_config_entry("session.force_spinning_stop", "1")
        return ort.InferenceSession(model, options, providers=self.providers)

    @property
    def timing_key(self) -> str:
        """``onnxruntime(threads=..., spinning=...)``: the thread setting (fixed, or the bound of the
        measurement) and the waiting, which the latency depends on."""
        most = self.max_threads or torch.get_num_threads()
        threads = self.threads if self.threads is not None else 1 if most == 1 else f"1|{most}"
        return f"{self.name}(threads={threads}, spinning={self.spinning})"

    # Serving ------------------------------------------------------------------------------------
    def weight_bytes(self) -> int:
        """One weight copy per session (its initializers), plus the shared deployment if any SubNet is
        served eagerly."""
        total = sum(entry.weight_bytes for entry in self.sessions.values())
        if self.fallback_ids:
            total += super().weight_bytes()
        return total

    def __call__(self, x: Tensor, subnet: int | str) -> Tensor:
        row = self.act.row(subnet)
        entry = self.sessions.get(row)
        if entry is None:
            if self.act.ids[row] in self.fallback_ids:
                if self._eager is None:
                    self._eager = EagerBackend(self.act)
                    self._eager.sample_shape = self.sample_shape
                return self._eager(x, row)
            raise RuntimeError("OnnxRuntimeBackend: call prepare() before serving")
        self._check_input(x)
        shape = self._input_shape[row]
        if tuple(x.shape[1:]) != shape and not (row in self._resizing and x.dim() == 4):
            size = self.act._resolution[row]
            if size is None or x.dim() != 4:
                raise ValueError(f"OnnxRuntimeBackend: SubNet {self.act.ids[row]} takes inputs [batch, "
                                 f"{', '.join(map(str, shape))}], got {list(x.shape)}")
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)  # as SubNetAct
        if x.shape[0] < 1:
            raise ValueError(f"OnnxRuntimeBackend: empty batch {list(x.shape)}")
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(entry.session.run(None, {self._input_name: array})[0])


def _initializer_bytes(model: bytes) -> int:
    """Bytes of an ONNX model's initializers (its weights)."""
    import onnx

    proto = onnx.load_from_string(model)
    total = 0
    for init in proto.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        total += n * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return total


BACKENDS: dict[str, type[Backend]] = {
    "eager": EagerBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "compile": CompileBackend,
    "cudagraphs": CUDAGraphBackend,
    "tensorrt": TensorRTBackend,
}


def make_backend(name: str, act: SubNetAct, **kwargs: Any) -> Backend:
    """Build a backend by name: ``auto`` (the default) or one of :data:`BACKENDS`.

    ``auto`` is :class:`OnnxRuntimeBackend` (``kwargs`` go to it) for a deployment on the CPU, else
    :class:`EagerBackend`; without ``onnxruntime`` installed it warns and uses the eager backend.
    """
    if name == "auto":
        if next(act.net.parameters()).device.type != "cpu":
            return EagerBackend(act)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            warnings.warn("backend 'auto': onnxruntime is not installed, serving with the eager backend "
                          "(pip install onnxruntime 'onnx<1.23' for the faster CPU path)", RuntimeWarning,
                          stacklevel=2)
            return EagerBackend(act)
        return OnnxRuntimeBackend(act, **kwargs)
    cls = BACKENDS.get(name)
    if cls is None:
        raise ValueError(f"unknown backend {name!r}; allowed {sorted(['auto', *BACKENDS])}")
    return cls(act, **kwargs)
