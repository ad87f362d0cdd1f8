"""Every figure of the embedded model's issue-30 table, each with its target, in one run.

    python bench/model_targets.py [--model FOLDER] [--n 100] [--ring-n 40] [--threads 2]

Held-out sets (training/vocab_world.py; bench/model_vocab.py says how each is drawn): dictionary names never
trained on; the ten basic names in held-out sentence templates and in the held-out "sketchy" stroke style; two-
and three-object scenes. 20 steps are DPM++ 2M at guidance 5; 4 steps the model's few-step path (LCM, guidance 1).
The corner ring is bench/corner_ring.py's figure on generated pictures; speed the whole engine path at 128 px.
About 15 minutes on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.corner_ring import generated_ratios, held_out_samples  # noqa: E402
from bench.model_quality import Generator, engine_speed  # noqa: E402
from bench.model_vocab import run_set  # noqa: E402
from noisebrush.engine.backends.local import LocalBackend  # noqa: E402
from noisebrush.engine.models import resolve_model_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def shipped_mb(model: str) -> float:
    """The model folder's weights and the colour dictionary, in MB (10^6 bytes)."""
    folder = resolve_model_dir(model)
    weights = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
    return (weights + (ROOT / "assets" / "colour_dictionary.json").stat().st_size) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--ring-n", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    slow, fast = Generator(args.model, 20), Generator(args.model, 4, "LCM")
    sets = {
        "names": run_set(slow, "names", args.n, 5.0),
        "templates": run_set(slow, "templates", args.n, 5.0),
        "templates_4": run_set(fast, "templates", args.n, 1.0),
        "strokes": run_set(slow, "strokes", args.n, 5.0),
        "scenes": run_set(slow, "scenes", args.n, 5.0),
    }
    for name, figures in sets.items():
        print(f"{name}: {json.dumps(figures)}", flush=True)
    backend, samples = LocalBackend(preview_interval_s=1e9, quick_start=False), held_out_samples(args.ring_n)
    ring = {steps: float(np.mean(generated_ratios(backend, samples, steps, args.model)[0])) for steps in (20, 4)}
    iou = float(np.mean([sets[k]["shape_iou"] for k in ("names", "templates", "strokes")]))
    rows = [
        ("held-out dictionary names within ΔE2000 20", f"{sets['names']['within_20']:.3f}", "≥ 0.9"),
        ("held-out phrasings: colour accuracy, 20 / 4 steps",
         f"{sets['templates']['basic_accuracy']:.3f} / {sets['templates_4']['basic_accuracy']:.3f}", "≥ 0.9"),
        ("held-out stroke style: colour accuracy", f"{sets['strokes']['basic_accuracy']:.3f}", "≥ 0.9"),
        ("two- and three-object scenes: every object in its colour", f"{sets['scenes']['scenes_all_present']:.3f}", "≥ 0.8"),
        ("corner ring ratio, 20 / 4 steps", f"{ring[20]:.2f} / {ring[4]:.2f}", "≤ 1.3"),
        ("shape IoU (names, phrasings, strokes)", f"{iou:.3f}", "≥ 0.85"),
        ("4 steps, 128 px, end to end", f"{engine_speed(args.model, 4):.2f} s", "≤ 0.3 s"),
        ("weights + dictionary", f"{shipped_mb(args.model):.1f} MB", "≤ 60 MB"),
    ]  # fmt: skip
    print(f"\nmodel: {args.model or 'embedded'}")
    for label, value, target in rows:
        print(f"| {label} | {value} | {target} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"sets": sets, "ring": ring, "table": rows}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
