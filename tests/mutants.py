"""The planted bugs that ``scripts/mutants.py`` applies, one at a time, to a copy of the repository.

Each `Mutant` replaces one exact snippet (found exactly once in ``file``) and names the test files
that must then fail. ``issue`` marks the changes listed in issue 13 (item 10); the others were
added to cover each module's remaining logic. Every mutant changes outputs: none is an equivalent
rewrite. Not a test module (pytest collects ``test_*.py`` only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    file: str
    description: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    issue: bool = False


NOISE, NOISE_KINDS, CORRUPTION, IMBALANCE = (
    f"src/noisytail/data/{m}.py" for m in ("noise", "noise_kinds", "corruption", "imbalance")
)
EVALUATE, SUMMARY = "src/noisytail/evaluate.py", "src/noisytail/summary.py"
ROBUST, IMB_LOSS, CLS_LOSS = (
    f"src/noisytail/losses/{m}.py" for m in ("robust", "imbalance", "classification")
)
SCORES, METRICS = "src/noisytail/detect/scores.py", "src/noisytail/detect/metrics.py"

T_NOISE = ("tests/data/test_noise.py",)
T_CORRUPTION = ("tests/data/test_corruption.py",)
T_IMBALANCE = ("tests/data/test_imbalance.py",)
T_EVALUATE = ("tests/test_evaluate.py",)
T_ROBUST = ("tests/losses/test_robust.py",)
T_IMB_LOSS = ("tests/losses/test_imbalance.py",)
T_CLS_LOSS = ("tests/losses/test_classification.py",)
T_SCORES = ("tests/detect/test_scores.py",)
T_METRICS = ("tests/detect/test_metrics.py",)


def M(file, description, original, replacement, tests, issue=False):  # noqa: N802
    return Mutant(file, description, original, replacement, tuple(tests), issue)


# fmt: off
CORE = [
    # ------------------------------------------------------------------------------- data/noise
    M(NOISE, "symmetric_noise without its round-off guard (int(r*N) instead of num_of)",
      "n_flip = num_of(rate, len(labels))", "n_flip = int(rate * len(labels))", T_NOISE, True),
    M(NOISE, "instance noise does not exclude the true class from the flip softmax",
      "        s[:, c] = -np.inf\n", "", T_NOISE, True),
    M(NOISE, "instance noise does not normalise features by default",
      "    normalize: bool = True,", "    normalize: bool = False,", T_NOISE, True),
    M(NOISE, "instance noise drops the rejection loop keeping q in (0, 1)",
      "        while bad.any():", "        while False:", T_NOISE, True),
    M(NOISE, "symmetric noise may redraw the true class (shift from 0)",
      "rng.integers(1, num_classes, size=n_flip)", "rng.integers(0, num_classes, size=n_flip)",
      T_NOISE),
    M(NOISE, "uniform noise uses the off-diagonal symmetric matrix",
      "symmetric_matrix(num_classes, rate, True)", "symmetric_matrix(num_classes, rate, False)",
      T_NOISE),
    M(NOISE, "random-subset noise never draws class 0",
      "noisy[chosen] = rng.integers(0, num_classes, size=n_noisy)",
      "noisy[chosen] = rng.integers(1, num_classes, size=n_noisy)", T_NOISE),
    M(NOISE, "mapped-subset noise touches half the requested subset",
      "chosen = rng.permutation(len(labels))[: num_of(rate, len(labels))]",
      "chosen = rng.permutation(len(labels))[: num_of(rate / 2, len(labels))]", T_NOISE),
    M(NOISE, "asymmetric matrix sends mass to the class after the mapped one",
      "m[src, target[src]] = rate", "m[src, (target[src] + 1) % num_classes] = rate", T_NOISE),
    M(NOISE, "pair flip goes c -> c-1",
      "m[np.arange(k), (np.arange(k) + 1) % k] += rate",
      "m[np.arange(k), (np.arange(k) - 1) % k] += rate", T_NOISE),
    M(NOISE, "realised transition transposed (noisy rows, true columns)",
      "np.bincount(true * k + noisy,", "np.bincount(noisy * k + true,", T_NOISE),
    M(NOISE, "super-class cycle goes backwards",
      "target[fine] = np.roll(fine, -1)", "target[fine] = np.roll(fine, 1)", T_NOISE),
    M(NOISE, "rate 1 accepted",
      "0.0 <= rate < 1.0)", "0.0 <= rate <= 1.0)", T_NOISE),
    # -------------------------------------------------------------------------- data/corruption
    M(CORRUPTION, "summary's realised rate taken from the validation split",
      '"noise_rate_realised": self.noise_rate("train"),',
      '"noise_rate_realised": self.noise_rate("val"),', T_CORRUPTION, True),
    M(CORRUPTION, "expected rate averaged over classes without train-count weights",
      "expected = float((true_train / true_train.sum()) @ (1.0 - np.diag(t)))",
      "expected = float(np.mean(1.0 - np.diag(t)))", T_CORRUPTION, True),
    M(CORRUPTION, "imbalance_first applies the noise before the long tail",
      "        kept = pool[long_tail(true[pool])]\n        noisy[kept] = noisy_of(kept)\n",
      "        noisy_pool = noisy_of(pool)\n        pos = long_tail(true[pool])\n"
      "        kept = pool[pos]\n        noisy[kept] = noisy_pool[pos]\n", T_CORRUPTION, True),
    M(CORRUPTION, "validation split stratified by true instead of noisy labels",
      "stratified_split(noisy[kept], fraction=val_fraction, rng=rng_val)",
      "stratified_split(true[kept], fraction=val_fraction, rng=rng_val)", T_CORRUPTION, True),
    M(CORRUPTION, "meta samples keep the -1 of samples in no split",
      "    noisy[unlabelled_meta] = true[unlabelled_meta]\n", "", T_CORRUPTION),
    M(CORRUPTION, "overlap mode does not put the meta set back into the pool",
      "            pool = np.arange(n)\n", "            pool = pool\n", T_CORRUPTION),
    M(CORRUPTION, "is_noisy counts samples dropped by the long tail",
      "return (self.noisy_labels >= 0) & (self.noisy_labels != self.true_labels)",
      "return self.noisy_labels != self.true_labels", T_CORRUPTION),
    M(CORRUPTION, "summary's train counts (and imbalance ratio) by noisy label",
      'true_train = self.class_counts("train", "true")',
      'true_train = self.class_counts("train", "noisy")', T_CORRUPTION),
    M(CORRUPTION, "noise_first selects the long tail by the other label",
      'if imbalance.select_by == "true" else noisy_pool',
      'if imbalance.select_by == "noisy" else noisy_pool', T_CORRUPTION),
    M(CORRUPTION, "validation and training splits swapped",
      "val_idx, train_idx = kept[held], kept[rest]",
      "train_idx, val_idx = kept[held], kept[rest]", T_CORRUPTION),
    M(NOISE_KINDS, "exact-flip kind expects the uniform-mixing transition",
      "lambda s, d: symmetric_matrix(d.num_classes, s.rate, include_true=False),",
      "lambda s, d: symmetric_matrix(d.num_classes, s.rate, include_true=True),", T_CORRUPTION),
    # --------------------------------------------------------------------------- data/imbalance
    M(IMBALANCE, "exponential profile divides the rank by K instead of K-1",
      "f ** (r / (k - 1))", "f ** (r / k)", T_IMBALANCE),
    M(IMBALANCE, "step profile counts the head from step_fraction",
      "n_head = int(math.floor((1.0 - step_fraction) * k + 1e-9))",
      "n_head = int(math.floor(step_fraction * k + 1e-9))", T_IMBALANCE),
    M(IMBALANCE, "n_max defaults to the largest class",
      "top = int(avail.min()) if n_max is None", "top = int(avail.max()) if n_max is None",
      T_IMBALANCE),
    M(IMBALANCE, "class order applied as its inverse",
      "counts[order] = rank_counts", "counts = rank_counts[order]", T_IMBALANCE),
    M(IMBALANCE, "targets not capped by what a class has",
      "    counts = np.minimum(counts, avail)\n", "", T_IMBALANCE),
    M(IMBALANCE, "subsampling keeps the first samples of a class, not random ones",
      "keep.append(rng.permutation(idx)[: counts[c]])", "keep.append(idx[: counts[c]])",
      T_IMBALANCE),
    # -------------------------------------------------------------------------------- evaluate
    M(EVALUATE, "ECE with 10 bins by default instead of 15",
      "ECE_BINS = 15", "ECE_BINS = 10", T_EVALUATE, True),
    M(EVALUATE, "ECE averaged over bins without sample weights",
      "return float(np.abs(gap[count > 0]).sum() / len(y))",
      "return float(np.mean(np.abs(gap[count > 0]) / count[count > 0]))", T_EVALUATE, True),
    M(SUMMARY, "mean of the last 5 epochs computed over 4",
      'for r in history[-5:]]', 'for r in history[-4:]]',
      ("tests/test_train.py::test_fit_writes_the_run_folder_and_learns",), True),
    M(EVALUATE, "ECE bins closed on the left, [b/n, (b+1)/n)",
      "np.ceil(conf * n_bins).astype(np.int64) - 1", "np.floor(conf * n_bins).astype(np.int64)",
      T_EVALUATE),
    M(EVALUATE, "ECE confidence is the true class's probability, not the top one",
      "    conf = p.max(axis=1)\n", "    conf = p[np.arange(len(y)), y]\n", T_EVALUATE),
    M(EVALUATE, "per-class accuracy divides by predictions (precision), not support",
      "support = cm.sum(axis=1)", "support = cm.sum(axis=0)", T_EVALUATE),
    M(EVALUATE, "many-shot includes the threshold itself",
      'groups[counts > many_threshold] = "many"', 'groups[counts >= many_threshold] = "many"',
      T_EVALUATE),
    # --------------------------------------------------------------------------- losses/robust
    M(ROBUST, "GCE default q = 0.5 instead of the paper's 0.7",
      "    q: float = 0.7,\n    class_weight", "    q: float = 0.5,\n    class_weight",
      T_ROBUST, True),
    M(ROBUST, "GCE without the 1/q",
      "loss = -(q * log_py).expm1() / q", "loss = -(q * log_py).expm1()", T_ROBUST),
    M(ROBUST, "GCE ignores class_weight",
      "    loss = -(q * log_py).expm1() / q  # (1 - exp(q log p_y)) / q, accurate for small q\n"
      "    return _reduce(loss, reduction, labels, class_weight)",
      "    loss = -(q * log_py).expm1() / q  # (1 - exp(q log p_y)) / q, accurate for small q\n"
      "    return _reduce(loss, reduction, labels)", T_ROBUST),
    M(ROBUST, "SCE default alpha 1.0 instead of 0.1",
      "alpha: float = 0.1,", "alpha: float = 1.0,", T_ROBUST),
    M(ROBUST, "soft bootstrapping target not detached by default",
      "        p = p.detach()\n", "        p = p\n", T_ROBUST),
    M(ROBUST, "hard bootstrapping's second term uses the given label",
      "F.cross_entropy(logits, pred, reduction=\"none\")",
      "F.cross_entropy(logits, labels, reduction=\"none\")", T_ROBUST),
    # ------------------------------------------------------------------------ losses/imbalance
    M(IMB_LOSS, "class-balanced focal default gamma 1 instead of 2",
      "    gamma: float = 2.0,\n    sigmoid: bool = False,",
      "    gamma: float = 1.0,\n    sigmoid: bool = False,", T_IMB_LOSS, True),
    M(CLS_LOSS, "focal default gamma 1 instead of 2",
      "    gamma: float = 2.0,\n    class_weight", "    gamma: float = 1.0,\n    class_weight",
      T_CLS_LOSS, True),
    M(IMB_LOSS, "class-balanced weights not scaled to sum to K",
      "weights = weights / weights.sum() * counts.numel()", "weights = weights / weights.sum()",
      T_IMB_LOSS),
    M(IMB_LOSS, "DRW switches one epoch late",
      "if epoch < start_epoch:", "if epoch <= start_epoch:", T_IMB_LOSS),
    M(IMB_LOSS, "LDAM margins n^-1/2 instead of n^-1/4",
      "margins = counts.pow(-0.25)", "margins = counts.pow(-0.5)", T_IMB_LOSS),
    M(IMB_LOSS, "logit adjustment subtracts the log prior",
      "    adjusted = logits + tau * _log_prior(class_counts, logits)\n"
      "    return _cross_entropy(",
      "    adjusted = logits - tau * _log_prior(class_counts, logits)\n"
      "    return _cross_entropy(", T_IMB_LOSS),
    M(IMB_LOSS, "LA-GCE default q 0.5 instead of 0.7",
      "    tau: float = 1.0,\n    q: float = 0.7,", "    tau: float = 1.0,\n    q: float = 0.5,",
      T_IMB_LOSS),
    M(IMB_LOSS, "CB-CE default beta 0.999 instead of 0.9999",
      "    reduction: str = \"mean\",\n    beta: float = 0.9999,\n) -> Tensor:",
      "    reduction: str = \"mean\",\n    beta: float = 0.999,\n) -> Tensor:", T_IMB_LOSS),
    M(IMB_LOSS, "sigmoid CB-focal with the label sign flipped",
      "sign = 2.0 * F.one_hot(labels, logits.shape[1]).to(logits.dtype) - 1.0",
      "sign = 1.0 - 2.0 * F.one_hot(labels, logits.shape[1]).to(logits.dtype)", T_IMB_LOSS),
    # --------------------------------------------------------------------------- detect/scores
    M(SCORES, "confident-learning class: the first passing one, not the argmax, when several pass",
      "guess = np.where(n_pass > 1, p.argmax(axis=1), passes.argmax(axis=1))",
      "guess = np.where(n_pass > 1, passes.argmax(axis=1), passes.argmax(axis=1))",
      T_SCORES, True),
    M(SCORES, "confident-learning threshold without its round-off tolerance",
      "passes = p >= t[None, :] - 1e-6", "passes = p >= t[None, :]", T_SCORES),
    M(SCORES, "normalized margin compares with the label's own probability too",
      "    others[rows, y] = -np.inf\n", "", T_SCORES),
    M(SCORES, "confident joint transposed",
      "np.add.at(joint, (y[keep], guess[keep]), 1)", "np.add.at(joint, (guess[keep], y[keep]), 1)",
      T_SCORES),
    M(SCORES, "prune-by-noise-rate counts rounded instead of truncated",
      "    prune = np.floor(prune)  # cleanlab truncates these counts",
      "    prune = np.round(prune)", T_SCORES),
    M(SCORES, "cleanlab's disagreement rule inverted",
      "return bonus.argmax(axis=1) != y", "return bonus.argmax(axis=1) == y", T_SCORES),
    M(SCORES, "two-component rule picks the low-mean component",
      "high = int(np.argmax(gmm.means_.reshape(-1)))",
      "high = int(np.argmin(gmm.means_.reshape(-1)))", T_SCORES),
    M(SCORES, "class thresholds average the largest probability, not the label's",
      "np.add.at(sums, y, p[np.arange(len(y)), y])", "np.add.at(sums, y, p.max(axis=1))",
      T_SCORES),
    # -------------------------------------------------------------------------- detect/metrics
    M(METRICS, "clean precision swapped with clean recall",
      '"clean_precision": _ratio(tn, n_kept),\n        "clean_recall": _ratio(tn, n_clean),',
      '"clean_precision": _ratio(tn, n_clean),\n        "clean_recall": _ratio(tn, n_kept),',
      T_METRICS, True),
    M(METRICS, "empty denominators give 0 instead of 1",
      "return float(num / den) if den > 0 else 1.0", "return float(num / den) if den > 0 else 0.0",
      T_METRICS),
    M(METRICS, "F1 without the factor 2",
      "return 2 * p * r / (p + r) if p + r > 0", "return p * r / (p + r) if p + r > 0",
      T_METRICS),
    M(METRICS, "flagged fraction is the noise rate",
      '"flagged_fraction": float(n_flagged / n) if n else 0.0,',
      '"flagged_fraction": float(n_noisy / n) if n else 0.0,', T_METRICS),
    M(METRICS, "per-class true positives count every flag",
      "count(truth & flags),\n    )", "count(flags),\n    )", T_METRICS),
    M(METRICS, "recall divides by the flags",
      "precision, recall = _ratio(tp, n_flagged), _ratio(tp, n_noisy)",
      "precision, recall = _ratio(tp, n_flagged), _ratio(tp, n_flagged)", T_METRICS),
]
# fmt: on

CONTRASTIVE, NEIGHBORS = "src/noisytail/losses/contrastive.py", "src/noisytail/neighbors.py"
SIMCLR, MULTIVIEW, MTTV, MOIT = (
    f"src/noisytail/methods/{m}.py" for m in ("simclr", "multiview", "mttv", "moit")
)
L2B, LOOKAHEAD, GDW, MWNET, ERM = (
    f"src/noisytail/methods/{m}.py" for m in ("l2b", "lookahead", "gdw", "mwnet", "erm")
)
# Method tests without the end-to-end runs of the training loop (minutes on a busy CPU).
UNIT = ("-k", "not digits and not loop and not resume and not batches_come and not optimizer_state")
T_CONTRASTIVE = ("tests/losses/test_contrastive.py",)
T_SIMCLR = ("tests/methods/test_simclr.py", *UNIT)
T_KNN = ("tests/methods/test_simclr.py", "tests/test_neighbors.py", *UNIT)
T_MTTV = ("tests/methods/test_mttv.py", *UNIT)
T_MOIT = ("tests/methods/test_moit.py", *UNIT)
T_L2B = ("tests/methods/test_l2b.py", *UNIT)
T_LOOKAHEAD = ("tests/methods/test_lookahead.py", *UNIT)
T_GDW = ("tests/methods/test_gdw.py", *UNIT)
T_MWNET = ("tests/methods/test_mwnet.py", "tests/methods/test_gdw.py", *UNIT)
T_ERM = ("tests/methods/test_erm.py",)
PREACT, LOADER = "src/noisytail/models/preact_resnet.py", "src/noisytail/data/loader.py"
T_MODELS = ("tests/models/test_models.py", "-k", "preact")
T_LOADER = ("tests/data/test_loader.py",)

# fmt: off
METHODS = [
    # ---------------------------------------------------------------------- losses/contrastive
    M(CONTRASTIVE, "InfoNCE multiplies by the temperature instead of dividing",
      "logits = similarity(z, z) / temperature", "logits = similarity(z, z) * temperature",
      T_CONTRASTIVE),
    M(CONTRASTIVE, "InfoNCE drops the L2 normalisation",
      "    z = F.normalize(z.float(), dim=1)\n    n = z.shape[0]",
      "    z = z.float()\n    n = z.shape[0]", T_CONTRASTIVE),
    M(CONTRASTIVE, "InfoNCE keeps the self-similarity in the denominator",
      '    logits = logits.masked_fill(self_mask, float("-inf"))\n', "", T_CONTRASTIVE),
    M(CONTRASTIVE, "InfoNCE counts the anchor as its own positive",
      "pos = (ids.view(-1, 1) == ids.view(1, -1)) & ~self_mask",
      "pos = ids.view(-1, 1) == ids.view(1, -1)", T_CONTRASTIVE),
    M(CONTRASTIVE, "InfoNCE sums over positives instead of averaging",
      "per_anchor = -pos_log_prob[has_pos] / n_pos[has_pos]",
      "per_anchor = -pos_log_prob[has_pos]", T_CONTRASTIVE),
    M(CONTRASTIVE, "NT-Xent pairs row i with row B-1-i of the other view",
      "torch.cat([ids, ids]), temperature=temperature)",
      "torch.cat([ids, ids.flip(0)]), temperature=temperature)", T_CONTRASTIVE),
    M(CONTRASTIVE, "MTTV filter keeps |s| = high exactly at the boundary the other way",
      "return (a > high) | (a < low)", "return (a >= high) | (a <= low)", T_CONTRASTIVE),
    M(CONTRASTIVE, "interleave concatenates instead of alternating",
      "return torch.stack([u, v], dim=1).reshape(-1, u.shape[1])",
      "return torch.cat([u, v], dim=0)", T_CONTRASTIVE),
    # ------------------------------------------------------------------ methods/simclr, multiview
    M(SIMCLR, "SimCLR ignores its temperature (always the default 0.5)",
      "ssl = info_nce(z, ids, temperature=self.temperature",
      "ssl = info_nce(z, ids, temperature=0.5", T_SIMCLR),
    M(SIMCLR, "SimCLR ids are unique per row: no positives",
      "ids = torch.arange(b, device=z.device).repeat(k)",
      "ids = torch.arange(b * k, device=z.device)", T_SIMCLR),
    M(SIMCLR, "online probe not detached from the encoder",
      "logits = model.head(feats.detach())", "logits = model.head(feats)", T_SIMCLR),
    M(NEIGHBORS, "kNN monitor weights by exp(s * t) instead of exp(s / t)",
      "w = torch.exp((sims - 1.0) / t)", "w = torch.exp((sims - 1.0) * t)", T_KNN),
    M(NEIGHBORS, "leave-one-out kNN masks the wrong column after the first chunk",
      'ids[start:stop]] = -float("inf")', 'ids[: stop - start]] = -float("inf")', T_KNN),
    M(MULTIVIEW, "k-view method drops its last view",
      "return list(batch.x[: self.num_views])", "return list(batch.x[: self.num_views - 1])",
      T_SIMCLR),
    # ------------------------------------------------------------------------------ methods/mttv
    M(MTTV, "EMA coefficients swapped (k <- (1-m) k + m q)",
      "torch._foreach_mul_(target, self.momentum)\n        torch._foreach_add_("
      "target, [p.detach() for p in online], alpha=1.0 - self.momentum)",
      "torch._foreach_mul_(target, 1.0 - self.momentum)\n        torch._foreach_add_("
      "target, [p.detach() for p in online], alpha=self.momentum)",
      T_MTTV),
    M(MTTV, "sum fusion subtracts the partner",
      'return a + b if self.fusion == "sum"', 'return a - b if self.fusion == "sum"', T_MTTV),
    M(MTTV, "probe trains the partners' features on the anchors' labels",
      "torch.cat([batch.labels, y_labels])", "torch.cat([batch.labels, batch.labels])", T_MTTV),
    # ------------------------------------------------------------------------------ methods/moit
    M(MOIT, "mixup lambda is the smaller of l and 1 - l (partner dominates)",
      "return perm, max(lam, 1.0 - lam)", "return perm, min(lam, 1.0 - lam)", T_MOIT),
    M(MOIT, "projections not L2-normalised (the memory keeps raw ones)",
      "z = F.normalize(self.projector(h).float(), dim=1)", "z = self.projector(h).float()",
      T_MOIT),
    M(MOIT, "memory stores the partners' labels",
      "self.memory.enqueue(z.detach(), y.repeat(2))", "self.memory.enqueue(z.detach(), y[perm])",
      T_MOIT),
    M(MOIT, "memory used one epoch late",
      "use_memory = ctx.epoch >= self.xbm_start_epoch",
      "use_memory = ctx.epoch > self.xbm_start_epoch", T_MOIT),
    M(MOIT, "pseudo-label term of the anchor weighted by 1 - lam",
      "unl_a = lam * (1 - a_rows) *", "unl_a = (1 - lam) * (1 - a_rows) *", T_MOIT),
    M(MOIT, "pseudo-labels of the plain image not detached",
      "        with torch.no_grad():\n"
      "            prob = torch.softmax(self.model(plain).float(), dim=1)",
      "        if True:\n"
      "            prob = torch.softmax(self.model(plain).float(), dim=1)", T_MOIT),
    M(MOIT, "memory's newest entries read one slot early",
      "slots = (self.ptr - n + torch.arange(n, device=self.feats.device)) % self.capacity",
      "slots = (self.ptr - n - 1 + torch.arange(n, device=self.feats.device)) % self.capacity",
      T_MOIT),
    M(MOIT, "sample score ranks high discrepancy as clean",
      "0.5 * (1.0 - self.d2.double() / D_MAX)", "0.5 * (self.d2.double() / D_MAX)", T_MOIT),
    M(MOIT, "the plain image forwarded after the switch only (BatchNorm never sees it before)",
      "        with torch.no_grad():\n"
      "            prob = torch.softmax(self.model(plain).float(), dim=1)",
      "        with torch.no_grad():\n"
      "            prob = torch.softmax(self.model(plain).float(), dim=1) if self.in_ssl_phase(\n"
      "                ctx.epoch) else None", T_MOIT),
    M(PREACT, "MOIT's identity shortcut adds the raw input (L2B's), not the pre-activated one",
      "identity = out if self.preact_skip else x", "identity = x", T_MODELS),
    M(LOADER, "an unsharded loader slices its batch by rank",
      "local = chunk[self.rank :: self.world_size] if self.world_size > 1 else chunk",
      "local = chunk[self.rank :: self.world_size]", T_LOADER),
    # ------------------------------------------------------------ methods/l2b, lookahead, gdw, ...
    M(L2B, "L2B weights keep the entries the meta-gradient disfavours (sign)",
      "w = torch.clamp(-grad, min=floor)", "w = torch.clamp(grad, min=floor)", T_L2B),
    M(L2B, "softmax normalisation multiplies by the temperature",
      "(-grad / temperature).flatten()", "(-grad * temperature).flatten()", T_L2B),
    M(LOOKAHEAD, "virtual Nesterov step without the momentum factor",
      "d, c = d + self.momentum * buf, 1.0 + self.momentum * dbuf",
      "d, c = d + buf, 1.0 + dbuf", T_LOOKAHEAD),
    M(LOOKAHEAD, "virtual step applies dampening as (dampening) instead of (1 - dampening)",
      "damp = 1.0 - self.dampening", "damp = self.dampening", T_LOOKAHEAD),
    M(LOOKAHEAD, "meta forward updates the real BatchNorm statistics",
      "x: Tensor, *, clone_buffers: bool = True", "x: Tensor, *, clone_buffers: bool = False",
      T_LOOKAHEAD),
    M(GDW, "zero-mean constraint divides by p_y instead of 1 - p_y",
      "(num / (1.0 - p_y))[:, None] * onehot", "(num / p_y)[:, None] * onehot", T_GDW),
    M(GDW, "class-level step not clipped",
      "(omega - step.clamp(-max_step, max_step)).clamp(*clamp)", "(omega - step).clamp(*clamp)",
      T_GDW),
    M(MWNET, "class-weighted surrogate not divided by the batch size",
      "return (residual * logits).sum() / logits.shape[0]", "return (residual * logits).sum()",
      T_MWNET),
    M("src/noisytail/evaluate_ssl.py", "the source probe trains on the run's noisy labels",
      "probe_labels = prepared.bundle.train.labels[ids]",
      "probe_labels = prepared.corruption.noisy_labels[ids]",
      ("tests/test_evaluate_ssl.py", "-k", "source")),
    M(ERM, "DRW starts one epoch early",
      "epoch=ctx.epoch,\n                start_epoch=self.drw_epoch,",
      "epoch=ctx.epoch + 1,\n                start_epoch=self.drw_epoch,", T_ERM),
]
# fmt: on

MUTANTS = CORE + METHODS
