"""`--push-to-hub REPO`: upload a finished dataset folder as a Hugging Face dataset repo, with its dataset card.

The Hub is checked before any extraction work (offline mode, a token, the endpoint answering, the token valid), so a
long run never ends in "cannot upload". The token comes from HF_TOKEN or `hf auth login` and is never printed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..errors import MechscopeError
from . import storage

def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


class HubTarget:
    def __init__(self, repo: str, private: bool = False, token: Optional[str] = None):
        self.repo, self.private, self._token = repo, private, token
        try:
            from huggingface_hub.utils import validate_repo_id

            validate_repo_id(repo)
        except Exception as err:
            raise MechscopeError(f"--push-to-hub {repo!r} is not a valid repo id ({err}). Use 'user/name' or "
                                 "'org/name'.") from None

    @property
    def endpoint(self) -> str:
        from huggingface_hub import constants

        return constants.ENDPOINT

    def _api(self):
        from huggingface_hub import HfApi

        return HfApi(token=self._token)

    def check(self) -> None:
        """Raise a MechscopeError unless an upload to the Hub can work; call it before extracting."""
        from huggingface_hub import get_token

        if _offline():
            raise MechscopeError(
                f"--push-to-hub {self.repo!r}: the Hugging Face Hub cannot be reached because HF_HUB_OFFLINE=1 is "
                "set. Nothing was extracted. Unset HF_HUB_OFFLINE, or drop --push-to-hub and upload the folder later "
                "with `hf upload --repo-type dataset REPO DIR`.")
        if self._token is None:
            self._token = get_token()
        if not self._token:
            raise MechscopeError(
                f"--push-to-hub {self.repo!r}: no Hugging Face token. Set HF_TOKEN or run `hf auth login` (a token "
                "with write access). Nothing was extracted.")
        try:
            who = self._api().whoami(token=self._token)
        except Exception as err:  # connection refused, DNS, timeout, HTTP errors
            status = getattr(getattr(err, "response", None), "status_code", None)
            if status in (401, 403):
                raise MechscopeError(
                    f"--push-to-hub {self.repo!r}: the Hub at {self.endpoint} refused the token (HTTP {status}). "
                    "Check HF_TOKEN or run `hf auth login` again. Nothing was extracted.") from None
            raise MechscopeError(
                f"--push-to-hub {self.repo!r}: the Hugging Face Hub at {self.endpoint} cannot be reached "
                f"({type(err).__name__}). Nothing was extracted. Check the network (or HF_ENDPOINT), or drop "
                "--push-to-hub and upload the folder later with `hf upload --repo-type dataset REPO DIR`.") from None
        self.user = who.get("name") if isinstance(who, dict) else None

    def push(self, out: Path, manifest: dict) -> str:
        """Create the dataset repo (if needed), write the card, upload the folder; returns the repo URL."""
        out = Path(out)
        api = self._api()
        try:
            url = api.create_repo(self.repo, repo_type="dataset", private=self.private, exist_ok=True,
                                  token=self._token)
            storage.write_text(out / "README.md", storage.dataset_card(manifest, repo=self.repo))
            big = storage_bytes(out) > (20 << 30)
            if big:  # resumable, multi-commit upload for very large folders
                api.upload_large_folder(repo_id=self.repo, folder_path=str(out), repo_type="dataset",
                                        ignore_patterns=[".*"], private=self.private)
            else:
                api.upload_folder(repo_id=self.repo, folder_path=str(out), repo_type="dataset", token=self._token,
                                  ignore_patterns=[".*", "**/.*"],
                                  commit_message=f"mechscope activations: {', '.join(manifest['sites'])}")
        except MechscopeError:
            raise
        except Exception as err:
            raise MechscopeError(
                f"--push-to-hub {self.repo!r}: the upload failed ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). The dataset is complete in {str(out)!r}; upload "
                "it with `hf upload --repo-type dataset REPO DIR` or rerun the same command with --resume "
                "--push-to-hub.") from None
        return str(getattr(url, "url", None) or f"{self.endpoint}/datasets/{self.repo}")


def storage_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
