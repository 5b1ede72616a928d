"""BLIP loading, ITM scoring and captioning on tiny random models, against transformers itself."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipsearch.errors import (
    MissingDependencyError,
    ModelError,
    UsageError,
    WeightsUnavailableError,
)
from clipsearch.models.blip import ItmScores, load_captioner, load_matcher
from tests.unit.test_models_offline import unreachable_hub_env

REPO = Path(__file__).resolve().parents[2]


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = [Image.new("RGB", (48, 40), c) for c in [(230, 20, 20), (20, 20, 230), (20, 200, 20)]]
    out.append(Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)))
    return out


def _reference_itm(folder, texts, images) -> np.ndarray:
    """What transformers' documented usage gives: processor(images, text) -> model(**inputs)."""
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    model = BlipForImageTextRetrieval.from_pretrained(folder).eval()
    processor = BlipProcessor.from_pretrained(folder)
    inputs = processor(images=images, text=texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**inputs).itm_score.numpy()


def test_itm_scores_equal_the_reference_model(tiny_blip_itm):
    matcher = load_matcher(str(tiny_blip_itm), precision="fp32")
    images = _images()
    got = matcher.score("a red dog on the beach", images)
    want = _reference_itm(tiny_blip_itm, ["a red dog on the beach"] * len(images), images)
    np.testing.assert_allclose(got.logits, want, atol=1e-5)
    p = got.probability
    np.testing.assert_allclose(p, torch.tensor(want).softmax(-1)[:, 1].numpy(), atol=1e-6)
    assert np.all(np.argsort(-p) == np.argsort(-got.log_odds))


def test_pairs_score_each_text_with_its_own_image(tiny_blip_itm):
    matcher = load_matcher(str(tiny_blip_itm), precision="fp32")
    images = _images()[:3]
    texts = ["a red car", "two people on a road with a big tree", "a cat"]
    got = matcher.score_pairs(texts, images)
    want = _reference_itm(tiny_blip_itm, texts, images)
    np.testing.assert_allclose(got.logits, want, atol=1e-5)
    with pytest.raises(UsageError):
        matcher.score_pairs(texts, images[:2])


def test_cached_image_states_give_the_same_scores_without_the_images(tiny_blip_itm):
    matcher = load_matcher(str(tiny_blip_itm), precision="fp32")
    images = _images()
    keys = [("img", i) for i in range(len(images))]
    first = matcher.score("a blue house", images, keys=keys)
    again = matcher.score("a blue house", [None] * len(images), keys=keys)
    np.testing.assert_array_equal(first.logits, again.logits)
    other = matcher.score("a green tree", [None] * len(images), keys=keys)
    want = _reference_itm(tiny_blip_itm, ["a green tree"] * len(images), images)
    np.testing.assert_allclose(other.logits, want, atol=1e-5)
    with pytest.raises(UsageError, match="not cached"):
        matcher.score("a blue house", [None], keys=[("never", 0)])


def test_state_cache_is_bounded(tiny_blip_itm):
    from clipsearch.models.blip import ImageTextMatcher

    loaded = load_matcher(str(tiny_blip_itm), precision="fp32")
    one_state = 17 * 32 * 4  # (T = 16 patches + CLS, H = 32) fp32
    matcher = ImageTextMatcher(
        loaded.model, loaded.processor, name="tiny", precision="fp32", device="cpu",
        cache_bytes=2 * one_state,
    )  # fmt: skip
    images = _images()[:3]
    matcher.score("a dog", images, keys=["a", "b", "c"])
    matcher.score("a dog", [None, None], keys=["b", "c"])  # the two newest are kept
    with pytest.raises(UsageError, match="not cached"):
        matcher.score("a dog", [None], keys=["a"])


def test_bf16_stays_close_to_fp32(tiny_blip_itm):
    fp32 = load_matcher(str(tiny_blip_itm), precision="fp32")
    bf16 = load_matcher(str(tiny_blip_itm), precision="bf16")
    assert bf16.model.dtype == torch.bfloat16 and bf16.precision == "bf16"
    a = fp32.score("a red dog", _images()).probability
    b = bf16.score("a red dog", _images()).probability
    assert b.dtype == np.float32
    assert np.max(np.abs(a - b)) < 0.02


def test_captions_equal_the_reference_decoder(tiny_blip_caption):
    from transformers import BlipForConditionalGeneration, BlipProcessor

    captioner = load_captioner(str(tiny_blip_caption), precision="fp32")
    images = _images()
    got = captioner.caption(images, max_new_tokens=6, num_beams=2)
    model = BlipForConditionalGeneration.from_pretrained(tiny_blip_caption).eval()
    processor = BlipProcessor.from_pretrained(tiny_blip_caption)
    ids = model.generate(
        **processor(images=images, return_tensors="pt"), max_new_tokens=6, num_beams=2
    )
    want = [" ".join(t.split()) for t in processor.batch_decode(ids, skip_special_tokens=True)]
    assert got == want
    assert all(isinstance(c, str) and c for c in got)
    prompted = captioner.caption(images[:1], max_new_tokens=3, prompt="a picture of")
    assert prompted[0].startswith("a picture of")


def test_itm_scores_as_probability_and_log_odds():
    s = ItmScores(np.array([[0.0, 0.0], [-2.0, 2.0], [3.0, -1.0]], dtype=np.float32))
    np.testing.assert_allclose(s.log_odds, [0.0, 4.0, -4.0])
    np.testing.assert_allclose(s.probability, [0.5, 1 / (1 + np.exp(-4)), 1 / (1 + np.exp(4))])


# --- errors ------------------------------------------------------------------------------------
def test_uncached_hub_model_offline_fails_at_once_saying_how_to_supply_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as e:
        load_matcher("Salesforce/blip-itm-base-coco")
    msg = str(e.value)
    assert "Salesforce/blip-itm-base-coco" in msg and "--itm-model" in msg
    assert "hf download" in msg and "HF_HOME" in msg
    with pytest.raises(WeightsUnavailableError, match="--caption-model"):
        load_captioner("Salesforce/blip-image-captioning-base")


def test_unreachable_hub_fails_fast_without_retries(tmp_path):
    # A fresh process: huggingface_hub reads its offline flag and endpoint at import.
    env = unreachable_hub_env(tmp_path)
    port = env["HF_ENDPOINT"].rsplit(":", 1)[1]
    # Every backoff of huggingface_hub's retry loop is a time.sleep: count them.
    code = """
        import time
        slept = []
        real_sleep = time.sleep
        def counting_sleep(s):
            slept.append(s)
            real_sleep(s)
        time.sleep = counting_sleep
        from clipsearch.errors import WeightsUnavailableError
        from clipsearch.models.blip import load_matcher
        try:
            load_matcher("someone/blip-model")
        except WeightsUnavailableError as e:
            print("ERROR:", e)
        print("SLEPT:", sum(s for s in slept if s >= 0.5))
    """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "SLEPT: 0\n" in r.stdout, r.stdout  # no retry, no backoff
    message = r.stdout.split("ERROR:", 1)[1].split("SLEPT:")[0]
    assert f"cannot reach 127.0.0.1:{port}" in message and "--itm-model" in message


def test_missing_folder_and_wrong_model_are_clear_errors(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="folder not found"):
        load_matcher(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="not a BLIP model folder"):
        load_matcher(str(empty))
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="'bert' model, not BLIP"):
        load_matcher(str(other))


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"clipsearch\[blip\]"):
        load_matcher("Salesforce/blip-itm-base-coco")


def test_bad_precision_is_a_usage_error(tiny_blip_itm):
    with pytest.raises(UsageError):
        load_matcher(str(tiny_blip_itm), precision="int3")
