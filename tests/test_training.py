"""The training scripts' pieces that decide what gets shipped: warm starts that grow the model, the LR schedule,
the grounding loss that ties caption phrases to shapes."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
from tiny_model import tiny_controlnet, tiny_unet

from noisebrush.engine.text_encoder import load_minilm
from training.grounding import grounding_loss, phrase_targets, record_cross_attention
from training.metrics import color_checks
from training.train_diffusion import (
    NOISE_SCHEDULE,
    control_tensor,
    draw_chunk,
    grow_into,
    learning_rate,
    loss_weights,
    trainable_parameters,
)
from training.world import PALETTE, Sample, WorldObject


def test_growing_attention_keeps_what_the_model_computes():
    old = tiny_unet()
    # The same UNet with cross-attention at its first level too (as diffusion-grow.json asks).
    grown = UNet2DConditionModel.from_config(
        {**old.config, "down_block_types": ("CrossAttnDownBlock2D",) * 2, "up_block_types": ("CrossAttnUpBlock2D",) * 2}
    )
    added = grow_into(grown, old)
    assert added == ["down_blocks.0.attentions.0", "up_blocks.1.attentions.0", "up_blocks.1.attentions.1"]
    old_net = tiny_controlnet(old, seed=1)
    net = ControlNetModel.from_unet(grown, conditioning_embedding_out_channels=(8, 8, 8, 16))
    assert grow_into(net, old_net) == ["down_blocks.0.attentions.0"]

    x, t, emb, cond = torch.randn(2, 4, 8, 8), torch.tensor([900, 50]), torch.randn(2, 6, 384), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        d0, m0 = old_net(x, t, emb, cond, return_dict=False)
        d1, m1 = net(x, t, emb, cond, return_dict=False)
        before = old(x, t, emb, down_block_additional_residuals=d0, mid_block_additional_residual=m0).sample
        after = grown(x, t, emb, down_block_additional_residuals=d1, mid_block_additional_residual=m1).sample
    assert torch.allclose(before, after, atol=1e-6)
    # and the new blocks are trainable: their projections get gradients
    grown(x, t, emb).sample.square().mean().backward()
    assert grown.down_blocks[0].attentions[0].proj_out.weight.grad.abs().sum() > 0


def test_a_cross_attention_fine_tune_trains_only_the_text_path():
    unet = tiny_unet()
    modules = torch.nn.ModuleDict({"unet": unet, "cn_scribble": tiny_controlnet(unet, seed=1)})
    trainable = trainable_parameters(modules, ["attn2."])
    names = [n for n, p in modules.named_parameters() if p.requires_grad]
    assert trainable and len(trainable) == len(names) < len(list(modules.parameters()))
    assert all(".attn2." in n for n in names) and any(n.startswith("cn_scribble.") for n in names)
    assert {n.rsplit(".", 2)[-2] for n in names} >= {"to_k", "to_v"}  # the token states' own projections
    # the frozen rest gets no gradient
    x, emb = torch.randn(1, 4, 8, 8), torch.randn(1, 6, 384)
    unet(x, torch.tensor([500]), emb).sample.square().mean().backward()
    assert unet.conv_in.weight.grad is None
    assert unet.down_blocks[-1].attentions[0].transformer_blocks[0].attn2.to_v.weight.grad is not None
    assert len(trainable_parameters(modules, None)) == len(list(modules.parameters()))  # no list: everything again


def test_learning_rate_warms_up_then_decays_to_its_floor():
    cfg = {"lr": 3e-4, "lr_min": 3e-5, "warmup": 100, "decay_start": 1000, "steps": 5000}
    assert learning_rate(cfg, 50) == 1.5e-4
    assert learning_rate(cfg, 800) == 3e-4
    assert 3e-5 < learning_rate(cfg, 3000) < 3e-4
    assert abs(learning_rate(cfg, 5000) - 3e-5) < 1e-12
    assert learning_rate({"lr": 3e-4, "warmup": 100, "steps": 5000}, 4000) == 3e-4  # no decay configured


def test_focus_scenes_weigh_high_noise_where_colours_bind():
    alphas = DDPMScheduler(**NOISE_SCHEDULE).alphas_cumprod
    snr = (alphas / (1 - alphas))[torch.tensor([999, 900, 500, 50])]
    plain = loss_weights(snr, 5.0)
    assert plain[:3].tolist() == [1.0, 1.0, 1.0] and plain[3] == 5.0 / snr[3]  # min-SNR-5
    focus = loss_weights(snr, 5.0, torch.tensor([0.1, 0.1, 0.1, 0.1]))
    assert focus[0] > 20 and focus[1] > 6  # x0 errors there now cost 0.1 of their size, not 0.005
    assert torch.equal(focus[2:], plain[2:])  # mid and low noise: unchanged


def _two_triangles(caption: str) -> tuple[np.ndarray, Sample]:
    """Pink triangle left, yellow triangle right, painted the other way round in the output."""
    left, right = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    left[20:44, 4:28], right[20:44, 36:60] = True, True
    objects = [WorldObject("triangle", "pink", left, 200), WorldObject("triangle", "yellow", right, 200)]
    out = np.zeros((64, 64, 3), np.uint8)
    out[:] = PALETTE["blue"]
    out[left], out[right] = PALETTE["yellow"], PALETTE["pink"]
    blank = np.zeros((64, 64, 3), np.uint8)
    return out, Sample(out, caption, blank, blank, blank, "blue", objects)


def test_colour_check_accepts_what_the_caption_leaves_open():
    out, open_caption = _two_triangles("a pink triangle and a yellow triangle on a blue background")
    assert color_checks(out, open_caption) == [True, True, True]
    assert color_checks(out, open_caption, strict=True) == [False, False, True]
    out, pinned = _two_triangles("a pink triangle to the left of a yellow triangle on a blue background")
    assert color_checks(out, pinned) == [False, False, True]


def test_grounded_attention_computes_what_diffusers_does_and_keeps_the_maps():
    unet = tiny_unet()
    x, t, emb = torch.randn(2, 4, 8, 8), torch.tensor([900, 50]), torch.randn(2, 6, 384)
    with torch.no_grad():
        stock = unet(x, t, emb).sample
        maps: list[torch.Tensor] = []
        assert record_cross_attention(unet, maps) == 4  # one down, one mid, two up transformer blocks
        grounded = unet(x, t, emb).sample
    assert torch.allclose(stock, grounded, atol=1e-5)
    assert [m.shape for m in maps] == [(2, 16, 6)] * 4  # (batch, 4×4 pixels, tokens) at the cross-attention level
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 16))  # each pixel's attention over the tokens


def test_grounding_loss_is_low_when_a_phrase_attends_inside_its_shape():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 2:5, 2:5] = 1.0
    tokens = torch.zeros(1, 1, 4, dtype=torch.bool)
    tokens[0, 0, 1:3] = True  # "red", "star"
    attn = torch.full((1, 64, 4), 0.25)
    inside = attn.clone()
    inside[0, :, 1:3] = 0.0
    inside[0, mask.flatten() > 0, 1:3] = 0.5
    assert grounding_loss([inside], mask, tokens).item() < 1e-6
    # spread evenly, the phrase puts 9/64 of its attention on the shape
    assert abs(grounding_loss([attn], mask, tokens).item() - (1 - 9 / 64) ** 2) < 1e-6
    assert grounding_loss([attn[:, :16]], mask, tokens).item() == 0.0  # coarser than min_res: skipped


def test_each_caption_phrase_is_tied_to_its_own_shape():
    tokenizer = load_minilm()[0]
    star, square = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    star[8:24, 8:24], square[40:56, 40:56] = True, True
    blank = np.zeros((64, 64, 3), np.uint8)
    objects = [WorldObject("star", "red", star, 200), WorldObject("square", "blue", square, 150)]
    sample = Sample(blank, "a blue background with a red star and a blue box", blank, blank, blank, "blue", objects)
    masks, tokens = phrase_targets(sample, tokenizer, 8)
    ids = tokenizer(sample.caption, padding="max_length", truncation=True).input_ids
    words = [tokenizer.convert_ids_to_tokens([ids[i] for i in np.flatnonzero(row)]) for row in tokens]
    assert words == [["red", "star"], ["blue", "box"], []]  # not the background's "blue"
    assert masks[0][1:3, 1:3].min() == 1.0 and masks[0][5:, 5:].max() == 0.0
    assert masks[1][5:7, 5:7].min() == 1.0 and masks[2].max() == 0.0


def test_a_parallel_pool_chunk_is_seeded_by_its_place_and_carries_grounding_targets():
    # Each chunk draws from its own (seed, chunk) stream, so a pool is the same for any number of workers.
    a, caps_a = draw_chunk((5, 3, 4, 128, True))
    b, caps_b = draw_chunk((5, 3, 4, 128, True))
    _, caps_c = draw_chunk((5, 4, 4, 128, True))
    assert caps_a == caps_b and caps_a != caps_c
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # focus chunks are multi-shape scenes whose phrases' tokens and masks come along for the grounding loss
    assert a["image"].shape == (4, 128, 128, 3) and a["scribble"].shape == (4, 128, 128)
    assert a["masks"].shape == (4, 3, 16, 16) and a["tokens"].shape == (4, 3, 32)
    assert (a["tokens"].sum(axis=(1, 2)) >= 2).all()  # at least two shapes named, each by a colour and a shape word
    for masks, tokens in zip(a["masks"], a["tokens"]):
        assert all(m.sum() > 0 for m, t in zip(masks, tokens) if t.any())


def test_control_maps_reach_the_controlnets_as_three_channel_images_in_0_1():
    pool = {
        "scribble": torch.from_numpy(np.stack([np.full((8, 8), v, np.uint8) for v in (0, 255, 51)])),
        "pose": torch.from_numpy(np.arange(3 * 8 * 8 * 3, dtype=np.uint8).reshape(3, 8, 8, 3)),
    }
    scribble = control_tensor(pool, "scribble", np.array([2, 1]))
    assert scribble.shape == (2, 3, 8, 8) and scribble.dtype == torch.float32
    assert torch.allclose(scribble[0], torch.full((3, 8, 8), 0.2)) and (scribble[1] == 1.0).all()
    pose = control_tensor(pool, "pose", np.array([1]))
    assert torch.equal(pose[0], pool["pose"][1].permute(2, 0, 1).float() / 255.0)


def test_a_training_state_loads_without_unpickling_code(tmp_path):
    import torch

    from training.common import load_state, save_state

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_state(tmp_path, 7, opt, {"ema": net.state_dict()})
    state = load_state(tmp_path)  # weights_only=True: only tensors, numbers and containers
    assert state["step"] == 7 and torch.equal(state["ema"]["weight"], net.state_dict()["weight"])
