"""`clipsearch search` with --min-score, --sort, --collapse and --taken-after/--taken-before,
over a library indexed with the deterministic ColourEncoder (injected where the CLI opens
the library), so the assertions are about which files come back."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from clipsearch.cli import options
from clipsearch.cli.app import main
from clipsearch.library import Library
from tests.fakes import ColourEncoder, colour_image

OLD = datetime(2015, 1, 1, tzinfo=UTC).timestamp()


def photo(path: Path, colour: str, seed: int, taken: str | None = None) -> None:
    exif = Image.Exif()
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
        exif.get_ifd(0x8769)[0x9011] = "+00:00"
    colour_image(colour, (64, 48), seed=seed).save(path, quality=95, exif=exif)


@pytest.fixture
def lib_path(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    photo(root / "red-2019.jpg", "red", 1, "2019:05:01 12:00:00")
    photo(root / "red-2021.jpg", "red", 2, "2021:05:01 12:00:00")
    photo(root / "red-2023.jpg", "red", 3, "2023:05:01 12:00:00")
    shutil.copy(root / "red-2021.jpg", root / "red-2021-copy.jpg")
    for i, c in enumerate(["green", "blue", "yellow", "cyan", "magenta", "orange"]):
        photo(root / f"{c}.jpg", c, 10 + i)
    for p in root.iterdir():
        os.utime(p, (OLD, OLD))
    path = tmp_path / "lib"
    encoder = ColourEncoder()
    with Library(path, encoder=encoder) as lib:
        lib.index([root])
    real = options.open_library
    monkeypatch.setattr(
        options, "open_library", lambda library, *a, **kw: real(library, encoder=encoder, **kw)
    )
    return path


def run(capsys, lib: Path, *args: str) -> tuple[int, str, str]:
    code = main(["search", "--library", str(lib), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_table_shows_the_relevant_results_and_says_how_many_are_below(lib_path, capsys):
    code, out, err = run(capsys, lib_path, "red", "-k", "10")
    assert code == 0
    assert all(
        f"/{n}" in out
        for n in ("red-2019.jpg", "red-2021.jpg", "red-2023.jpg", "red-2021-copy.jpg")
    )
    assert "green.jpg" not in out
    assert "6 more on this page below the relevance cut" in err and "--min-score none" in err
    code, out, _ = run(capsys, lib_path, "red", "-k", "10", "--min-score", "none")
    assert "green.jpg" in out


def test_json_marks_each_hit(lib_path, capsys):
    code, out, _ = run(capsys, lib_path, "red", "-k", "6", "--json")
    hits = json.loads(out)
    assert [h["relevant"] for h in hits] == [True] * 4 + [False] * 2
    assert {h["taken_source"] for h in hits[:4]} == {"exif"}
    code, out, _ = run(capsys, lib_path, "red", "-k", "6", "--json", "--min-score", "0.99")
    assert code == 0 and not any(h["relevant"] for h in json.loads(out))


def test_sort_by_date_and_capture_date_filters(lib_path, capsys):
    code, out, _ = run(capsys, lib_path, "red", "--sort", "-date", "--json")
    hits = [h for h in json.loads(out) if h["relevant"]]
    assert [h["taken"][:4] for h in hits] == ["2023", "2021", "2021", "2019"]
    code, out, _ = run(capsys, lib_path, "red", "--sort", "date")
    assert "taken" in out and out.index("red-2019.jpg") < out.index("red-2023.jpg")
    assert "2019-05-01" in out
    code, out, _ = run(
        capsys, lib_path, "red", "--json", "--taken-after", "2020", "--taken-before", "2022"
    )
    assert code == 0
    assert sorted(Path(h["path"]).name for h in json.loads(out)) == [
        "red-2021-copy.jpg",
        "red-2021.jpg",
    ]


def test_collapse_folds_the_copy(lib_path, capsys):
    code, out, _ = run(capsys, lib_path, "red", "--collapse", "--json", "-k", "3")
    hits = json.loads(out)
    folded = [h for h in hits if h["members"]]
    assert len(folded) == 1 and len(folded[0]["members"]) == 1
    assert {Path(folded[0]["path"]).name, Path(folded[0]["members"][0]["path"]).name} == {
        "red-2021.jpg",
        "red-2021-copy.jpg",
    }
    code, out, _ = run(capsys, lib_path, "red", "--collapse")
    assert code == 0 and "copies" in out and "+1" in out


def test_bad_values_are_usage_errors(lib_path, capsys):
    code, _, err = run(capsys, lib_path, "red", "--min-score", "high")
    assert code == 2 and "min_score must be auto, none or a number" in err
    code, _, err = run(capsys, lib_path, "red", "--sort", "size")
    assert code == 2 and "--sort" in err
    code, _, err = run(capsys, lib_path, "red", "--taken-after", "last week")
    assert code == 2 and "not a date" in err


def test_status_says_where_capture_dates_came_from(lib_path, capsys):
    assert main(["status", "--library", str(lib_path), "--json"]) == 0
    dates = json.loads(capsys.readouterr().out)["capture_times"]
    assert dates == {"exif": 4, "container": 0, "mtime": 6, "unread": 0}
    assert main(["status", "--library", str(lib_path)]) == 0
    out = capsys.readouterr().out
    assert "capture dates" in out and "4 from EXIF, 6 file times" in out
