"""Which rank owns each streamed piece (split_pieces.py), and the single-process behaviour of its helpers."""

from __future__ import annotations

from torch import nn

from modelslim_core.runtime import distributed
from modelslim_core.runtime.distributed import compute_once, rank_and_world, working_alone
from modelslim_core.runtime.unit import Unit
from modelslim_runners.pieces import linear_pieces
from modelslim_runners.split_pieces import piece_owners


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.q_proj, self.k_proj = nn.Linear(4, 4), nn.Linear(4, 4)
        self.post_norm = nn.LayerNorm(4)
        self.down_proj = nn.Linear(4, 4)


def test_linears_go_round_robin_from_a_rank_moving_with_the_unit_and_the_rest_to_rank_0() -> None:
    pieces = linear_pieces(Unit("model.layers.1", Block(), 1))
    assert [p.label for p in pieces] == ["(root)", "q_proj", "k_proj", "post_norm", "down_proj"]
    assert piece_owners(pieces, 1, 2) == [0, 1, 0, 0, 1]
    assert piece_owners(pieces, 2, 2) == [0, 0, 1, 0, 0]
    assert piece_owners(pieces, 0, 3) == [0, 0, 1, 0, 2]
    assert piece_owners(pieces, 5, 1) == [0] * 5


def test_a_rank_working_alone_computes_as_one_process() -> None:
    with working_alone():
        with working_alone():
            assert rank_and_world() == (0, 1)
        assert distributed._alone  # the inner context restores the outer one's state
        assert compute_once(3, lambda index: index * 2, first_owner=1) == [0, 2, 4]
    assert not distributed._alone
