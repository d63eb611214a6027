"""The old path of the kNN (``noisytail.detect.knn``): the very module `noisytail.neighbors`.

The kNN search, the weighted vote and MOIT's vote and selection live in `noisytail.neighbors`,
below ``methods/`` and ``detect/``. Importing ``noisytail.detect.knn`` gives that module itself
(not a copy), so that existing imports, and patches of its attributes, act on the one kNN.
"""

import sys

from .. import neighbors

sys.modules[__name__] = neighbors
