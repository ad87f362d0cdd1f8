"""The open-vocabulary world (issue 17): held-out names, phrasings and strokes never reach training captions,
and each caption phrase points at its own shape's colour name and shape word."""

from __future__ import annotations

import numpy as np

from training.colour_vocab import ALWAYS_TRAIN, delta_e, load_vocab
from training.vocab_world import OBJECT_FORMS, STROKES, TEMPLATES, draw_strokes, vocab_scene
from training.world import PALETTE, SHAPE_WORDS, _fill, _shape_polygon


def test_the_held_out_names_are_a_fifth_and_never_the_basic_or_the_issues_words():
    vocab = load_vocab()
    held, train = set(vocab.held_out), set(vocab.train)
    assert not held & train and 0.18 < len(held) / (len(held) + len(train)) < 0.22
    assert set(PALETTE) <= train and {"crimson", "navy", "golden", "violet"} <= train
    assert not held & set(ALWAYS_TRAIN)
    assert delta_e(vocab.rgb("crimson"), (220, 20, 60)) < 1  # the CSS crimson, not XKCD's


def test_training_scenes_use_training_names_templates_and_words_only():
    held = set(load_vocab().held_out)
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = vocab_scene(rng)
        assert not set(s.rgb) & held
        for word in ("backdrop", "coloured", "behind", "wall"):
            assert word not in s.caption  # the held-out templates' words
    assert not set(TEMPLATES["train"]) & set(TEMPLATES["held_out"])
    assert not set(OBJECT_FORMS["train"]) & set(OBJECT_FORMS["held_out"])


def test_the_grammar_gives_many_shapes_holds_whole_ones_out_and_never_the_benchs_held_out_words():
    assert len(TEMPLATES["grammar"]) > 50 and len(OBJECT_FORMS["grammar"]) > 20
    assert not set(TEMPLATES["grammar"]) & set(TEMPLATES["grammar_held_out"])
    rng = np.random.default_rng(3)
    captions = [vocab_scene(rng, templates="grammar").caption for _ in range(300)]
    for word in ("backdrop", "coloured", "behind", "wall", " upon ", "surface", "that is"):
        assert not any(word in c for c in captions)  # the bench's held-out words, and the grammar's own
    assert any(" background" not in c and " on " not in c for c in captions)  # sometimes no ground named at all


def test_each_phrase_points_at_its_shapes_colour_and_word_and_the_picture_has_that_colour():
    rng = np.random.default_rng(1)
    for templates in ("train", "held_out", "grammar", "grammar_held_out"):
        for _ in range(50):
            s = vocab_scene(rng, names="held_out", templates=templates)
            for obj, ((a, b), (c, d)) in zip(s.objects, s.phrases):
                assert s.caption[a:b] == obj.color
                assert s.caption[c:d] in SHAPE_WORDS[obj.kind]
                if obj.mask.any():
                    assert tuple(s.image[obj.mask][0]) == s.rgb[obj.color]


def test_every_stroke_style_draws_near_the_outline():
    poly = _shape_polygon("square", 64, 64, 30, 0.1)
    mask = _fill(128, poly)
    for style in STROKES["train"] + STROKES["held_out"]:
        canvas = np.zeros((128, 128, 3), np.uint8)
        draw_strokes(canvas, poly, mask, style, np.random.default_rng(2))
        ys, xs = np.nonzero(canvas[..., 0] > 127)
        assert len(xs) > 60, style
        assert xs.min() > 10 and xs.max() < 118, style  # overshoot stays a few pixels


def test_spawned_pool_workers_draw_the_vocabulary_world_too():
    """A GPU run draws its pools in spawned workers, which import train_diffusion afresh: the world must travel
    with the job, or they silently draw the old ten-colour world."""
    import multiprocessing

    from training import train_diffusion

    hook = ("training.train_vocab", {"share": 1.0, "focus_share": 1.0})
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        _, old = pool.apply(train_diffusion.draw_chunk, ((5, 0, 6, 64, False),))
        _, new = pool.apply(train_diffusion.draw_chunk, ((5, 0, 6, 64, False, hook),))
    from training.world import generate

    rng = np.random.default_rng(1)
    old_words = {w.strip(",.:") for _ in range(400) for w in generate(rng, 64).caption.split()}  # "sky", "earth"…
    names = [n for n in set(load_vocab().train) - old_words if " " not in n]
    says_new_name = lambda caption: any(f" {n} " in f" {caption} " for n in names)  # noqa: E731
    assert not any(says_new_name(c) for c in old), old  # the ten-colour world
    assert any(says_new_name(c) for c in new), new
    assert new != old
