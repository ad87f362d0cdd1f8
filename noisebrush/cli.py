"""The `noisebrush` command: the GUI by default, `generate` headless, `--version`, `--self-test`.

Imports stay lazy so `--version` answers without loading torch or Qt.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from noisebrush import __version__


def _control_help() -> str:
    from noisebrush.engine.controls import CONTROL_KINDS

    kinds = "; ".join(f"{k.name}: {k.map_format}" + (" (or OpenPose JSON)" if k.accepts_pose_json else "")
                      for k in CONTROL_KINDS.values())  # fmt: skip
    return f"a control map, repeatable. KIND is {kinds}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="noisebrush", description="Draw with a diffusion model.")
    p.add_argument("--version", action="version", version=f"noisebrush {__version__}")
    p.add_argument("--self-test", action="store_true", help="run a 2-step generation headless and exit")
    p.add_argument("--verbose", action="store_true", help="show the libraries' own warnings and progress bars too")
    p.add_argument("--install-desktop-entry", action="store_true", help="add Noisebrush to your desktop's app menu")
    p.add_argument("--uninstall-desktop-entry", action="store_true", help="remove it from the app menu")
    sub = p.add_subparsers(dest="command")
    m = sub.add_parser("models", help="list the models found in the models folder")
    m.add_argument("--dir", help="the models folder (default: $NOISEBRUSH_MODELS, else ~/.local/share/Noisebrush/models)")
    g = sub.add_parser("generate", help="generate one image headless")
    g.add_argument("--prompt", help="what to draw (required unless --from gives one)")
    g.add_argument("--negative")
    g.add_argument("--from", dest="from_png", metavar="SAVED.png",
                   help="run again what a Noisebrush PNG records; other flags override it")  # fmt: skip
    g.add_argument("--control", action="append", default=[], metavar="KIND=PATH[@WEIGHT]",
                   help=_control_help())  # fmt: skip
    g.add_argument("--controlnet", action="append", default=[], metavar="KIND=FOLDER",
                   help="use this ControlNet for KIND instead of the model's own")  # fmt: skip
    g.add_argument(
        "--region",
        action="append",
        default=[],
        metavar="MASK.png=PROMPT",
        help="a prompt for the white area of MASK (repeatable; later regions win where they overlap)",
    )
    g.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="IMAGE[@WEIGHT]",
        help="follow this picture's style and/or composition (IP-Adapter; weight 0–1.5, default 0.8); repeatable",
    )
    g.add_argument(
        "--reference-mode",
        choices=("style", "composition", "both"),
        help="what the references give: style (colours, texture), composition (layout) or both (default)",
    )
    g.add_argument("--ip-adapter", metavar="FILE", help="the IP-Adapter .safetensors to use (its image_encoder/ beside it)")
    g.add_argument("--lora", action="append", default=[], metavar="FILE.safetensors[@WEIGHT]",
                   help="apply a LoRA (weight -2 to 2, default 1); repeatable")  # fmt: skip
    g.add_argument("--steps", type=int)
    g.add_argument("--guidance", type=float)
    g.add_argument("--seed", type=int, help="0 to 4294967295; -1 (as in A1111 files) draws one")
    g.add_argument("--width", type=int)
    g.add_argument("--height", type=int)
    g.add_argument("--scheduler")
    g.add_argument("--model", help="a diffusers model folder (default: the embedded model)")
    g.add_argument("--init", help="start from this image (img2img)")
    g.add_argument("--strength", type=float, help="how much of --init to repaint (0–1]; default 0.75, 1 with --mask")
    g.add_argument("--mask", help="repaint only where this image is white (needs --init); the rest keeps its pixels")
    g.add_argument("--feather", type=int, help="px of soft edge around the mask (default 0)")
    g.add_argument("--extend", metavar="LEFT,TOP,RIGHT,BOTTOM", help="widen the --init picture by these px and paint the border")
    g.add_argument("--batch", type=int, default=1, help="this many variations (seed, seed+1, …): OUT-1.png, OUT-2.png, …")
    g.add_argument("--previews", help="also write each step's preview PNG into this folder")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: every core)")
    g.add_argument("--server", action="append", default=[], metavar="URL",
                   help="run on this ComfyUI server (repeatable: jobs go to whichever finishes first); "
                   "--model, --controlnet and --lora then name the server's files")  # fmt: skip
    g.add_argument("--server-token", help="sent as 'Authorization: Bearer …' (or set NOISEBRUSH_SERVER_TOKEN)")
    g.add_argument("--download", action="store_true", help="allow downloading a Hugging Face --model id not in the cache")
    mem = g.add_argument_group("memory options (small GPUs)")
    mem.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None, help="half precision (default: on CUDA)")
    mem.add_argument("--attention-slicing", action="store_true", help="compute attention in slices")
    mem.add_argument("--cpu-offload", action="store_true", help="keep models on the CPU until they run (CUDA)")
    mem.add_argument("--sequential-offload", action="store_true",
                     help="move the model to the GPU layer by layer: least memory, much slower (CUDA)")  # fmt: skip
    mem.add_argument("--vae-tiling", action="store_true", help="decode large images in tiles")
    g.add_argument("--preview-decoder", choices=["auto", "linear", "taesd"], default="auto",
                   help="previews by a linear map or a tiny autoencoder (auto: TAESD when one is found)")  # fmt: skip
    g.add_argument("--out", required=True, help="output PNG, or FILE.ora for a layered OpenRaster project")
    from noisebrush.download_cli import add_parser as add_download
    from noisebrush.upscale_cli import add_parser

    add_parser(sub)
    add_download(sub)
    return p


def cmd_self_test() -> int:
    import numpy as np

    from noisebrush.engine.request import ControlSpec, GenerationRequest
    from noisebrush.generate import run_headless

    t0 = time.perf_counter()
    try:
        import cv2

        sketch = np.zeros((128, 128, 3), np.uint8)
        cv2.circle(sketch, (64, 64), 36, (255, 255, 255), 3)
        req = GenerationRequest("a red circle on a blue background", controls=(ControlSpec("scribble", sketch),), steps=2, seed=0)
        done = run_headless(req, None, None, None, log=lambda m: None)
        img = done.image
        if img.shape != (128, 128, 3):
            raise RuntimeError(f"output has shape {img.shape}, expected (128, 128, 3)")
        if int(img.max()) == int(img.min()):
            raise RuntimeError("output is a flat image")
    except Exception as exc:
        print(f"self-test FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"self-test passed: 2 steps on the embedded model in {time.perf_counter() - t0:.1f} s")
    return 0


XCB_LIBS = {  # soname: Debian package
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
}


def missing_xcb_libraries() -> list[str]:
    """Debian package names of the libraries Qt's xcb plugin loads that this system lacks (Linux, X11 only)."""
    import ctypes

    missing = []
    for soname, package in XCB_LIBS.items():
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(package)
    return missing


def _run_gui(files: list[str] | None = None) -> int:
    if (
        sys.platform.startswith("linux")
        and not (os.environ.get("QT_QPA_PLATFORM") or os.environ.get("WAYLAND_DISPLAY"))
        and os.environ.get("DISPLAY")
    ):
        missing = missing_xcb_libraries()
        if missing:
            print(f"noisebrush: error: Qt's X11 plugin needs {', '.join(missing)}, which this system lacks. "
                  f"Install them with: sudo apt install {' '.join(missing)}", file=sys.stderr)  # fmt: skip
            return 2
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    ):
        print(
            "noisebrush: error: no display found (DISPLAY and WAYLAND_DISPLAY are unset). "
            "Start it from a desktop session, or use 'noisebrush generate …' headless.",
            file=sys.stderr,
        )
        return 2
    from noisebrush.gui.app import main as gui_main

    return gui_main(sys.argv[:1], files or [])


COMMANDS = ("generate", "models", "upscale", "download")


def _file_arguments(argv: list[str]) -> list[str] | None:
    """`noisebrush a.png pose.json` (what the desktop entry's %F passes): the files to open in the GUI, else None."""
    if argv and all(not a.startswith("-") and a not in COMMANDS for a in argv):
        return argv
    return None


def main(argv: list[str] | None = None) -> int:
    files = _file_arguments(sys.argv[1:] if argv is None else argv)
    if files is not None:
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            print(f"noisebrush: error: no such file: {missing[0]}", file=sys.stderr)
            return 2
        return _run_gui(files)
    args = _parser().parse_args(argv)
    if args.verbose:
        os.environ["NOISEBRUSH_VERBOSE"] = "1"
    from noisebrush.engine.errors import UserError

    try:
        if args.install_desktop_entry or args.uninstall_desktop_entry:
            from noisebrush import desktop

            paths = desktop.install_desktop_entry() if args.install_desktop_entry else desktop.uninstall_desktop_entry()
            verb = "installed" if args.install_desktop_entry else "removed"
            for path in paths:
                print(f"{verb} {path}")
            return 0
        if args.self_test:
            return cmd_self_test()
        if args.command == "generate":
            from noisebrush.generate import cmd_generate

            return cmd_generate(args)
        if args.command == "download":
            from noisebrush.download_cli import cmd_download

            return cmd_download(args)
        if args.command == "upscale":
            from noisebrush.upscale_cli import cmd_upscale

            return cmd_upscale(args)
        if args.command == "models":
            from noisebrush.engine.catalog import format_table, models_dir, scan

            folder = Path(args.dir) if args.dir else models_dir()
            print("embedded: noisebrush-default (SD1.5-shaped, 128 px; scribble, depth and pose ControlNets)")
            if not folder.is_dir():
                print(f"no models folder yet: put diffusers folders and .safetensors files in {folder}")
                return 0
            print(f"models in {folder}:")
            print(format_table(scan(folder)))
            return 0
        return _run_gui()
    except UserError as exc:
        print(f"noisebrush: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("noisebrush: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
