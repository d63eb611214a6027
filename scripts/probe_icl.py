"""How fast MOIT's interpolated contrastive loss (ICL) can fall on one fixed Fashion-MNIST batch
of 128 (two views: the image and its mirror), small_cnn (width 16 by default), SGD lr 0.05, 60
steps: with clean or 40 %-symmetric-noisy labels, with and without mixup. A diagnostic for
BENCHMARKS.md (issues 4 and 15): the chance value of the loss is log(2B - 1) = 5.54.

Usage: python scripts/probe_icl.py [--widths 16 32 64] [--steps 60] [--clean-only]
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

import noisytail.models  # noqa: F401  (registration)
from noisytail.data.sources import load_dataset
from noisytail.losses.interpolated import interpolated_supcon
from noisytail.registry import MODELS

b = load_dataset("fashion_mnist", root=None, options={})
idx = np.random.default_rng(0).permutation(len(b.train))[:128]
x = b.train.images.get(idx).float() / 255.0
x = (x - 0.286) / 0.353
y = torch.as_tensor(b.train.labels[idx])
g = torch.Generator().manual_seed(1)
ynoisy = y.clone()
flip = torch.rand(128, generator=g) < 0.4
ynoisy[flip] = (y[flip] + torch.randint(1, 10, (int(flip.sum()),), generator=g)) % 10
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--widths", type=int, nargs="+", default=[16])
parser.add_argument("--steps", type=int, default=60)
parser.add_argument("--clean-only", action="store_true", help="clean labels, no mixup only")
args = parser.parse_args()
cases = [
    ("clean lam=1", y, False),
    ("noisy40 lam=1", ynoisy, False),
    ("clean mixup", y, True),
    ("noisy40 mixup", ynoisy, True),
]
for width, (name, labels, mix) in [
    (w, c) for w in args.widths for c in (cases[:1] if args.clean_only else cases)
]:
    name = f"width {width} {name}"
    torch.manual_seed(0)
    model = MODELS.build("small_cnn", num_classes=10, input_shape=(1, 28, 28), width=width)
    proj = torch.nn.Linear(model.feature_dim, 128)
    opt = torch.optim.SGD(
        list(model.parameters()) + list(proj.parameters()), lr=0.05, momentum=0.9, weight_decay=5e-4
    )
    losses = []
    for _step in range(args.steps):
        v1, v2 = x, x.flip(3)
        if mix:
            lam = max(np.random.beta(1, 1), 0.5)
            p = torch.randperm(128)
            v1 = lam * v1 + (1 - lam) * v1[p]
            v2 = lam * v2 + (1 - lam) * v2[p]
            perm = p
            l = lam
        else:
            perm = torch.arange(128)
            l = 1.0
        z = F.normalize(proj(model.features(torch.cat([v1, v2]))), dim=1)
        loss = interpolated_supcon(z, labels, labels[perm], perm, l, temperature=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(name, [round(v, 2) for v in losses[::10]], round(losses[-1], 2))
