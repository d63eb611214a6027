"""The named random streams of noisytail: every seed offset, in one place.

A run has one seed (``seed``; the corruption uses ``effective_corruption_seed``). Each use of
randomness draws from its own stream of it, so that a draw added in one place never shifts
another, and a resumed run replays its epochs. The values are part of every result: changing one
changes the numbers of every run that uses it.

Streams of `noisytail.data.loader.epoch_generator` ``(seed, epoch, stream)``, one per epoch:
`TRAIN_ORDER`, `META_ORDER`, `EPOCH_TORCH`, `METHOD`; a loader's augmentation draws from its
order stream plus `AUGMENT_OFFSET` plus `RANK_STRIDE` times its rank. The meta loader's epochs
within training epoch ``e`` are numbered from ``e * META_EPOCH_STRIDE``.

Children ``np.random.SeedSequence([seed, child])`` of one-off draws: `SUBSET`, `DETECTION_FOLDS`,
`PROBE_SPLIT`. (The corruption's stages draw from ``SeedSequence(seed).spawn(4)``, in the order
its module docstring gives: ``noisytail.data.corruption``.)
"""

#: The training loader's shuffle (`TrainLoader`'s default stream).
TRAIN_ORDER = 0
#: The clean meta set's loader.
META_ORDER = 1
#: torch's global generator, reseeded at the start of every epoch (dropout and other torch draws).
EPOCH_TORCH = 2
#: ``ctx.generator``: a method's own random numbers (`noisytail.methods.base.Context`).
METHOD = 3
#: A loader's augmentation stream is its order stream + `AUGMENT_OFFSET` + `RANK_STRIDE` x rank
#: (rank 0's is the order stream + 1000; another rank's never meets another loader's).
AUGMENT_OFFSET = 1000
RANK_STRIDE = 10_000
#: The meta loader (`CyclingLoader`) starts training epoch ``e`` at its epoch
#: ``e * META_EPOCH_STRIDE``: each training epoch draws fresh meta batches (numbered from ``e``,
#: the next epoch replayed this one's shifted by one), and a resumed run replays them.
META_EPOCH_STRIDE = 1 << 20

#: ``data.train_subset`` / ``data.test_subset``: the stratified subsets.
SUBSET = 7
#: ``data.test_subset`` draws with ``seed + TEST_SUBSET_OFFSET`` (``data.train_subset`` with
#: ``seed``), so the two subsets are independent.
TEST_SUBSET_OFFSET = 1
#: Detection: the stratified cross-fitting folds (`noisytail.detect.crossfit.stratified_folds`).
DETECTION_FOLDS = 11
#: The balanced labelled probe split of an encoder evaluation (`balanced_indices`).
PROBE_SPLIT = 11
