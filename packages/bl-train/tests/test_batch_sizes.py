"""The batch-size words: micro_batch_size (one forward on one rank) and global_batch_size (one optimizer step,
micro_batch_size x grad_accum x world size), checked against a by-hand count of the samples a run consumes."""

import pytest

from bl_train.config import Recipe, TrainConfig
from bl_train.data import global_positions, steps_for
from bl_train.deepspeed_config import deepspeed_config


@pytest.mark.parametrize(("micro", "accum", "world"), [(4, 1, 1), (2, 3, 2), (1, 4, 3)])
def test_an_epoch_is_global_batches_of_disjoint_micro_batches(micro, accum, world):
    epoch_size, epochs = 10, 1.5
    train = TrainConfig(micro_batch_size=micro, grad_accum=accum)
    global_batch = train.global_batch_size(world)
    assert global_batch == micro * accum * world
    assert deepspeed_config(Recipe(train=train), world)["train_batch_size"] == global_batch
    steps = steps_for(epochs, epoch_size, global_batch)
    assert (
        (steps - 1) * global_batch < epochs * epoch_size <= steps * global_batch
    )  # the fewest steps that cover it
    seen = [  # what every rank's micro-batches of every micro-step read, as flat sample numbers
        epoch * epoch_size + position
        for micro_step in range(steps * accum)
        for rank in range(world)
        for epoch, position in global_positions(micro_step, micro, rank, world, epoch_size)
    ]
    assert sorted(seen) == list(range(steps * global_batch))  # consecutive, none twice, none skipped
