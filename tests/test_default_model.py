"""The embedded default model, loaded through the normal loader: outputs follow the sketch, colours follow the
caption, figures follow the pose. Thresholds sit a little below bench/model_quality.py's targets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import logged_engine

from noisebrush.engine.events import Finished, Preview
from noisebrush.engine.request import ControlSpec, GenerationRequest
from training.metrics import color_checks, limb_coverage, output_background, scribble_fscore
from training.world import generate, hand_drawn, nearest_color

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = 770_001  # never a training seed

# The model is committed with the code that trained it; a checkout without it cannot run these.
pytestmark = pytest.mark.skipif(
    not (ROOT / "assets" / "models" / "default" / "model_index.json").is_file(), reason="the embedded model is not in assets/"
)


@pytest.fixture(scope="module")
def engine():
    eng = logged_engine()
    yield eng
    assert eng.shutdown(60)


def run(engine, prompt: str, kind: str | None, control: np.ndarray | None, seed: int = 0, **kw):
    controls = (ControlSpec(kind, control),) if kind else ()
    job = engine.submit(GenerationRequest(prompt, controls=controls, seed=seed, **kw))  # model "" = embedded default
    done = engine.log.wait_end(job)
    assert isinstance(done, Finished), done
    return done, engine.log.of(job, Preview)


def drawn(shape: str, cx=64, cy=64, r=34, seed=0) -> np.ndarray:
    from training.world import _shape_polygon

    img = np.zeros((128, 128, 3), np.uint8)
    hand_drawn(img, _shape_polygon(shape, cx, cy, r, 0.0), np.random.default_rng(seed))
    return img


def test_a_scribbled_circle_becomes_a_red_circle_on_blue(engine):
    sketch = drawn("circle")
    hits = 0
    for seed in range(3):
        done, _ = run(engine, "a red circle on a blue background", "scribble", sketch, seed=seed)
        img = done.image
        inside = np.zeros((128, 128), np.uint8)
        cv2.circle(inside, (64, 64), 22, 1, -1)
        outside = np.ones((128, 128), np.uint8)
        cv2.circle(outside, (64, 64), 46, 0, -1)
        hits += nearest_color(np.median(img[inside > 0], 0)) == "red"
        hits += nearest_color(np.median(img[outside > 0], 0)) == "blue"
    assert hits >= 5, f"{hits}/6 regions had the caption's colour"


# The world's scenes bind (bench 0.929), and so do most pairs here: a blue circle and a red square, a purple circle
# and a blue square, a red circle and a blue triangle all get 8 of 8 regions. A red circle beside a square does not
# (4 of 8 with a blue square, 2 of 8 with a green one): red tends to go to the square.
@pytest.mark.xfail(reason="a red circle beside a square: red tends to go to the square (4 of 8 regions)")
def test_each_colour_goes_to_the_shape_the_caption_names(engine):
    """The caption binds colours to shapes, not to places: swap the sketch and the colours follow."""
    prompt = "a red circle and a blue square on a white background"
    hits = []
    for seed in range(2):
        for circle_x, square_x in ((36, 92), (92, 36)):
            sketch = np.maximum(drawn("circle", cx=circle_x, r=22, seed=seed), drawn("square", cx=square_x, r=22, seed=seed + 5))
            img = run(engine, prompt, "scribble", sketch, seed=seed)[0].image
            hits.append(nearest_color(np.median(img[54:74, circle_x - 10 : circle_x + 10].reshape(-1, 3), 0)) == "red")
            hits.append(nearest_color(np.median(img[54:74, square_x - 10 : square_x + 10].reshape(-1, 3), 0)) == "blue")
    assert sum(hits) >= 6, hits


def test_a_square_sketch_gives_edges_near_the_square_not_a_circle(engine):
    square = drawn("square", r=36)
    circle = drawn("circle", r=30)
    done, _ = run(engine, "a yellow square on a purple background", "scribble", square, seed=1)
    f_square = scribble_fscore(done.image, square)
    f_circle = scribble_fscore(done.image, circle)
    assert f_square > 0.45 and f_square > f_circle + 0.15, (f_square, f_circle)


def test_held_out_cases_get_their_colours(engine):
    rng = np.random.default_rng(HELD_OUT)
    checks = []
    for i in range(6):
        s = generate(rng, 128, "shapes")
        done, _ = run(engine, s.caption, "scribble", s.scribble, seed=i)
        checks += color_checks(done.image, s)
    assert np.mean(checks) >= 0.85, checks  # these 17 checks: 1.00; bench: 0.929 over 268 checks (target 0.9)


def test_four_steps_take_the_few_step_path_and_still_follow_sketch_and_caption(engine):
    """4 steps (live mode's, or --steps 4) take the few-step path, LCM with no CFG (the person's DPM++ at CFG 5 loses
    the colours in 4 steps: bench 0.56): held-out cases keep their colours and edges, a preview comes at each step,
    the seed reproduces."""
    from noisebrush.engine.models import model_defaults

    assert model_defaults("").few_step is not None and model_defaults("").few_step.steps == 4
    rng = np.random.default_rng(HELD_OUT)
    checks, edges = [], []
    for i in range(6):
        s = generate(rng, 128, "shapes")
        done, previews = run(engine, s.caption, "scribble", s.scribble, seed=i, steps=4)
        assert [p.step for p in previews] == [1, 2, 3, 4]
        checks += color_checks(done.image, s)
        edges.append(scribble_fscore(done.image, s.scribble))
    assert np.mean(checks) >= 0.85 and np.mean(edges) >= 0.6, (checks, edges)
    a = run(engine, "a blue circle", "scribble", drawn("circle"), seed=11, steps=4)[0].image
    assert np.array_equal(a, run(engine, "a blue circle", "scribble", drawn("circle"), seed=11, steps=4)[0].image)


# Issue 17's open vocabulary, not learnt yet (model card: 0.28 of held-out-name regions within ΔE 20, the issue's
# words 0.16): kept as expected failures at the targets, so a model that learns them flips these to XPASS.
@pytest.mark.xfail(reason="not learnt yet: 0.28 (held-out names), 0.16 (the issue's words) of regions within ΔE 20 on the bench")
@pytest.mark.parametrize("which", ["names", "issue"])  # held-out names; the synonyms (crimson, navy, …)
def test_colour_words_outside_the_ten_basic_ones_get_their_colour(engine, which):
    from bench.model_vocab import Scores, make_case, score

    rng, scores = np.random.default_rng(HELD_OUT + 7), Scores()
    for i in range(4):
        s = make_case(which, rng)
        score(run(engine, s.caption, "scribble", s.scribble, seed=i)[0].image, s, scores)
    assert scores.summary()["within_20"] >= 0.8, scores.summary()


def test_a_pose_map_gives_figure_pixels_along_the_limbs(engine):
    rng = np.random.default_rng(HELD_OUT + 1)
    covered = []
    for i in range(3):
        s = generate(rng, 128, "figure")
        done, _ = run(engine, s.caption, "pose", s.pose, seed=i)
        covered += limb_coverage(done.image, s.people, output_background(done.image, s))
    assert np.mean(covered) >= 0.6, np.mean(covered)


def test_previews_stream_and_the_last_one_is_close_to_the_final_image(engine):
    done, previews = run(engine, "a green star on a white background", "scribble", drawn("star"), seed=3)
    assert [p.step for p in previews] == list(range(1, 21))
    last = previews[-1].image.astype(np.float32)
    final_small = cv2.resize(done.image, last.shape[1::-1], interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(last - final_small).mean() < 32, np.abs(last - final_small).mean()  # measured: 23 of 255
    first_small = previews[0].image.astype(np.float32)
    assert np.abs(first_small - final_small).mean() > np.abs(last - final_small).mean()


def test_the_seed_reproduces_on_the_default_model(engine):
    a, _ = run(engine, "a blue circle", "scribble", drawn("circle"), seed=11)
    b, _ = run(engine, "a blue circle", "scribble", drawn("circle"), seed=11)
    assert np.array_equal(a.image, b.image)


def test_text_alone_works_on_the_default_model(engine):
    done, _ = run(engine, "a red background", None, None, seed=2)
    assert nearest_color(np.median(done.image.reshape(-1, 3), 0)) in ("red", "pink", "orange")


def test_self_test_passes():
    cmd = [sys.executable, "-m", "noisebrush", "--self-test"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "self-test passed" in out.stdout
