"""`noisebrush upscale`: a picture to print size, by an upscale model (or Lanczos) and a refine in tiles.

    noisebrush upscale IN.png --scale 4 [--upscaler FILE] [--refine 0.4] [--prompt …] [--tile-controlnet NET]
                       [--server URL …] --out OUT.png

The PNG it writes records the settings (the source picture included), so `--from OUT.png` runs it again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def add_parser(sub) -> None:
    u = sub.add_parser("upscale", help="upscale a picture (2×–8× or to a size) and refine it in tiles at full size")
    u.add_argument("picture", nargs="?", help="the picture (a Noisebrush PNG also gives its prompt and model)")
    u.add_argument("--scale", type=float, help="how many times larger, 1–8 (default 2)")
    u.add_argument("--size", metavar="WIDTHxHEIGHT", help="the size to reach instead of a scale (e.g. 2048x2048)")
    u.add_argument("--upscaler", metavar="FILE", help="an upscale model (.safetensors or .pth: ESRGAN, SwinIR, DAT…); "
                   "default: Lanczos")  # fmt: skip
    u.add_argument("--refine", type=float, default=None, metavar="STRENGTH",
                   help="repaint this much of each tile with the prompt, 0–1 (default 0: upscale only)")  # fmt: skip
    u.add_argument("--prompt", help="what the picture shows (default: the picture's own, when it has one)")
    u.add_argument("--negative")
    u.add_argument("--model", help="the model that refines (default: the picture's own, else the embedded model)")
    u.add_argument("--steps", type=int, help="steps of a full repaint; a tile runs steps × refine of them")
    u.add_argument("--guidance", type=float)
    u.add_argument("--seed", type=int)
    u.add_argument("--tile", type=int, help="px of a tile side (default: the model's own size)")
    u.add_argument("--overlap", type=int, help="px tiles overlap (default: 3/8 of a tile)")
    u.add_argument("--tile-controlnet", metavar="CONTROLNET[@WEIGHT]",
                   help="a tile ControlNet (SD1.5 tile, SDXL tile or an SDXL ProMax Union; a server's file with "
                   "--server) that keeps each refined tile faithful to the picture; weight 0–2, default 0.8")  # fmt: skip
    u.add_argument("--from", dest="from_png", metavar="SAVED.png", help="run again what an upscaled PNG records")
    u.add_argument("--server", action="append", default=[], metavar="URL",
                   help="refine on this ComfyUI server; repeat it and the tiles are shared among them")  # fmt: skip
    u.add_argument("--server-token", help="sent as 'Authorization: Bearer …' (or set NOISEBRUSH_SERVER_TOKEN)")
    u.add_argument("--threads", type=int, help="torch CPU threads")
    u.add_argument("--out", required=True, help="output PNG")


def _size(text: str) -> tuple[int, int]:
    from noisebrush.engine.errors import UserError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text}: write it as WIDTHxHEIGHT, e.g. 2048x2048") from None
    return w // 8 * 8, h // 8 * 8


def build_request(args: argparse.Namespace):
    """The upscale request the flags describe: --from's with the flags over it, else the picture's own settings."""
    from noisebrush.engine.composition import Tiling, check_upscale_source
    from noisebrush.engine.errors import UserError
    from noisebrush.engine.images import read_image
    from noisebrush.engine.metadata import NoSettings, read_request
    from noisebrush.engine.models import model_defaults
    from noisebrush.engine.request import GenerationRequest
    from noisebrush.engine.upscale import check_scale

    base = read_request(args.from_png) if args.from_png else None
    if args.picture:
        picture = read_image(args.picture).image
        try:  # a Noisebrush PNG: its prompt and model refine it
            base = base or read_request(args.picture).replace(init_image=None, tiling=None, controls=(), regions=(),
                                                              references=(), mask=None)  # fmt: skip
        except (NoSettings, UserError):
            pass
    elif base is not None and base.init_image is not None:
        picture = base.init_image
    else:
        raise UserError("name the picture to upscale (or --from an upscaled PNG)")
    h, w = picture.shape[:2]
    check_upscale_source(h, w)
    if args.size:
        width, height = _size(args.size)
    elif args.scale is not None or base is None or base.tiling is None:
        width, height = check_scale(args.scale if args.scale is not None else 2.0, w, h)
    else:
        width, height = base.width, base.height
    model = args.model if args.model is not None else (base.model if base else "")
    d = model_defaults(model) if not args.server else None
    old = base.tiling if base is not None and base.tiling is not None else Tiling()
    net, net_weight = old.controlnet, old.controlnet_weight
    if args.tile_controlnet:
        from noisebrush.generate import _path_weight

        net, net_weight = _path_weight(args.tile_controlnet, 0.8)
    tiling = Tiling(args.upscaler if args.upscaler is not None else old.upscaler,
                    args.tile if args.tile is not None else old.tile,
                    args.overlap if args.overlap is not None else old.overlap, net, net_weight)  # fmt: skip

    def pick(flag, saved, default):
        return flag if flag is not None else (saved if saved is not None else default)

    req = GenerationRequest(
        prompt=pick(args.prompt, base.prompt if base else None, ""),
        negative_prompt=pick(args.negative, base.negative_prompt if base else None, ""),
        steps=pick(args.steps, base.steps if base else None, d.steps if d else 20),
        guidance=pick(args.guidance, base.guidance if base else None, d.guidance if d else 7.0),
        seed=pick(args.seed, base.seed if base else None, None),
        scheduler=base.scheduler if base else (d.scheduler if d else "DPM++ 2M"),
        loras=base.loras if base and base.model == model else (),
        width=width, height=height, init_image=picture, model=model, tiling=tiling,
        strength=pick(args.refine, base.strength if base and base.tiling else None, 0.0),
    )  # fmt: skip
    req.validate()
    return req


def cmd_upscale(args: argparse.Namespace) -> int:
    from noisebrush.generate import check_destination, run_headless

    out = Path(args.out)
    check_destination(out)
    req = build_request(args)
    backend = None
    if args.server:
        from noisebrush.engine.backends.comfy import ComfyBackend
        from noisebrush.engine.backends.comfy_client import ServerConfig

        token = args.server_token or os.environ.get("NOISEBRUSH_SERVER_TOKEN", "")
        backend = ComfyBackend([ServerConfig(url, token) for url in args.server])
    h, w = req.init_image.shape[:2]
    what = f"refining at {req.strength:g}" if req.strength else "no refine"
    print(f"{w}×{h} → {req.width}×{req.height} ({req.tiling.upscaler or 'Lanczos'}, {what})", file=sys.stderr)
    t0 = time.perf_counter()
    ev = run_headless(req, out, None, args.threads, lambda m: print(m, file=sys.stderr), backend=backend)
    print(f"wrote {out} ({req.width}×{req.height}, seed {ev.params.seed}) in {time.perf_counter() - t0:.1f} s")
    return 0
