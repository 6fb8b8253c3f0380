"""Where scripts/check-infra finds the Bicep type data and schemas: one rule for both checks."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_types_dir() -> Path:
    """$AZURE_TYPES_DIR, else ../shared/azure-types beside the repository."""
    configured = os.environ.get("AZURE_TYPES_DIR")
    return Path(configured) if configured else ROOT.parent / "shared" / "azure-types"
