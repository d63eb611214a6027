"""L2RW: "Learning to Reweight Examples for Robust Deep Learning" (Ren et al., ICML 2018, arXiv
1803.09050).

Per-sample weights ``ε_i = 0``, one virtual SGD step on ``Σ ε_i ℓ_i`` (Eq. 3), the clean meta loss
of the virtual model, ``w̃_i = max(−∂L_meta/∂ε_i, 0)`` (Eq. 4-5; equal to
``max(η·⟨∇L_meta(θ'), ∇ℓ_i(θ)⟩, 0)``), ``w = w̃ / (Σ w̃ + 1e-10)`` and the real step on
``Σ w_i ℓ_i``. The official code's minimum example weight ε (``w̃_i = max(·, ε)``) is
``min_weight``. It is L2B with β = 0 (`noisytail.methods.l2b`), sharing its code. (The L2B
code's own L2RW baseline on ISIC also applies a sigmoid to ``max(−g, 0)`` before normalising;
not here.)
"""

from __future__ import annotations

from ..models.base import Backbone
from ..registry import METHODS
from .base import TaskInfo
from .l2b import L2B


@METHODS.register("l2rw")
class L2RW(L2B):
    """L2RW (Ren et al., arXiv 1803.09050): instance weights from the meta-gradient of a
    zero-initialised ε, clamped at 0 and normalised (Algorithm 1).

    Defaults follow the paper: no warm-up, a plain SGD virtual step at the current learning rate
    (``use_optimizer_state=True`` gives the L2B code's β=0 baseline, i.e. ``l2b`` with
    ``reweight_label=False``). ``min_weight`` ε is the official code's minimum example weight,
    ``w̃_i = max(−∂L_meta/∂ε_i / η_t, ε)`` (default 0, as there); the other options are `L2B`'s.
    As L2B's, the look-ahead moves only the classifier head by default (``lookahead="head"``,
    chosen by measurement, BENCHMARKS.md "Meta steps at most 2× ERM"); ``lookahead="all"`` is
    the paper's full look-ahead.
    """

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        norm_type: str = "org",
        temperature: float = 10.0,
        warmup_epochs: int = 0,
        use_optimizer_state: bool = False,
        meta_every: int = 1,
        between: str = "cached",
        lookahead: str = "head",
        meta_grad: str = "forward",
        min_weight: float = 0.0,
        mixup_alpha: float = 0.0,
        meta_step: int = 1,
    ) -> None:
        super().__init__(
            model,
            info,
            reweight_label=False,
            norm_type=norm_type,
            temperature=temperature,
            warmup_epochs=warmup_epochs,
            use_optimizer_state=use_optimizer_state,
            meta_every=meta_every,
            between=between,
            lookahead=lookahead,
            meta_grad=meta_grad,
            min_weight=min_weight,
            mixup_alpha=mixup_alpha,
            meta_step=meta_step,
        )
