"""`noisebrush download --list` and `noisebrush download PACK…`: the model packs from the terminal."""

from __future__ import annotations

import argparse
import getpass
import sys
import threading
from pathlib import Path

from noisebrush.engine.errors import GatedError, UserError


def add_parser(sub) -> None:
    d = sub.add_parser("download", help="download model packs into the models folder (--list shows them)")
    d.add_argument("packs", nargs="*", metavar="PACK", help="pack ids, as --list shows them")
    d.add_argument("--list", action="store_true", help="list the packs, their size, licence and what is installed")
    d.add_argument("--dir", help="the models folder (default: $NOISEBRUSH_MODELS, else the app's own)")


def _bar(p, width: int = 28) -> str:
    frac = p.done / p.total if p.total else 0.0
    fill = int(frac * width)
    eta = f"{p.eta_s:.0f} s left" if p.eta_s is not None else "…"
    return (f"\r[{'#' * fill}{'.' * (width - fill)}] {frac * 100:5.1f} %  {p.done / 1e6:,.0f}/{p.total / 1e6:,.0f} MB"
            f"  {p.rate / 1e6:.1f} MB/s  {eta}  file {p.index}/{p.files} {p.file[:40]:40s}")  # fmt: skip


def cmd_download(args: argparse.Namespace) -> int:
    from noisebrush.engine.catalog import models_dir
    from noisebrush.engine.downloads import download_pack, save_token
    from noisebrush.engine.packs import describe, load_packs

    packs = load_packs()
    folder = Path(args.dir) if args.dir else models_dir()
    if args.list or not args.packs:
        print(f"model packs (into {folder}):")
        for pack in packs.values():
            print("  " + describe(pack, folder))
        print("download with: noisebrush download PACK…")
        return 0
    unknown = [p for p in args.packs if p not in packs]
    if unknown:
        raise UserError(f"no pack named {unknown[0]!r}; noisebrush download --list shows them")
    for pid in args.packs:
        pack = packs[pid]
        print(f"{pack.title} ({pack.licence})")
        token = None
        while True:
            try:
                done = download_pack(pack, folder, lambda p: print(_bar(p), end="", flush=True), threading.Event(), token)
                if token:
                    save_token(token)  # only once the Hub took it
                break
            except GatedError as exc:
                if not sys.stdin.isatty():
                    raise
                print(f"\n{exc}.")
                token = getpass.getpass("Hugging Face token (kept in the Hugging Face tools' token file): ").strip()
                if not token:
                    raise
        print(f"\n{pack.id}: {len(done)} files downloaded" if done else f"{pack.id}: already installed")
        chosen = pack.selected
        if chosen is not None:
            print(f"  use it with: noisebrush generate --model {folder / chosen.dest} …")
    return 0
