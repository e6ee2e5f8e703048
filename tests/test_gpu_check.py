"""benchmarks/gpu_check.sh --dry-run: the prepared GPU check runs end to end at tiny sizes on the CPU (so it is ready
the day a GPU is lent), writes its figures, and its two baselines agree with mechscope where they must."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.heavy
def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check" / "results.json").read_text())
    assert res["mode"].startswith("dry-run")
    ex, pa, sae = res["extraction"], res["patching"], res["sae"]
    assert ex["tokens"] > 0 and ex["tokens_per_s"] > 0 and ex["seed_loop_tokens_per_s"] > 0
    assert ex["matmul_bound_tokens_per_s"] > 0 and ex["flops_per_token_to_layer_8"] > 0
    assert pa["cells"] == 10 * len("The dog sat on the rug.") + 10  # 10 layers x (BOS + one token per character)
    assert pa["max_abs_diff"] < 1e-4  # the exact sweep equals one plain patched forward per cell
    assert sae["tokens_per_s"] > 0 and sae["dense_loop_tokens_per_s"] > 0
    log = (tmp_path / "gpu_check" / "log.txt").read_text()
    for line in ("extraction at blocks.8.hook_mlp_out", "patching sweep", "SAE training"):
        assert line in log
