"""Training loops for sequence modules: taggers and language models.

Both are Algorithm 1 (SGD) with the lecture's RNN training tricks:
mini-batches of sentences bucketed by length and padded with a mask (tagger),
and truncated BPTT over a long token stream, carrying the final state of one
chunk into the next without backpropagating across the boundary (language
model).

Like :func:`bpcompile.training.train.train`, each loop takes the per-batch
update as one callable (``step``), a ``start_epoch`` and an ``on_epoch_end``
hook, scores every set with one network pass per batch, shows tqdm bars and
keeps the best epoch's weights on request:

* tagger step: ``step(params, x, y, mask) -> loss`` (default: ``sgd_step``);
* language-model step: ``step(params, x, y, state) -> (loss, final state)``
  (default: :func:`clipped_sgd`).
"""

import math
import sys
import time

import numpy as np

from .progress import progress_bar
from .sequences import Vocabulary, bptt_chunks, bucket_batches, pad, pad_labels
from .train import BestWeights, epoch_line, root_only

# The 17 universal part-of-speech tags of Universal Dependencies.
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
        "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X")


def _batch(module, sentences, index, vocab, tag_ids):
    words = [vocab.encode([w.lower() for w, _ in sentences[i]]) for i in index]
    tags = [[tag_ids[t] for _, t in sentences[i]] for i in index]
    x, mask = pad(words, pad_id=vocab.pad_id)
    return x, pad_labels(tags), mask.astype(module.DTYPE)


def tagger_accuracy(module, params, sentences, vocab, tag_ids, batch_size=64, bar=None):
    """(mean loss per token, token accuracy) over tagged sentences: one forward
    pass per batch gives both (the loss, and the cache's softmax numerators)."""
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
        if bar is not None:
            bar.update(len(index))
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


def _shown_best(best):
    return f"{100 * best.value:.2f}%" if best.key.endswith("_acc") else f"{best.value:.2f}"


def _tagger_sets(train_sentences, validation, test_sentences):
    sets = [("train", train_sentences)]
    if validation:
        sets.append(("val", validation))
    if test_sentences:
        sets.append(("test", test_sentences))
    return sets


def _best(keep_best, sets, metric):
    if not keep_best:
        return None
    split = next((name for name in ("val", "test") if name in dict(sets)), "train")
    return BestWeights(f"{split}_{metric}")


def _distributed_sgd(module, lr, ranks, kind):
    """Plain SGD under MPI: the module's sgd_update of the summed gradient."""
    from . import distributed
    state = {}

    def update(params, grads):
        module.sgd_update(params, grads, state, lr)
    return getattr(distributed, f"{kind}_step")(module, update, ranks)


def _finish(best, params, out, ranks=None):
    if ranks is not None and best is not None:
        if best.epoch is not None:
            best.restore(params)
            out.write(f"kept the weights of epoch {best.epoch} (best "
                      f"{best.key.replace('_', ' ')} {_shown_best(best)})\n")
            out.flush()
        ranks.bcast_params(params)
        return
    if best is not None and best.epoch is not None:
        best.restore(params)
        shown = f"{100 * best.value:.2f}%" if best.key.endswith("_acc") else f"{best.value:.2f}"
        out.write(f"kept the weights of epoch {best.epoch} (best {best.key.replace('_', ' ')} "
                  f"{shown})\n")
        out.flush()


def train_tagger(module, train_sentences, test_sentences=None, epochs=10, lr=0.1, batch_size=8,
                 seed=0, vocab=None, tags=None, params=None, out=None, stop_at=None, *,
                 step=None, start_epoch=1, on_epoch_end=None, validation=None, keep_best=False,
                 progress=True, progress_stream=None, ranks=None):
    """SGD on (word, tag) sentences with bucketed, masked mini-batches.

    Tag ids follow `tags` (default: `tagset` of the data). `validation` is an
    optional list of held-out sentences, scored each epoch like the test set.
    ``step(params, x, y, mask) -> loss`` is the per-batch update (default:
    ``module.sgd_step`` with `lr`); ``on_epoch_end(epoch, params, record)``
    runs after each epoch (a true result stops training); with `keep_best`
    the best epoch's weights (validation, else test, accuracy) are restored at
    the end. Returns (params, vocab, history); stops early when training
    accuracy reaches `stop_at`.

    Under MPI give ``ranks=distributed.group()`` on every rank: each batch's
    sentences are split across the ranks with their unmasked tokens balanced
    (``distributed.tagger_step``; the default step is then plain SGD through
    ``module.sgd_update``), and rank 0 alone scores, prints and calls
    ``on_epoch_end``.
    """
    out = out or sys.stdout
    if tags is None:
        train_sentences, validation, test_sentences, tags = fit_tagger_data(
            module, train_sentences, validation, test_sentences, out)
    if vocab is None:
        vocab = tagger_vocabulary(module, train_sentences)
    if len(vocab) > _vocab_size(module):
        raise ValueError(f"the vocabulary has {len(vocab)} words; the spec's input allows {_vocab_size(module)}")
    tag_ids = {t: i for i, t in enumerate(tags)}
    if len(tags) > module.OUTPUTS:
        raise ValueError(f"{len(tags)} tags, but the spec's last layer has {module.OUTPUTS} outputs")
    if step is None and ranks is not None:
        step = _distributed_sgd(module, lr, ranks, "tagger")
    if step is None:
        def step(params, x, y, mask):
            return module.sgd_step(params, x, y, lr, mask)
    params = params if params is not None else module.init_params(seed)
    sets = _tagger_sets(train_sentences, validation, test_sentences)
    best = _best(keep_best, sets, "acc")
    scored = sum(len(s) for _, s in sets)
    lengths = [len(s) for s in train_sentences]
    shown = progress and (ranks is None or ranks.is_root)
    if ranks is not None:
        ranks.bcast_params(params)
    history = []
    for epoch in range(int(start_epoch), epochs + 1):
        start = time.perf_counter()
        with progress_bar(len(train_sentences), f"epoch {epoch}/{epochs}", shown,
                          progress_stream, unit="sent") as bar:
            for index in bucket_batches(lengths, batch_size, seed=seed + epoch):
                x, y, mask = _batch(module, train_sentences, index, vocab, tag_ids)
                bar.add_loss(float(step(params, x, y, mask)), len(index))

        def end_epoch():
            record = {"epoch": epoch}
            with progress_bar(scored, f"scoring {epoch}/{epochs}", shown, progress_stream,
                              unit="sent") as bar:
                for split, sentences in sets:
                    record[f"{split}_loss"], record[f"{split}_acc"] = tagger_accuracy(
                        module, params, sentences, vocab, tag_ids, bar=bar)
            record["seconds"] = time.perf_counter() - start
            out.write(epoch_line(record, epochs, ("acc",)) + "\n")
            out.flush()
            if best is not None:
                best.consider(record, params)
            stop = on_epoch_end is not None and on_epoch_end(epoch, params, record)
            return record, bool(stop or (stop_at is not None and record["train_acc"] >= stop_at))
        record, stop = root_only(ranks, end_epoch, params)
        history.append(record)
        if stop:
            break
    _finish(best, params, out, ranks)
    return params, vocab, history


def fit_tagger_data(module, train_sentences, validation=None, test_sentences=None, out=None):
    """(train, validation, test, tags): the sentences with their tags fitted to the
    module's outputs (:func:`fit_tags`, a note to `out`) and the tag list
    (:func:`tagset`), as :func:`train_tagger` makes them when not given `tags`."""
    train_sentences = fit_tags(train_sentences, module.OUTPUTS, out)
    test_sentences = test_sentences and fit_tags(test_sentences, module.OUTPUTS)
    validation = validation and fit_tags(validation, module.OUTPUTS)
    return train_sentences, validation, test_sentences, tagset(train_sentences, validation,
                                                               test_sentences)


def tagger_vocabulary(module, train_sentences):
    """The vocabulary :func:`train_tagger` builds when not given one: the lowercased
    words of the training sentences, at most the spec's `input: {vocab: N}`."""
    return Vocabulary.build([[w.lower() for w, _ in s] for s in train_sentences],
                            max_size=_vocab_size(module))


def lm_steps_per_epoch(n_tokens, batch_size, seq_len):
    """The number of truncated-BPTT chunks (optimizer steps) in one epoch over a
    stream of `n_tokens` tokens (see sequences.bptt_chunks)."""
    row = n_tokens // batch_size
    return max(0, -(-(row - 1) // seq_len))


def _vocab_size(module):
    return int(module.VOCAB)


def stream_loss(module, params, stream, batch_size=16, seq_len=35, bar=None):
    """Mean loss per token over a token stream, carrying the state across chunks."""
    state, total, count = None, 0.0, 0
    for x, y in bptt_chunks(stream, batch_size, seq_len):
        loss, cache = module.forward(params, x, y, None, state)
        state = cache["state"]
        total += float(loss) * y.size
        count += y.size
        if bar is not None:
            bar.update(y.size)
    return total / max(count, 1)


def perplexity(module, params, stream, batch_size=16, seq_len=35):
    """exp(mean loss per token) over a token stream, carrying the state across chunks."""
    return math.exp(stream_loss(module, params, stream, batch_size, seq_len))


def clipped_sgd(module, lr, clip=5.0):
    """The default language-model step: SGD with the gradient clipped to norm `clip`
    (a standard safeguard for RNNs). ``step(params, x, y, state) -> (loss, state)``."""
    def step(params, x, y, state):
        loss, cache = module.forward(params, x, y, None, state)
        clipped_sgd_update(params, module.backward(params, cache), lr, clip)
        return loss, cache["state"]
    return step


def clipped_sgd_update(params, grads, lr, clip=5.0):
    """params -= lr * grads, with the gradient's global norm clipped to `clip`, in place."""
    norm = math.sqrt(sum(float(np.vdot(grads[k], grads[k])) for k in params))
    scale = lr * min(1.0, clip / max(norm, 1e-12))
    for key, value in params.items():
        value -= scale * grads[key]


def _tokens(stream, batch_size):
    """Target tokens in one pass of bptt_chunks over `stream`."""
    row = len(stream) // batch_size
    return batch_size * max(row - 1, 0)


def train_language_model(module, train_ids, valid_ids=None, epochs=1, lr=1.0, batch_size=16,
                         seq_len=35, seed=0, params=None, out=None, clip=5.0, *, test_ids=None,
                         step=None, start_epoch=1, on_epoch_end=None, keep_best=False,
                         progress=True, progress_stream=None, ranks=None):
    """Truncated BPTT: chunks of `seq_len` steps; the state is carried, the gradient is not.

    ``step(params, x, y, state) -> (loss, state)`` is the per-chunk update
    (default :func:`clipped_sgd` with `lr` and `clip`). The history records
    per epoch ``train_loss``/``train_ppl`` (the running mean over the epoch's
    chunks, as the weights change), ``val_loss``/``val_ppl`` on `valid_ids`
    and ``test_loss``/``test_ppl`` on `test_ids` when given, and ``seconds``.
    With `keep_best` the weights of the epoch with the lowest validation (else
    test) perplexity are restored at the end. Returns (params, history).

    Under MPI give ``ranks=distributed.group()`` on every rank: the stream's
    `batch_size` rows are split across the ranks, each carrying its own rows'
    state (``distributed.language_model_step``; the default step clips the
    summed gradient), and rank 0 alone scores, prints and calls ``on_epoch_end``.
    """
    out = out or sys.stdout
    if step is None and ranks is not None:
        from .distributed import language_model_step
        step = language_model_step(
            module, lambda params, grads: clipped_sgd_update(params, grads, lr, clip), ranks)
    step = clipped_sgd(module, lr, clip) if step is None else step
    params = params if params is not None else module.init_params(seed)
    held_out = [(name, ids) for name, ids in (("val", valid_ids), ("test", test_ids))
                if ids is not None]
    best = _best(keep_best, held_out, "ppl") if held_out else None
    scored = sum(_tokens(ids, batch_size) for _, ids in held_out)
    shown = progress and (ranks is None or ranks.is_root)
    if ranks is not None:
        ranks.bcast_params(params)
    history = []
    for epoch in range(int(start_epoch), epochs + 1):
        start = time.perf_counter()
        state, total, count = None, 0.0, 0
        with progress_bar(_tokens(train_ids, batch_size), f"epoch {epoch}/{epochs}", shown,
                          progress_stream, unit="tok") as bar:
            for x, y in bptt_chunks(train_ids, batch_size, seq_len):
                loss, state = step(params, x, y, state)
                _check_finite(loss, epoch)
                total += float(loss) * y.size
                count += y.size
                bar.add_loss(float(loss), y.size)
        train_loss = total / max(count, 1)

        def end_epoch():
            record = {"epoch": epoch, "train_loss": train_loss, "train_ppl": _exp(train_loss)}
            with progress_bar(scored, f"scoring {epoch}/{epochs}", shown, progress_stream,
                              unit="tok") as bar:
                for name, ids in held_out:
                    loss = stream_loss(module, params, ids, batch_size, seq_len, bar)
                    record[f"{name}_loss"], record[f"{name}_ppl"] = loss, _exp(loss)
            record["seconds"] = time.perf_counter() - start
            out.write(epoch_line(record, epochs, ("ppl",)) + "\n")
            out.flush()
            if best is not None:
                best.consider(record, params)
            return record, bool(on_epoch_end is not None and on_epoch_end(epoch, params, record))
        record, stop = root_only(ranks, end_epoch, params)
        history.append(record)
        if stop:
            break
    _finish(best, params, out, ranks)
    return params, history


def _exp(loss):
    return math.exp(loss) if loss < 700 else float("inf")


def _check_finite(loss, epoch):
    if not np.isfinite(loss):
        raise ValueError(f"the loss became {float(loss)} in epoch {epoch}: training diverged "
                         "(try a smaller lr)")
