import numpy as np
import pytest
import torch

from noisytail.data.types import DataError, DataSplit, TensorStore, concat_splits


def test_concat_splits_reads_across_the_boundary_in_the_asked_order():
    a = DataSplit(TensorStore(torch.arange(6, dtype=torch.uint8).view(3, 1, 1, 2)), [0, 1, 2])
    b = DataSplit(TensorStore(100 + torch.arange(4, dtype=torch.uint8).view(2, 1, 1, 2)), [3, 4])
    both = concat_splits(a, b)
    assert len(both) == 5 and both.labels.tolist() == [0, 1, 2, 3, 4]
    got = both.images.get(np.array([4, 0, 3, 2]))
    assert got[:, 0, 0, 0].tolist() == [102, 0, 100, 4]
    assert both.images.shape == (1, 1, 2)


def test_concat_refuses_different_shapes():
    a = DataSplit(TensorStore(torch.zeros(2, 1, 2, 2, dtype=torch.uint8)), [0, 1])
    b = DataSplit(TensorStore(torch.zeros(2, 1, 3, 3, dtype=torch.uint8)), [0, 1])
    with pytest.raises(DataError, match="cannot join"):
        concat_splits(a, b)


def test_concat_get_of_no_index_is_an_empty_batch_like_a_tensor_store():
    a = DataSplit(TensorStore(torch.zeros(3, 1, 2, 2, dtype=torch.uint8)), [0, 1, 2])
    b = DataSplit(TensorStore(torch.ones(2, 1, 2, 2, dtype=torch.uint8)), [3, 4])
    empty = concat_splits(a, b).images.get(np.array([], dtype=np.int64))
    assert empty.shape == (0, 1, 2, 2) and empty.dtype == torch.uint8
    assert empty.shape == a.images.get(np.array([], dtype=np.int64)).shape
