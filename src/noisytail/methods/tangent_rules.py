"""Cheaper forward-mode rules with the same numbers, for the look-ahead's tangent passes
(`noisytail.methods.lookahead.forward_with_tangents`): training-mode BatchNorm's tangent from its
own backward kernel (`batch_norm_jvp`) and ReLU's without PyTorch's in-place copies
(`FastTangents`, a ``TorchFunctionMode`` active inside a forward-AD pass)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode


def batch_norm_jvp(
    x: Tensor,
    dx: Tensor | None,
    weight: Tensor | None,
    dweight: Tensor | None,
    bias: Tensor | None,
    dbias: Tensor | None,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[Tensor, Tensor | None]:
    """Training-mode BatchNorm ``y = γ·x̂ + β`` (batch statistics over all dims but 1) and its
    forward-mode derivative along ``(dx, dγ, dβ)`` (``None``: zero), tangent detached.

    ``dy = J·dx + dγ·x̂ + dβ`` with ``J = ∂y/∂x = γ·r·(I − 1/N − x̂x̂ᵀ/N)`` per channel (``r`` the
    inverse standard deviation, ``N`` the values per channel). ``J`` is symmetric, so ``J·dx`` is
    BatchNorm's own backward applied to ``dx`` (one fused kernel), and ``dγ·x̂ + dβ`` is an
    eval-mode BatchNorm of ``x`` at the batch's statistics with weight ``dγ`` and bias ``dβ``:
    the same numbers as PyTorch's forward-mode rule for ``native_batch_norm``, in two passes
    instead of about ten (and without its bf16↔fp32 copies under autocast). Running statistics
    are updated once, as by ``F.batch_norm``.
    """
    aten = torch.ops.aten
    out, mean, invstd = aten.native_batch_norm(
        x, weight, bias, running_mean, running_var, True, momentum, eps
    )
    if dx is None and dweight is None and dbias is None:
        return out, None
    with torch.no_grad():
        xd, mean, invstd = x.detach(), mean.detach(), invstd.detach()
        tangent = None
        if dx is not None:
            w = None if weight is None else weight.detach()
            tangent = aten.native_batch_norm_backward(
                dx, xd, w, None, None, mean, invstd, True, eps, [True, False, False]
            )[0]
        if dweight is not None or dbias is not None:
            zero = torch.zeros_like(mean)
            dw = zero if dweight is None else dweight.to(mean.dtype)
            db = zero if dbias is None else dbias.to(mean.dtype)
            var = invstd.pow(-2) - eps  # the batch variance: x̂ = (x − mean)·invstd again
            affine = aten.native_batch_norm(xd, dw, db, mean, var, False, 0.0, eps)[0]
            tangent = affine if tangent is None else tangent + affine
    return out, tangent.to(out.dtype)


_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_BN_DEFAULTS = {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5}


class FastTangents(TorchFunctionMode):
    """Inside a forward-AD pass: every training-mode ``F.batch_norm`` through `batch_norm_jvp`
    (its tangent in two fused passes, not PyTorch's element-wise rule) and ``F.relu`` out of
    place with the tangent ``dx·[y > 0]`` (PyTorch's rule for the in-place ``relu_`` of a dual
    tensor copies the activation twice); everything else as is. Same numbers."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        import torch.autograd.forward_ad as fwad

        if func is torch.nn.functional.relu:
            x, dx = fwad.unpack_dual(args[0])
            if dx is None:
                return func(*args, **kwargs)
            with torch._C.DisableTorchFunction():
                out = torch.relu(x)
                with torch.no_grad():
                    tangent = torch.ops.aten.threshold_backward(dx, out.detach(), 0)
                return fwad.make_dual(out, tangent)
        if func is not torch.nn.functional.batch_norm:
            return func(*args, **kwargs)
        a = {**_BN_DEFAULTS, **dict(zip(_BN_ARGS, args)), **kwargs}
        if not a["training"]:
            return func(*args, **kwargs)

        x, dx = fwad.unpack_dual(a["input"])
        w, dw = (None, None) if a["weight"] is None else fwad.unpack_dual(a["weight"])
        b, db = (None, None) if a["bias"] is None else fwad.unpack_dual(a["bias"])
        with torch._C.DisableTorchFunction():
            out, tangent = batch_norm_jvp(
                x, dx, w, dw, b, db, a["running_mean"], a["running_var"], a["momentum"], a["eps"]
            )
            return out if tangent is None else fwad.make_dual(out, tangent)
