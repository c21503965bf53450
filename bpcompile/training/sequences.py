"""Sequence data for recurrent networks: padding, bucketing, BPTT chunks, corpora, vocabularies.

The compiled RNN/LSTM modules consume dense arrays, so everything here turns
variable-length text into fixed-shape NumPy batches:

* :func:`pad` / :func:`pad_labels` -- a list of sequences into a ``(B, T)``
  (or ``(B, T, I)``) array plus a ``(B, T)`` mask (1 = real position, 0 = pad);
* :func:`bucket_batches` -- batches of similar lengths (little wasted padding),
  in a shuffled but seed-determined order;
* :func:`bptt_chunks` -- the language-model layout for truncated
  backpropagation through time: a token stream cut into ``B`` contiguous rows,
  walked ``T`` columns at a time, so state can be carried across chunks;
* :func:`read_conllu` -- (word, UPOS) sentences from a CoNLL-U treebank file;
* :func:`read_text_tokens` -- a whitespace-tokenized text file with ``<eos>``
  after every line (the Penn Treebank language-model convention);
* :func:`tokenize` and :class:`Vocabulary` -- raw text to ids and back.

Only NumPy and the standard library are used; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "pad",
    "pad_labels",
    "bucket_batches",
    "bptt_chunks",
    "read_conllu",
    "tokenize",
    "Vocabulary",
    "read_text_tokens",
]


# ---------------------------------------------------------------------------
# padding

def pad(sequences, pad_id=0, dtype=np.int64, max_len=None, mask_dtype=np.float64):
    """Pad variable-length sequences into one array and a mask.

    ``sequences`` is a list whose items are either 1-D token-id sequences
    (result ``tokens`` has shape ``(B, T)`` and dtype ``dtype``) or 2-D
    feature sequences of shape ``(T_i, I)`` (result has shape ``(B, T, I)`` and
    a floating dtype: ``dtype`` if it is floating, else float64).  ``T`` is the
    longest length, or ``max_len`` if given (longer sequences are truncated to
    their first ``max_len`` positions).  ``mask`` is ``(B, T)`` in
    ``mask_dtype`` with 1 at real positions and 0 at padding.
    """
    arrays = [np.asarray(s) for s in sequences]
    if not arrays:
        raise ValueError("pad: no sequences given")
    if max_len is not None and (int(max_len) != max_len or max_len < 0):
        raise ValueError(f"pad: max_len must be a non-negative integer, got {max_len!r}")

    # An empty Python list becomes a 1-D float array of size 0; it is
    # compatible with either layout, so it must not decide which one we use.
    ndims = {a.ndim for a in arrays if a.size > 0 or a.ndim != 1}
    if not ndims:
        ndims = {1}
    if len(ndims) != 1 or not ndims <= {1, 2}:
        raise ValueError("pad: sequences must all be 1-D (token ids) or all 2-D (T_i, I) "
                         f"feature arrays; got dimensions {sorted(ndims)}")
    features = ndims == {2}

    lengths = [len(a) for a in arrays]
    width = max(lengths) if max_len is None else int(max_len)

    if features:
        dims = {a.shape[1] for a in arrays if a.ndim == 2}
        if len(dims) != 1:
            raise ValueError(f"pad: feature sequences have different widths {sorted(dims)}")
        (n_features,) = dims
        out_dtype = np.dtype(dtype) if np.issubdtype(np.dtype(dtype), np.floating) else np.float64
        tokens = np.full((len(arrays), width, n_features), pad_id, dtype=out_dtype)
    else:
        tokens = np.full((len(arrays), width), pad_id, dtype=dtype)

    mask = np.zeros((len(arrays), width), dtype=mask_dtype)
    for b, (a, n) in enumerate(zip(arrays, lengths)):
        n = min(n, width)
        if n:
            tokens[b, :n] = a[:n]
        mask[b, :n] = 1
    return tokens, mask


def pad_labels(label_sequences, pad_id=0, max_len=None):
    """Pad per-position label sequences into a ``(B, T)`` int64 array.

    Use it with the mask from :func:`pad` on the matching inputs: the padded
    positions hold ``pad_id`` and should be masked out of the loss.
    """
    labels, _ = pad(label_sequences, pad_id=pad_id, dtype=np.int64, max_len=max_len)
    if labels.ndim != 2:
        raise ValueError("pad_labels: label sequences must be 1-D")
    return labels


# ---------------------------------------------------------------------------
# bucketing

def bucket_batches(lengths, batch_size, seed=0, shuffle=True, bucket_width=None):
    """Group example indices into batches of similar length.

    Examples are sorted by ``(length, index)`` -- so the result is
    deterministic -- and cut into consecutive batches of ``batch_size`` (the
    last may be smaller).  With ``shuffle`` the order of the batches is
    shuffled with ``np.random.default_rng(seed)``; inside a batch the indices
    stay in sorted order.

    With ``bucket_width`` lengths are first grouped into buckets
    ``length // bucket_width``; each bucket's examples are shuffled (if
    ``shuffle``) so the batch *membership* varies with the seed too, and each
    bucket is batched on its own, which guarantees ``max - min < bucket_width``
    inside every batch (each bucket's last batch may be smaller).

    Returns a list of int64 index arrays; every index appears exactly once.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"bucket_batches: lengths must be 1-D, got shape {lengths.shape}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"bucket_batches: batch_size must be a positive integer, got {batch_size!r}")
    if bucket_width is not None and (int(bucket_width) != bucket_width or bucket_width < 1):
        raise ValueError(f"bucket_batches: bucket_width must be a positive integer, got {bucket_width!r}")
    batch_size = int(batch_size)
    rng = np.random.default_rng(seed)

    # A stable sort keeps equal lengths in index order: the tie-break rule.
    order = np.argsort(lengths, kind="stable").astype(np.int64)

    if bucket_width is None:
        groups = [order]
    else:
        keys = lengths[order] // int(bucket_width)
        cuts = np.flatnonzero(np.diff(keys)) + 1
        groups = np.split(order, cuts)

    batches = []
    for group in groups:
        if shuffle and bucket_width is not None:
            group = rng.permutation(group)
        for start in range(0, len(group), batch_size):
            batch = group[start:start + batch_size]
            if bucket_width is not None:
                # restore (length, index) order inside the batch after the shuffle
                batch = batch[np.lexsort((batch, lengths[batch]))]
            batches.append(np.ascontiguousarray(batch, dtype=np.int64))

    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


# ---------------------------------------------------------------------------
# truncated BPTT

def bptt_chunks(stream, batch_size, seq_len):
    """Cut a token stream into ``(inputs, targets)`` chunks for truncated BPTT.

    The 1-D integer ``stream`` is cut into ``batch_size`` contiguous rows of
    ``L = len(stream) // batch_size`` tokens (the tail that does not fill a row
    is dropped).  Chunk ``k`` holds columns ``[k*T, (k+1)*T)`` of the inputs and
    the same columns shifted by one of the targets, so ``targets[:, t]`` is the
    token after ``inputs[:, t]``.  Targets never cross a row end, so a row
    yields ``L - 1`` input positions; the last chunk may be narrower than ``T``.
    Row ``b`` of chunk ``k + 1`` continues row ``b`` of chunk ``k`` exactly, so
    a model can carry its hidden state from one chunk to the next.

    Returns a list of ``(inputs, targets)`` pairs of shape ``(B, T_k)``.
    """
    stream = np.asarray(stream)
    if stream.ndim != 1:
        raise ValueError(f"bptt_chunks: stream must be 1-D, got shape {stream.shape}")
    if stream.size and not np.issubdtype(stream.dtype, np.integer):
        raise ValueError(f"bptt_chunks: stream must hold integer token ids, got {stream.dtype}")
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if int(value) != value or value < 1:
            raise ValueError(f"bptt_chunks: {name} must be a positive integer, got {value!r}")
    batch_size, seq_len = int(batch_size), int(seq_len)

    row_len = len(stream) // batch_size
    if row_len < 2:
        raise ValueError(f"bptt_chunks: a stream of {len(stream)} tokens is too short for "
                         f"{batch_size} rows of at least 2 tokens")
    rows = stream[:row_len * batch_size].reshape(batch_size, row_len)

    chunks = []
    for start in range(0, row_len - 1, seq_len):
        stop = min(start + seq_len, row_len - 1)
        # copies, so that writing into one chunk cannot alter its neighbours
        chunks.append((rows[:, start:stop].copy(), rows[:, start + 1:stop + 1].copy()))
    return chunks


# ---------------------------------------------------------------------------
# reading files

def _open_text(path):
    """Open a text file for reading as UTF-8, decompressing ``.gz`` transparently."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def read_conllu(path_or_lines):
    """Read (word, UPOS) sentences from CoNLL-U.

    ``path_or_lines`` is a path (``str`` or ``os.PathLike``, optionally
    ``.gz``) or an iterable of lines.  Comment lines (``#``), multiword token
    ranges (IDs like ``3-4``) and empty nodes (IDs like ``5.1``) are skipped --
    the syntactic words of a range are listed on their own lines, so keeping
    the range too would count them twice.  Sentences end at blank lines; a
    missing final blank line is fine.  A token line with fewer than 4
    tab-separated columns raises ``ValueError`` naming the source and line.
    """
    if isinstance(path_or_lines, (str, os.PathLike)):
        source = os.fspath(path_or_lines)
        with _open_text(path_or_lines) as fh:
            return _parse_conllu(fh, source)
    return _parse_conllu(path_or_lines, "<lines>")


def _parse_conllu(lines, source):
    sentences: List[List[Tuple[str, str]]] = []
    current: List[Tuple[str, str]] = []
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        if line.startswith("#"):
            continue
        columns = line.split("\t")
        if len(columns) < 4:
            raise ValueError(f"{source}, line {lineno}: malformed CoNLL-U token line "
                             f"(expected at least 4 tab-separated columns, got {len(columns)}): "
                             f"{line!r}")
        token_id = columns[0]
        if "-" in token_id or "." in token_id:
            continue
        if not token_id.isdigit():
            raise ValueError(f"{source}, line {lineno}: malformed CoNLL-U token ID {token_id!r}")
        current.append((columns[1], columns[3]))
    if current:
        sentences.append(current)
    return sentences


def read_text_tokens(path, eos="<eos>", tokenizer: Optional[Callable[[str], List[str]]] = None):
    """Tokens of a text file with ``eos`` appended at the end of every line.

    This is the Penn Treebank language-model convention: the file is already
    tokenized, so by default lines are split on whitespace (``str.split``),
    which keeps markers such as ``<unk>`` intact.  Pass ``tokenizer`` (e.g.
    :func:`tokenize`) for raw text.  Blank lines are skipped.  ``.gz`` files
    are decompressed.
    """
    split = tokenizer if tokenizer is not None else str.split
    tokens: List[str] = []
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            tokens.extend(split(line))
            tokens.append(eos)
    return tokens


# ---------------------------------------------------------------------------
# tokenizer and vocabulary

# Alternatives are tried in order: numbers with inner separators (3.14, 1,000)
# first so they stay one token; then word runs that may contain apostrophes
# between letters (don't, o'clock); then any other non-space character alone.
_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)+|\w+(?:'\w+)*|[^\w\s]")


def tokenize(text: str) -> List[str]:
    """Lowercase word, number and punctuation tokens of ``text``.

    ``"Don't panic: it's 3.14!"`` -> ``["don't", "panic", ":", "it's", "3.14", "!"]``.
    Typographic apostrophes are normalised to ``'``.
    """
    text = text.lower().replace("\u2019", "'")
    return _TOKEN_RE.findall(text)


class Vocabulary:
    """A bijection between tokens and consecutive integer ids.

    ``pad_id`` / ``unk_id`` are the ids of ``pad_token`` / ``unk_token`` (None
    when that token is absent).  Unknown tokens encode to ``unk_id``; without an
    unk token they raise ``KeyError``.
    """

    def __init__(self, tokens: Iterable[str], pad_token: str = "<pad>", unk_token: str = "<unk>"):
        self._tokens: List[str] = list(tokens)
        self._ids = {}
        for i, tok in enumerate(self._tokens):
            if not isinstance(tok, str):
                raise TypeError(f"Vocabulary: tokens must be str, got {type(tok).__name__} at id {i}")
            if tok in self._ids:
                raise ValueError(f"Vocabulary: duplicate token {tok!r} (ids {self._ids[tok]} and {i})")
            self._ids[tok] = i
        self.pad_token = pad_token
        self.unk_token = unk_token
        self.pad_id: Optional[int] = self._ids.get(pad_token)
        self.unk_id: Optional[int] = self._ids.get(unk_token)

    @classmethod
    def build(cls, token_lists: Iterable[Iterable[str]], min_count: int = 1,
              max_size: Optional[int] = None,
              specials: Sequence[str] = ("<pad>", "<unk>")) -> "Vocabulary":
        """Build from token lists: ``specials`` first (ids 0, 1, ...), then tokens
        seen at least ``min_count`` times by descending count, ties alphabetical.

        ``max_size`` caps the total size, specials included.  ``specials[0]`` is
        the pad token and ``specials[1]`` the unk token.
        """
        specials = list(specials)
        if len(set(specials)) != len(specials):
            raise ValueError(f"Vocabulary.build: duplicate special tokens {specials}")
        if max_size is not None and max_size < len(specials):
            raise ValueError(f"Vocabulary.build: max_size={max_size} is smaller than the "
                             f"{len(specials)} special tokens")
        counts: Counter = Counter()
        for tokens in token_lists:
            if isinstance(tokens, str):
                raise TypeError("Vocabulary.build: expected lists of tokens, got a str "
                                "(wrap it in a list, or tokenize it first)")
            counts.update(tokens)
        special_set = set(specials)
        words = sorted((t for t, c in counts.items() if c >= min_count and t not in special_set),
                       key=lambda t: (-counts[t], t))
        if max_size is not None:
            words = words[:max_size - len(specials)]
        pad_token = specials[0] if len(specials) > 0 else "<pad>"
        unk_token = specials[1] if len(specials) > 1 else "<unk>"
        return cls(specials + words, pad_token=pad_token, unk_token=unk_token)

    # -- lookups ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token) -> bool:
        return token in self._ids

    def __iter__(self):
        return iter(self._tokens)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (self._tokens == other._tokens and self.pad_id == other.pad_id
                and self.unk_id == other.unk_id)

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, pad_id={self.pad_id}, unk_id={self.unk_id})"

    @property
    def tokens(self) -> List[str]:
        """All tokens in id order (a copy)."""
        return list(self._tokens)

    def id(self, token: str) -> int:
        """Id of ``token``; ``unk_id`` for an unknown token (KeyError if there is none)."""
        i = self._ids.get(token)
        if i is not None:
            return i
        if self.unk_id is None:
            raise KeyError(f"token {token!r} is not in the vocabulary, which has no unk token")
        return self.unk_id

    def token(self, id: int) -> str:
        """Token with id ``id`` (IndexError if out of range)."""
        i = int(id)
        if not 0 <= i < len(self._tokens):
            raise IndexError(f"id {i} out of range for a vocabulary of {len(self._tokens)} tokens")
        return self._tokens[i]

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Ids of ``tokens`` as an int64 array; unknown tokens map to ``unk_id``."""
        if isinstance(tokens, str):
            # iterating a str would silently encode characters
            raise TypeError("Vocabulary.encode: expected a list of tokens, got a str")
        return np.fromiter((self.id(t) for t in tokens), dtype=np.int64)

    def decode(self, ids) -> List[str]:
        """Tokens for a sequence of ids."""
        return [self.token(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]

    # -- persistence ----------------------------------------------------------

    def save(self, path) -> None:
        """Write one token per line (UTF-8), atomically: temp file then ``os.replace``."""
        for i, tok in enumerate(self._tokens):
            if tok == "" or any(ch in tok for ch in "\n\r"):
                raise ValueError(f"Vocabulary.save: token {tok!r} (id {i}) cannot be stored "
                                 "one per line")
        from ..cli.output import atomic_write
        text = "".join(tok + "\n" for tok in self._tokens)
        atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))

    @classmethod
    def load(cls, path, pad_token: str = "<pad>", unk_token: str = "<unk>") -> "Vocabulary":
        """Read a file written by :meth:`save` (line number = id)."""
        text = Path(path).read_text(encoding="utf-8")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for lineno, tok in enumerate(lines, start=1):
            if tok == "":
                raise ValueError(f"{os.fspath(path)}, line {lineno}: empty token")
        try:
            return cls(lines, pad_token=pad_token, unk_token=unk_token)
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)}: {exc}") from None
