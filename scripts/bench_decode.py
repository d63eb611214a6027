"""Images/s of loading an image folder (noisytail.benchmarks.decode): first epoch (decoding) and
later epochs (cache), for the current LazyImageStore or another implementation's file.

    python scripts/bench_decode.py --root /tmp/png28 --image-size 28 --channels 1
    python scripts/bench_decode.py --root /tmp/png28 --image-size 224 --channels 3 \
        --impl /tmp/old_image_folder.py  # from `git show <commit>:src/noisytail/data/...`
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

from noisytail.benchmarks.decode import folder_rates
from noisytail.data.image_folder import LazyImageStore


def store_class(impl: str | None):  # type: ignore[no-untyped-def]
    """LazyImageStore of this checkout, or of another version of image_folder.py (its
    data-source registration removed so that it can load beside this one)."""
    if impl is None:
        return LazyImageStore
    text = re.sub(r"^@DATASETS\.register\(.*\)$", "", Path(impl).read_text(), flags=re.M)
    copy = Path(tempfile.mkdtemp()) / "other_image_folder.py"
    copy.write_text(text)
    spec = importlib.util.spec_from_file_location("other_image_folder", copy)
    module = importlib.util.module_from_spec(spec)
    sys.modules["other_image_folder"] = module
    spec.loader.exec_module(module)
    return module.LazyImageStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--impl", help="another image_folder.py to measure instead")
    ap.add_argument("--cache-mb", type=float, help="the store's cache_mb (this checkout only)")
    a = ap.parse_args()
    kw = {} if a.cache_mb is None else {"cache_mb": a.cache_mb}
    res = folder_rates(
        a.root, store_class(a.impl), image_size=a.image_size, channels=a.channels,
        epochs=a.epochs, **kw,
    )  # fmt: skip
    rates = ", ".join(f"{r:.0f}" for r in res["rates"])
    print(
        f"{a.root} ({res['n']} images) at {a.image_size} px, {a.channels} channel(s), "
        f"{a.impl or 'this checkout'}: images/s per epoch {rates}"
    )


if __name__ == "__main__":
    main()
