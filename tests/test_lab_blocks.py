"""mechscope.lab.blocks: each block loaded from its torch.nn counterpart computes the same function."""
import pytest
import torch
import torch.nn as nn

from mechscope.lab.blocks import DecoderBlock, EncoderBlock, EncoderDecoder

D, H, FF = 16, 4, 24


def _randomize(module):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():  # biases and norm weights too: a missing one would show
            p.normal_(0, 0.3) if p.ndim > 1 else p.normal_(1.0 if p.shape[0] == D else 0.0, 0.2)
    return module.eval()


def _padding():
    return torch.tensor([[False] * 6, [False] * 4 + [True] * 2])  # (B, S) True on padding


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_block_equals_torch(norm_first, activation):
    ref = _randomize(nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation=activation, batch_first=True,
                                                norm_first=norm_first))
    mine = EncoderBlock.from_torch(ref)
    x = torch.randn(2, 6, D)
    with torch.no_grad():
        torch.testing.assert_close(mine(x, _padding()), ref(x, src_key_padding_mask=_padding()),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mine(x), ref(x), atol=1e-5, rtol=1e-5)
    assert mine.norm_first == norm_first


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_equals_torch(norm_first):
    ref = _randomize(nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first))
    mine = DecoderBlock.from_torch(ref)
    tgt, mem = torch.randn(2, 5, D), torch.randn(2, 6, D)
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    with torch.no_grad():
        got = mine(tgt, mem, memory_padding=_padding())
        want = ref(tgt, mem, tgt_mask=causal, memory_key_padding_mask=_padding())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the causal mask is really there: a later target token changes nothing before it
        tgt2 = tgt.clone()
        tgt2[:, -1] += 1.0
        torch.testing.assert_close(mine(tgt2, mem)[:, :-1], mine(tgt, mem)[:, :-1])


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_decoder_equals_nn_transformer(norm_first):
    ref = _randomize(nn.Transformer(D, H, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=FF,
                                    dropout=0.0, batch_first=True, norm_first=norm_first))
    mine = EncoderDecoder.from_torch(ref)
    src, tgt = torch.randn(2, 6, D), torch.randn(2, 5, D)
    with torch.no_grad():
        got = mine(src, tgt, src_padding=_padding())
        want = ref(src, tgt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(5),
                   src_key_padding_mask=_padding(), memory_key_padding_mask=_padding())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert len(mine.encoder) == len(mine.decoder) == 2
