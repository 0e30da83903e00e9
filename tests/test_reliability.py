"""Regression tests of the reliability issue: each case once returned wrong data silently, hung,
or failed with a misleading or path-less message."""
import numpy as np
import pytest

import lviv_c as L


# ----------------------------------------------------------------------------- tensor indexing

def test_bool_mask_selects_and_is_shape_checked():
    t = L.arange(10)
    m = L.tensor([True, False] * 5)
    assert m.dtype == L.bool and not m.is_floating_point()
    assert t[m].tolist() == [0, 2, 4, 6, 8]                 # was ten values of 1/0
    assert (t > 6).dtype == L.bool
    assert t[t > 6].tolist() == [7, 8, 9]
    assert t[np.arange(10) % 3 == 0].tolist() == [0, 3, 6, 9]
    assert t[[True, False] * 5].tolist() == [0, 2, 4, 6, 8]
    with pytest.raises(IndexError, match=r"shape of the mask \[3\] at index 0 does not match"):
        t[L.tensor([True, False, True])]
    with pytest.raises(IndexError, match="mask"):
        t[np.array([True, False])]
    # a 2-d mask over a 2-d tensor (PyTorch: the selected values, flat)
    x = L.arange(12).reshape(3, 4)
    assert x[x > 8].tolist() == [9, 10, 11]
    assert x[L.tensor([False, True, True])].tolist() == [[4, 5, 6, 7], [8, 9, 10, 11]]
    assert x[:, L.tensor([True, False, False, True])].tolist() == [[0, 3], [4, 7], [8, 11]]


def test_float_index_raises_and_positions_are_bounds_checked():
    t = L.arange(10)
    with pytest.raises(IndexError, match="long, int, byte or bool"):
        t[L.tensor([1.0, 2.0])]                              # was taken as a mask
    with pytest.raises(IndexError, match="valid indices"):
        t[np.array([0.5, 1.0])]
    with pytest.raises(IndexError, match="long, int, byte or bool"):
        t[1.0]
    with pytest.raises(IndexError, match="index 10 is out of bounds for dimension 0 with size 10"):
        t[L.tensor([0, 10])]
    with pytest.raises(IndexError, match="index -11 is out of bounds"):
        t[[-11]]
    assert t[L.tensor([-1, 0])].tolist() == [9, 0]
    with pytest.raises(IndexError, match="long, int, byte or bool"):
        t[L.tensor([1.0])] = 5
    with pytest.raises(RuntimeError, match="index_select"):
        t.index_select(0, L.tensor([1.0]))


def test_several_and_multi_dim_integer_indices_follow_pytorch():
    a = np.arange(24).reshape(2, 3, 4)
    x = L.tensor(a)
    # several advanced indices broadcast together (was an outer product)
    assert x[[0, 1], [1, 2]].tolist() == a[[0, 1], [1, 2]].tolist()
    assert x[:, [0, 2], [1, 3]].tolist() == a[:, [0, 2], [1, 3]].tolist()
    # a 2-d index keeps its shape (was flattened)
    assert x[:, [[0], [2]]].shape == a[:, [[0], [2]]].shape
    np.testing.assert_array_equal(np.asarray(x[:, [[0], [2]]]), a[:, [[0], [2]]])
    with pytest.raises(IndexError, match="could not be broadcast"):
        x[[0, 1], [0, 1, 2]]
    # gradients flow through a combined index
    w = L.tensor(a.astype(np.float32), requires_grad=True)
    w[[0, 1, 1], [2, 0, 0]].sum().backward()
    g = np.zeros_like(a, dtype=np.float32)
    np.add.at(g, ([0, 1, 1], [2, 0, 0]), 1)
    np.testing.assert_array_equal(np.asarray(w.grad), g)


def test_masks_survive_shape_ops_and_convert_like_pytorch():
    t = L.arange(6).float()
    m = (t > 2).reshape(2, 3)
    assert m.dtype == L.bool and m.t().dtype == L.bool and m.clone().dtype == L.bool
    assert m.float().dtype == L.float32 and m.float().sum().item() == 3
    assert m.long().dtype == L.int64 and m.long().tolist() == [[0, 0, 0], [1, 1, 1]]
    assert m.tolist() == [[False, False, False], [True, True, True]]
    assert (t > 2).float() is not (t > 2)
    f = (t > 2).float()
    f[0] = 7.0          # the float copy is not the mask
    assert L.arange(6).bool().tolist() == [False] + [True] * 5
    np.testing.assert_array_equal(np.asarray(L.where(t > 2, t, -1.0)), [-1, -1, -1, 3, 4, 5])
    assert L.cat([t > 2, t > 4]).dtype == L.bool
