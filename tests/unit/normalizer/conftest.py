from __future__ import annotations

import pytest

from normalizer import _common


@pytest.fixture(autouse=True)
def _raise_internal_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """In tests a bug in a platform adapter must fail loudly, not degrade to `unsupported`."""
    monkeypatch.setattr(_common, "RAISE_INTERNAL_ERRORS", True)
