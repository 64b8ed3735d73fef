"""The README and the deploy files must name only settings and metrics that exist, and the
README must give each setting's default and meaning as the code does."""

from __future__ import annotations

import runpy
from pathlib import Path

from pydantic import SecretStr

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


def test_readme_settings_table_gives_each_default_and_description() -> None:
    """The table under "Settings" says what Settings says: a default changed in code and
    not in the README (or the other way) fails here."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`MODSTREAM_"):
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    checked = 0
    for name, field in Settings.model_fields.items():
        meaning, default = rows[f"MODSTREAM_{name.upper()}"]
        assert meaning == field.description, name
        value = field.default
        if isinstance(value, SecretStr):  # a default is no secret: shown as it is
            value = value.get_secret_value()
        if isinstance(value, Path):
            assert default.startswith(f"`{value.relative_to(ROOT)}`"), name
        else:
            assert default == f"`{value}`", name
            checked += 1
    assert checked > 30  # the plain defaults were compared, not skipped
