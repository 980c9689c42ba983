"""Once-for-all's published SuperNets as ws-core SuperNets (Cai et al., "Once-for-All", ICLR 2020).

The OFA authors publish their trained SuperNets as ``torch.save({"state_dict": ...})`` files
(``ofa.model_zoo.ofa_net``). This module lets timm load them into the ws-core SuperNet of the same space
and translates OFA's SubNet descriptions:

* :func:`checkpoint_filter_fn` — timm's ``pretrained_filter_fn`` of the ``ws_ofa_*`` models: OFA's key
  names (``first_conv``, ``blocks.N.conv.depth_conv.conv.conv.weight``, ``*.7to5_matrix``,
  ``final_expand_layer`` (MobileNetV3), ``feature_mix_layer``, ``classifier.linear``, ResNets'
  ``input_stem``; also the older ``mobile_inverted_conv``
  and un-nested ``.bn.`` / ``.conv.weight`` spellings OFA's own ``load_state_dict`` accepts) become ws-core
  names. Every key and shape is checked first; a file of another network raises :class:`OFACheckpointError`
  naming the missing, unexpected and mis-shaped tensors, before the model is touched.
* :func:`from_ofa_arch` / :func:`to_ofa_arch` — OFA's SubNet dicts, as ``sample_active_subnet()`` returns
  them (MobileNetV3 and ProxylessNAS: ``ks``, ``e`` one entry per block, ``d`` one per stage, optional ``r``;
  ResNets: ``d`` input stem first, ``e`` per block, ``w`` six width indices), to and from
  :class:`~ws_core.config.SubNetConfig`.
* :data:`OFA_NETS` — the published SuperNets, their URL and the ws-core model/tag that loads them
  (``ofa_mbv3_d234_e346_k357_w1.0`` / ``_w1.2``: ``ws_ofa_mbv3_100`` / ``_120``;
  ``ofa_proxyless_d234_e346_k357_w1.3``: ``ws_ofa_proxyless_130``; ``ofa_resnet50_...``: ``ws_ofa_resnet50``)::

    net = timm.create_model("ws_ofa_mbv3_100.ofa_in1k", pretrained=True)          # downloads OFA's file
    net = timm.create_model("ws_ofa_mbv3_100.ofa_in1k", pretrained=True,
                            pretrained_cfg_overlay=dict(file="ofa_mbv3_d234_e346_k357_w1.0"))   # offline copy
    net.activate(from_ofa_arch(net.space, {"ks": [...], "e": [...], "d": [...], "r": [176]}))

Files are read by timm with ``torch.load(..., weights_only=True)`` (``file=`` and ``url`` alike): tensors and
plain containers only, never arbitrary pickled objects.

OFA's specialised SubNets (``ofa.model_zoo.ofa_specialized``, e.g. ``flops@595M_top1@80.0_finetune@75``) are
not included: the ``ofa`` package names them and their top-1 but downloads each configuration
(``net.config``) at run time, so their architectures are not in its source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from .config import SubNetConfig
from .space import SearchSpace

__all__ = [
    "OFA_NETS",
    "OFA_TAG",
    "OFACheckpointError",
    "OFANet",
    "checkpoint_filter_fn",
    "from_ofa_arch",
    "is_ofa_state_dict",
    "ofa_key_map",
    "ofa_model_kwargs",
    "ofa_pretrained_cfg",
    "to_ofa_arch",
]

OFA_TAG = "ofa_in1k"
_URL = "https://raw.githubusercontent.com/han-cai/files/master/ofa/ofa_nets/"


@dataclass(frozen=True)
class OFANet:
    """One published OFA SuperNet: its id in ``ofa.model_zoo.ofa_net``, the file's URL and the ws-core model
    (``model.tag``) whose SuperNet has the same space and weights, with the constructor settings it needs.
    ``downloadable``: whether timm can fetch ``url`` itself (not a Google Drive page)."""

    net_id: str
    model: str
    url: str
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    downloadable: bool = True


OFA_NETS: dict[str, OFANet] = {
    net.net_id: net
    for net in (
        OFANet("ofa_mbv3_d234_e346_k357_w1.0", "ws_ofa_mbv3_100", _URL + "ofa_mbv3_d234_e346_k357_w1.0",
               {"kernel_transform": True}),
        OFANet("ofa_mbv3_d234_e346_k357_w1.2", "ws_ofa_mbv3_120", _URL + "ofa_mbv3_d234_e346_k357_w1.2",
               {"kernel_transform": True}),
        OFANet("ofa_proxyless_d234_e346_k357_w1.3", "ws_ofa_proxyless_130",
               _URL + "ofa_proxyless_d234_e346_k357_w1.3", {"kernel_transform": True}),
        # ofa.model_zoo.ofa_net("ofa_resnet50") downloads this one from Google Drive with gdown
        OFANet("ofa_resnet50_d0-1-2_e0.2-0.25-0.35_w0.65-0.8-1.0", "ws_ofa_resnet50",
               "https://drive.google.com/uc?id=1xy6VIPEHXqbbqNu3xEZUxhp5FbTVs5cQ", downloadable=False),
    )
}
_BY_MODEL = {net.model: net for net in OFA_NETS.values()}


class OFACheckpointError(ValueError):
    """An OFA checkpoint that does not fit the SuperNet it is loaded into."""


# Registry glue (used by the ws_ofa_* entrypoints) -------------------------------------------------------

def ofa_pretrained_cfg(model: str, **kwargs: Any) -> dict[str, Any]:
    """timm ``pretrained_cfg`` of the ``<model>.ofa_in1k`` tag: OFA's file, its ImageNet-1k data settings
    (OFA's evaluation: resize to ``r / 0.875``, bilinear, centre crop ``r``, ImageNet mean/std) and licence."""
    net = _BY_MODEL[model]
    cfg = {
        "url": net.url if net.downloadable else None, "num_classes": 1000, "input_size": (3, 224, 224),
        "pool_size": (7, 7), "crop_pct": 0.875, "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
        "license": "mit", "origin_url": "https://github.com/mit-han-lab/once-for-all",
        "paper_name": "Once-for-All: Train One Network and Specialize it for Efficient Deployment",
        "paper_ids": "arXiv:1908.09791",
        "description": f"OFA's trained SuperNet {net.net_id} (ofa.model_zoo.ofa_net), ImageNet-1k",
    }
    if not net.downloadable:
        cfg["notes"] = (f"OFA publishes this file on Google Drive ({net.url}); download it (e.g. with gdown) and "
                        "load it with pretrained_cfg_overlay=dict(file=...)",)
    cfg.update(kwargs)
    return cfg


def _requested_tag(pretrained_cfg: Any) -> str | None:
    if isinstance(pretrained_cfg, str):
        return pretrained_cfg
    if isinstance(pretrained_cfg, Mapping):
        return pretrained_cfg.get("tag")
    return getattr(pretrained_cfg, "tag", None)


def ofa_model_kwargs(variant: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the constructor settings OFA's checkpoint needs (``kernel_transform=True``) filled in
    when the ``ofa_in1k`` tag is requested (``"<variant>.ofa_in1k"`` or ``pretrained_cfg="ofa_in1k"``);
    settings the caller gives explicitly win."""
    net = _BY_MODEL.get(variant)
    if net is None or _requested_tag(kwargs.get("pretrained_cfg")) != OFA_TAG:
        return kwargs
    return {**net.model_kwargs, **kwargs}


# State-dict conversion -------------------------------------------------------------------------------

_OFA_ROOTS = ("first_conv.", "blocks.", "final_expand_layer.", "feature_mix_layer.", "classifier.linear.",
              "input_stem.")
_WS_ROOTS = ("stem.", "stages.", "head.")


def _canonical(key: str) -> str:
    """OFA key spelling that every OFA version maps to (OFA's own ``load_state_dict`` accepts these variants)."""
    if key.startswith("module."):
        key = key[len("module."):]
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    key = key.replace(".bn.bn.", ".bn.")
    key = key.replace(".conv.conv.weight", ".conv.weight")
    return key.replace(".linear.linear.", ".linear.")


def is_ofa_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` uses OFA's layout (and not ws-core's)."""
    keys = [_canonical(k) for k in state_dict]
    return any(k.startswith(_OFA_ROOTS) for k in keys) and not any(k.startswith(_WS_ROOTS) for k in keys)


_MBCONV_STEM = (  # (ws prefix, OFA prefix): first conv and the fixed first block of MobileNetV3 / ProxylessNAS
    ("stem.conv.conv.", "first_conv.conv."),
    ("stem.conv.bn.", "first_conv.bn."),
    ("stem.block.conv_dw.", "blocks.0.conv.depth_conv.conv."),
    ("stem.block.bn1.", "blocks.0.conv.depth_conv.bn."),
    ("stem.block.conv_pwl.", "blocks.0.conv.point_linear.conv."),
    ("stem.block.bn2.", "blocks.0.conv.point_linear.bn."),
    ("head.classifier.", "classifier.linear."),
)
_MBV3_FIXED = (*_MBCONV_STEM,  # (ws prefix, OFA prefix) outside the elastic stages
               ("head.features.conv.", "final_expand_layer.conv."),
               ("head.features.bn.", "final_expand_layer.bn."),
               ("head.pre_logits.0.", "feature_mix_layer.conv."))
_PROXYLESS_FIXED = (*_MBCONV_STEM,
                    ("head.features.conv.", "feature_mix_layer.conv."),
                    ("head.features.bn.", "feature_mix_layer.bn."))
_MBV3_BLOCK = (  # (ws prefix inside a block, OFA prefix inside blocks.N.conv)
    ("conv_pw.", "inverted_bottleneck.conv."),
    ("bn1.", "inverted_bottleneck.bn."),
    ("conv_dw.", "depth_conv.conv."),
    ("bn2.", "depth_conv.bn."),
    ("se.reduce.", "depth_conv.se.fc.reduce."),
    ("se.expand.", "depth_conv.se.fc.expand."),
    ("conv_pwl.", "point_linear.conv."),
    ("bn3.", "point_linear.bn."),
)
_CLASSIFIER = ("head.classifier.weight", "head.classifier.bias")
_STAGE_KEY = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)")
_TRANSFORM_KEY = re.compile(r"conv_dw\.kernel_transform\.(\d+to\d+)$")


def _mbv3_key(key: str, stage_blocks: Sequence[int], fixed: Sequence[tuple[str, str]] = _MBV3_FIXED) -> str | None:
    m = _STAGE_KEY.fullmatch(key)
    if m is None:
        for ws, ofa in fixed:
            if key.startswith(ws):
                return ofa + key[len(ws):]
        return None
    s, j, rest = int(m[1]), int(m[2]), m[3]
    prefix = f"blocks.{1 + sum(stage_blocks[:s]) + j}.conv."
    t = _TRANSFORM_KEY.fullmatch(rest)
    if t is not None:
        return f"{prefix}depth_conv.conv.{t[1]}_matrix"
    for ws, ofa in _MBV3_BLOCK:
        if rest.startswith(ws):
            return prefix + ofa + rest[len(ws):]
    return None


_RESNET_FIXED = (
    ("stem.conv1.conv.", "input_stem.0.conv."),
    ("stem.conv1.bn.", "input_stem.0.bn."),
    ("stem.conv2.blocks.0.conv.", "input_stem.1.conv.conv."),
    ("stem.conv2.blocks.0.bn.", "input_stem.1.conv.bn."),
    ("stem.conv3.conv.", "input_stem.2.conv."),
    ("stem.conv3.bn.", "input_stem.2.bn."),
    ("head.classifier.", "classifier.linear."),
)
_RESNET_BLOCK = (
    ("conv1.", "conv1.conv."), ("bn1.", "conv1.bn."),
    ("conv2.", "conv2.conv."), ("bn2.", "conv2.bn."),
    ("conv3.", "conv3.conv."), ("bn3.", "conv3.bn."),
    ("downsample.conv.", "downsample.conv."), ("downsample.bn.", "downsample.bn."),
)


def _resnet_key(key: str, stage_blocks: Sequence[int]) -> str | None:
    m = _STAGE_KEY.fullmatch(key)
    if m is None:
        for ws, ofa in _RESNET_FIXED:
            if key.startswith(ws):
                return ofa + key[len(ws):]
        return None
    s, j, rest = int(m[1]), int(m[2]), m[3]
    for ws, ofa in _RESNET_BLOCK:
        if rest.startswith(ws):
            return f"blocks.{sum(stage_blocks[:s]) + j}.{ofa}{rest[len(ws):]}"
    return None


def ofa_key_map(model: nn.Module) -> dict[str, str]:
    """``{ws-core key: OFA key}`` for every tensor of ``model``'s state dict, plus the classifier (which timm
    drops itself when ``num_classes`` differs). OFA keys are in the canonical spelling of :func:`_canonical`.

    Raises ``TypeError`` for a model whose OFA layout is unknown.
    """
    from .models.mobilenetv3 import OFAMobileNetV3
    from .models.proxyless import OFAProxylessNASNet
    from .models.resnet import OFAResNet

    if isinstance(model, OFAMobileNetV3):
        def convert(k: str) -> str | None:
            return _mbv3_key(k, model.space.stage_blocks)
    elif isinstance(model, OFAProxylessNASNet):
        def convert(k: str) -> str | None:
            return _mbv3_key(k, model.space.stage_blocks, _PROXYLESS_FIXED)
    elif isinstance(model, OFAResNet):
        def convert(k: str) -> str | None:
            return _resnet_key(k, model.space.stage_blocks)
    else:
        raise TypeError(f"no OFA checkpoint layout known for {type(model).__name__}; known: OFAMobileNetV3, "
                        "OFAProxylessNASNet, OFAResNet")
    out = {}
    for key in dict.fromkeys([*model.state_dict(), *_CLASSIFIER]):
        ofa = convert(key)
        if ofa is None:
            raise TypeError(f"{type(model).__name__}: no OFA name for tensor {key!r}")
        out[key] = ofa
    return out


def _shown(items: Sequence[str], n: int = 6) -> str:
    return f"{list(items[:n])}{' ...' if len(items) > n else ''}"


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    # timm's file loader already unwraps {"state_dict": ...}; its URL loader hands over the file's dict as is
    inner = state_dict.get("state_dict") if isinstance(state_dict, Mapping) else None
    return inner if isinstance(inner, Mapping) else state_dict


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, Tensor]:
    """timm ``pretrained_filter_fn``: an OFA state dict (or OFA's whole file, ``{"state_dict": ...}``) as a
    ws-core state dict for ``model``. A state dict already in ws-core's layout is returned unchanged.

    Every tensor of ``model`` must be in the file with its shape (the classifier may have another number of
    classes: timm then drops it; the first conv another number of input channels: timm adapts it); else
    :class:`OFACheckpointError` lists the missing, unexpected and mis-shaped tensors (at most 6 of each) —
    nothing has been loaded yet, so the model is untouched. ``num_batches_tracked`` counters, absent from
    files written by old PyTorch versions, are taken from the model.
    """
    state_dict = _unwrap(state_dict)
    if not isinstance(state_dict, Mapping):
        raise OFACheckpointError(f"expected a state dict (a mapping of names to tensors), got "
                                 f"{type(state_dict).__name__}")
    if not is_ofa_state_dict(state_dict):
        return dict(state_dict)
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise OFACheckpointError(f"OFA checkpoint for {name}: values that are not tensors: {_shown(not_tensors)}")
    by_canonical = {_canonical(k): k for k in state_dict}
    own = model.state_dict()
    first_conv = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    out: dict[str, Tensor] = {}
    missing, shapes = [], []
    for ws_key, ofa_key in ofa_key_map(model).items():
        file_key = by_canonical.pop(ofa_key, None)
        if file_key is None:
            if ws_key.endswith("num_batches_tracked") and ws_key in own:
                out[ws_key] = own[ws_key].clone()
            elif ws_key in own:
                missing.append(ofa_key)
            continue
        tensor = state_dict[file_key]
        if ws_key in own and tuple(tensor.shape) != tuple(own[ws_key].shape):
            # timm adapts these two: another class count drops the classifier, other input channels adapt the stem
            adaptable = ((ws_key.startswith("head.classifier.") and tensor.shape[1:] == own[ws_key].shape[1:])
                         or (first_conv and ws_key == f"{first_conv}.weight"
                             and tensor.shape[0] == own[ws_key].shape[0] and tensor.shape[2:] == own[ws_key].shape[2:]))
            if not adaptable:
                shapes.append(f"{file_key}: file {tuple(tensor.shape)} != model {tuple(own[ws_key].shape)}")
        out[ws_key] = tensor
    unexpected = sorted(by_canonical.values())
    if missing or unexpected or shapes:
        expects = _BY_MODEL.get(name.split(".")[0])
        lines = [f"OFA checkpoint does not fit {name}"
                 + (f" (which takes OFA's {expects.net_id})" if expects else "") + "; model left unchanged:"]
        if missing:
            lines.append(f"missing ({len(missing)}): {_shown(missing)}")
        if unexpected:
            lines.append(f"unexpected ({len(unexpected)}): {_shown(unexpected)}")
        if shapes:
            lines.append(f"shape mismatches ({len(shapes)}): {_shown(shapes)}")
        if unexpected and all(k.endswith("_matrix") for k in unexpected):
            lines.append("the file has OFA's kernel-transform matrices: build the model with kernel_transform=True "
                         f"(the '{OFA_TAG}' tag does)")
        raise OFACheckpointError("\n  ".join(lines))
    return out


# Architecture dicts -----------------------------------------------------------------------------------

_MBV3_FIELDS = ("ks", "e", "d", "r", "image_size", "wid")
_RESNET_FIELDS = ("d", "e", "w", "r", "image_size")


def _space_of(space: SearchSpace | Any) -> SearchSpace:
    space = getattr(space, "space", space)
    if not isinstance(space, SearchSpace):
        raise TypeError(f"expected a SearchSpace or a SuperNet, got {type(space).__name__}")
    return space


def _is_choice(value: Any, choices: Sequence[Any]) -> bool:
    if type(value) is bool:
        return False
    try:
        return value in choices
    except TypeError:
        return False


def _field_error(name: str, allowed: Any, value: Any, where: str = "") -> ValueError:
    return ValueError(f"invalid OFA arch: field {name!r}{where} allows {allowed}, got {value!r}")


def _vector(arch: Mapping[str, Any], name: str, n: int, what: str) -> list[Any]:
    values = arch[name]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"invalid OFA arch: field {name!r} needs a list of {n} values (one per {what}), "
                         f"got {values!r}")
    if len(values) != n:
        raise ValueError(f"invalid OFA arch: field {name!r} needs {n} values (one per {what}), got {len(values)}")
    return list(values)


def _resolution(space: SearchSpace, arch: Mapping[str, Any], resolution: int | None) -> int:
    choices = list(space["resolution"].choices)
    key = "r" if "r" in arch else "image_size" if "image_size" in arch else None
    if key is None:
        r = max(choices) if resolution is None else resolution
        if not _is_choice(r, choices):
            raise ValueError(f"invalid resolution: allowed {choices}, got {r!r}")
        return r
    value = arch[key]
    r = value[0] if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 1 else value
    if not _is_choice(r, choices):
        raise _field_error(key, choices, value)
    return r


_MBV3_DIMS = {"resolution", "depth", "expand", "kernel"}
_RESNET_DIMS = {"resolution", "stem_depth", "stem_mid_width", "stem_width", "depth", "width", "expand"}


def _family(space: SearchSpace) -> str:
    names = set(space.names)
    if names == _MBV3_DIMS:
        return "mbv3"
    if names == _RESNET_DIMS:
        return "resnet"
    raise ValueError(f"no OFA arch format known for a space with dimensions {list(space.names)}")


def _check_fields(arch: Mapping[str, Any], allowed: Sequence[str], required: Sequence[str]) -> None:
    if not isinstance(arch, Mapping):
        raise TypeError(f"expected OFA's arch dict, got {type(arch).__name__}")
    unknown = sorted(set(arch) - set(allowed))
    if unknown:
        raise ValueError(f"invalid OFA arch: unknown field(s) {unknown}; allowed {list(allowed)}")
    missing = [k for k in required if k not in arch]
    if missing:
        raise ValueError(f"invalid OFA arch: missing field(s) {missing}; required {list(required)}")


def _depths(arch: Mapping[str, Any], n: int, choices: Sequence[Any], what: str) -> list[Any]:
    depths = _vector(arch, "d", n, what)
    for s, d in enumerate(depths):
        if not _is_choice(d, choices):
            raise _field_error("d", list(choices), d, f"[{s}]")
    return depths


def _per_block(arch: Mapping[str, Any], name: str, choices: Sequence[Any], active: Sequence[bool]) -> list[Any]:
    """Per-block values with ``None`` for skipped blocks (whose entries may be a choice, 0 or None)."""
    values = _vector(arch, name, len(active), "block")
    for i, v in enumerate(values):
        if not _is_choice(v, choices) and (active[i] or v not in (0, None)):
            raise _field_error(name, list(choices), v, f"[{i}]" + ("" if active[i] else " (a skipped block)"))
    return [v if a else None for v, a in zip(values, active)]


def _mbv3_depths(space: SearchSpace, arch: Mapping[str, Any]) -> list[Any]:
    """OFA's ``d``, one per stage; a stage of fixed depth (ProxylessNAS's last, ``base_depth == stage_blocks``)
    takes what OFA's ``set_active_subnet`` runs in full — ``None`` or at least its block count (its sampler: 1;
    ``set_max_net``: the largest depth) — and becomes ``None``."""
    choices = space["depth"].choices
    depths = _vector(arch, "d", len(space.stage_blocks), "stage")
    for s, (d, b, n) in enumerate(zip(depths, space.base_depth, space.stage_blocks)):
        if b != n:
            if not _is_choice(d, choices):
                raise _field_error("d", list(choices), d, f"[{s}]")
            continue
        allowed = sorted({n, *(c for c in choices if c >= n)})
        if d is not None and not _is_choice(d, allowed):
            raise _field_error("d", allowed, d, f"[{s}] (a stage of fixed depth {n})")
        depths[s] = None
    return depths


def _from_mbv3_arch(space: SearchSpace, arch: Mapping[str, Any], resolution: int | None) -> dict[str, Any]:
    _check_fields(arch, _MBV3_FIELDS, ("ks", "e", "d"))
    if arch.get("wid") is not None:
        raise _field_error("wid", [None], arch["wid"])
    depths = _mbv3_depths(space, arch)
    n_active = space.active_blocks({"depth": depths})
    active = [j < n_active[s] for s, n in enumerate(space.stage_blocks) for j in range(n)]
    return {"resolution": _resolution(space, arch, resolution), "depth": depths,
            "kernel": _per_block(arch, "ks", space["kernel"].choices, active),
            "expand": _per_block(arch, "e", space["expand"].choices, active)}


def _from_resnet_arch(space: SearchSpace, arch: Mapping[str, Any], resolution: int | None) -> dict[str, Any]:
    _check_fields(arch, _RESNET_FIELDS, ("d", "e", "w"))
    depth_choices = space["depth"].choices
    d = _depths(arch, len(space.stage_blocks) + 1, depth_choices, "stage, input stem first")
    active = [j < b + d[1 + s] for s, (b, n) in enumerate(zip(space.base_depth, space.stage_blocks))
              for j in range(n)]
    widths = space["width"].choices
    w = _vector(arch, "w", len(space.stage_blocks) + 2, "width setting")
    for i, v in enumerate(w):
        if type(v) is bool or not isinstance(v, int) or not 0 <= v < len(widths):
            raise _field_error("w", list(range(len(widths))), v, f"[{i}] (an index into {list(widths)})")

    def stem(dim: str, index: int) -> Any:  # multipliers giving equal channels are one choice: the smallest
        return max(c for c in space[dim].choices if c <= widths[index])

    return {"resolution": _resolution(space, arch, resolution),
            "stem_depth": int(d[0] == max(depth_choices)),  # OFA runs the stem's residual conv iff d[0] is max
            "stem_mid_width": stem("stem_mid_width", w[0]), "stem_width": stem("stem_width", w[1]),
            "depth": d[1:], "width": [widths[i] for i in w[2:]],
            "expand": _per_block(arch, "e", space["expand"].choices, active)}


def from_ofa_arch(space: SearchSpace | Any, arch: Mapping[str, Any], resolution: int | None = None) -> SubNetConfig:
    """The :class:`SubNetConfig` of OFA's SubNet ``arch`` in ``space`` (a SearchSpace or a SuperNet).

    ``arch`` is OFA's dict as its ``sample_active_subnet()`` returns it:

    * MobileNetV3 — ``{"ks": [...], "e": [...], "d": [...]}``: one ``ks``/``e`` entry per block slot (20) and
      one ``d`` per stage (5); OFA's search code adds ``"r": [176]`` and ``"wid": None``, its accuracy
      predictor ``"image_size": 176``.
    * ProxylessNAS — the same fields: 21 ``ks``/``e`` entries (the last stage's single block included) and
      6 ``d``; the last stage's depth is fixed, so ``d[5]`` may be any value OFA runs its one block with
      (its sampler's 1, ``set_max_net``'s 4, ``None``).
    * ResNet — ``{"d": [...], "e": [...], "w": [...]}``: ``d`` the input stem then the 4 stages (extra blocks;
      the stem's residual conv runs iff ``d[0]`` is the largest depth, as in OFA's ``set_active_subnet``),
      ``e`` one entry per block slot (18), ``w`` 6 indices into the width multipliers (stem middle width,
      stem output width, then the 4 stages); optionally ``"r"`` / ``"image_size"``.

    Entries of skipped blocks are ignored if they are a valid choice, ``0`` or ``None``. Without a
    resolution in ``arch`` the SubNet runs at ``resolution`` (default: the space's largest).

    Raises ``ValueError`` naming the field, the allowed values and the value received.

    Example::

        >>> import timm, ws_core
        >>> net = timm.create_model("ws_ofa_mbv3_100")
        >>> cfg = from_ofa_arch(net, {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": [128]})
        >>> cfg == net.space.min()
        True
    """
    space = _space_of(space)
    convert = _from_mbv3_arch if _family(space) == "mbv3" else _from_resnet_arch
    return space.validate(convert(space, arch, resolution))


def to_ofa_arch(space: SearchSpace | Any, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """OFA's arch dict of the SubNet ``cfg`` (the inverse of :func:`from_ofa_arch`).

    MobileNetV3 and ProxylessNAS: ``{"ks", "e", "d", "r"}`` (a stage of fixed depth gets its block count, as
    ProxylessNAS's ``d[5] = 1`` from OFA's sampler); ResNet: ``{"d", "e", "w", "r"}`` with ``d[0]`` the largest depth
    when the stem's residual conv runs, else the smallest (OFA's sampler draws these two). Skipped blocks
    get ``None`` (``set_active_subnet`` leaves them alone); ``"r"`` is OFA's one-element list.
    ``from_ofa_arch(space, to_ofa_arch(space, cfg)) == cfg``.
    """
    space = _space_of(space)
    family = _family(space)
    cfg = space.validate(cfg)
    if family == "mbv3":
        depth = [n if d is None else d for d, n in zip(cfg["depth"], space.stage_blocks)]
        return {"ks": list(cfg["kernel"]), "e": list(cfg["expand"]), "d": depth, "r": [cfg["resolution"]]}
    depth, widths = space["depth"].choices, space["width"].choices
    w = [widths.index(cfg["stem_mid_width"]), widths.index(cfg["stem_width"])]
    return {"d": [depth[-1] if cfg["stem_depth"] else depth[0], *cfg["depth"]], "e": list(cfg["expand"]),
            "w": w + [widths.index(v) for v in cfg["width"]], "r": [cfg["resolution"]]}
