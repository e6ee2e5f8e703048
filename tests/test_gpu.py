"""GPU paths (cuda, bf16, device_map). Skipped where no CUDA device is visible."""
import pytest
import torch

import mechscope

from conftest import tiny

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3"])
def test_cuda_bf16_matches_cpu_fp32(family, tmp_path):
    folder = mechscope.save(tiny(family), tmp_path / family)
    cpu = mechscope.load(str(folder), device="cpu", dtype="fp32")
    gpu = mechscope.load(str(folder), device="cuda")  # auto dtype: bf16 where supported
    assert gpu.device.type == "cuda"
    if torch.cuda.is_bf16_supported():
        assert gpu.dtype == torch.bfloat16
    prompts = ["hello there", "hi"]
    ref, c_ref = cpu.run(prompts, capture=["blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern"])
    got, c_got = gpu.run(prompts, capture=["blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern"])
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.float().cpu(), ref, rtol=0.05, atol=0.1)
    torch.testing.assert_close(c_got["blocks.1.attn.hook_pattern"].float().cpu(),
                               c_ref["blocks.1.attn.hook_pattern"], rtol=0.02, atol=0.02)


def test_cuda_fp32_batched_equals_unbatched(tmp_path):
    folder = mechscope.save(tiny("llama"), tmp_path / "llama")
    m = mechscope.load(str(folder), device="cuda", dtype="fp32")
    logits, cache = m.run(["a longer prompt here", "hi"], padding_side="left")
    alone, _ = m.run(["hi"])
    torch.testing.assert_close(logits[1, -alone.shape[1]:], alone[0], rtol=0, atol=1e-4)
