"""The bare reference a probe process is compared with: decode every image of a dataset and run the backbone forward
over it, the plainest way (PIL + timm's eval transform, torch eager, channels_last, batches of 16), as a process.

    python -m bench.bare_forward DATA [--backbone tf_efficientnet_lite0]

No engine code: only PIL, torch and timm, so it measures what any script doing the same work would take. The
weights are timm's random initialisation (the same arithmetic as the pretrained ones). Prints one JSON line: the
images, and seconds for the imports, the model, decoding and the forward pass (summed over the batches).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import timm  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bare_forward", description=__doc__.splitlines()[0])
    p.add_argument("data", help="a folder with train/ and val/ (and test/) of class folders")
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    t_imports = time.perf_counter() - T0
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # every core, as the engine takes them
    files = sorted(f for split in ("train", "val", "test") for f in (Path(args.data) / split).glob("*/*")
                   if f.suffix.lower() in SUFFIXES)
    t = time.perf_counter()
    model = timm.create_model(args.backbone, pretrained=False, num_classes=0).eval()
    model = model.to(memory_format=torch.channels_last)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    t_model = time.perf_counter() - t
    decode = forward = 0.0
    n = 0
    with torch.inference_mode():
        for i in range(0, len(files), args.batch):
            t = time.perf_counter()
            batch = []
            for f in files[i:i + args.batch]:
                with Image.open(f) as img:
                    batch.append(transform(img.convert("RGB")))
            x = torch.stack(batch).contiguous(memory_format=torch.channels_last)
            decode += time.perf_counter() - t
            t = time.perf_counter()
            model(x)
            forward += time.perf_counter() - t
            n += len(batch)
    print(json.dumps({"images": n, "imports": t_imports, "model": t_model, "decode": decode, "forward": forward,
                      "total": time.perf_counter() - T0}))


if __name__ == "__main__":
    main()
