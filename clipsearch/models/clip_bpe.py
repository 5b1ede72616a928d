"""CLIP's byte-pair-encoding tokenizer, without torch.

The same algorithm and vocabulary as open_clip's ``SimpleTokenizer`` (itself copied from
OpenAI CLIP, MIT licence): ftfy + HTML-unescape cleaning, whitespace collapsing, lower
case, the CLIP regex split, byte-level BPE over the 49 152-token vocabulary shipped in the
open_clip package, ``<start_of_text>`` ... ``<end_of_text>``, zero padding, and truncation
that keeps the end token. open_clip's module imports torch (it returns tensors); this one
returns numpy, so a text query can be tokenized by a process that never imports torch.
Equality with open_clip's tokenizer is tested on a set of awkward strings.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import itertools
import os
import re
import threading
from collections.abc import Sequence

import numpy as np

from clipsearch.errors import ModelError

_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2
_SPECIAL = ("<start_of_text>", "<end_of_text>")
# CLIP's split: the special tokens, contractions, runs of letters, single digits, runs of
# anything else but whitespace (\p{L} / \p{N}: the `regex` module's Unicode classes)...
_SPLIT = "|".join(_SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# ...which on ASCII text are these classes of the standard library's `re`.
_ASCII_SPLIT = re.compile(
    "|".join(_SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+""",
    re.IGNORECASE | re.ASCII,
)


def plain_text(text: str) -> bool:
    """True when CLIP's cleaning (ftfy ``fix_text``, then HTML unescaping twice) leaves
    ``text`` as it is: printable ASCII without ``&``. ftfy only changes non-ASCII text
    (mojibake, quotes, ligatures, widths), control characters, line breaks and terminal
    escapes (neither printable), and HTML entities (which need ``&``)."""
    return text.isascii() and text.isprintable() and "&" not in text


def vocabulary_path() -> str:
    """The BPE merges file inside the installed open_clip package (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("open_clip_torch is not installed: pip install clipsearch")
    return os.path.join(next(iter(spec.submodule_search_locations)), _VOCAB_FILE)


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


class ClipBpeTokenizer:
    """``tokenizer(texts) -> (N, context_length) int64`` exactly as open_clip's
    ``SimpleTokenizer(context_length=...)`` with its default cleaning ("lower")."""

    def __init__(self, context_length: int = 77, vocabulary: str | None = None) -> None:
        self.context_length = int(context_length)
        self.byte_encoder = _bytes_to_unicode()
        with gzip.open(vocabulary or vocabulary_path()) as f:
            merges = f.read().decode("utf-8").split("\n")[1 : _N_MERGES + 1]  # "first second"
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += [m.replace(" ", "") for m in merges]
        vocab += _SPECIAL
        self.encoder = dict(zip(vocab, range(len(vocab)), strict=True))
        # a merge's rank by "first second" (tokens hold no space: bytes map to printable
        # characters), built without a tuple per merge
        self.bpe_ranks = dict(zip(merges, range(len(merges)), strict=True))
        self.sot_token_id, self.eot_token_id = (self.encoder[t] for t in _SPECIAL)
        self._cache = {t: t for t in _SPECIAL}
        self._cache_lock = threading.Lock()
        self._unicode_split = None  # ftfy and `regex` load for the first non-plain text

    def _clean(self, text: str) -> str:
        if not plain_text(text):
            import ftfy  # open_clip's own dependencies: present wherever open_clip is

            text = html.unescape(html.unescape(ftfy.fix_text(text)))
        text = text.strip()
        return " ".join(text.split()).strip().lower()

    def _split(self, text: str) -> list[str]:
        """CLIP's pre-tokenization of cleaned text."""
        if text.isascii():
            return _ASCII_SPLIT.findall(text)
        if self._unicode_split is None:
            import regex

            self._unicode_split = regex.compile(_SPLIT, regex.IGNORECASE)
        return self._unicode_split.findall(text)

    def _bpe(self, token: str) -> str:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word: tuple[str, ...] = (*token[:-1], token[-1] + "</w>")
        pairs = set(itertools.pairwise(word))
        if not pairs:
            return token + "</w>"
        ranks = self.bpe_ranks
        while True:
            bigram = min(pairs, key=lambda p: ranks.get(f"{p[0]} {p[1]}", float("inf")))
            first, second = bigram
            if f"{first} {second}" not in ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = set(itertools.pairwise(word))
        out = " ".join(word)
        with self._cache_lock:
            self._cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the start/end tokens."""
        ids: list[int] = []
        for token in self._split(self._clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(token).split(" "))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)  # (N, L)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = ids
        return out
