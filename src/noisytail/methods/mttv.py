"""MTTV, "more than two views" (arXiv 2509.08469; official code ``models/MTTVModel.py``).

Each anchor ``x`` gets a random partner ``y`` from the same batch (a permutation without fixed
points, `noisytail.data.views.partner_permutation`). With normalised (plain) views ``xn, yn`` and
augmented views ``xa, ya``, an online encoder ``q`` (backbone + 3-layer MLP with BN, hidden =
feature size, output = feature size / 4) and a momentum encoder ``k``:

    u = q(xn) + q(ya)        v = k(xa) + k(yn)        (sum fusion; "concat" also offered)

``(u_i, v_i)`` are positives and `noisytail.losses.contrastive.mttv_loss` filters extreme
similarities (|s| > 0.9 or < 0.1, t = 0.3). ``k`` has no gradient and is not in the optimizer.

Views: the loader gives ``(a1, a2, plain)`` (``views = 2`` plus ``include_plain_view``):
``xa = a1``, ``ya = a2[pi]``, ``xn = plain``, ``yn = plain[pi]``, so the partner's augmented view is
independent of the anchor's. Each encoder runs once per view type over the whole batch and the
partner's embeddings are gathered by ``pi`` (the same BatchNorm statistics as encoding the
permuted batch). Caveat: because partners come from the batch, the negative pair
``(u_pi(i), v_i)`` shares the plain image of ``pi(i)``; the official code draws partners from the
whole training set, where that coincidence is rare.

EMA rule (``m = 0.9``): ``k <- m * k + (1 - m) * q`` over parameters (not BN buffers), applied at
the *start* of each `training_step`, before ``k`` encodes. The loop steps the optimizer after
``training_step`` returns, so this folds in the previous step's update: the official code does the
same (``_momentum_update_encoder_k`` at the top of ``training_step``). ``momentum_update()`` applies
the rule on demand.

``predict`` is the online linear probe (the backbone's head on detached features), as in SimCLR.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data.views import partner_permutation
from ..losses.contrastive import cosine_matrix, interleave, mttv_loss, mttv_mask
from ..models.base import Backbone
from ..registry import METHODS
from .base import Batch, Context, TaskInfo
from .simclr import ContrastiveMethod, probe_step, projection_mlp


@METHODS.register("mttv")
class MTTV(ContrastiveMethod):
    """MTTV: fused anchor+partner embeddings from an online and an EMA momentum encoder (m = 0.9),
    NT-Xent with extreme-similarity filtering (|s| > 0.9 or < 0.1 dropped, t = 0.3); online linear
    probe for ``predict``."""

    views = 2
    include_plain_view = True

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        temperature: float = 0.3,
        low: float = 0.1,
        high: float = 0.9,
        momentum: float = 0.9,
        proj_dim: int | None = None,
        fusion: str = "sum",
        compat: bool = False,
        probe_lr_scale: float = 1.0,
        knn_every: int = 0,
        knn_k: int = 200,
        knn_t: float = 0.1,
    ) -> None:
        super().__init__(
            model,
            info,
            probe_lr_scale=probe_lr_scale,
            knn_every=knn_every,
            knn_k=knn_k,
            knn_t=knn_t,
        )
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"mttv: momentum must lie in [0, 1], got {momentum}")
        if fusion not in ("sum", "concat"):
            raise ValueError(f"mttv: fusion must be 'sum' or 'concat', got {fusion!r}")
        if not 0.0 <= low <= high:
            raise ValueError(f"mttv: need 0 <= low <= high, got low={low}, high={high}")
        self.temperature, self.low, self.high = temperature, low, high
        self.momentum = momentum
        self.fusion = fusion
        self.compat = compat
        d = model.feature_dim
        self.projector = projection_mlp(d, d, proj_dim or max(1, d // 4), layers=3, last_bn=True)
        self.momentum_model = copy.deepcopy(model)
        self.momentum_projector = copy.deepcopy(self.projector)
        for p in self._momentum_params():
            p.requires_grad_(False)

    # -- momentum encoder ------------------------------------------------------------------
    @staticmethod
    def _encoder_params(model: Backbone, projector: nn.Module) -> list[nn.Parameter]:
        """Every backbone parameter but the head's (frozen ones too), then the projector's, in a
        fixed order, so that online and momentum lists pair up."""
        head = {id(p) for p in model.head.parameters()}
        params = [p for p in model.parameters() if id(p) not in head]
        return params + list(projector.parameters())

    def _online_params(self) -> list[nn.Parameter]:
        return self._encoder_params(self.model, self.projector)

    def _momentum_params(self) -> list[nn.Parameter]:
        return self._encoder_params(self.momentum_model, self.momentum_projector)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``k <- m * k + (1 - m) * q`` for every encoder and projector parameter."""
        online, target = self._online_params(), self._momentum_params()
        if len(online) != len(target):
            raise RuntimeError("mttv: online and momentum encoders no longer match")
        torch._foreach_mul_(target, self.momentum)
        torch._foreach_add_(target, [p.detach() for p in online], alpha=1.0 - self.momentum)

    def _q(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.model.features(x)
        return h, self.projector(h)

    def _k(self, x: torch.Tensor) -> torch.Tensor:
        return self.momentum_projector(self.momentum_model.features(x))

    def _fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b if self.fusion == "sum" else torch.cat([a, b], dim=1)

    # -- the step ----------------------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        if isinstance(batch.x, torch.Tensor) or len(batch.x) != 3:
            raise ValueError("mttv: batch.x must be (augmented, augmented, plain) views")
        a1, a2, plain = batch.x
        self._remember_labels(batch)
        b = len(batch)
        perm = partner_permutation(b, ctx.generator).to(plain.device)
        self.momentum_update()
        h_n, q_n = self._q(plain)  # q(xn)
        h_a, q_a = self._q(a2)  # q(ya) = q_a[perm]
        u = self._fuse(q_n, q_a[perm])
        with torch.no_grad():
            v = self._fuse(self._k(a1), self._k(plain)[perm])  # k(xa) + k(yn)
        ssl = mttv_loss(
            u, v, temperature=self.temperature, low=self.low, high=self.high, compat=self.compat
        )
        probe, acc = probe_step(
            self.model, torch.cat([h_n, h_a]), torch.cat([batch.labels, batch.labels])
        )
        with torch.no_grad():
            sim = cosine_matrix(interleave(u.detach(), v))
            filtered = mttv_mask(sim, low=self.low, high=self.high).float().mean()
        out = {
            "loss": ssl + probe,
            "ssl_loss": ssl.detach(),
            "probe_loss": probe.detach(),
            "filtered_fraction": filtered,
            "train_accuracy_noisy": acc,
        }
        return self._log_knn(out)
