"""The batch position shared by a seed trained alone and in a group."""

import pytest
import torch

from tests.helpers import tiny_dict
from vt_core.config.study_config import parse_config
from vt_core.errors import VtError
from vt_core.training.position import BatchPosition, ScheduleError


def _position(tmp_path, n=256, **over):
    return BatchPosition(parse_config(tiny_dict(tmp_path, **over)), n, seed=0)


def test_batches_follow_the_seeds_permutation(tmp_path):
    pos = _position(tmp_path)  # 256 examples, batches of 32: 8 per epoch, 12 epochs
    assert (pos.batch_size, pos.batches_per_epoch, pos.total_steps) == (32, 8, 96)
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    seen = []
    for b in range(8):
        idx = pos.batch()
        assert torch.equal(idx, perm[32 * b: 32 * (b + 1)])
        seen.append(idx)
        due = pos.advance()
        assert due == (b == 7)  # every_epochs = 1: due at the end of the epoch only
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(256))
    assert (pos.step, pos.epoch, pos.batch_in_epoch, pos.perm) == (8, 1, 0, None)
    assert not torch.equal(pos.batch(), perm[:32])  # the next epoch draws a new order


def test_step_schedules_and_the_last_step(tmp_path):
    pos = _position(tmp_path, checkpoints={"every_epochs": None, "every_steps": 5}, training={"epochs": 2})
    due = []
    while not pos.finished:
        pos.batch()
        if pos.advance():
            due.append(pos.step)
    assert due == [5, 10, 15, 16] and pos.expected_checkpoints == 5  # with the initialisation
    pos = _position(tmp_path, checkpoints={"every_epochs": 5}, training={"epochs": 12})
    assert pos.expected_checkpoints == 1 + 2 + 1  # 0, 5, 10 and the last epoch


def test_mark_and_restore(tmp_path):
    pos = _position(tmp_path, n=100)  # batches of 32: 4 per epoch (the last one short)
    for _ in range(5):
        pos.batch()
        pos.advance()
    pos.batch()  # draws the second epoch's order
    mark = pos.mark()
    assert (mark.step, mark.epoch, mark.batch_in_epoch) == (5, 1, 1) and mark.epoch_fraction == 1.25
    assert pos.take_index() == 0 and pos.take_index() == 1 and pos.n_checkpoints == 2
    other = _position(tmp_path, n=100)
    other.restore(mark.step, mark.epoch, mark.batch_in_epoch, 2, mark.perm, mark.generator)
    assert torch.equal(other.batch(), pos.batch())
    pos.advance(), other.advance()
    for _ in range(4):
        assert torch.equal(other.batch(), pos.batch())  # the generator goes on alike
        pos.advance(), other.advance()


def test_a_schedule_past_the_end_is_refused(tmp_path):
    with pytest.raises(ScheduleError, match=r"\[500\] lie past the last step 96") as info:
        _position(tmp_path, checkpoints={"every_epochs": None, "steps": [3, 500]})
    assert isinstance(info.value, VtError) and isinstance(info.value, ValueError)
