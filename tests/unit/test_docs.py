"""The README and the deploy files must name only settings and metrics that exist."""

from __future__ import annotations

import runpy
from pathlib import Path

from worker.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"MODSTREAM_{n.upper()}"
        for n in Settings.model_fields
        if f"`MODSTREAM_{n.upper()}`" not in readme
    ]
    assert missing == []


def test_deploy_files_use_only_real_metric_and_setting_names() -> None:
    module = runpy.run_path(str(ROOT / "deploy" / "check_metric_names.py"))
    problems, metrics_checked, settings_checked = module["find_problems"](ROOT)
    assert problems == []
    assert metrics_checked > 5 and settings_checked > 5  # it did find names to check
