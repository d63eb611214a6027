"""DivideMix (Li, Socher, Hoi, "DivideMix: Learning with Noisy Labels as Semi-supervised
Learning", ICLR 2020, arXiv 2002.07394; docs/methods.md, DivideMix).

Two networks of the same architecture, trained together:

1. **Warm-up** (epochs ``< warmup_epochs``; the paper: 10 on CIFAR-10, 30 on CIFAR-100): plain
   cross-entropy on the noisy labels, each network on its own augmented view. For asymmetric noise
   the official code adds a confidence penalty (``confidence_penalty``: ``+ mean sum p log p``).
2. **Co-divide** (`on_epoch_start`, every later epoch): each network's per-sample CE on every
   un-augmented training image, min-max normalised to [0, 1], is fitted by a two-component
   Gaussian mixture (scikit-learn, ``max_iter=10, tol=1e-2, reg_covar=5e-4`` as the official code);
   ``w_i`` = posterior of the lower-mean component (paper Eq. 1). The samples with
   ``w_i > p_threshold`` form the *labelled* set of the **other** network, the rest its
   unlabelled set.
3. **MixMatch step**, for each network (the other one fixed, in eval mode, as the official code):
   label co-refinement ``sharpen(w y + (1 - w) p_mean, T)`` for labelled samples (Eq. 3-4), label
   co-guessing ``sharpen(mean of both networks' softmax over the K views, T)`` for unlabelled
   samples (Eq. 5), mixup of all ``K (n_x + n_u)`` images with ``lam' = max(lam, 1 - lam)``,
   ``lam ~ Beta(alpha, alpha)`` (Eq. 6-9), then ``L = L_x + lambda_u L_u + L_reg`` with ``L_x``
   the soft-target CE of the labelled rows, ``L_u`` the mean squared error of the unlabelled rows'
   softmax (Eq. 10-11), ``lambda_u`` ramped up linearly over ``rampup_epochs`` (16) after the
   warm-up, and ``L_reg`` the KL of the uniform prior to the batch-mean prediction (Eq. 12).

Departures (see docs/methods.md): the official code gives each step a labelled batch of 64 and an
unlabelled batch of 64 from two loaders; here one loop batch is split by the co-divide masks, so
the labelled/unlabelled ratio per step follows the data. Both networks are updated in one
`training_step` and the loop steps one optimiser over both (equivalent to two SGD optimisers with
the same settings: the networks share no parameters, and ``train.grad_clip`` clips each network
on its own, `clip_groups`). The 5-epoch loss averaging the official code uses at 90 % noise is
not offered.

The second network is a copy of ``model`` whose every parameter tensor has its elements randomly
permuted (``net2_init="shuffle"``): for the usual i.i.d. initialisations this is a fresh draw from
the same distribution (the official code builds two networks), and it needs no knowledge of the
model's constructor. With a pretrained ``model.init`` use ``net2_init="copy"``.

**L2B plug-in** (``l2b: true``; Zhou et al., arXiv 2202.04291, its L2B+DivideMix code;
docs/methods.md, DivideMix): after each DivideMix update (`after_step`, once the loop has stepped
the optimizer), one L2B step (`noisytail.methods.l2b.l2b_step`) of the *first* network on the
concatenated **unmixed** batch of its MixMatch step (``K`` views of its labelled rows, then of its
unlabelled rows) with their soft targets (co-refined, co-guessed), its gradient norm clipped to
``l2b_clip`` (0.8), the virtual step taking the optimizer's momentum and weight decay. Its meta
batch (``l2b_meta``): ``"clean"``, the run's clean meta set (``ctx.meta_batch()``; the official
``--need_clean``: ``meta.total=1000``, ``meta.balanced=false``, ``meta.overlap=true``), or
``"labelled"``, no clean data at all: samples drawn each step from the first network's labelled
set of the current epoch (the samples the second network's GMM calls clean,
``prob[1] > p_threshold``) with their noisy labels, first augmented view (`draw_labelled_meta`).
``l2b_meta_batch``: the meta batch's size (0: the loop's batch; the official code's is its
``--batch_size``, 64, half the loop's 128 in the presets); a clean meta batch gives its first rows.

Per-sample state (checkpointed): both networks' clean probabilities ``[N]`` and the epoch of the
split. ``sample_scores`` = the mean of the two clean probabilities. ``predict`` = the mean of the
two networks' logits (the official test sums them).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture
from torch import nn

from ..errors import ConfigError
from ..models.base import Backbone
from ..registry import METHODS
from .base import Batch, Context, Method, TaskInfo
from .l2b import l2b_step
from .moit import draw_mixup

L2B_META = ("labelled", "clean")

# --- maths (pure functions) -------------------------------------------------------------------


def gmm_clean_probability(
    losses: np.ndarray,
    *,
    max_iter: int = 10,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
    random_state: int | None = 0,
) -> np.ndarray:
    """DivideMix's co-divide score (Eq. 1): min-max normalise ``losses [N]``, fit a two-component
    1-d GMM and return the posterior ``[N]`` of the component with the lower mean (clean)."""
    loss = np.asarray(losses, dtype=np.float64).reshape(-1)
    if loss.size < 2:
        return np.ones_like(loss)
    span = loss.max() - loss.min()
    loss = (loss - loss.min()) / (span if span > 0 else 1.0)
    gmm = GaussianMixture(
        n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=random_state
    )
    x = loss.reshape(-1, 1)
    gmm.fit(x)
    return gmm.predict_proba(x)[:, int(np.argmin(gmm.means_.reshape(-1)))]


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature sharpening ``p^(1/T) / sum p^(1/T)`` of probabilities ``[B, K]`` (Eq. 4)."""
    pt = p ** (1.0 / temperature)
    return pt / pt.sum(dim=1, keepdim=True)


def co_refine(
    onehot: torch.Tensor, w: torch.Tensor, probs: list[torch.Tensor], temperature: float
) -> torch.Tensor:
    """Label co-refinement (Eq. 3-4): ``sharpen(w y + (1 - w) mean(probs), T)``; ``onehot``
    ``[B, K]``, ``w [B]`` the other network's clean probability, ``probs`` the network's own
    softmax on each augmented view ``[B, K]``."""
    p = torch.stack(probs).mean(0)
    w = w.view(-1, 1).to(p.dtype)
    return sharpen(w * onehot + (1 - w) * p, temperature)


def co_guess(probs: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Label co-guessing (Eq. 5): ``sharpen`` of the mean of both networks' softmax over all
    augmented views (``probs``: ``2 K`` tensors ``[B, K]``)."""
    return sharpen(torch.stack(probs).mean(0), temperature)


def mix(
    inputs: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch mixup (Eq. 6-9) with ``lam`` already ``max(l, 1 - l)``: each row stays closer to
    itself than to its partner ``perm``. ``inputs [B, ...]``, ``targets [B, K]``."""
    return (
        lam * inputs + (1 - lam) * inputs[perm],
        lam * targets + (1 - lam) * targets[perm],
    )


def mixmatch_mix(
    inputs: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """Draw ``lam' = max(lam, 1 - lam)``, ``lam ~ Beta(alpha, alpha)``, and a permutation from
    ``generator``, and `mix`; returns ``(mixed inputs, mixed targets, lam', perm)``."""
    perm, lam = draw_mixup(inputs.shape[0], alpha, generator)
    perm = perm.to(inputs.device)
    mixed_x, mixed_t = mix(inputs, targets, perm, lam)
    return mixed_x, mixed_t, lam, perm


def class_balance_penalty(logits: torch.Tensor) -> torch.Tensor:
    """``sum_c pi_c log(pi_c / mean_b softmax(logits)_bc)`` with the uniform prior ``pi``
    (Eq. 12): KL(prior || mean prediction), ``logits [B, K]``."""
    mean = torch.softmax(logits.float(), dim=1).mean(0)
    prior = torch.full_like(mean, 1.0 / mean.numel())
    return (prior * torch.log(prior / mean)).sum()


def linear_rampup(current: float, start: float, length: float) -> float:
    """``clip((current - start) / length, 0, 1)`` (the official ``linear_rampup``)."""
    if length <= 0:
        return 1.0 if current >= start else 0.0
    return float(np.clip((current - start) / length, 0.0, 1.0))


def draw_labelled_meta(
    prob_other: torch.Tensor, threshold: float, n: int, generator: torch.Generator
) -> torch.Tensor:
    """Pool positions ``[min(n, M)]`` drawn without replacement from the ``M`` samples with
    ``prob_other > threshold`` (a network's labelled set: the other network's GMM calls them
    clean), the L2B plug-in's meta batch without clean data; empty when ``M = 0``."""
    labelled = (prob_other > threshold).nonzero().squeeze(1)
    order = torch.randperm(len(labelled), generator=generator)[:n]
    return labelled[order]


def shuffled_copy(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """A deep copy of ``model`` with the elements of every parameter tensor randomly permuted
    (same per-tensor value distribution, different network). Buffers are copied as they are."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            flat = p.detach().reshape(-1)
            perm = torch.randperm(flat.numel(), generator=generator).to(flat.device)
            p.copy_(flat[perm].view_as(p))
    return twin


# --- the method -------------------------------------------------------------------------------


@METHODS.register("dividemix")
class DivideMix(Method):
    """DivideMix: two networks, CE warm-up, per-epoch GMM co-divide of the per-sample losses,
    MixMatch with label co-refinement and co-guessing, and a class-balance penalty."""

    views = 2
    predict_networks = ("model", "net2")

    def __init__(
        self,
        model: Backbone,
        info: TaskInfo,
        *,
        warmup_epochs: int = 10,
        p_threshold: float = 0.5,
        temperature: float = 0.5,
        alpha: float = 4.0,
        lambda_u: float = 25.0,
        rampup_epochs: float = 16.0,
        augmentations: int = 2,
        confidence_penalty: bool = False,
        gmm_max_iter: int = 10,
        gmm_tol: float = 1e-2,
        gmm_reg_covar: float = 5e-4,
        net2_init: str = "shuffle",
        l2b: bool = False,
        l2b_meta: str = "labelled",
        l2b_clip: float = 0.8,
        l2b_meta_batch: int = 0,
    ) -> None:
        super().__init__(model, info)
        if warmup_epochs < 0:
            raise ValueError(f"dividemix: warmup_epochs must be >= 0, got {warmup_epochs}")
        if not 0.0 <= p_threshold <= 1.0:
            raise ValueError(f"dividemix: p_threshold must lie in [0, 1], got {p_threshold}")
        if temperature <= 0:
            raise ValueError(f"dividemix: temperature must be positive, got {temperature}")
        if augmentations < 1:
            raise ValueError(f"dividemix: augmentations must be >= 1, got {augmentations}")
        if net2_init not in ("shuffle", "copy"):
            raise ValueError(f"dividemix: net2_init must be 'shuffle' or 'copy', got {net2_init!r}")
        if l2b_meta not in L2B_META:
            raise ValueError(f"dividemix: l2b_meta must be one of {L2B_META}, got {l2b_meta!r}")
        if l2b_clip < 0:
            raise ValueError(f"dividemix: l2b_clip must be >= 0 (0 = off), got {l2b_clip}")
        if l2b_meta_batch < 0:
            raise ValueError(
                f"dividemix: l2b_meta_batch must be >= 0 (0 = the loop's batch), "
                f"got {l2b_meta_batch}"
            )
        if info.train_labels is None:
            raise ValueError(
                "dividemix needs the noisy training labels up front (info.train_labels)"
            )
        self.warmup_epochs = warmup_epochs
        self.p_threshold = p_threshold
        self.temperature = temperature
        self.alpha = alpha
        self.lambda_u = lambda_u
        self.rampup_epochs = rampup_epochs
        self.augmentations = augmentations
        self.confidence_penalty = confidence_penalty
        self.gmm_kw = dict(max_iter=gmm_max_iter, tol=gmm_tol, reg_covar=gmm_reg_covar)
        self.l2b = l2b
        self.updates_outside_backward = l2b  # the L2B plug-in's own step (`after_step`)
        self.l2b_meta = l2b_meta
        self.l2b_clip = l2b_clip
        self.l2b_meta_batch = l2b_meta_batch
        # net 1's unmixed MixMatch batch and soft targets of the current step, for `after_step`
        self._plugin: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_meta_idx: torch.Tensor | None = None  # the plug-in's latest labelled meta draw
        self.net2 = shuffled_copy(model) if net2_init == "shuffle" else copy.deepcopy(model)
        self.labels = torch.as_tensor(info.train_labels, dtype=torch.long).clone()
        n = info.num_train
        self.prob = torch.ones(2, n)  # [net, N]: each network's GMM clean probability
        self.split_epoch = -1
        self._dev: dict[str, torch.Tensor] = {}

    @classmethod
    def views_for(cls, args: dict[str, Any]) -> int:
        return int(args.get("augmentations", cls.views))

    def parameter_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": params + [p for p in self.net2.parameters() if p.requires_grad]}]

    def clip_groups(self) -> list[list[torch.nn.Parameter]]:
        """Each network's gradient norm clipped on its own (the official code's two optimisers
        share nothing); any other parameter goes with the first network."""
        net2 = {id(p) for p in self.net2.parameters()}
        first = [p for p in self.parameters() if id(p) not in net2]
        return [first, list(self.net2.parameters())]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of both networks' logits (the official test sums them before the argmax)."""
        return 0.5 * (self.model(x).float() + self.net2(x).float())

    def sample_scores(self) -> np.ndarray | None:
        if self.split_epoch < 0:
            return None
        return self.prob.double().mean(0).numpy()

    def on_train_start(self, ctx: Context) -> None:
        if self.l2b and self.l2b_meta == "clean" and not ctx.has_meta:
            raise ConfigError(
                "dividemix: l2b_meta=clean needs a clean meta set (e.g. meta.total=1000 "
                "meta.balanced=false); without clean data use l2b_meta=labelled."
            )

    # --- co-divide ----------------------------------------------------------------------------
    def on_epoch_start(self, ctx: Context) -> None:
        if ctx.epoch < self.warmup_epochs:
            return
        logits = ctx.predict_train(lambda x: torch.stack([self.model(x), self.net2(x)], 1))
        labels = self.labels.to(logits.device)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
        for net in range(2):
            loss = F.cross_entropy(logits[:, net].float(), labels, reduction="none").detach()
            self.prob[net] = torch.from_numpy(
                gmm_clean_probability(loss.cpu().numpy(), random_state=seed + net, **self.gmm_kw)
            ).float()
        self.split_epoch = ctx.epoch
        self._dev = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._dev or self._dev["prob"].device != device:
            self._dev = {"prob": self.prob.to(device), "labels": self.labels.to(device)}
        return self._dev["prob"], self._dev["labels"]

    # --- training -----------------------------------------------------------------------------
    def _views(self, batch: Batch) -> list[torch.Tensor]:
        if isinstance(batch.x, torch.Tensor):
            return [batch.x]
        return list(batch.x[: self.augmentations])

    def _warmup_step(self, views: list[torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=y.device)
        for i, net in enumerate((self.model, self.net2)):
            logits = net(views[i % len(views)]).float()
            loss = F.cross_entropy(logits, y)
            if self.confidence_penalty:  # official NegEntropy, asymmetric noise only
                p = torch.softmax(logits, dim=1)
                loss = loss + (p * torch.log(p.clamp_min(1e-12))).sum(1).mean()
            total = total + loss
            out[f"ce_loss_net{i + 1}"] = loss.detach()
            if i == 0:
                with torch.no_grad():
                    out["train_accuracy_noisy"] = (logits.argmax(1) == y).float().mean()
        out["loss"] = total
        return out

    def _mixmatch_step(
        self,
        net: nn.Module,
        other: nn.Module,
        views: list[torch.Tensor],
        y: torch.Tensor,
        w: torch.Tensor,
        lam_u: float,
        ctx: Context,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One network's DivideMix loss on a batch whose labelled rows are ``w > p_threshold``
        (``w [B]``: the other network's clean probability)."""
        k = self.info.num_classes
        lab = w > self.p_threshold
        xi, ui = lab.nonzero().squeeze(1), (~lab).nonzero().squeeze(1)
        with torch.no_grad():
            own = [torch.softmax(net(v).float(), dim=1) for v in views]
            was = other.training
            other.eval()  # the official code fixes the other network in eval mode
            peer = [torch.softmax(other(v[ui]).float(), dim=1) for v in views] if len(ui) else []
            other.train(was)
            tx = co_refine(
                F.one_hot(y[xi], k).float(), w[xi], [p[xi] for p in own], self.temperature
            )
            tu = co_guess([p[ui] for p in own] + peer, self.temperature) if len(ui) else None
        inputs = torch.cat([v[xi] for v in views] + [v[ui] for v in views])
        targets = torch.cat([tx] * len(views) + ([tu] * len(views) if tu is not None else []))
        if self.l2b and net is self.model:  # the plug-in's batch: unmixed, with soft targets
            self._plugin = (inputs.detach(), targets.detach())
        mixed_x, mixed_t, _, _ = mixmatch_mix(inputs, targets, self.alpha, ctx.generator)
        logits = net(mixed_x).float()
        nx = len(xi) * len(views)
        zero = logits.new_zeros(())
        lx = -(F.log_softmax(logits[:nx], 1) * mixed_t[:nx]).sum(1).mean() if nx else zero
        lu = F.mse_loss(torch.softmax(logits[nx:], 1), mixed_t[nx:]) if len(ui) else zero
        penalty = class_balance_penalty(logits)
        loss = lx + lam_u * lu + penalty
        stats = {
            "labelled_loss": lx.detach(),
            "unlabelled_loss": lu.detach(),
            "balance_penalty": penalty.detach(),
            "labelled_fraction_batch": lab.float().mean(),
        }
        return loss, stats

    def training_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        views, y = self._views(batch), batch.labels
        if ctx.epoch < self.warmup_epochs or self.split_epoch < 0:
            return self._warmup_step(views, y)
        prob, _ = self._on(y.device)
        steps = max(1, self.info.steps_per_epoch)
        ramp = linear_rampup(
            ctx.epoch + ctx.step_in_epoch / steps, self.warmup_epochs, self.rampup_epochs
        )
        lam_u = self.lambda_u * ramp
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=y.device)
        # co-divide: network 1 learns from network 2's split, and vice versa
        pairs = ((self.model, self.net2, prob[1]), (self.net2, self.model, prob[0]))
        for i, (net, other, p_other) in enumerate(pairs):
            loss, stats = self._mixmatch_step(net, other, views, y, p_other[batch.idx], lam_u, ctx)
            total = total + loss
            out.update({f"{key}_net{i + 1}": v for key, v in stats.items()})
        out["loss"] = total
        out["lambda_u"] = torch.tensor(lam_u)
        out["clean_fraction"] = (self.prob > self.p_threshold).float().mean()
        return out

    # --- the L2B plug-in ----------------------------------------------------------------------
    def _meta(self, batch: Batch, ctx: Context) -> tuple[torch.Tensor, torch.Tensor] | None:
        size = self.l2b_meta_batch or len(batch)
        if self.l2b_meta == "clean":
            meta = ctx.meta_batch()
        else:
            prob, _ = self._on(batch.labels.device)
            pos = draw_labelled_meta(prob[1], self.p_threshold, size, ctx.generator)
            self.last_meta_idx = pos
            if len(pos) == 0:
                return None
            meta = ctx.pool_batch(pos)
        x = meta.x if isinstance(meta.x, torch.Tensor) else meta.x[0]
        return x[:size], meta.labels[:size]  # a clean meta batch: its first rows (shuffled)

    def after_step(self, batch: Batch, ctx: Context) -> dict[str, torch.Tensor]:
        """One L2B step of the first network after the DivideMix update (``l2b: true``)."""
        if not self.l2b or self._plugin is None:
            return {}
        x, targets = self._plugin
        self._plugin = None
        meta = self._meta(batch, ctx)
        if meta is None:  # no labelled sample this epoch: nothing to take as a meta set
            return {"l2b_step": torch.tensor(0.0)}
        stats = l2b_step(self.model, ctx.optimizer, x, targets, *meta, grad_clip=self.l2b_clip)
        out = {f"l2b_{k}": torch.tensor(v) for k, v in stats.items()}
        out["l2b_step"] = torch.tensor(1.0)
        return out

    # --- checkpoint ---------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"prob": self.prob.clone(), "split_epoch": self.split_epoch}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        n = self.info.num_train
        if tuple(state["prob"].shape) != (2, n):
            raise ValueError(
                f"dividemix: saved state is for {tuple(state['prob'].shape)[-1]} samples, this "
                f"run trains on {n}"
            )
        self.prob = state["prob"].cpu().float()
        self.split_epoch = int(state["split_epoch"])
        self._dev = {}
