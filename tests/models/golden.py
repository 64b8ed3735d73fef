"""Fixed inputs for the shipped model's golden test. Regenerate the stored scores after
retraining with:  python -m tests.models.golden"""

from __future__ import annotations

import json
from pathlib import Path

GOLDEN_FILE = Path(__file__).with_name("golden.json")

INPUTS = [
    "I absolutely love this new update, great work team!",
    "This is the worst service I have ever had. Furious.",
    "The meeting is scheduled for 3pm on Thursday.",
    "Drinking bleach cures COVID-19, doctors are hiding it from you! Share before deleted",
    "The health ministry reported 1,204 new cases and 12 deaths in the last 24 hours.",
    "@someone check this out https://t.co/abc123 #news",
    "",
    "ok",
]


def main() -> None:
    from models import DEFAULT_ARTIFACT_DIR
    from models.runtime import load_predictor

    predictor = load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", precision="fp32")
    doc = {
        "model_version": predictor.version,
        "inputs": INPUTS,
        "scores": predictor.predict(INPUTS),
    }
    GOLDEN_FILE.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {GOLDEN_FILE} for {predictor.version}")


if __name__ == "__main__":
    main()
