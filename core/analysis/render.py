"""PNG pictures of analysis results with PIL only (core draws no plotly and needs no matplotlib).

The app draws the same data interactively (pages/_charts.py); these files are for `python -m core inspect` and
for anyone reading a run folder without the app.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

SIZE, PAD = 420, 50


def reliability_png(before: list[dict], after: list[dict], path: Path, title: str = "") -> Path:
    """Reliability diagram: accuracy per confidence bin before (grey) and after (blue) temperature scaling,
    against the diagonal of perfect calibration."""
    img = Image.new("RGB", (SIZE + 2 * PAD, SIZE + 2 * PAD), "white")
    d = ImageDraw.Draw(img)

    def xy(conf: float, acc: float) -> tuple[float, float]:
        return PAD + conf * SIZE, PAD + (1 - acc) * SIZE

    d.rectangle([PAD, PAD, PAD + SIZE, PAD + SIZE], outline="black")
    d.line([xy(0, 0), xy(1, 1)], fill=(180, 180, 180), width=1)
    for rows, color, shift in ((before, (150, 150, 150), 0.0), (after, (30, 90, 200), 0.5)):
        for r in rows:
            if not r["count"]:
                continue
            width = (r["hi"] - r["lo"]) / 2
            x0 = r["lo"] + shift * width
            d.rectangle([xy(x0, r["accuracy"]), xy(x0 + width, 0)], fill=color)
    for k in range(0, 11, 2):
        d.text((PAD + k / 10 * SIZE - 8, PAD + SIZE + 6), f"{k / 10:.1f}", fill="black")
        d.text((PAD - 30, PAD + (1 - k / 10) * SIZE - 6), f"{k / 10:.1f}", fill="black")
    d.text((PAD, PAD + SIZE + 24), "confidence  (grey: before, blue: after temperature scaling)", fill="black")
    d.text((PAD, 12), title or "Reliability diagram: accuracy per confidence bin", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
