"""What a ComfyUI server costs per job, against the local backend on the same model.

    python bench/comfy_overhead.py [--steps 6] [--size 64] [--runs 5]

Both backends run the same random SD1.5-shaped model (the one tests/test_comfy.py serves: UNet with 320 channels and
two levels, CLIP-L, the SD VAE, a scribble ControlNet): ComfyUI loads it from its single file, the local backend
from a diffusers folder with the same weights. Prints, per backend, submit → first preview and submit → result
(median of --runs warm jobs, after one job that loads the model), and the server's overhead as the difference.
ComfyUI runs on 127.0.0.1 with --cpu, so the figures are protocol and scheduling overhead, not network time.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from comfy_server import CACHE, CHECKPOINT, ComfyServer, prepare  # noqa: E402

from noisebrush.engine.backends.comfy import ComfyBackend  # noqa: E402
from noisebrush.engine.engine import Engine  # noqa: E402
from noisebrush.engine.events import Failed, Finished, Preview  # noqa: E402
from noisebrush.engine.request import ControlSpec, GenerationRequest  # noqa: E402


def local_folder(comfy_source: Path) -> Path:
    """The test checkpoint's weights as a diffusers folder (CLIP's tokenizer files come with ComfyUI)."""
    import comfy_models
    from diffusers import DDIMScheduler
    from transformers import CLIPTokenizer

    folder = CACHE / "bench-model"
    if (folder / "model_index.json").is_file():
        return folder
    unet = comfy_models.unet()
    unet.save_pretrained(folder / "unet")
    comfy_models.vae().save_pretrained(folder / "vae")
    comfy_models.clip_l().save_pretrained(folder / "text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(comfy_source / "comfy" / "sd1_tokenizer", model_max_length=77)
    tokenizer.save_pretrained(folder / "tokenizer")
    comfy_models.controlnet(unet).save_pretrained(folder / "controlnets" / "scribble")
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  steps_offset=1).save_pretrained(folder / "scheduler")  # fmt: skip
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "safety_checker": [None, None],
             "feature_extractor": [None, None], "requires_safety_checker": False}  # fmt: skip
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    return folder


def timings(engine: Engine, req: GenerationRequest, runs: int) -> tuple[float, float, float]:
    """(first job's submit → result, median submit → first preview, median submit → result) in seconds."""
    events: queue.Queue = queue.Queue()
    engine.add_listener(events.put)
    firsts, totals = [], []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        job = engine.submit(req.replace(seed=i))
        first = None
        while True:
            ev = events.get(timeout=600)
            if getattr(ev, "job_id", None) != job:
                continue
            if isinstance(ev, Preview) and first is None:
                first = time.perf_counter() - t0
            if isinstance(ev, Failed):
                raise SystemExit(f"failed: {ev.message}")
            if isinstance(ev, Finished):
                firsts.append(first or float("nan"))
                totals.append(time.perf_counter() - t0)
                break
    return totals[0], statistics.median(firsts[1:]), statistics.median(totals[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    py, source, base = prepare()
    folder = local_folder(source)
    sketch = np.zeros((args.size, args.size, 3), np.uint8)
    sketch[args.size // 4 : 3 * args.size // 4, args.size // 4] = 255
    req = GenerationRequest("a red square", controls=(ControlSpec("scribble", sketch),), steps=args.steps,
                            width=args.size, height=args.size, guidance=7.0)  # fmt: skip
    rows = []
    with Engine(preview_interval_s=0.0, threads=1) as engine:  # ComfyUI's server runs with one thread too
        rows.append(("local (diffusers)", *timings(engine, req.replace(model=str(folder)), args.runs)))
    server = ComfyServer(py, source, base, "bench")
    try:
        server.wait_ready()
        with Engine(ComfyBackend([server.url])) as engine:
            rows.append(("ComfyUI 127.0.0.1", *timings(engine, req.replace(model=CHECKPOINT), args.runs)))
    finally:
        server.stop()
    print(f"{args.steps} steps at {args.size} px, one scribble ControlNet, median of {args.runs} warm jobs")
    print(f"{'backend':20s} {'first job':>10s} {'→ 1st preview':>14s} {'→ result':>10s}")
    for name, cold, first, total in rows:
        print(f"{name:20s} {cold:9.2f}s {first:13.3f}s {total:9.3f}s")
    (_, _, f_local, t_local), (_, _, f_comfy, t_comfy) = rows
    print(f"server overhead: {1000 * (f_comfy - f_local):+.0f} ms to the first preview, "
          f"{1000 * (t_comfy - t_local):+.0f} ms per job")  # fmt: skip
    if "--keep" not in sys.argv:
        shutil.rmtree(CACHE / "run" / f"bench-{server.port}", ignore_errors=True)


if __name__ == "__main__":
    main()
