"""Row sums of integer codes (the saver's scale-bias terms) are exact whichever reduction computes them."""

from __future__ import annotations

import torch

from modelslim_core.quant.row_blocks import BLOCK_BYTES, row_code_sums


def test_row_code_sums_by_hand():
    codes = torch.tensor([[1, -2, 3, 4], [-128, -128, 127, 127]], dtype=torch.int8)
    assert row_code_sums(codes).tolist() == [[6], [-2]]
    assert row_code_sums(codes, 2).tolist() == [[-1, 7], [-256, 254]]


def test_row_code_sums_are_exact_at_the_extremes_over_several_blocks():
    columns = 8192
    rows = BLOCK_BYTES // (4 * columns) * 2 + 5  # three row blocks
    codes = torch.randint(-128, 128, (rows, columns), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    codes[0] = -128  # the largest sums a row can have
    codes[1] = 127
    expected = codes.to(torch.int64).reshape(rows, 4, -1).sum(dim=-1)
    assert torch.equal(row_code_sums(codes, 4), expected)
    assert torch.equal(row_code_sums(codes), expected.sum(dim=1, keepdim=True))
    assert row_code_sums(codes)[0, 0] == -128 * columns
