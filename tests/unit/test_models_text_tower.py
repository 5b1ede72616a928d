"""The numpy text tower and the torch-free CLIP tokenizer equal open_clip's own."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipsearch.models import load_encoder, text_tower
from clipsearch.models.clip_bpe import ClipBpeTokenizer
from clipsearch.models.deferred import DeferredEncoder

AWKWARD = [
    "a red heart",
    "",
    "   A  Dog &amp; a CAT!!  ",
    "naïve café — 東京 🚀 Ünïcödé",
    "it's the dog's ball, isn't it?",
    "&lt;b&gt;bold&lt;/b&gt; 123,456.78 e=mc²",
    "word " * 100,  # longer than the context: truncated, end token kept
    "x" * 300,
    "Tabs\tand\nnew\r\nlines\x0b\x1c and \x00\x07 controls \x1b[31mred\x1b[0m",
    "<start_of_text>inside<end_of_text> 2024-06-30 ;;; ... 's 'LL 'D",
    "UPPER lower 0123456789 !@#$%^*()_+-=[]{}|\\:;\"'<>,.?/~`",
]


@pytest.mark.parametrize("context_length", [77, 24])
def test_tokenizer_equals_open_clip(context_length):
    from open_clip.tokenizer import SimpleTokenizer

    ours = ClipBpeTokenizer(context_length)(AWKWARD)
    ref = SimpleTokenizer(context_length=context_length)(AWKWARD).numpy()
    assert ours.dtype == np.int64 and ours.shape == (len(AWKWARD), context_length)
    np.testing.assert_array_equal(ours, ref)


_OURS = ClipBpeTokenizer()


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(alphabet=st.characters(max_codepoint=0x17F), max_size=40))
def test_tokenizer_equals_open_clip_on_any_text(open_clip_tokenizer, text):
    """Plain ASCII text skips ftfy and the `regex` split; any text must still tokenize as
    open_clip does (ASCII, controls, entities, Latin-1 and Latin Extended-A)."""
    np.testing.assert_array_equal(
        _OURS(text), open_clip_tokenizer(text).numpy(), err_msg=repr(text)
    )


def test_text_tower_equals_open_clip_encode_text(tiny_checkpoint):
    enc = load_encoder(str(tiny_checkpoint), precision="fp32")  # writes the ready copy
    assert text_tower.ready_copy_path(enc.fingerprint).is_file()
    tower = text_tower.load_ready_copy(enc.fingerprint, images=lambda: enc, spec=enc.spec)
    assert tower is not None
    assert (tower.fingerprint, tower.dim, tower.context_length) == (
        enc.fingerprint,
        enc.dim,
        enc.context_length,
    )
    assert tower.logit_scale == pytest.approx(enc.logit_scale, rel=1e-6)
    ours, ref = tower.encode_texts(AWKWARD), enc.encode_texts(AWKWARD)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert float((ours * ref).sum(axis=1).min()) >= 0.99999
    assert float(np.abs(ours - ref).max()) < 1e-5
    # a batch and single texts agree (the batch is cut at its longest text)
    for i in (0, 3):
        np.testing.assert_allclose(tower.encode_texts([AWKWARD[i]])[0], ours[i], atol=1e-6)


def test_text_tower_quick_gelu_model(tmp_path):
    """An architecture with QuickGELU (OpenAI's weights) takes the other activation."""
    import open_clip

    from clipsearch.models import save_checkpoint
    from tests.fakes import register_tiny_models

    register_tiny_models()
    cfg = {**open_clip.get_model_config("tiny-vit"), "quick_gelu": True}
    model = open_clip.create_model("tiny-vit", quick_gelu=True)
    path = save_checkpoint(model, tmp_path / "qg.safetensors", arch="tiny-vit", model_cfg=cfg)
    enc = load_encoder(str(path), precision="fp32")
    tower = text_tower.load_ready_copy(enc.fingerprint, images=lambda: enc, spec=enc.spec)
    ours, ref = tower.encode_texts(AWKWARD[:4]), enc.encode_texts(AWKWARD[:4])
    assert float(np.abs(ours - ref).max()) < 1e-5


def test_images_go_to_the_full_encoder_loaded_on_first_use(tiny_checkpoint, make_image, tmp_path):
    from PIL import Image

    enc = load_encoder(str(tiny_checkpoint), precision="fp32")
    loads = []
    tower = text_tower.load_ready_copy(
        enc.fingerprint, images=lambda: loads.append(1) or enc, spec=enc.spec
    )
    tower.encode_texts(["a dog"])
    assert loads == []  # texts never load the image side
    image = Image.open(make_image(tmp_path / "red.png", "red")).convert("RGB")
    np.testing.assert_array_equal(tower.encode_images([image]), enc.encode_images([image]))
    tower.encode_images([image])
    assert loads == [1]


def test_damaged_or_foreign_ready_copy_is_ignored(tiny_checkpoint):
    enc = load_encoder(str(tiny_checkpoint), precision="fp32")
    assert text_tower.load_ready_copy("no-such-fingerprint", images=lambda: enc, spec="x") is None
    path = text_tower.ready_copy_path(enc.fingerprint)
    saved = path.read_bytes()
    try:
        path.write_bytes(saved[:100])  # truncated
        assert text_tower.load_ready_copy(enc.fingerprint, images=lambda: enc, spec="x") is None
    finally:
        path.write_bytes(saved)


def test_ready_copy_of_another_version_is_ignored_then_rewritten(tiny_checkpoint):
    """A copy written by an older clipsearch (linear weights stored (out, in)) must not be
    read with this layout, and the next full load replaces it with a current one."""
    import json
    import struct

    enc = load_encoder(str(tiny_checkpoint), precision="fp32")
    path = text_tower.ready_copy_path(enc.fingerprint)
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"]["version"] = "1"
    old = json.dumps(header).encode().ljust(size)  # same length: offsets stay valid
    path.write_bytes(data[:8] + old + data[8 + size :])
    assert text_tower.load_ready_copy(enc.fingerprint, images=lambda: enc, spec="x") is None
    load_encoder(str(tiny_checkpoint), precision="fp32")  # the torch path writes it again
    tower = text_tower.load_ready_copy(enc.fingerprint, images=lambda: enc, spec=enc.spec)
    assert tower is not None
    assert (
        float(np.abs(tower.encode_texts(AWKWARD[:3]) - enc.encode_texts(AWKWARD[:3])).max()) < 1e-5
    )


def test_a_query_asked_again_is_answered_without_encoding_it_again(tiny_checkpoint, monkeypatch):
    """The next page of a search asks for the same text: same vector, no forward pass; a
    caller changing the array it got changes nothing; old texts are forgotten."""
    enc = load_encoder(str(tiny_checkpoint), precision="fp32")
    tower = text_tower.load_ready_copy(enc.fingerprint, images=lambda: enc, spec=enc.spec)
    passes = []
    forward = tower.encode_tokens
    monkeypatch.setattr(tower, "encode_tokens", lambda t: passes.append(len(t)) or forward(t))
    first = tower.encode_texts(["a red car"])
    again = tower.encode_texts(["a red car"])
    np.testing.assert_array_equal(first, again)
    assert passes == [1]
    again[0] = 0.0
    np.testing.assert_array_equal(tower.encode_texts("a red car"), first)
    tower.encode_texts(["a red car", "a blue car"])  # a batch is always encoded
    assert passes == [1, 2]
    monkeypatch.setattr(text_tower, "RECENT_QUERIES", 3)
    for text in ("one", "two", "three"):
        tower.encode_texts([text])
    passes.clear()
    tower.encode_texts(["a red car"])  # forgotten: encoded again, to the same vector
    assert passes == [1]
    np.testing.assert_allclose(tower.encode_texts(["a red car"]), first, atol=1e-7)


def test_deferred_encoder_loads_once_and_only_when_used(fake_encoder):
    loads = []
    deferred = DeferredEncoder(
        spec=fake_encoder.spec,
        fingerprint=fake_encoder.fingerprint,
        dim=fake_encoder.dim,
        load=lambda: loads.append(1) or fake_encoder,
    )
    assert (deferred.spec, deferred.fingerprint, deferred.dim) == (
        fake_encoder.spec,
        fake_encoder.fingerprint,
        fake_encoder.dim,
    )
    assert loads == [] and not deferred.loaded
    np.testing.assert_array_equal(
        deferred.encode_texts(["red"]), fake_encoder.encode_texts(["red"])
    )
    deferred.encode_texts(["blue"])
    assert loads == [1] and deferred.loaded
    assert deferred.logit_scale == fake_encoder.logit_scale
