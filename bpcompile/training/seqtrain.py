"""Training loops for sequence modules: taggers and language models.

Both are Algorithm 1 (SGD) with the lecture's RNN training tricks:
mini-batches of sentences bucketed by length and padded with a mask (tagger),
and truncated BPTT over a long token stream, carrying the final state of one
chunk into the next without backpropagating across the boundary (language
model).
"""

import math
import sys
import time

import numpy as np

from .sequences import Vocabulary, bptt_chunks, bucket_batches, pad, pad_labels

# The 17 universal part-of-speech tags of Universal Dependencies.
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
        "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X")


def _update(params, grads, lr):
    for key, value in params.items():
        value -= lr * grads[key]


def _batch(module, sentences, index, vocab, tag_ids):
    words = [vocab.encode([w.lower() for w, _ in sentences[i]]) for i in index]
    tags = [[tag_ids[t] for _, t in sentences[i]] for i in index]
    x, mask = pad(words, pad_id=vocab.pad_id)
    return x, pad_labels(tags), mask.astype(module.DTYPE)


def tagger_accuracy(module, params, sentences, vocab, tag_ids, batch_size=64):
    """(mean loss per token, token accuracy) over tagged sentences."""
    total_loss = correct = count = 0.0
    lengths = [len(s) for s in sentences]
    for index in bucket_batches(lengths, batch_size, shuffle=False):
        x, y, mask = _batch(module, sentences, index, vocab, tag_ids)
        loss, cache = module.forward(params, x, y, mask)
        real = mask.sum()
        total_loss += float(loss) * real
        predicted = cache["e"].argmax(axis=-1)      # e is proportional to softmax
        correct += float(((predicted == y) * mask).sum())
        count += real
    return total_loss / max(count, 1), correct / max(count, 1)


UD1_TO_UD2 = {"CONJ": "CCONJ", "PRT": "PART"}   # tags renamed between UD versions 1 and 2


def fit_tags(sentences, outputs, out=None):
    """Sentences with UD v1 tag names renamed, and tags outside UPOS mapped to X
    when the data has more tags than the model has outputs."""
    renamed = [[(w, UD1_TO_UD2.get(t, t)) for w, t in s] for s in sentences]
    tags = tagset(renamed)
    if len(tags) <= outputs:
        return renamed
    extra = sorted(set(tags) - set(UPOS))
    if out is not None:
        out.write(f"note: {len(tags)} tags for {outputs} outputs; tagging {', '.join(extra)} as X\n")
    return [[(w, t if t in UPOS else "X") for w, t in s] for s in renamed]


def tagset(*corpora):
    """The UD tags in UPOS order, followed by any other tags the data uses (sorted)."""
    seen = {t for corpus in corpora if corpus for s in corpus for _, t in s}
    return tuple(UPOS) + tuple(sorted(seen - set(UPOS)))


def train_tagger(module, train_sentences, test_sentences=None, epochs=10, lr=0.1, batch_size=8,
                 seed=0, vocab=None, tags=None, params=None, out=None, stop_at=None):
    """SGD on (word, tag) sentences with bucketed, masked mini-batches.

    Tag ids follow `tags` (default: `tagset` of the data).  Returns (params,
    vocab, history); stops early when training accuracy reaches `stop_at`.
    """
    out = out or sys.stdout
    if tags is None:
        train_sentences = fit_tags(train_sentences, module.OUTPUTS, out)
        test_sentences = test_sentences and fit_tags(test_sentences, module.OUTPUTS)
        tags = tagset(train_sentences, test_sentences)
    if vocab is None:
        vocab = Vocabulary.build([[w.lower() for w, _ in s] for s in train_sentences],
                                 max_size=_vocab_size(module))
    if len(vocab) > _vocab_size(module):
        raise ValueError(f"the vocabulary has {len(vocab)} words; the spec's input allows {_vocab_size(module)}")
    tag_ids = {t: i for i, t in enumerate(tags)}
    if len(tags) > module.OUTPUTS:
        raise ValueError(f"{len(tags)} tags, but the spec's last layer has {module.OUTPUTS} outputs")
    params = params if params is not None else module.init_params(seed)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        lengths = [len(s) for s in train_sentences]
        for index in bucket_batches(lengths, batch_size, seed=seed + epoch):
            x, y, mask = _batch(module, train_sentences, index, vocab, tag_ids)
            module.sgd_step(params, x, y, lr, mask)
        record = {"epoch": epoch, "seconds": time.perf_counter() - start}
        record["train_loss"], record["train_acc"] = tagger_accuracy(module, params, train_sentences,
                                                                    vocab, tag_ids)
        line = (f"epoch {epoch}/{epochs}  train loss {record['train_loss']:.4f} "
                f"acc {100 * record['train_acc']:.2f}%")
        if test_sentences:
            record["test_loss"], record["test_acc"] = tagger_accuracy(module, params, test_sentences,
                                                                      vocab, tag_ids)
            line += f"  test loss {record['test_loss']:.4f} acc {100 * record['test_acc']:.2f}%"
        history.append(record)
        out.write(f"{line}  ({record['seconds']:.1f}s)\n")
        out.flush()
        if stop_at is not None and record["train_acc"] >= stop_at:
            break
    return params, vocab, history


def _vocab_size(module):
    return int(module.VOCAB)


def perplexity(module, params, stream, batch_size=16, seq_len=35):
    """exp(mean loss per token) over a token stream, carrying the state across chunks."""
    state, total, count = None, 0.0, 0
    for x, y in bptt_chunks(stream, batch_size, seq_len):
        loss, cache = module.forward(params, x, y, None, state)
        state = cache["state"]
        total += float(loss) * y.size
        count += y.size
    return math.exp(total / max(count, 1))


def train_language_model(module, train_ids, valid_ids=None, epochs=1, lr=1.0, batch_size=16,
                         seq_len=35, seed=0, params=None, out=None, clip=5.0):
    """Truncated BPTT: chunks of `seq_len` steps; the state is carried, the gradient is not.

    The gradient is clipped to norm `clip` (a standard safeguard for RNNs).
    Returns (params, history) with training and validation perplexity per epoch.
    """
    out = out or sys.stdout
    params = params if params is not None else module.init_params(seed)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        state, total, count = None, 0.0, 0
        for x, y in bptt_chunks(train_ids, batch_size, seq_len):
            loss, cache = module.forward(params, x, y, None, state)
            grads = module.backward(params, cache)
            norm = math.sqrt(sum(float(np.vdot(grads[k], grads[k])) for k in params))
            _update(params, grads, lr * min(1.0, clip / max(norm, 1e-12)))
            state = cache["state"]
            total += float(loss) * y.size
            count += y.size
        record = {"epoch": epoch, "train_ppl": math.exp(total / max(count, 1)),
                  "seconds": time.perf_counter() - start}
        line = f"epoch {epoch}/{epochs}  train perplexity {record['train_ppl']:.2f}"
        if valid_ids is not None:
            record["valid_ppl"] = perplexity(module, params, valid_ids, batch_size, seq_len)
            line += f"  valid perplexity {record['valid_ppl']:.2f}"
        history.append(record)
        out.write(f"{line}  ({record['seconds']:.1f}s, {count / record['seconds']:.0f} words/s)\n")
        out.flush()
    return params, history
