"""Query composition: the one weighted sum of normalised parts, the grammar's terms, text +
images + liked items (`QueryParts`), and composed image+text queries (sum, slerp)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipsearch.errors import QueryError, QueryFileRefusedError, UsageError
from clipsearch.search import compose
from clipsearch.search.query import parse_query
from tests.fakes import colour_image


def test_weighted_sum_is_the_normalised_sum_of_normalised_parts():
    a, b = np.array([3.0, 0.0, 0.0]), np.array([0.0, 0.5, 0.0])
    q = compose.weighted_sum([a, b], [2.0, -1.0])  # normalise(2·â − b̂)
    np.testing.assert_allclose(q, np.array([2.0, -1.0, 0.0]) / math.sqrt(5), atol=1e-6)
    assert q.dtype == np.float32
    with pytest.raises(QueryError, match="cancel out"):
        compose.weighted_sum([a, 2 * a], [1.0, -1.0])
    with pytest.raises(QueryError, match="zero"):
        compose.weighted_sum([a, np.zeros(3)], [1.0, 1.0])
    with pytest.raises(UsageError, match="one weight per vector"):
        compose.weighted_sum([a], [1.0, 2.0])
    with pytest.raises(UsageError, match="one weight per vector"):
        compose.weighted_sum([], [])


def test_a_plan_is_encoded_as_its_weighted_terms(tmp_path, fake_encoder, make_image):
    pool = make_image(tmp_path / "pool.jpg", "blue")
    plan = parse_query(f'"2:red car" + {pool} - "green"')
    rows = compose.embed_terms(plan, fake_encoder)
    assert rows.shape == (3, fake_encoder.dim)
    np.testing.assert_allclose(rows[0], fake_encoder.encode_texts(["red car"])[0], atol=1e-6)
    np.testing.assert_allclose(rows[2], fake_encoder.encode_texts(["green"])[0], atol=1e-6)
    q = compose.encode_plan(plan, fake_encoder)
    np.testing.assert_allclose(q, compose.weighted_sum(list(rows), [2.0, 1.0, -1.0]), atol=1e-6)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(QueryError, match="cannot be used"):
        compose.encode_plan(parse_query(str(broken)), fake_encoder)


def test_query_parts_weight_each_group_and_combine_like_an_encoder(fake_encoder):
    red, blue = colour_image("red"), colour_image("blue")
    liked = fake_encoder.encode_images([colour_image("green", seed=3)])[0]
    parts = compose.QueryParts(
        parse_query("yellow - cyan"),
        (red, blue),
        (liked,),
        text_weight=0.5,
        image_weight=2.0,
        like_weight=3.0,
    )
    t = fake_encoder.encode_texts(["yellow", "cyan"])
    u = fake_encoder.encode_images([red, blue])
    expected = compose.weighted_sum([*t, *u, liked], [0.5, -0.5, 2.0, 2.0, 3.0])
    np.testing.assert_allclose(parts.encode(fake_encoder), expected, atol=1e-6)
    np.testing.assert_allclose(parts.combine(t, u), expected, atol=1e-6)  # encoded elsewhere
    with pytest.raises(UsageError, match="one vector per query image"):
        parts.combine(t, u[:1])
    with pytest.raises(QueryError, match="the query is empty"):
        compose.QueryParts()
    only_liked = compose.QueryParts(liked=(liked,)).combine()
    np.testing.assert_allclose(only_liked, liked, atol=1e-6)


def test_a_path_in_a_query_that_may_not_name_files_is_refused(tmp_path, make_image):
    photo = make_image(tmp_path / "red.jpg", "red")
    assert parse_query(str(photo)).terms[0].kind == "image"
    with pytest.raises(QueryFileRefusedError, match="put the text in quotes"):
        parse_query(str(photo), files=False)
    quoted = parse_query(f'"{photo}"', files=False)
    assert [(t.kind, t.value) for t in quoted.terms] == [("text", str(photo))]
    assert parse_query("red.jpg", files=False).terms[0].kind == "text"  # no path: just words
    with pytest.raises(QueryError, match="query file not found"):
        parse_query(str(tmp_path / "missing.jpg"))


def test_slerp_walks_the_great_circle():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(compose.slerp(a, b, 0.0), a, atol=1e-6)
    np.testing.assert_allclose(compose.slerp(a, b, 1.0), b, atol=1e-6)
    mid = compose.slerp(a, b, 0.5)
    np.testing.assert_allclose(mid, [math.sqrt(0.5), math.sqrt(0.5), 0.0], atol=1e-6)
    third = compose.slerp(a, b, 1 / 3)  # constant angular speed: 30° from a
    assert math.degrees(math.acos(float(third @ a))) == pytest.approx(30.0, abs=1e-3)
    np.testing.assert_allclose(compose.slerp(a, a * 2, 0.3), a, atol=1e-6)  # parallel: no NaN
    with pytest.raises(QueryError, match="opposite"):
        compose.slerp(a, -a, 0.5)
    with pytest.raises(UsageError, match="between 0 and 1"):
        compose.slerp(a, b, 1.5)


def test_weighted_sum_composition_by_hand():
    v, t = np.array([3.0, 0.0]), np.array([0.0, 1.0])
    q = compose.compose(v, t, method="sum", text_weight=0.25)  # normalise(0.75·v̂ + 0.25·t̂)
    np.testing.assert_allclose(q, np.array([0.75, 0.25]) / math.hypot(0.75, 0.25), atol=1e-6)
    with pytest.raises(UsageError, match="unknown composition"):
        compose.compose(v, t, method="average")
    with pytest.raises(QueryError, match="cancel"):
        compose.weighted_sum([v, 2 * v], [1.0, -1.0])


def test_composed_query_from_files_moves_towards_the_text(tmp_path, fake_encoder, make_image):
    shirt = make_image(tmp_path / "shirt.png", "blue")
    image_only = compose.composed_query(fake_encoder, shirt, "red", text_weight=0.0)
    composed = compose.composed_query(fake_encoder, shirt, "red", text_weight=0.6)
    red = fake_encoder.encode_texts(["red"])[0]
    assert float(composed @ red) > float(image_only @ red) + 0.3
    with pytest.raises(QueryError, match="empty"):
        compose.composed_query(fake_encoder, shirt, "  ")
