"""Tests for bpcompile.training.sequences: padding, bucketing, BPTT chunks, CoNLL-U, tokenizer, vocabulary."""

import gzip
import os

import numpy as np
import pytest

from bpcompile.training import sequences as sq
from bpcompile.training.sequences import Vocabulary

pytestmark = pytest.mark.both_targets


# ---------------------------------------------------------------------------
# padding

def test_pad_token_ids_shapes_values_and_mask():
    tokens, mask = sq.pad([[5, 6, 7], [8], []], pad_id=0)
    assert tokens.shape == (3, 3) and tokens.dtype == np.int64
    assert mask.shape == (3, 3) and mask.dtype == np.float64
    np.testing.assert_array_equal(tokens, [[5, 6, 7], [8, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])


def test_pad_custom_pad_id_max_len_and_mask_dtype():
    tokens, mask = sq.pad([np.array([1, 2, 3, 4]), [9, 9]], pad_id=-1, max_len=3,
                          mask_dtype=np.float32)
    np.testing.assert_array_equal(tokens, [[1, 2, 3], [9, 9, -1]])  # first row truncated
    assert mask.dtype == np.float32
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 0]])
    tokens, mask = sq.pad([[1]], max_len=4)  # max_len also widens
    np.testing.assert_array_equal(tokens, [[1, 0, 0, 0]])
    np.testing.assert_array_equal(mask.sum(axis=1), [1])


def test_pad_feature_vectors():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    x, mask = sq.pad([a, b])
    assert x.shape == (2, 4, 3) and np.issubdtype(x.dtype, np.floating)
    np.testing.assert_array_equal(x[0], a)
    np.testing.assert_array_equal(x[1, :2], b)
    np.testing.assert_array_equal(x[1, 2:], 0.0)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 0, 0]])
    x32, _ = sq.pad([a, b], dtype=np.float32)
    assert x32.dtype == np.float32


def test_pad_rejects_mixed_or_empty_input():
    with pytest.raises(ValueError):
        sq.pad([])
    with pytest.raises(ValueError):
        sq.pad([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError):
        sq.pad([[1, 2], np.zeros((2, 3))])


def test_pad_labels():
    labels = sq.pad_labels([[3, 1], [2, 2, 2, 4]])
    assert labels.dtype == np.int64 and labels.shape == (2, 4)
    np.testing.assert_array_equal(labels, [[3, 1, 0, 0], [2, 2, 2, 4]])
    np.testing.assert_array_equal(sq.pad_labels([[1], [1, 1]], pad_id=-100), [[1, -100], [1, 1]])


# ---------------------------------------------------------------------------
# bucketing

LENGTHS = np.random.default_rng(42).integers(1, 60, size=103)


def _check_partition(batches, n):
    flat = np.concatenate(batches)
    assert flat.dtype == np.int64
    assert sorted(flat.tolist()) == list(range(n))


def test_bucket_batches_partition_and_sorted_within_batch():
    batches = sq.bucket_batches(LENGTHS, batch_size=8, seed=1)
    _check_partition(batches, len(LENGTHS))
    assert len(batches) == 13 and sorted(len(b) for b in batches)[0] == 103 - 12 * 8
    for b in batches:
        keys = list(zip(LENGTHS[b], b))
        assert keys == sorted(keys)  # sorted by length, ties by index


def test_bucket_batches_unshuffled_is_sorted_order_and_tight():
    batches = sq.bucket_batches(LENGTHS, batch_size=8, shuffle=False)
    flat = np.concatenate(batches)
    np.testing.assert_array_equal(flat, np.lexsort((np.arange(len(LENGTHS)), LENGTHS)))
    # sorted data: the spread inside a batch is far below the global spread
    spreads = [LENGTHS[b].max() - LENGTHS[b].min() for b in batches]
    assert max(spreads) <= 10 < LENGTHS.max() - LENGTHS.min()


def test_bucket_batches_ties_broken_by_index():
    batches = sq.bucket_batches([2, 1, 2, 1, 2], batch_size=2, shuffle=False)
    assert [b.tolist() for b in batches] == [[1, 3], [0, 2], [4]]


def test_bucket_batches_seed_determinism():
    one = sq.bucket_batches(LENGTHS, 8, seed=3)
    two = sq.bucket_batches(LENGTHS, 8, seed=3)
    other = sq.bucket_batches(LENGTHS, 8, seed=4)
    assert [b.tolist() for b in one] == [b.tolist() for b in two]
    assert [b.tolist() for b in one] != [b.tolist() for b in other]
    # the same batches, only in another order
    assert sorted(map(tuple, one)) == sorted(map(tuple, other))


def test_bucket_batches_with_bucket_width():
    batches = sq.bucket_batches(LENGTHS, batch_size=4, seed=0, bucket_width=5)
    _check_partition(batches, len(LENGTHS))
    for b in batches:
        assert len(b) <= 4
        assert LENGTHS[b].max() // 5 == LENGTHS[b].min() // 5  # one bucket per batch
        keys = list(zip(LENGTHS[b], b))
        assert keys == sorted(keys)
    again = sq.bucket_batches(LENGTHS, batch_size=4, seed=0, bucket_width=5)
    assert [b.tolist() for b in batches] == [b.tolist() for b in again]
    other = sq.bucket_batches(LENGTHS, batch_size=4, seed=9, bucket_width=5)
    # membership is shuffled within buckets, so the set of batches changes too
    assert sorted(map(tuple, batches)) != sorted(map(tuple, other))


def test_bucket_batches_bad_arguments():
    with pytest.raises(ValueError):
        sq.bucket_batches([1, 2], batch_size=0)
    with pytest.raises(ValueError):
        sq.bucket_batches([1, 2], batch_size=2, bucket_width=0)
    assert sq.bucket_batches([], batch_size=3) == []


# ---------------------------------------------------------------------------
# truncated BPTT

def test_bptt_chunks_layout_continuity_and_short_last_chunk():
    stream = np.arange(100, 203)  # 103 tokens -> 4 rows of 25, tail of 3 dropped
    chunks = sq.bptt_chunks(stream, batch_size=4, seq_len=7)
    widths = [x.shape[1] for x, _ in chunks]
    assert widths == [7, 7, 7, 3]  # 24 input positions per row, last chunk kept short
    for x, y in chunks:
        assert x.shape == y.shape and x.shape[0] == 4
    row_len = 25
    for b in range(4):
        inputs = np.concatenate([x[b] for x, _ in chunks])
        targets = np.concatenate([y[b] for _, y in chunks])
        row = stream[b * row_len:(b + 1) * row_len]
        np.testing.assert_array_equal(inputs, row[:-1])
        np.testing.assert_array_equal(targets, row[1:])
    # targets are the next token of inputs, and chunk k+1 picks up where chunk k ended
    for k, (x, y) in enumerate(chunks):
        np.testing.assert_array_equal(y, x + 1)
        if k + 1 < len(chunks):
            np.testing.assert_array_equal(chunks[k + 1][0][:, 0], y[:, -1])
    assert chunks[0][0].dtype == stream.dtype


def test_bptt_chunks_are_independent_copies():
    chunks = sq.bptt_chunks(np.arange(20), batch_size=2, seq_len=4)
    chunks[0][0][:] = -1
    assert (chunks[0][1] >= 0).all() and (chunks[1][0] >= 0).all()


def test_bptt_chunks_errors():
    with pytest.raises(ValueError):
        sq.bptt_chunks(np.arange(3), batch_size=2, seq_len=4)  # rows of 1 token
    with pytest.raises(ValueError):
        sq.bptt_chunks(np.zeros((2, 5), dtype=int), batch_size=1, seq_len=2)
    with pytest.raises(ValueError):
        sq.bptt_chunks(np.arange(10), batch_size=1, seq_len=0)
    with pytest.raises(ValueError):
        sq.bptt_chunks(np.linspace(0, 1, 10), batch_size=1, seq_len=2)


# ---------------------------------------------------------------------------
# CoNLL-U

CONLLU = "\n".join([
    "# sent_id = 1",
    "# text = I don't fly.",
    "1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_",
    "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_",
    "2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_",
    "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_",
    "4\tfly\tfly\tVERB\tVB\t_\t0\troot\t_\t_",
    "4.1\tfly\tfly\tVERB\tVB\t_\t_\t_\t0:root\t_",
    "5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\tSpaceAfter=No",
    "",
    "",
    "# sent_id = 2",
    "1\tTime\ttime\tNOUN\tNN\t_\t2\tnsubj\t_\t_",
    "2\tflies\tfly\tVERB\tVBZ\t_\t0\troot\t_\t_",
])  # no trailing blank line

EXPECTED = [
    [("I", "PRON"), ("do", "AUX"), ("n't", "PART"), ("fly", "VERB"), (".", "PUNCT")],
    [("Time", "NOUN"), ("flies", "VERB")],
]


def test_read_conllu_lines():
    assert sq.read_conllu(CONLLU.splitlines()) == EXPECTED
    # lines with their newline characters (as from a file object) work as well
    assert sq.read_conllu(CONLLU.splitlines(keepends=True)) == EXPECTED


def test_read_conllu_path_and_gz(tmp_path):
    plain = tmp_path / "tiny.conllu"
    plain.write_text(CONLLU + "\n\n", encoding="utf-8")
    assert sq.read_conllu(plain) == EXPECTED
    assert sq.read_conllu(str(plain)) == EXPECTED
    packed = tmp_path / "tiny.conllu.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as fh:
        fh.write(CONLLU)
    assert sq.read_conllu(packed) == EXPECTED


def test_read_conllu_malformed_line_names_file_and_line(tmp_path):
    bad = CONLLU.splitlines()
    bad[5] = "4 fly fly VERB"  # spaces instead of tabs: one column
    with pytest.raises(ValueError, match=r"line 6"):
        sq.read_conllu(bad)
    path = tmp_path / "bad.conllu"
    path.write_text("\n".join(bad), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.conllu.*line 6"):
        sq.read_conllu(path)


# ---------------------------------------------------------------------------
# tokenizer

def test_tokenize_punctuation_apostrophes_numbers():
    assert sq.tokenize("Don't panic: it's 3.14, not 1,000!") == [
        "don't", "panic", ":", "it's", "3.14", ",", "not", "1,000", "!"]
    assert sq.tokenize("Hello, World... (again)") == [
        "hello", ",", "world", ".", ".", ".", "(", "again", ")"]
    assert sq.tokenize("'quoted' students' O\u2019Brien") == [
        "'", "quoted", "'", "students", "'", "o'brien"]
    assert sq.tokenize("  \n ") == []


# ---------------------------------------------------------------------------
# vocabulary

SENTS = [["the", "cat", "sat"], ["the", "dog", "sat"], ["a", "cat", "the"]]
# counts: the 3, cat 2, sat 2, a 1, dog 1


def test_vocabulary_build_order_and_lookups():
    v = Vocabulary.build(SENTS)
    assert v.tokens == ["<pad>", "<unk>", "the", "cat", "sat", "a", "dog"]
    assert (v.pad_id, v.unk_id) == (0, 1)
    assert len(v) == 7 and "cat" in v and "zebra" not in v
    assert v.id("sat") == 4 and v.token(4) == "sat"
    assert v.id("zebra") == v.unk_id
    ids = v.encode(["the", "zebra", "dog"])
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [2, 1, 6])
    assert v.decode(ids) == ["the", "<unk>", "dog"]
    assert v.encode([]).shape == (0,)
    # input order does not matter: the result is deterministic
    assert Vocabulary.build(SENTS[::-1]).tokens == v.tokens
    with pytest.raises(IndexError):
        v.token(7)
    with pytest.raises(TypeError):
        v.encode("the cat")


def test_vocabulary_min_count_and_max_size():
    assert Vocabulary.build(SENTS, min_count=2).tokens == ["<pad>", "<unk>", "the", "cat", "sat"]
    assert Vocabulary.build(SENTS, max_size=4).tokens == ["<pad>", "<unk>", "the", "cat"]
    with pytest.raises(ValueError):
        Vocabulary.build(SENTS, max_size=1)


def test_vocabulary_specials_not_duplicated_and_no_unk():
    v = Vocabulary.build([["<unk>", "x", "<eos>"]], specials=("<pad>", "<unk>", "<eos>"))
    assert v.tokens == ["<pad>", "<unk>", "<eos>", "x"]
    bare = Vocabulary.build([["x"]], specials=())
    assert bare.unk_id is None and bare.pad_id is None
    with pytest.raises(KeyError):
        bare.encode(["y"])


def test_vocabulary_save_load_round_trip(tmp_path):
    v = Vocabulary.build(SENTS + [["caf\u00e9", "<eos>"]], specials=("<pad>", "<unk>", "<eos>"))
    path = tmp_path / "vocab.txt"
    v.save(path)
    assert path.read_text(encoding="utf-8").splitlines() == v.tokens
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.txt"]  # no temp file left behind
    w = Vocabulary.load(path)
    assert w == v and w.tokens == v.tokens and (w.pad_id, w.unk_id) == (0, 1)
    np.testing.assert_array_equal(w.encode(["caf\u00e9", "nope"]), v.encode(["caf\u00e9", "nope"]))
    v.save(path)  # overwriting an existing file works
    assert Vocabulary.load(path) == v


def test_vocabulary_save_rejects_unstorable_tokens(tmp_path):
    v = Vocabulary(["<pad>", "<unk>", "a\nb"])
    with pytest.raises(ValueError):
        v.save(tmp_path / "v.txt")
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------
# text files

def test_read_text_tokens(tmp_path):
    path = tmp_path / "ptb.txt"
    path.write_text(" the <unk> sat \n\n   \n a cat N \n", encoding="utf-8")
    assert sq.read_text_tokens(path) == ["the", "<unk>", "sat", "<eos>", "a", "cat", "N", "<eos>"]
    raw = tmp_path / "raw.txt"
    raw.write_text("Hi, there!\n", encoding="utf-8")
    assert sq.read_text_tokens(raw, tokenizer=sq.tokenize) == ["hi", ",", "there", "!", "<eos>"]


def test_text_to_lm_batches_end_to_end(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("time flies like an arrow\nfruit flies like a banana\n", encoding="utf-8")
    tokens = sq.read_text_tokens(path)
    vocab = Vocabulary.build([tokens])
    stream = vocab.encode(tokens)
    chunks = sq.bptt_chunks(stream, batch_size=2, seq_len=3)
    x, y = chunks[0]
    assert vocab.decode(x[0]) == ["time", "flies", "like"]
    assert vocab.decode(y[1]) == ["flies", "like", "a"]
