"""Colour words as numbers (engine/colour_words.py): the dictionary, the phrase matcher on MiniLM's word pieces,
and the projection the embedded model adds to its colour tokens."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from noisebrush.engine.backends.local import LocalBackend
from noisebrush.engine.colour_words import ColourProjection, ColourWords, load_dictionary
from noisebrush.engine.events import Finished
from noisebrush.engine.paths import default_model_dir
from noisebrush.engine.request import GenerationRequest
from noisebrush.engine.text_encoder import MAX_TOKENS, minilm_dir
from training.colour_vocab import load_vocab


@pytest.fixture(scope="module")
def words() -> ColourWords:
    return ColourWords(minilm_dir() / "tokenizer.json", load_dictionary(), MAX_TOKENS)


def found(words: ColourWords, text: str) -> list[tuple[str, tuple]]:
    enc = words.tokenizer.encode(text)
    return [(" ".join(enc.tokens[p.start : p.end]).replace(" ##", ""), tuple(round(v) for v in p.lab))
            for p in words.phrases(enc.ids)]  # fmt: skip


def test_the_dictionary_holds_every_name_training_held_out_as_cielab():
    names = load_dictionary()["names"]
    vocab = load_vocab()
    assert set(vocab.held_out) <= set(names) and set(vocab.train) <= set(names) and len(names) >= 900
    lab = np.array(list(names.values()))
    assert lab[:, 0].min() >= 0 and lab[:, 0].max() <= 100.01 and np.abs(lab[:, 1:]).max() < 130
    assert names["white"][0] > 90 and names["black"][0] < 20 and names["red"][1] > 50  # red is +a


def test_colour_phrases_are_found_whole_and_longest_first(words):
    names = load_dictionary()["names"]
    crimson, navy = (tuple(round(v) for v in names[n]) for n in ("crimson", "navy"))
    assert found(words, "A Crimson circle on a navy background") == [("crimson", crimson), ("navy", navy)]
    assert [n for n, _ in found(words, "a lime circle and a coral square on a teal background")] == ["lime", "coral", "teal"]
    assert [n for n, _ in found(words, "a dark olive green star")] == ["dark olive green"]  # one name, not three
    assert found(words, "light blue")[0][1] == tuple(round(v) for v in names["light blue"])  # the name beats a modifier
    (phrase, lab), = found(words, "a pale reddish brown square")  # fmt: skip
    assert phrase == "pale reddish brown" and lab[0] > names["brown"][0] + 10  # paler than brown
    assert found(words, "a redwood tree") == [] and found(words, "a blorple circle") == []  # whole words only


def test_each_token_of_a_phrase_gets_its_colour_in_the_encoders_positions(words):
    table = words.table("a dark olive green star on a navy background")
    assert table.shape == (MAX_TOKENS, 4) and table[0, 3] == 0  # [CLS] first, as the text encoder sees it
    tokens = words.tokenizer.encode("a dark olive green star on a navy background").tokens
    marked = [t for t, m in zip(tokens, table[:, 3]) if m]
    assert marked == ["dark", "olive", "green", "navy"]


def test_a_zero_projection_changes_nothing_and_a_trained_one_changes_only_colour_tokens(words):
    table = torch.from_numpy(words.table("a crimson circle on a navy background"))
    assert torch.count_nonzero(ColourProjection()(table)) == 0  # trained from zero: starts as the model was
    proj = ColourProjection()
    torch.nn.init.normal_(proj.linear.weight)
    out = proj(table)
    assert torch.equal(out[table[:, 3] == 0], torch.zeros_like(out[table[:, 3] == 0]))
    assert (out[table[:, 3] == 1].abs().sum(dim=1) > 0).all()


def test_a_model_folder_naming_a_projection_paints_its_colours_and_keeps_its_seed(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(default_model_dir(), folder, ignore=shutil.ignore_patterns("ip-adapter"))
    proj = ColourProjection()
    torch.manual_seed(0)
    torch.nn.init.normal_(proj.linear.weight, std=2.0)
    save_file(proj.state_dict(), folder / "colour_words.safetensors")
    meta = json.loads((folder / "noisebrush.json").read_text())
    meta["colour_words"] = "colour_words.safetensors"
    (folder / "noisebrush.json").write_text(json.dumps(meta))
    req = GenerationRequest("a crimson circle on a navy background", steps=4, seed=5)

    def paint(model: str) -> np.ndarray:
        events: list = []
        LocalBackend(preview_interval_s=1.0, quick_start=False).run(1, req.replace(model=model), events.append, threading.Event())
        assert isinstance(events[-1], Finished)
        return events[-1].image

    with_colours = paint(str(folder))
    assert np.array_equal(with_colours, paint(str(folder)))  # one seed, one picture
    meta.pop("colour_words")
    (folder / "noisebrush.json").write_text(json.dumps(meta))
    assert np.abs(with_colours.astype(int) - paint(str(folder))).mean() > 1  # the projection reached the UNet


def test_training_pools_carry_the_apps_colour_tables():
    from training.train_diffusion import colour_tables, trainable_parameters

    tables = colour_tables(["a crimson circle", "a circle"])
    assert tables.shape == (2, MAX_TOKENS, 4) and tables[0, :, 3].sum() == 1 and tables[1, :, 3].sum() == 0
    modules = torch.nn.ModuleDict({"colour": ColourProjection(), "other": torch.nn.Linear(2, 2)})
    assert len(trainable_parameters(modules, ["attn2.", "colour."])) == 2  # the projection's weight and bias
