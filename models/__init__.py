"""The classifier: a shared sentence encoder with one head per task, the preprocessing
that training and serving share, and the artifact format both read and write."""

from pathlib import Path

# The artifact the worker serves unless told otherwise.
DEFAULT_ARTIFACT_DIR = Path(__file__).resolve().parent / "default"
