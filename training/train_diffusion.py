"""Train the embedded model's UNet jointly with one ControlNet per control kind.

    python -m training.train_diffusion [--config training/configs/diffusion.json] [key=value ...]

Each batch is split between the control kinds (and a share with no control, so
plain text-to-image works too): every step updates the UNet and all three
ControlNets. Latents and caption embeddings of a fixed pool of world samples are
computed once and cached, so a step is only the UNet and ControlNet passes.
On a GPU ("device": "cuda") the pools are drawn by parallel workers ("pool_workers") and held on
the GPU; "time_budget_s" fits the run to a lent machine's minutes (training/lent_gpu/).
Two optional aids bind caption colours to the right shapes: a grounding loss on the
cross-attention maps (training/grounding.py) and, for the multi-shape focus scenes, a
floor under the x0 weight at high noise (loss_weights).
Resumes from <out_dir>/state.pt.
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import re
import shutil
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel

from noisebrush.engine.colour_words import ColourProjection
from noisebrush.engine.text_encoder import load_minilm, load_tokenizer
from training.common import LossLog, load_state, save_state, start_run, to_tensor
from training.grounding import build_targets, grounding_loss, phrase_targets, record_cross_attention
from training.world import Sample, generate

KINDS = ("scribble", "depth", "pose")
# SD1.5's noise schedule, so every diffusers scheduler configured like SD's works unchanged.
NOISE_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def build_unet(cfg: dict, latent_size: int) -> UNet2DConditionModel:
    u = cfg["unet"]
    levels = len(u["block_out_channels"])
    # Cross-attention at every level but the first, unless the config asks for it there too.
    attn = u.get("cross_attention", [False] + [True] * (levels - 1))
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=u["layers_per_block"],
        block_out_channels=tuple(u["block_out_channels"]),
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        cross_attention_dim=384,
        attention_head_dim=u["attention_head_dim"],
        norm_num_groups=u["norm_num_groups"],
    )


def new_controlnet(cfg: dict, unet: UNet2DConditionModel) -> ControlNetModel:
    """A ControlNet shaped like (and initialised from) `unet`, its output convs at zero."""
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(cfg["conditioning_embedding_out_channels"]))


def grow_into(new: torch.nn.Module, old: torch.nn.Module) -> list[str]:
    """Copy `old`'s weights into `new`, a copy of it with extra attention blocks.

    The extra blocks' output projections start at zero, so each is an identity on its
    residual path and `new` computes exactly what `old` did until training moves them.
    Returns the names of the new modules.
    """
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"weights with no place in the grown model: {unexpected[:5]}")
    if any(".attentions." not in k for k in missing):
        raise ValueError(f"grown model lacks more than attention blocks: {[k for k in missing if '.attentions.' not in k][:5]}")
    added = sorted({re.match(r"(.*\.attentions\.\d+)\.", k).group(1) for k in missing})
    with torch.no_grad():
        for name in added:
            proj = new.get_submodule(name).proj_out
            proj.weight.zero_()
            proj.bias.zero_()
    return added


def warm_start(cfg: dict, latent_size: int) -> tuple[UNet2DConditionModel, dict[str, ControlNetModel]]:
    """Weights of an earlier model (an export, or a run's folder), grown to this config's architecture."""
    src = Path(cfg["init_from"])
    unet_old = UNet2DConditionModel.from_pretrained(src / "unet", torch_dtype=torch.float32)
    unet = build_unet(cfg, latent_size)
    added = grow_into(unet, unet_old)
    nets = {}
    for k in KINDS:
        folder = src / "controlnets" / k if (src / "controlnets").is_dir() else src / f"controlnet-{k}"
        old = ControlNetModel.from_pretrained(folder, torch_dtype=torch.float32)
        nets[k] = new_controlnet(cfg, unet)
        added += grow_into(nets[k], old)
    print(f"warm start from {src}" + (f"; new zero-initialised blocks: {', '.join(added)}" if added else ""))
    return unet, nets


@torch.no_grad()
def encode_text(captions: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """Exactly what the diffusers pipeline does: pad to model_max_length, no attention mask, last hidden state."""
    tokenizer, encoder = load_minilm()
    ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return encoder.to(device)(ids.to(device))[0]


COLOUR_FILE = "colour_words.safetensors"  # the colour projection (engine/colour_words.py), in a run and a model folder


@lru_cache(maxsize=1)
def colour_words():
    from noisebrush.engine.colour_words import ColourWords, load_dictionary
    from noisebrush.engine.text_encoder import MAX_TOKENS, minilm_dir

    return ColourWords(minilm_dir() / "tokenizer.json", load_dictionary(), MAX_TOKENS)


def colour_tables(captions: list[str]) -> np.ndarray:
    """Each caption token's dictionary colour (L, a, b, 1) or zeros, as the app finds them (engine/colour_words.py)."""
    return np.stack([colour_words().table(c) for c in captions]).astype(np.float16)


def load_colours(cfg: dict, folder: Path) -> ColourProjection | None:
    """The colour projection of a run that reads colour words (`"colour_words": true`): the folder's, else zero."""
    if not cfg.get("colour_words"):
        return None
    from safetensors.torch import load_file

    colours = ColourProjection()
    if (folder / COLOUR_FILE).is_file():
        colours.load_state_dict(load_file(folder / COLOUR_FILE))
    return colours


def multi_shape_scene(rng: np.random.Generator, size: int) -> Sample:
    """A shapes scene with two or more shapes: the cases where colours must bind to the right shape."""
    while True:
        s = generate(rng, size, "shapes")
        if len(s.objects) >= 2:
            return s


def sample_arrays(samples: list[Sample], lat_size: int, targets: bool = False) -> dict[str, np.ndarray]:
    """The pool's raw arrays of some samples: image, control maps, object cover and, with `targets`, the
    grounding targets (training/grounding.py's phrase_targets)."""
    out = {
        "image": np.stack([s.image for s in samples]),
        "scribble": np.stack([s.scribble[..., 0] for s in samples]),
        "depth": np.stack([s.depth[..., 0] for s in samples]),
        "pose": np.stack([s.pose for s in samples]),
        "has_person": np.array([bool(s.people) for s in samples]),
        "fg": np.stack([_object_cover(s, lat_size) for s in samples]).astype(np.float16),
    }
    if targets:
        pairs = [phrase_targets(s, load_tokenizer(), lat_size) for s in samples]
        out["masks"] = np.stack([p[0] for p in pairs])
        out["tokens"] = np.stack([p[1] for p in pairs])
    return out


def _draw(rng: np.random.Generator, count: int, size: int, focus: bool) -> tuple[dict[str, np.ndarray], list[str]]:
    """`count` samples' pool arrays and captions; a focus pool's samples carry their grounding targets."""
    samples = [(multi_shape_scene if focus else generate)(rng, size) for _ in range(count)]
    return sample_arrays(samples, size // 8, targets=focus), [s.caption for s in samples]


# Another world for the pools (training/train_vocab.py): (module, argument) whose install(argument) swaps this
# module's generate / multi_shape_scene / phrase_targets. Kept as data so that spawned pool workers, which import
# this module afresh, install it too; a patch made only in the parent would leave them drawing the old world.
world_hook: tuple[str, dict] | None = None


def install_world(hook: tuple[str, dict] | None) -> None:
    global world_hook
    if hook is not None and hook != world_hook:
        import importlib

        importlib.import_module(hook[0]).install(hook[1])
        world_hook = hook


def draw_chunk(job: tuple) -> tuple[dict[str, np.ndarray], list[str]]:
    """One worker's share of a parallel pool: `count` samples seeded by (seed, chunk), so the pool does not
    depend on the number of workers. A sixth item, the parent's world_hook, installs its world here first."""
    seed, chunk, count, size, focus, *hook = job
    install_world(hook[0] if hook else None)
    return _draw(np.random.default_rng([seed, chunk]), count, size, focus)


def _serial_chunks(n: int, size: int, seed: int, focus: bool) -> Iterator[tuple[dict[str, np.ndarray], list[str]]]:
    rng = np.random.default_rng(seed)  # one stream for the whole pool: how the CPU runs' pools were drawn
    for start in range(0, n, 64):
        yield _draw(rng, min(64, n - start), size, focus)


@torch.no_grad()
def build_pool(vae: AutoencoderKL, path: Path, n: int, size: int, seed: int, focus: bool = False,
               workers: int = 0, cache: bool = True) -> dict[str, np.ndarray]:  # fmt: skip
    """Latents, caption embeddings and control maps of n world samples (multi-shape scenes if `focus`), cached
    in `path`. The VAE and text encoder run on the VAE's device.

    "fg" holds, per latent cell, the share of it covered by objects (for the object-weighted loss).
    A focus pool also holds its grounding targets ("masks", "tokens"). With `workers`, the samples are drawn in
    parallel (seeded per chunk, a different pool from the serial one).
    """
    if path.exists():
        return dict(np.load(path))
    device = vae.device
    sf = vae.config.scaling_factor
    pool: dict[str, np.ndarray] = {}
    if workers:
        chunk = 256
        jobs = [(seed, c, min(chunk, n - c * chunk), size, focus, world_hook) for c in range(-(-n // chunk))]
        procs = multiprocessing.get_context("spawn").Pool(workers)
        chunks = procs.imap(draw_chunk, jobs)
    else:
        procs = None
        chunks = _serial_chunks(n, size, seed, focus)
    start = 0
    for arrays, captions in chunks:
        sl = slice(start, start + len(captions))
        image = arrays.pop("image")
        arrays["latents"] = (vae.encode(to_tensor(image).to(device)).latent_dist.mean * sf).half().cpu().numpy()
        arrays["emb"] = encode_text(captions, device).half().cpu().numpy()
        arrays["colour"] = colour_tables(captions)
        if not np.isfinite(arrays["emb"]).all():
            raise SystemExit("the text encoder gave non-finite caption embeddings")
        for k, v in arrays.items():
            if k not in pool:
                pool[k] = np.empty((n,) + v.shape[1:], v.dtype)
            pool[k][sl] = v
        if start // 2048 != sl.stop // 2048:
            print(f"pool {path.name} {sl.stop}/{n}", flush=True)
        start = sl.stop
    if procs:
        procs.close()
    if cache:
        np.savez(path, **pool)
    return pool


def _object_cover(sample: Sample, lat_size: int) -> np.ndarray:
    mask = np.zeros(sample.image.shape[:2], np.float32)
    for o in sample.objects:
        mask[o.mask] = 1.0
    return cv2.resize(mask, (lat_size, lat_size), interpolation=cv2.INTER_AREA)


def load_pools(cfg: dict, vae: AutoencoderKL, out: Path) -> tuple[dict[str, np.ndarray], np.ndarray, dict | None]:
    """The main pool, plus (when configured) a focus pool of multi-shape scenes appended to it.

    Returns the merged pool, the indices of the focus samples and the focus pool's grounding targets (None for a
    focus pool cached before pools held them).
    """
    size = cfg["image_size"]
    out = Path(cfg.get("pool_dir", out))  # a later run can share an earlier run's cached pools
    opts = {"workers": cfg.get("pool_workers", 0), "cache": cfg.get("cache_pools", True)}
    pool = build_pool(vae, out / "pool.npz", cfg["pool_size"], size, cfg["seed"], **opts)
    n = len(pool["latents"])
    # Object weighting is for the focus scenes, where colours must bind to shapes (and is how the shipped model
    # was trained: its main pool predates the weighting).
    pool["fg"] = np.zeros((n,) + pool["latents"].shape[2:], np.float16)
    focus = cfg.get("focus")
    if not focus:
        return pool, np.empty(0, int), None
    extra = build_pool(vae, out / "pool-focus.npz", focus["pool_size"], size, focus["seed"], True, **opts)
    targets = {k: extra.pop(k) for k in ("masks", "tokens") if k in extra} or None
    merged = {k: np.concatenate([pool[k], extra[k]]) for k in pool}
    return merged, np.arange(n, n + len(extra["latents"])), targets


def load_grounding(cfg: dict, out: Path, pool: dict, focus_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Shape masks and phrase tokens of the focus pool's samples (for the grounding loss), row i = focus sample i,
    for a focus pool cached before pools held them: its seeded samples are drawn again."""
    focus, size = cfg["focus"], cfg["image_size"]

    def samples(count: int = focus["pool_size"]) -> list[Sample]:  # the focus pool's own draws, in order (build_pool)
        rng = np.random.default_rng(focus["seed"])
        return [multi_shape_scene(rng, size) for _ in range(count)]

    path = Path(cfg.get("pool_dir", out)) / "pool-focus-ground.npz"
    if not path.exists():  # the regenerated captions must be the pooled ones, or the masks would belong to other pictures
        emb = encode_text([s.caption for s in samples(4)])[:, : cfg["max_text_tokens"]]
        if not torch.allclose(emb, torch.from_numpy(pool["emb"][focus_idx[:4]].astype(np.float32)), atol=2e-2):
            raise SystemExit("the focus pool was drawn by another world generator; delete it to rebuild it")
    return build_targets(path, samples, load_minilm()[0], size // 8)


def phase_setting(cfg: dict, step: int, key: str, default):
    """A setting as the config's "phases" have it at this step: each phase sets some keys from its from_step on,
    and later phases win."""
    for phase in cfg.get("phases", []):
        if step > phase["from_step"] and key in phase:
            default = phase[key]
    return default


def batch_mix(cfg: dict, step: int) -> tuple[dict[str, int], dict[str, float]]:
    """Samples per control kind in a batch, and the share of each drawn from the focus pool, at this step."""
    focus = cfg.get("focus") or {}
    mix = phase_setting(cfg, step, "mix", cfg["mix"])
    share = phase_setting(cfg, step, "focus_share", focus.get("share", {}))
    if step <= focus.get("from_step", 0):
        share = {}
    counts = {k: int(round(mix[k] * cfg["batch_size"])) for k in (*KINDS, "none")}
    return counts, share


def learning_rate(cfg: dict, step: int) -> float:
    """Linear warm-up, then constant; cosine down to lr_min from decay_start on, when configured."""
    lr = cfg["lr"] * min(1.0, step / cfg["warmup"])
    start = cfg.get("decay_start")
    if start is not None and step > start:
        frac = min(1.0, (step - start) / max(1, cfg["steps"] - start))
        lr = cfg["lr_min"] + (cfg["lr"] - cfg["lr_min"]) * 0.5 * (1 + math.cos(math.pi * frac))
    return lr


def batch_grounding(maps: dict[str, list[torch.Tensor]], groups: list[tuple[str, np.ndarray]], idx: np.ndarray,
                    grounded: np.ndarray, first: int, targets: dict, min_res: int) -> torch.Tensor:  # fmt: skip
    """The grounding loss of the `grounded` batch rows (focus samples that kept their caption), over the UNet's and
    each ControlNet's maps. Focus sample i sits at pool index first + i."""

    def term(name: str, batch_rows: np.ndarray, sel: np.ndarray) -> torch.Tensor | None:
        if not sel.any():
            return None
        t = batch_rows[sel] - first
        sel_t = torch.from_numpy(sel).to(targets["masks"].device)
        masks, tokens = rows(targets["masks"], t).float(), rows(targets["tokens"], t)
        return grounding_loss([a[sel_t] for a in maps[name]], masks, tokens, min_res)

    terms = [term("unet", idx, grounded)]
    offset = 0
    for kind, gi in groups:
        if kind != "none":
            terms.append(term(f"cn_{kind}", gi, grounded[offset : offset + len(gi)]))
        offset += len(gi)
    terms = [t for t in terms if t is not None]
    return torch.stack(terms).mean() if terms else targets["masks"].new_zeros(())


def loss_weights(snr: torch.Tensor, gamma: float, x0_floor: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Per-sample weights of the epsilon loss: min-SNR-γ, with a floor under the weight it implies on x0 errors.

    An epsilon loss weighs x0 errors by the SNR, which is tiny at the high noise levels where colours get bound
    to shapes; the floor (for the focus scenes) makes a swapped colour cost something there.
    """
    return torch.clamp(torch.maximum(snr, torch.as_tensor(x0_floor)), max=gamma) / snr


def rows(table: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """table[idx], indexed on the table's device."""
    return table[torch.from_numpy(idx).to(table.device)]


def control_tensor(pool: dict[str, torch.Tensor], kind: str, idx: np.ndarray) -> torch.Tensor:
    arr = rows(pool[kind], idx)
    if kind != "pose":
        arr = arr[..., None].expand(-1, -1, -1, 3)
    # ControlNets take control images in [0, 1], as the pipeline's image processor gives them.
    return arr.permute(0, 3, 1, 2).float().div(255.0)


def controlnet_residuals(nets: dict, groups: list[tuple[str, np.ndarray]], pool: dict[str, torch.Tensor],
                         x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> dict:  # fmt: skip
    """The ControlNets' residuals for a batch grouped by control kind (zeros for "none" rows), as UNet kwargs.
    Functional (index_put), so gradients reach ControlNets that train."""
    down: list[torch.Tensor] | None = None
    mid = None
    offset = 0
    for kind, gi in groups:
        sl = slice(offset, offset + len(gi))
        offset += len(gi)
        if kind == "none":
            continue
        d, m = nets[kind](x[sl], t[sl], emb[sl], control_tensor(pool, kind, gi), return_dict=False)
        if down is None:
            down = [r.new_zeros((len(x),) + r.shape[1:]) for r in d]
            mid = m.new_zeros((len(x),) + m.shape[1:])
        at = (torch.arange(sl.start, sl.stop, device=x.device),)
        down = [full.index_put(at, r) for full, r in zip(down, d)]
        mid = mid.index_put(at, m)
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def trainable_parameters(modules: torch.nn.Module, only: list[str] | None) -> list[torch.nn.Parameter]:
    """All parameters, or (a config's "train_only") those whose names hold one of these parts, the rest frozen:
    a fine-tune of some layers (e.g. "attn2.", the cross-attention) keeps the rest as it was."""
    for name, p in modules.named_parameters():
        p.requires_grad_(not only or any(part in name for part in only))
    return [p for p in modules.parameters() if p.requires_grad]


def main() -> None:
    cfg, out = start_run("training/configs/diffusion.json")
    t_run = time.time()  # a time budget counts pool building too

    device = torch.device(cfg.get("device", "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    vae = AutoencoderKL.from_pretrained(cfg["vae_dir"], torch_dtype=torch.float32).eval().to(device)
    pool_np, focus_idx, targets_np = load_pools(cfg, vae, out)
    n = len(pool_np["latents"])
    person_idx = np.flatnonzero(pool_np["has_person"])
    first_focus = focus_idx[0] if len(focus_idx) else n  # the focus pool is appended after the main one
    empty_emb = encode_text([""], device)[0]
    ground = cfg.get("grounding")
    if ground and targets_np is None:
        targets_np = load_grounding(cfg, out, pool_np, focus_idx)
    # The whole pool lives on the training device (on the CPU these tensors share the arrays' memory).
    pool = {k: torch.from_numpy(v).to(device) for k, v in pool_np.items()}
    targets = {k: torch.from_numpy(v).to(device) for k, v in (targets_np or {}).items()}
    del pool_np, targets_np

    state = load_state(out)
    lat = cfg["image_size"] // 8
    if state:
        unet = UNet2DConditionModel.from_pretrained(out / "unet")
        nets = {k: ControlNetModel.from_pretrained(out / f"controlnet-{k}") for k in KINDS}
        colours = load_colours(cfg, out)
    elif cfg.get("init_from"):  # warm start from an exported model or an earlier run, on a new machine
        unet, nets = warm_start(cfg, lat)
        colours = load_colours(cfg, Path(cfg["init_from"]))
    else:
        unet = build_unet(cfg, lat)
        nets = {k: new_controlnet(cfg, unet) for k in KINDS}
        colours = load_colours(cfg, out)
    if colours is not None and "colour" not in pool:
        raise SystemExit("the cached pools predate colour tables: delete them to rebuild")
    named = {"unet": unet, **{f"cn_{k}": v for k, v in nets.items()}}
    modules = torch.nn.ModuleDict({**named, **({"colour": colours} if colours is not None else {})}).to(device)
    ema = copy.deepcopy(modules).requires_grad_(False)
    maps: dict[str, list[torch.Tensor]] = {name: [] for name in named}
    if ground:
        for name, module in named.items():
            record_cross_attention(module, maps[name])
    trainable = trainable_parameters(modules, cfg.get("train_only"))
    groups = [{"params": trainable}]
    if colours is not None and cfg.get("colour_lr_scale"):  # the new path starts at zero: let it grow faster
        mine = {id(p) for p in colours.parameters()}
        groups = [{"params": [p for p in trainable if id(p) not in mine]},
                  {"params": [p for p in colours.parameters() if p.requires_grad], "scale": cfg["colour_lr_scale"]}]  # fmt: skip
    opt = torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=1e-2)
    start, fresh = 0, False
    if state:
        try:
            opt.load_state_dict(state["optimizer"])
        except ValueError:  # the config changed the parameter groups: the moments start afresh
            print("optimizer state does not fit this config's parameter groups: fresh moments", flush=True)
            fresh = True
        ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
        print(f"resumed at step {start}")
    sched = DDPMScheduler(**NOISE_SCHEDULE)
    alphas = sched.alphas_cumprod
    snr = (alphas / (1 - alphas)).to(device)
    rng = np.random.default_rng(cfg["seed"] * 7919 + start)
    log = LossLog(out, cfg.get("log_every", 10))
    modules.train()
    # the EMA of a frozen weight is that weight: average only what trains
    ema_params = [e for e, p in zip(ema.parameters(), modules.parameters()) if p.requires_grad]
    # With a time budget (a lent GPU's minutes), the pace of steps 10-40 sets how many steps the run takes.
    budget, t_pace = cfg.get("time_budget_s"), 0.0
    step = start
    while step < cfg["steps"]:
        step += 1
        if budget and step == start + 10:
            t_pace = time.time()
        if budget and step == start + 40:
            pace = (time.time() - t_pace) / 30
            cfg["steps"] = step + max(1, int((budget - (time.time() - t_run)) / pace))
            print(f"time budget {budget} s at {pace * 1000:.0f} ms a step: the run takes {cfg['steps']} steps", flush=True)
        lr = learning_rate(cfg, step)
        if fresh:  # fresh Adam moments move every weight by about lr at once: ramp up over 100 steps
            lr *= min(1.0, (step - start) / 100)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("scale", 1.0)
        groups: list[tuple[str, np.ndarray]] = []
        mix, focus_share = batch_mix(cfg, step)
        for kind, c in mix.items():
            src = person_idx if kind == "pose" else n
            n_focus = int(round(focus_share.get(kind, 0.0) * c)) if len(focus_idx) else 0
            groups.append((kind, np.concatenate([rng.choice(focus_idx, size=n_focus), rng.choice(src, size=c - n_focus)])))
        idx = np.concatenate([g[1] for g in groups])
        x0 = rows(pool["latents"], idx).float()
        emb = rows(pool["emb"], idx).float()
        if colours is not None:  # the dictionary's colours as numbers, added to their tokens' states
            emb = emb + colours(rows(pool["colour"], idx).float())
        drop = torch.from_numpy(rng.random(len(idx)) < cfg["caption_dropout"]).to(device)
        emb[drop] = empty_emb
        for m in maps.values():
            m.clear()
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), device=device)
        xt = sched.add_noise(x0, noise, t)
        pred = unet(xt, t, emb, **controlnet_residuals(nets, groups, pool, xt, t, emb)).sample
        is_focus = idx >= first_focus
        x0_floor = phase_setting(cfg, step, "x0_floor", (cfg.get("focus") or {}).get("x0_floor", 0.0))
        floor = torch.from_numpy(is_focus * x0_floor).float().to(device)
        weight = loss_weights(snr[t], cfg["min_snr_gamma"], floor)
        # Colour errors on small shapes cost few pixels; weighting object cells makes binding colour to shape pay off.
        fg = rows(pool["fg"], idx).float()[:, None]
        pixel_w = 1.0 + cfg.get("fg_weight", 0.0) * fg
        per_sample = (F.mse_loss(pred, noise, reduction="none") * pixel_w).mean(dim=(1, 2, 3)) / pixel_w.mean(dim=(1, 2, 3))
        loss = (per_sample * weight).mean()
        parts = {}
        if ground:
            min_res = phase_setting(cfg, step, "grounding_min_res", ground.get("min_res", 8))
            grounded = is_focus & ~drop.cpu().numpy()
            parts["ground"] = batch_grounding(maps, groups, idx, grounded, first_focus, targets, min_res)
            loss = loss + ground["weight"] * parts["ground"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        decay = min(cfg["ema_decay"], (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, trainable, 1 - decay)
        if not math.isfinite(loss.item()):
            raise SystemExit(f"loss became {loss.item()} at step {step}")
        log.add(step, loss.item(), **{k: v.item() for k, v in parts.items()})
        if step % cfg["save_every"] == 0 or step == cfg["steps"]:
            unet.save_pretrained(out / "unet")
            for k, net in nets.items():
                net.save_pretrained(out / f"controlnet-{k}")
            ema["unet"].save_pretrained(out / "ema" / "unet")
            if colours is not None:
                from safetensors.torch import save_file

                save_file(colours.state_dict(), out / COLOUR_FILE)
                save_file(ema["colour"].state_dict(), out / "ema" / COLOUR_FILE)
            for k in KINDS:
                ema[f"cn_{k}"].save_pretrained(out / "ema" / f"controlnet-{k}")
            save_state(out, step, opt, {"ema": ema.state_dict()})
            if cfg.get("keep_ema"):  # a snapshot per save, to pick the best EMA from afterwards
                shutil.copytree(out / "ema", out / f"ema-{step}", dirs_exist_ok=True)


if __name__ == "__main__":
    main()
