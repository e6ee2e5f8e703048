"""The from-scratch encoder-decoder learns to copy: every held-out sequence copied exactly by greedy decoding."""
import pytest
import torch

from mechscope.lab.copy_task import Seq2Seq, exact_copies, train_copy


@pytest.mark.heavy
def test_encoder_decoder_learns_to_copy_exactly():
    torch.set_num_threads(1)
    assert exact_copies(Seq2Seq(6).eval()) < 0.05  # an untrained model does not copy
    model, losses = train_copy()  # textbook post-norm, 300 Adam steps of 32 sequences (length 5, 6 symbols)
    assert losses[-1] < 0.05 < losses[0]
    assert exact_copies(model) == 1.0  # all 256 fresh sequences, every symbol
