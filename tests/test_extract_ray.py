"""--engine ray on a local Ray instance: the same (document, position) rows, with equal vectors, as the local engine."""
import numpy as np
import pytest

import mechscope
from mechscope import ActivationDataset

from conftest import tiny

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

DOCS = ["The quick brown fox jumps over the lazy dog.", "", "Hi!", "A longer document, " * 5,
        "Numbers 1 2 3 and symbols #$%.", "Short one.", "x" * 70, "Tail document."]
SITES = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]


@pytest.fixture(scope="module")
def local_ray():
    # More logical CPUs than actors (2 model actors + 1 tokenizer actor): on a 2-core machine the read stage and the
    # actor pool would otherwise wait on each other.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _rows(ds):
    return {(int(d), int(p)): i for i, (d, p) in enumerate(zip(ds.doc_ids, ds.positions))}


def test_ray_engine_matches_local_engine(tmp_path, local_ray):
    m = tiny("llama")
    kw = dict(max_length=48, batch_tokens=96, shard_tokens=96, progress=False)
    local = mechscope.extract(m, SITES, DOCS, tmp_path / "local", **kw)
    distributed = mechscope.extract(m, SITES, DOCS, tmp_path / "ray", engine="ray", num_workers=2, **kw)
    a, b = ActivationDataset(tmp_path / "local"), ActivationDataset(tmp_path / "ray")
    ra, rb = _rows(a), _rows(b)
    assert len(ra) == len(a) and len(rb) == len(b)  # no duplicated rows
    assert set(ra) == set(rb)
    keys = sorted(ra)
    for site in SITES:
        np.testing.assert_allclose(a.read(site, [ra[k] for k in keys]), b.read(site, [rb[k] for k in keys]),
                                   atol=1e-5, rtol=1e-5)
    assert b.manifest["engine"] == "ray" and b.manifest["counts"]["shards"] >= 2
    for key in ("tokens", "documents", "records", "skipped", "truncated"):
        assert local[key] == distributed[key], key
    assert not (tmp_path / "ray" / ".ray-model").exists()
    # a retried / resumed run skips finished blocks and never duplicates rows
    again = mechscope.extract(m, SITES, DOCS, tmp_path / "ray", engine="ray", resume=True, **kw)
    assert again["already_finished"] and again["tokens"] == len(b)
