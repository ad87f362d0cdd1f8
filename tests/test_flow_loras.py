"""LoRAs for SD3 and Flux: told from their keys (diffusers/peft and kohya layouts), listed by family, refused on a
model of another family, and on the tiny models they change the picture by their weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import logged_engine
from tiny_flow import set_defaults, write_flux_folder, write_sd3_folder

from noisebrush.engine.catalog import scan
from noisebrush.engine.events import Failed, Finished
from noisebrush.engine.request import GenerationRequest, LoraSpec


def write_flow_lora(folder: Path, model: Path, family: str, seed: int = 1) -> str:
    """A LoRA over the tiny transformer's attention (peft, saved by the pipeline as diffusers writes it)."""
    from diffusers import FluxPipeline, FluxTransformer2DModel, SD3Transformer2DModel, StableDiffusion3Pipeline
    from helpers import add_random_lora
    from peft import get_peft_model_state_dict

    cls = FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel
    transformer = add_random_lora(cls.from_pretrained(model / "transformer"), seed, 1.0)
    pipe = FluxPipeline if family == "flux" else StableDiffusion3Pipeline
    pipe.save_lora_weights(str(folder), transformer_lora_layers=get_peft_model_state_dict(transformer),
                           safe_serialization=True)  # fmt: skip
    return str(folder / "pytorch_lora_weights.safetensors")


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow-lora")
    models = {"sd3": write_sd3_folder(root / "tiny-sd3", False), "flux": write_flux_folder(root / "tiny-flux", False)}
    for family, folder in list(models.items()):
        set_defaults(folder)
        (root / "loras" / family).mkdir(parents=True)
        models[f"{family}-lora"] = Path(write_flow_lora(root / "loras" / family, folder, family))
    return models


def test_flow_loras_are_listed_by_family_in_every_layout(flow, tmp_path):
    import shutil

    from safetensors.torch import save_file

    for family in ("sd3", "flux"):
        shutil.copy(flow[f"{family}-lora"], tmp_path / f"{family}-diffusers.safetensors")
    t = lambda *shape: torch.zeros(*shape)  # noqa: E731
    layouts = {  # key names as kohya's sd-scripts, ai-toolkit and diffusers write them; real widths where they tell
        "flux-kohya": {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": t(4, 3072)},
        "flux-kohya-single": {"lora_unet_single_blocks_3_linear1.lora_down.weight": t(4, 3072)},
        "flux-lora-transformer": {"lora_transformer_single_transformer_blocks_0_attn_to_q.lora_A.weight": t(4, 3072)},
        "flux-diffusers-double-only": {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": t(4, 3072)},
        "sd3-diffusers": {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": t(4, 1536)},
        "sd35-large-diffusers": {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": t(4, 2432)},
        "sd3-kohya": {"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": t(4, 1536)},
        "sd15-kohya": {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": t(4, 320)},
        "sdxl-diffusers": {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": t(4, 2048)},
    }  # fmt: skip
    for name, tensors in layouts.items():
        save_file(tensors, str(tmp_path / f"{name}.safetensors"))
    got = {e.name.removesuffix(".safetensors"): e.family for e in scan(tmp_path) if e.role == "lora"}
    want = {name: name.split("-")[0].replace("sd35", "sd3") for name in [*layouts, "sd3-diffusers", "flux-diffusers"]}
    assert got == want


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_a_flow_lora_changes_the_picture_by_its_weight(flow, family):
    base = GenerationRequest("a red circle", steps=3, seed=2, width=64, height=64, model=str(flow[family]), guidance=4.0)
    lora = str(flow[f"{family}-lora"])
    with logged_engine() as eng:
        run = lambda req: eng.log.wait_end(eng.submit(req))  # noqa: E731
        plain = run(base)
        assert isinstance(plain, Finished), plain
        strong = run(base.replace(loras=(LoraSpec(lora, 1.0),)))
        assert isinstance(strong, Finished), strong
        assert np.abs(strong.image.astype(int) - plain.image).mean() > 1
        zero = run(base.replace(loras=(LoraSpec(lora, 0.0),))).image
        assert np.abs(zero.astype(int) - plain.image).max() <= 1  # weight 0 is as if it were not there
        assert np.array_equal(run(base).image, plain.image)  # not asked for: switched off again


def test_a_lora_of_another_family_is_refused_with_the_reason(flow, tiny_model):
    cases = ((flow["sd3"], flow["flux-lora"], "is a Flux LoRA, but tiny-sd3 is an SD3 model"),
             (flow["flux"], flow["sd3-lora"], "is an SD3 LoRA, but tiny-flux is a Flux model"),
             (Path(tiny_model), flow["flux-lora"], "is a Flux LoRA, but tiny is an SD1.5-family model"))  # fmt: skip
    with logged_engine() as eng:
        for model, lora, says in cases:
            req = GenerationRequest("x", steps=1, width=64, height=64, model=str(model), loras=(LoraSpec(str(lora), 1.0),))
            end = eng.log.wait_end(eng.submit(req))
            assert isinstance(end, Failed) and says in end.message and "choose a LoRA made for it" in end.message, end
