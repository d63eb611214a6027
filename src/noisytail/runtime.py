"""Where and how a run computes, and what it ran on: device, threads, process group, precision,
seeding, and the provenance recorded in ``config.yaml``.

`setup_runtime` picks the device from ``train.device`` (``auto``: a GPU if one is visible) and,
under ``torchrun`` (``WORLD_SIZE`` > 1), joins the process group (gloo on CPU, NCCL on GPU).
`resolve_precision` turns ``train.precision=auto`` into bf16 or fp32, `autocast_factory` into a
context. `seed_init` / `seed_epoch` seed model initialisation and each epoch, so that an epoch's
randomness depends on its number only (resume gives the uninterrupted result).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from . import __version__, seeds
from .config import Config, ConfigError
from .data.loader import epoch_generator


@dataclass
class Runtime:
    """The device of this process and its place in a data-parallel group."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        if self.distributed:
            dist.barrier()

    def share_batchnorm(self, module: torch.nn.Module) -> None:
        """Copy rank 0's BatchNorm running statistics to every rank (a no-op in one process).
        DDP copies them at the start of each forward; after an epoch's last step each rank
        holds its own slice's, and the work between epochs (evaluation, MOIT's detection,
        DivideMix's co-divide, the pseudo meta set) would decide differently on each rank."""
        if not self.distributed:
            return
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                for stat in (m.running_mean, m.running_var, m.num_batches_tracked):
                    if stat is not None:
                        dist.broadcast(stat, src=0)

    def reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over the ranks (``values`` itself in a single process)."""
        if not self.distributed:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        t /= self.world_size
        return dict(zip(keys, t.tolist()))


def reopened_here(cfg: Config) -> Config:
    """A saved run's config for re-opening it on this machine (``evaluate``, ``detect
    --from-run``): a run trained on a GPU is read on the CPU where none is visible, saying so."""
    if cfg.train.device.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning(
            f"train.device={cfg.train.device} but no GPU is visible: the run is read on the CPU."
        )
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cpu"))
    return cfg


def setup_runtime(cfg: Config) -> Runtime:
    """Pick the device and, under torchrun (``WORLD_SIZE`` > 1), join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device asks for CUDA but no GPU is visible; use train.device=cpu.")
    if want.startswith("cuda"):
        # an indexed device (set_device refuses a bare "cuda"); under torchrun, the rank's own
        index = local_rank if world > 1 or want == "cuda" else int(want.split(":", 1)[1])
        device = torch.device("cuda", index)
    else:
        device = torch.device(want)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world, local_rank)


def _git(args: list[str], cwd: Path) -> str | None:
    with contextlib.suppress(Exception):
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
        return done.stdout
    return None


def provenance(package_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Versions, git commit, platform and command line, for ``config.yaml``'s ``_provenance``.

    ``git_changes`` lists the files under the package's folder (``package_dir``, default this
    package) that differ from the commit, uncommitted edits included: a run started from a work
    tree with uncommitted changes does not run the code of ``git_commit``, and says so.
    """
    where = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent
    commit = (_git(["rev-parse", "HEAD"], where) or "").strip() or None
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", "."], where)
    changes = sorted(line[3:] for line in status.splitlines() if line.strip()) if status else []
    return {
        "noisytail": __version__,
        "git_commit": commit,
        "git_changes": changes,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
    }


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast trains
    the small CNN about 2x as fast as fp32 (BENCHMARKS.md); elsewhere it is emulated and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is not None:
            try:
                if probe():
                    return True
            except RuntimeError:
                pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(device: torch.device, precision: str) -> str:
    """``train.precision`` as run: ``auto`` is bf16 on a GPU and on a CPU with native bf16
    (``cpu_has_bf16``), fp32 elsewhere; ``fp32`` / ``bf16`` are taken as given."""
    if precision != "auto":
        return precision
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()):
        return "bf16"
    return "fp32"


def resolve_channels_last(device: torch.device, setting: bool | None, is_image: bool) -> bool:
    """``train.channels_last`` as run: images only; unset means on, on a CPU and on a GPU (NHWC
    convolutions, pooling and BatchNorm speed up small_cnn's bf16 steps on an AVX512-BF16 CPU:
    BENCHMARKS.md, "channels_last on the CPU"), off elsewhere (e.g. MPS)."""
    if not is_image:
        return False
    if setting is not None:
        return setting
    return device.type in ("cpu", "cuda")


def autocast_factory(device: torch.device, precision: str) -> Callable[[], Any]:
    """A zero-argument context factory: bf16 autocast when ``precision`` is ``bf16``."""
    if precision != "bf16":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_init(seed: int) -> None:
    """Seed torch's global generator for model and method initialisation."""
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed torch's global generator for epoch ``epoch`` (what methods draw from it, e.g.
    dropout) and return the epoch's own generator for ``Context.generator``."""
    torch.manual_seed(int(epoch_generator(seed, epoch, seeds.EPOCH_TORCH).initial_seed()))
    return epoch_generator(seed, epoch, seeds.METHOD)
