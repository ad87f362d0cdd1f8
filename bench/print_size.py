"""Print size figures: the seam figure of a tiled refine, its memory at 1024² and 4096², and two ComfyUI servers
against one.

    python bench/print_size.py seams   [--size 512] [--strength 0.3]
    python bench/print_size.py memory  [--sizes 1024 4096]
    python bench/print_size.py servers [--size 256]

seams: a flat-ish picture (a soft two-colour gradient with a little grain, 128 px) upscaled to --size and refined
on the embedded model in its 128 px tiles; the mean gradient magnitude on the tile borders divided by the same at
least 8 px away from any border (1.0: the borders cannot be told apart; the goal is ≤ 1.15). The same tiles pasted
hard, one over the other, give the figure a seam would have. Also at the hand-over bands' middle, where the blend
is steepest.
memory: peak RSS of a whole process that refines a picture of each size (each in a fresh process), and the size of
the picture buffers (source, upscaled picture, blend, result) that grow with it.
servers: the same tiled refine on one vendored CPU ComfyUI server, then on two (each server one thread, as the tests
start them), and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np  # noqa: E402

from noisebrush.engine.composition import Tiling  # noqa: E402
from noisebrush.engine.engine import Engine  # noqa: E402
from noisebrush.engine.events import Cancelled, Failed, Finished, Preview  # noqa: E402
from noisebrush.engine.request import GenerationRequest  # noqa: E402
from noisebrush.engine.tiling import default_overlap, plan_tiles  # noqa: E402


def flat_picture(size: int = 128, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.dstack([60 + 40 * x, 90 + 30 * y, 170 + 20 * (1 - x)])
    grain = np.random.default_rng(seed).normal(0, 3, base.shape)
    return np.clip(base + grain, 0, 255).astype(np.uint8)


def run_tiled(req: GenerationRequest, backend=None, keep_tiles: bool = True):
    """(the job's last event, the finished tiles as (box, picture) in the order they came, when kept)."""
    ends: list = []
    tiles: list = []

    def listen(e) -> None:
        if keep_tiles and isinstance(e, Preview) and e.box is not None and e.image.shape[:2] == (e.box[3], e.box[2]):
            tiles.append((e.box, e.image))  # a finished tile (step previews are at latent size)
        elif isinstance(e, Finished | Failed | Cancelled):
            ends.append(e)

    with Engine(backend, preview_interval_s=0.0) as eng:
        eng.add_listener(listen)
        eng.submit(req)
        while not ends:
            time.sleep(0.05)
    return ends[0], tiles


def refine(size: int, strength: float, steps: int, backend=None, model: str = "", tile: int = 0, overlap: int = 0,
           keep_tiles: bool = True):  # fmt: skip
    req = GenerationRequest("a blue background", init_image=flat_picture(), width=size, height=size, steps=steps,
                            strength=strength, seed=5, model=model, tiling=Tiling(tile=tile, overlap=overlap))  # fmt: skip
    end, tiles = run_tiled(req, backend, keep_tiles)
    if not isinstance(end, Finished):
        raise SystemExit(f"the refine did not finish: {end}")
    return end, tiles


def gradient(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32).mean(axis=2)
    g = np.zeros_like(f)
    g[:, :-1] += np.abs(np.diff(f, axis=1))
    g[:-1, :] += np.abs(np.diff(f, axis=0))
    return g


def seam_figure(img: np.ndarray, lines_x: set[int], lines_y: set[int]) -> float:
    g = gradient(img)
    h, w = g.shape
    on = np.zeros((h, w), bool)
    near = np.zeros((h, w), bool)
    for x in lines_x:
        on[:, max(0, x - 1) : x + 1] = True
        near[:, max(0, x - 8) : x + 8] = True
    for y in lines_y:
        on[max(0, y - 1) : y + 1, :] = True
        near[max(0, y - 8) : y + 8, :] = True
    return float(g[on].mean() / g[~near].mean())


def cmd_seams(args) -> None:
    end, tiles = refine(args.size, args.strength, args.steps, overlap=args.overlap)
    plan = plan_tiles(args.size, args.size, 128, args.overlap or default_overlap(128))
    edges_x = {t.x for t in plan if t.x} | {t.x + t.width for t in plan if t.x + t.width < args.size}
    edges_y = {t.y for t in plan if t.y} | {t.y + t.height for t in plan if t.y + t.height < args.size}
    hard = np.zeros_like(end.image)
    for (x, y, w, h), image in tiles:  # in the order they finished: later ones over earlier ones
        hard[y : y + h, x : x + w] = image
    xs = sorted({t.x for t in plan})
    bands_x = {(xs[i] + xs[i - 1] + plan[0].width) // 2 for i in range(1, len(xs))}
    overlap = args.overlap or default_overlap(128)
    print(f"tiled refine of a flat-ish 128 px picture to {args.size} px, strength {args.strength}, {len(plan)} tiles "
          f"of 128 px overlapping by {overlap}, {args.steps} steps ({end.elapsed_s:.1f} s)")  # fmt: skip
    print(f"seam figure, blended (tile borders / away from them): {seam_figure(end.image, edges_x, edges_y):.3f}  (goal ≤ 1.15)")
    print(f"seam figure, the same tiles pasted hard:               {seam_figure(hard, edges_x, edges_y):.3f}")
    print(f"at the middle of the hand-over bands, blended:         {seam_figure(end.image, bands_x, bands_x):.3f}")
    if args.save:
        from PIL import Image

        Image.fromarray(end.image).save(args.save)
        Image.fromarray(hard).save(Path(args.save).with_suffix(".hard.png"))


def cmd_memory(args) -> None:
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "one", str(size), str(args.steps)], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        buffers = size * size * 3 * (1 + 1 + 2) / 2**20  # upscaled picture, result, the blend's 16-bit sums
        print(f"{size}×{size}: {r['tiles']} tiles in {r['s']:.0f} s, peak RSS {r['peak_mb']:.0f} MB "
              f"(picture buffers {buffers:.0f} MB)")  # fmt: skip


def cmd_one(size: int, steps: int) -> None:
    end, _ = refine(size, 0.25, steps, keep_tiles=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tiles": len(plan_tiles(size, size, 128, default_overlap(128))), "s": end.elapsed_s, "peak_mb": peak}))


def cmd_servers(args) -> None:
    from comfy_server import CHECKPOINT, ComfyServer, prepare

    from noisebrush.engine.backends.comfy import ComfyBackend

    install = prepare()
    servers = [ComfyServer(*install, f"bench-{i}") for i in range(2)]
    try:
        for s in servers:
            s.wait_ready()
        for s in servers:  # each server loads the checkpoint once before anything is timed
            refine(64, 0.5, 2, ComfyBackend([s.url]), CHECKPOINT, tile=64, overlap=16)
        times = {}
        for n in (1, 2):
            end, tiles = refine(args.size, 0.5, args.steps, ComfyBackend([s.url for s in servers[:n]]), CHECKPOINT,
                                tile=64, overlap=16)  # fmt: skip
            times[n] = end.elapsed_s
            print(f"{n} server{'s' * (n > 1)}: {args.size} px in {len(tiles)} tiles of 64 px, {args.steps} steps at "
                  f"strength 0.5: {end.elapsed_s:.1f} s")  # fmt: skip
        print(f"speed-up with two servers: {times[1] / times[2]:.2f}× (goal ≥ 1.6)")
    finally:
        for s in servers:
            s.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "one":
        cmd_one(int(sys.argv[2]), int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seams")
    s.add_argument("--size", type=int, default=512)
    s.add_argument("--strength", type=float, default=0.3)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--overlap", type=int, default=0, help="px (default: 3/8 of a tile)")
    s.add_argument("--save")
    m = sub.add_parser("memory")
    m.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    m.add_argument("--steps", type=int, default=8)
    v = sub.add_parser("servers")
    v.add_argument("--size", type=int, default=256)
    v.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    {"seams": cmd_seams, "memory": cmd_memory, "servers": cmd_servers}[args.cmd](args)


if __name__ == "__main__":
    main()
