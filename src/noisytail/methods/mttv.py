"""MTTV, "more than two views" (arXiv 2509.08469; official code ``models/MTTVModel.py``;
docs/methods.md, MTTV).

Each anchor ``x`` gets a random partner ``y``. With normalised (plain) views ``xn, yn`` and
augmented views ``xa, ya``, an online encoder ``q`` (backbone + 3-layer MLP with BN, hidden =
feature size, output = feature size / 4) and a momentum encoder ``k``:

    u = q(xn) + q(ya)        v = k(xa) + k(yn)        (sum fusion; "concat" also offered)

``(u_i, v_i)`` are positives and `noisytail.losses.contrastive.mttv_loss` filters extreme
similarities (|s| > 0.9 or < 0.1, t = 0.3; ``loss_form`` picks its form, ``"clean"`` by default,
``compat: true`` = ``loss_form: official``). ``k`` has no gradient and is not in the optimizer.

Partners (``partner``; one partner per anchor, the official default ``K = 1``: the official
loader can draw ``K`` of them, noisytail has no ``K``):

- ``"dataset"`` (default, the official code): each partner is drawn uniformly from the whole
  training pool, independently per anchor (so it is the anchor itself with probability 1/N, as
  ``random.randint`` over the data set in the official ``__getitem__``). The loader gives
  ``(xa, xn)`` per anchor (``views_for`` = 1 plus the plain view); the partners' ``(ya, yn)``
  come from `Context.pool_batch` with the same augmentation. A negative shares an image with
  its anchor only when some other anchor or partner of the batch happens to be that image:
  about ``6B/N`` such negatives per anchor (0.49 at B = 1024 on CIFAR-10-LT, N = 12,406;
  simulated). Under DDP every rank draws from the same per-epoch generator, so the ranks pick
  the same partner positions for their different anchors.
- ``"batch"``: partners from the same batch, a permutation ``pi`` without fixed points
  (`noisytail.data.views.partner_permutation`); the loader gives ``(a1, a2, plain)``,
  ``xa = a1``, ``ya = a2[pi]``, ``xn = plain``, ``yn = plain[pi]``. Cheaper (no extra images),
  but every anchor then has **four** negatives that share an image with it. For ``u_i = q(xn_i) +
  q(a2_pi(i))`` they are ``v_{pi^-1(i)} = k(a1_{pi^-1(i)}) + k(xn_i)`` (the anchor's own plain
  image through the other encoder), ``u_{pi^-1(i)}`` (holds ``q(a2_i)``), ``u_pi(i)`` (holds
  ``q(xn_pi(i))``) and ``v_pi(i)`` (holds ``k(a1_pi(i))``); the rows ``v_i`` likewise.

Each encoder runs once per view type over the whole batch (the official code does the same).

EMA rule (``m = 0.9``): ``k <- m * k + (1 - m) * q`` over parameters (not BN buffers), applied at
the *start* of each `training_step`, before ``k`` encodes. The loop steps the optimizer after
``training_step`` returns, so this folds in the previous step's update: the official code does the
same (``_momentum_update_encoder_k`` at the top of ``training_step``). ``momentum_update()`` applies
the rule on demand.

``predict`` is the online linear probe (the backbone's head on detached features), as in SimCLR;
it trains on the features of the anchors' plain views and the partners' augmented views.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..data.views import partner_permutation
from ..losses.contrastive import (
    MTTV_LOSS_FORMS,
    cosine_matrix,
    interleave,
    mttv_loss,
    mttv_mask,
)
from ..models.base import Backbone
from ..registry import METHODS
from .base import Batch, Context, TaskInfo
from .simclr import ContrastiveMethod, probe_step, projection_mlp

PARTNER_DRAWS = ("dataset", "batch")


@METHODS.register("mttv")
class MTTV(ContrastiveMethod):
    """MTTV: fused anchor+partner embeddings from an online and an EMA momentum encoder (m = 0.9),
    NT-Xent with extreme-similarity filtering (|s| > 0.9 or < 0.1 dropped, t = 0.3); partners
    drawn from the whole training set (``partner="dataset"``) or the batch; online linear probe
    for ``predict``."""

    views = 1
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
        partner: str = "dataset",
        loss_form: str = "clean",
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
        if partner not in PARTNER_DRAWS:
            raise ValueError(f"mttv: partner must be one of {PARTNER_DRAWS}, got {partner!r}")
        if loss_form not in MTTV_LOSS_FORMS:
            raise ValueError(f"mttv: loss_form must be one of {MTTV_LOSS_FORMS}, got {loss_form!r}")
        if compat and loss_form not in ("clean", "official"):
            raise ValueError(
                f"mttv: compat: true is loss_form: official, but loss_form is {loss_form!r}"
            )
        self.temperature, self.low, self.high = temperature, low, high
        self.momentum = momentum
        self.fusion = fusion
        self.partner = partner
        self.loss_form = "official" if compat else loss_form
        d = model.feature_dim
        self.projector = projection_mlp(d, d, proj_dim or max(1, d // 4), layers=3, last_bn=True)
        self.momentum_model = copy.deepcopy(model)
        self.momentum_projector = copy.deepcopy(self.projector)
        for p in self._momentum_params():
            p.requires_grad_(False)

    @classmethod
    def views_for(cls, args: dict[str, Any]) -> int:
        """One augmented view per anchor with partners from the data set, two in-batch (the
        second is the partner's ``ya``)."""
        return 2 if args.get("partner", "dataset") == "batch" else 1

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

    # -- partners ----------------------------------------------------------------------------
    def draw_partners(self, batch: Batch, ctx: Context) -> tuple[torch.Tensor, ...]:
        """``(xa, xn, ya, yn, y_labels)``: the anchors' augmented and plain views, their partners'
        augmented and plain views, and the partners' (noisy) labels, for the probe."""
        if isinstance(batch.x, torch.Tensor):
            raise ValueError("mttv: batch.x must be a tuple of views plus the plain view")
        if self.partner == "batch":
            if len(batch.x) != 3:
                raise ValueError(
                    "mttv: partner=batch needs batch.x = (augmented, augmented, plain)"
                )
            a1, a2, plain = batch.x
            perm = partner_permutation(len(batch), ctx.generator).to(plain.device)
            return a1, plain, a2[perm], plain[perm], batch.labels[perm]
        if len(batch.x) != 2:
            raise ValueError("mttv: partner=dataset needs batch.x = (augmented, plain)")
        xa, xn = batch.x
        idx = torch.randint(self.info.num_train, (len(batch),), generator=ctx.generator)
        other = ctx.pool_batch(idx)
        self._remember_labels(other)
        ya, yn = other.x
        return xa, xn, ya.to(xa.device), yn.to(xn.device), other.labels.to(batch.labels.device)

    # -- the step ----------------------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        self._remember_labels(batch)
        xa, xn, ya, yn, y_labels = self.draw_partners(batch, ctx)
        self.momentum_update()
        h_n, q_n = self._q(xn)  # q(xn)
        h_a, q_a = self._q(ya)  # q(ya)
        u = self._fuse(q_n, q_a)
        with torch.no_grad():
            v = self._fuse(self._k(xa), self._k(yn))  # k(xa) + k(yn)
        ssl = mttv_loss(
            u, v, temperature=self.temperature, low=self.low, high=self.high, form=self.loss_form
        )
        probe, acc = probe_step(
            self.model, torch.cat([h_n, h_a]), torch.cat([batch.labels, y_labels])
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
