"""A run's EMA snapshots, through the lent machine's return limits (8 files of at most 16 MiB).

    python training/lent_gpu/ema_pack.py pack RUN OUT      # there: the last snapshot and the one nearest 2/3, fp16
    python -m training.lent_gpu.ema_pack unpack OUT RUN    # here: RUN/ema-<step>/{unet,controlnet-*} folders

Each snapshot goes as three files: the UNet, the scribble and depth ControlNets together, the pose ControlNet.
`pack` needs only torch and safetensors.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

PAIRED = ("scribble", "depth")  # 2 × 5.9 MB in one file
CONFIGS = Path(__file__).resolve().parents[2] / "assets" / "models" / "default"  # same architecture as shipped


def _half(folder: Path) -> dict:
    return {k: v.half() for k, v in load_file(str(folder / "diffusion_pytorch_model.safetensors")).items()}


def pack(run: Path, out: Path) -> None:
    snaps = sorted((int(m[1]), p) for p in run.glob("ema-*") if (m := re.fullmatch(r"ema-(\d+)", p.name)))
    if not snaps:
        raise SystemExit(f"no EMA snapshots in {run}")
    last = snaps[-1]
    mid = min(snaps[:-1], key=lambda s: abs(s[0] - 2 * last[0] / 3), default=None)
    for step, folder in [s for s in (mid, last) if s]:
        save_file(_half(folder / "unet"), str(out / f"s{step}_unet.safetensors"))
        paired = {f"{k}.{n}": v for k in PAIRED for n, v in _half(folder / f"controlnet-{k}").items()}
        save_file(paired, str(out / f"s{step}_cn_sd.safetensors"))
        save_file(_half(folder / "controlnet-pose"), str(out / f"s{step}_cn_pose.safetensors"))
        print(f"packed the EMA at step {step}")


def unpack(src: Path, run: Path) -> None:
    for f in sorted(src.glob("s*_unet.safetensors")):
        step = re.match(r"s(\d+)_", f.name)[1]
        paired = load_file(str(src / f"s{step}_cn_sd.safetensors"))
        parts = {"unet": load_file(str(f)), "controlnet-pose": load_file(str(src / f"s{step}_cn_pose.safetensors"))}
        for k in PAIRED:
            parts[f"controlnet-{k}"] = {n[len(k) + 1 :]: v for n, v in paired.items() if n.startswith(k + ".")}
        for name, sd in parts.items():
            folder = run / f"ema-{step}" / name
            folder.mkdir(parents=True, exist_ok=True)
            save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
            config = CONFIGS / "unet" if name == "unet" else CONFIGS / "controlnets" / name.split("-")[1]
            shutil.copy(config / "config.json", folder / "config.json")
        print(f"unpacked {run / f'ema-{step}'}")


if __name__ == "__main__":
    (pack if sys.argv[1] == "pack" else unpack)(Path(sys.argv[2]), Path(sys.argv[3]))
