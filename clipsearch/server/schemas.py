"""Request and response bodies of the HTTP API (pydantic), with the examples the OpenAPI
schema shows. Validation here is the first line against bad input: out-of-range ``k``,
unknown pooling or kind, wrong types are answered 422 before any work is done."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clipsearch.media.capture_time import TakenSource
from clipsearch.media.scan import MediaKind
from clipsearch.search.choices import DEFAULT_POOLING, MAX_K, MAX_MOMENTS, PoolMethod, SortOrder

MAX_OFFSET = MAX_K  # paging deeper than this is not interactive search any more
MAX_WHERE = 16  # filter clauses per request
MAX_ITEM_ID = 2**62  # item ids are SQLite rowids; the item routes take the same range
MAX_LIKE = 16  # "more like this" item ids per request

Pooling = PoolMethod


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_query, not_found.")
    message: str = Field(description="What went wrong and what to do, for people.")


class ErrorOut(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "validation_error",
                        "message": "k: Input should be less than or equal to 10000",
                    }
                }
            ]
        }
    )
    error: ErrorDetail


class SearchRequest(BaseModel):
    """A search: text and/or example items ("more like this"); uploads come as multipart.

    The query vector is q = normalise(text_weight·t + image_weight·Σ uploads +
    like_weight·Σ liked items), each part L2-normalised first (docs/rerank.md, composed queries).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"q": "a dog on a beach", "k": 20},
                {
                    "q": '"2:golden retriever" - "blurry"',
                    "kind": "image",
                    "where": ["after:2023-01-01"],
                },
                {"like": [42], "k": 10, "offset": 10},
                {"q": "in red", "like": [42], "text_weight": 0.5, "like_weight": 1.0},
            ]
        },
    )

    q: str | None = Field(
        None,
        max_length=2000,
        description='Text query; the composed grammar works: \'"2:golden retriever" - "blurry"\'. '
        "File paths are not read (the server only searches by uploads or item ids).",
    )
    like: list[Annotated[int, Field(ge=1, le=MAX_ITEM_ID)]] = Field(
        default_factory=list,
        max_length=MAX_LIKE,
        description="Item ids whose stored vectors join the query (more like this).",
    )
    text_weight: float = Field(1.0, ge=-10, le=10, description="Weight of the text part.")
    image_weight: float = Field(1.0, ge=-10, le=10, description="Weight of each uploaded image.")
    like_weight: float = Field(1.0, ge=-10, le=10, description="Weight of each liked item.")
    k: int = Field(20, ge=1, le=MAX_K, description="Results per page.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Skip this many results (paging).")
    kind: MediaKind | None = Field(None, description="Only images or only videos.")
    where: list[str] = Field(
        default_factory=list,
        max_length=MAX_WHERE,
        description='Filter clauses, ANDed: "path:/photos/2023/*", "after:2023-01-01", '
        '"before:2024", "size>1MB", "root:/photos", "tag:beach".',
    )
    pooling: Pooling = Field(
        DEFAULT_POOLING,
        description="Video scoring over frames: peak (the video's best-matching part), mean "
        "(CLIP4Clip meanP), max, softmax (docs/video.md).",
    )
    tau: float | None = Field(
        None, gt=0, le=10, description="Temperature of peak / softmax pooling (0.01 / 0.1)."
    )
    with_curve: bool = Field(False, description="Attach each video's per-frame score curve.")
    text_match: bool | None = Field(
        None,
        description="Also rank by the text read in pictures (OCR), fused with the model's "
        "ranking; null: when the library has read text.",
    )
    phrases: bool | None = Field(
        None,
        description='"Quoted words" in q must appear in the picture\'s text; null: when the '
        "library has read text; false: quotes only delimit terms.",
    )
    moments: int = Field(
        1,
        ge=1,
        le=MAX_MOMENTS,
        description="Up to this many non-overlapping moments per video, best first.",
    )
    min_score: Literal["auto", "none"] | Annotated[float, Field(ge=-1, le=1)] = Field(
        "auto",
        description="Where the relevant results end: auto (per query, from its scores over "
        "the library), a cosine, or none. Each hit says whether it is relevant; the relevant "
        "ones come first (docs/search.md).",
    )
    sort: SortOrder = Field(
        "relevance",
        description="Order of the relevant results: relevance, date (oldest first), -date.",
    )
    collapse: bool = Field(
        False,
        description="Fold near-duplicates (cosine ≥ 0.95) into one result, the best-scoring "
        "member, with the others in its members list.",
    )
    taken_after: str | None = Field(
        None,
        max_length=64,
        description="Only items taken at or after this date (2023, 2023-06, 2023-06-30...).",
    )
    taken_before: str | None = Field(
        None, max_length=64, description="Only items taken before this date."
    )
    rerank: Literal["none", "itm"] = Field(
        "none",
        description="itm: re-score the top rerank_k hits of the text query with the BLIP "
        "image-text matching cross-encoder (slower, more accurate; docs/blip.md).",
    )
    rerank_k: int = Field(32, ge=1, le=256, description="rerank=itm: candidates re-scored.")
    rerank_score: Literal["fusion", "itm"] = Field(
        "fusion",
        description="rerank=itm: final score, fusion (ITM log-odds + CLIP score) or itm "
        "(ITM P(match)).",
    )
    captions: bool = Field(False, description="Attach each hit's stored BLIP caption.")


class MomentOut(BaseModel):
    start: float = Field(description="Seconds from the start of the video.")
    end: float
    best_t: float = Field(description="Timestamp of the best-matching frame.")
    score: float = Field(description="Mean similarity of the moment's frames.")
    thumb_url: str = Field(description="A thumbnail of the moment's best frame.")


class CurveOut(BaseModel):
    t: list[float]
    score: list[float]


class TextMatchOut(BaseModel):
    """The text read in the picture (or video frame) that matched the query's words."""

    text: str = Field(description="The text as read; lines joined by newlines.")
    terms: list[str] = Field(description="The query terms found (squashed: letters and digits).")
    spans: list[list[int]] = Field(description="[start, end) character spans of them in text.")
    coverage: float = Field(description="Share of the query terms' characters found, 0..1.")
    t: float | None = Field(None, description="The video frame's time in seconds.")
    source: str = Field(
        description='Where the text comes from: "ocr" (read in the picture) or "caption".'
    )


class MemberOut(BaseModel):
    """A near-duplicate folded into a result: the result's fields, its own score, and its
    similarity to the result."""

    item_id: int
    path: str
    name: str
    kind: MediaKind
    score: float
    similarity: float = Field(description="Cosine of its stored vector to the result's.")
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    moment: MomentOut | None = None
    moments: list[MomentOut] | None = None
    taken: str | None = None
    taken_source: TakenSource | None = None
    thumb_url: str
    media_url: str


class HitOut(BaseModel):
    """One result. Images and videos share the shape; videos add duration and moments."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "rank": 1,
                    "item_id": 42,
                    "path": "/home/ana/Pictures/2023/beach.jpg",
                    "name": "beach.jpg",
                    "kind": "image",
                    "score": 0.3121,
                    "width": 4032,
                    "height": 3024,
                    "thumb_url": "/api/items/42/thumb",
                    "media_url": "/api/items/42/media",
                },
                {
                    "rank": 2,
                    "item_id": 7,
                    "path": "/home/ana/Videos/goal.mp4",
                    "name": "goal.mp4",
                    "kind": "video",
                    "score": 0.2874,
                    "width": 1920,
                    "height": 1080,
                    "duration": 284.2,
                    "moment": {
                        "start": 192.0,
                        "end": 199.0,
                        "best_t": 195.5,
                        "score": 0.2874,
                        "thumb_url": "/api/items/7/thumb?t=195.5",
                    },
                    "moments": [
                        {
                            "start": 192.0,
                            "end": 199.0,
                            "best_t": 195.5,
                            "score": 0.2874,
                            "thumb_url": "/api/items/7/thumb?t=195.5",
                        },
                        {
                            "start": 12.5,
                            "end": 16.0,
                            "best_t": 14.0,
                            "score": 0.2650,
                            "thumb_url": "/api/items/7/thumb?t=14.0",
                        },
                    ],
                    "thumb_url": "/api/items/7/thumb?t=195.5",
                    "media_url": "/api/items/7/media",
                },
            ]
        }
    )

    rank: int
    item_id: int
    path: str
    name: str
    kind: MediaKind
    score: float
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    moment: MomentOut | None = Field(None, description="Videos: the best moment.")
    moments: list[MomentOut] | None = Field(
        None, description="Videos: up to `moments` moments, best first (the first is `moment`)."
    )
    curve: CurveOut | None = None
    text_match: TextMatchOut | None = None
    itm_score: float | None = Field(
        None, description="rerank=itm: BLIP P(match) (null past the re-ranked top k)."
    )
    clip_score: float | None = Field(None, description="rerank=itm: the first-stage score.")
    caption: str | None = Field(None, description="captions=true: the stored BLIP caption.")
    thumb_url: str
    media_url: str
    relevant: bool = Field(True, description="Above the query's relevance cut (min_score).")
    taken: str | None = Field(
        None,
        description="When it was taken, ISO 8601 with the UTC offset where it was taken when "
        "the file says (else the server's zone).",
    )
    taken_source: TakenSource | None = Field(
        None, description="Where the time came from: exif, container (video), or mtime."
    )
    members: list[MemberOut] | None = Field(
        None, description="With collapse: the near-duplicates folded into this result."
    )


class SearchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "hits": [],
                    "count": 0,
                    "k": 20,
                    "offset": 0,
                    "next_offset": None,
                    "took_ms": 12.5,
                }
            ]
        }
    )

    hits: list[HitOut]
    count: int = Field(description="Hits on this page.")
    k: int
    offset: int
    next_offset: int | None = Field(
        description="Offset of the next page, or null when this page was not full."
    )
    took_ms: float
    min_score: float | None = Field(
        None, description="The relevance cut this search used (a cosine), or null for none."
    )


class ItemOut(BaseModel):
    """What the catalog knows about one item."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": 42,
                    "path": "/home/ana/Pictures/2023/beach.jpg",
                    "name": "beach.jpg",
                    "kind": "image",
                    "status": "ok",
                    "error": None,
                    "size": 3145728,
                    "mtime": "2023-07-14T10:32:05+00:00",
                    "width": 4032,
                    "height": 3024,
                    "duration": None,
                    "frame_count": None,
                    "root": "/home/ana/Pictures",
                    "thumb_url": "/api/items/42/thumb",
                    "media_url": "/api/items/42/media",
                }
            ]
        }
    )

    item_id: int
    path: str
    name: str
    kind: MediaKind
    status: str
    error: str | None
    size: int
    mtime: str = Field(description="Modification time (ISO 8601, UTC) when indexed.")
    width: int | None
    height: int | None
    duration: float | None
    frame_count: int | None
    root: str | None
    thumb_url: str
    media_url: str


class StatusOut(BaseModel):
    """Library status (as `clipsearch status --json`) plus the server's own state."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "library": "/home/ana/.local/share/clipsearch/default",
                    "model": "ViT-B-32:laion2b_s34b_b79k",
                    "dim": 512,
                    "items": {
                        "total": 1521,
                        "ok": 1520,
                        "failed": 1,
                        "by_kind": {
                            "image": {"ok": 1480, "failed": 1},
                            "video": {"ok": 40, "failed": 0},
                        },
                    },
                    "vectors": 9730,
                    "frames": 8210,
                    "failures": [
                        {
                            "path": "/home/ana/Pictures/broken.jpg",
                            "kind": "image",
                            "error": "truncated JPEG",
                        }
                    ],
                    "roots": ["/home/ana/Pictures"],
                    "model_loaded": True,
                    "model_error": None,
                    "indexing": False,
                    "can_index_new_folders": True,
                }
            ]
        },
    )

    library: str
    model: str | None = Field(description="The model spec the library is bound to (or will use).")
    items: dict[str, Any] | None = Field(None, description="Counts: total, ok, failed, by_kind.")
    failures: list[dict[str, str]] = Field(
        default_factory=list, description="Failed files and why."
    )
    roots: list[str]
    ocr: dict[str, Any] | None = Field(
        None,
        description="Text reading: enabled, frames, and per kind the indexed items, the items "
        "read and those with text.",
    )
    capture_times: dict[str, int] | None = Field(
        None,
        description="Indexed items by where their capture time came from: exif, container, "
        "mtime, and unread (indexed before capture times were recorded; the mtime stands in).",
    )
    captions: dict[str, Any] | None = Field(
        None,
        description="BLIP captions: per kind the indexed items and those captioned "
        "(by_kind: items, read, with_text), and the number of captions (texts).",
    )
    model_loaded: bool
    model_loading: bool = Field(
        False, description="The model is being loaded; queries sent meanwhile wait for it."
    )
    model_error: str | None
    indexing: bool
    can_index_new_folders: bool


class IndexRequest(BaseModel):
    """Start indexing. Without ``roots``, every folder the library already knows is re-indexed."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"roots": ["/home/ana/Pictures"]},
                {"roots": ["/home/ana/Videos"], "exclude": ["*/tmp/*"], "video_sampler": "fps:1"},
                {},
            ]
        },
    )

    roots: list[str] = Field(
        default_factory=list, max_length=32, description="Folders on the server's disk."
    )
    include: list[str] = Field(default_factory=list, max_length=32)
    exclude: list[str] = Field(default_factory=list, max_length=32)
    hidden: bool = False
    video_sampler: str = Field(
        "auto", max_length=40, description="auto | uniform:N | fps:R | shots[:K]"
    )
    retry_failed: bool = False
    ocr: bool | None = Field(
        None, description="Read the text in images (remembered; null: as last time)."
    )
    ocr_frames: bool | None = Field(
        None, description="Also read the text in video frames (remembered; null: as last time)."
    )


class IndexProgressOut(BaseModel):
    """The current (or last) indexing job."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "state": "running",
                    "phase": "encoding",
                    "roots": ["/home/ana/Pictures"],
                    "found": 1520,
                    "to_encode": 300,
                    "done": 120,
                    "failed": 1,
                    "frames": 0,
                    "files_per_s": 41.2,
                    "elapsed_s": 3.1,
                    "errors": [
                        {"path": "/home/ana/Pictures/broken.jpg", "error": "truncated JPEG"}
                    ],
                    "report": None,
                    "message": None,
                }
            ]
        },
    )

    state: Literal["idle", "running", "stopping", "done", "failed", "stopped"]
    phase: str | None = None
    roots: list[str] = Field(default_factory=list)
    found: int = 0
    to_encode: int | None = None
    done: int = 0
    failed: int = 0
    frames: int = 0
    files_per_s: float | None = None
    elapsed_s: float = 0.0
    errors: list[dict[str, str]] = Field(default_factory=list)
    report: dict[str, Any] | None = None
    message: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorOut,
        "description": "Bad query or option (empty query, bad filter clause).",
    },
    401: {"model": ErrorOut, "description": "A token is required (--token / CLIPSEARCH_TOKEN)."},
    422: {"model": ErrorOut, "description": "Malformed request (types, ranges, JSON)."},
    503: {"model": ErrorOut, "description": "The model or the library is unavailable."},
}
