"""Put retrained parts into an exported model folder, leaving the rest as it is.

    python -m training.install_parts [--out assets/models/default] [--vae runs/vae_margin/model --decode-margin 2]
                                     [--run runs/diffusion-words/ema-N]
                                     [--few-step 4] [--few-step-lora runs/distill-lcm/lora-N/pytorch_lora_weights.safetensors]

--vae: a decoder fine-tune (the encoder unchanged, so the UNet's latents stay what it learnt), stored in fp16, with
the decode margin it was trained through (engine/decode_margin.py) written to noisebrush.json.
--run: a run's UNet and ControlNets (fp16) and, where it trained one, its colour projection (named in
noisebrush.json's "colour_words"); the VAE, MiniLM, IP-Adapter and few-step block stay.
--few-step N: noisebrush.json's few_step block (engine/few_step.py): N steps or fewer sample with LCM, no CFG;
with --few-step-lora, an LCM-LoRA from training/distill_lcm.py too. A LoRA belongs to the UNet it was distilled
from: training/export.py, which writes a new UNet, writes no few_step block.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

FEW_STEP_FILE = "fewstep/pytorch_lora_weights.safetensors"


def install_vae(src: Path, out: Path, margin: int = 0) -> None:
    """The VAE, and noisebrush.json's decode margin: the one it was fine-tuned with, or none (a decoder trained
    without one must not get one)."""
    import torch
    from diffusers import AutoencoderKL

    from noisebrush.engine.decode_margin import META_KEY

    vae = AutoencoderKL.from_pretrained(src, torch_dtype=torch.float32)
    tmp = out / "vae.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vae.to(torch.float16).save_pretrained(tmp)
    shutil.rmtree(out / "vae")
    tmp.rename(out / "vae")
    meta_path = out / "noisebrush.json"
    meta = json.loads(meta_path.read_text())
    meta.pop(META_KEY, None)
    if margin:
        meta[META_KEY] = margin
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")


def install_run(run: Path, out: Path) -> None:
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from training.train_diffusion import COLOUR_FILE, KINDS

    parts = [("unet", UNet2DConditionModel, "unet")] + [(f"controlnet-{k}", ControlNetModel, f"controlnets/{k}") for k in KINDS]
    for src, cls, dest in parts:
        tmp = out / (dest + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        cls.from_pretrained(run / src, torch_dtype=torch.float32).to(torch.float16).save_pretrained(tmp)
        shutil.rmtree(out / dest)
        tmp.rename(out / dest)
    meta_path = out / "noisebrush.json"
    meta = json.loads(meta_path.read_text())
    if (run / COLOUR_FILE).is_file():
        shutil.copy(run / COLOUR_FILE, out / COLOUR_FILE)
        meta["colour_words"] = COLOUR_FILE
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")


def install_few_step(out: Path, steps: int, lora: Path | None = None) -> None:
    block: dict = {"steps": steps, "scheduler": "LCM", "guidance": 1.0}
    shutil.rmtree(out / Path(FEW_STEP_FILE).parent, ignore_errors=True)
    if lora:
        (out / FEW_STEP_FILE).parent.mkdir()
        shutil.copy(lora, out / FEW_STEP_FILE)
        block["lora"] = FEW_STEP_FILE
    meta_path = out / "noisebrush.json"
    meta = json.loads(meta_path.read_text())
    meta["few_step"] = block
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("assets/models/default"))
    ap.add_argument("--vae", type=Path)
    ap.add_argument("--decode-margin", type=int, default=0, help="with --vae: the margin its decoder was fine-tuned "
                    "with (training/configs/decoder-margin.json: 2)")  # fmt: skip
    ap.add_argument("--run", type=Path, help="a run's weights folder (runs/…/ema-N)")
    ap.add_argument("--few-step", type=int, help="steps of the few-step path (4)")
    ap.add_argument("--few-step-lora", type=Path)
    args = ap.parse_args()
    if args.vae:
        install_vae(args.vae, args.out, args.decode_margin)
    if args.run:
        install_run(args.run, args.out)
    if args.few_step:
        install_few_step(args.out, args.few_step, args.few_step_lora)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file() and p.suffix == ".safetensors")
    print(f"{args.out}: {total / 1e6:.1f} MB of weights")


if __name__ == "__main__":
    main()
