"""`bpcompile eval SPEC --params FILE --data DATA`: the loss and metrics of saved
parameters on a data set, one line per metric (or one JSON object with --json).

The data forms are those of `train`. Digits, .npz files and MNIST folders are
scored on their test part; a .conllu or .txt file is scored whole (give it the
held-out file). A tagger or a language model reads words through a vocabulary
and a tagger writes tags from a list: both are in a checkpoint (`train --save`),
not in a plain parameter file, which is refused for them.
"""

import json
import math

from ..compiler import compile_file, load_module
from ..errors import SpecError
from ..limits import clip, shorten

# how each metric is printed, in this order
_METRICS = (("loss", "loss", "{:.4f}"), ("acc", "accuracy", "{:.2%}"), ("rmse", "rmse", "{:.4f}"),
            ("r2", "r2", "{:.4f}"), ("ppl", "perplexity", "{:.2f}"))


def run_eval(args):
    from .train_command import DATA_ERRORS, check_trainable_loss, training_settings
    compiled = compile_file(args.spec)
    if compiled.model is None:
        raise SpecError("eval needs a layer spec (with `layers:` and `loss:`)", args.spec, 1, 1)
    check_trainable_loss(compiled, "eval")
    settings = training_settings(compiled.spec, args)
    module = load_module(compiled.source, compiled.name)
    params, saved = _read_params(args, compiled, module)
    try:
        if compiled.model.sequence:
            unit, count, metrics = _sequence_scores(compiled, module, settings, args, params, saved)
        else:
            unit, count, metrics = _example_scores(compiled, module, args, params)
    except DATA_ERRORS as err:
        raise SpecError(f"cannot evaluate on {shorten(str(args.data))}: {err}", args.spec,
                        1, 1) from None
    _report(args, compiled.name, unit, count, metrics)
    return 0


def _read_params(args, compiled, module):
    """(params, the Checkpoint or None for a plain parameter file)."""
    from ..training import checkpoint
    try:
        params = checkpoint.load_params(args.params, module)
        arrays_are_checkpoint = _is_checkpoint(args.params)
        saved = (checkpoint.load_checkpoint(args.params, module,
                                            checkpoint.spec_hash(compiled.spec))
                 if arrays_are_checkpoint else None)
    except ValueError as err:
        raise SpecError(str(err), clip(str(args.params)), 1, 1) from None
    return (saved.params if saved is not None else params), saved


def _is_checkpoint(path):
    import numpy as np
    with np.load(path, allow_pickle=False) as archive:
        return "format" in archive.files


def _example_scores(compiled, module, args, params):
    from ..training import train
    from .train_command import _load_examples, loss_options
    data = _load_examples(compiled, module, args)
    options = loss_options(compiled)
    x, y = train.prepare_split(module, data[2], data[3], "test", params, options)
    return "test examples", len(x), train.score(module, params, x, y, loss_options=options)


def _sequence_scores(compiled, module, settings, args, params, saved):
    from .train_command import check_data_for_task, check_sequence_loss, sequence_task
    check_sequence_loss(compiled, "eval")
    task = sequence_task(compiled, module, settings)
    check_data_for_task(compiled, settings, task, str(args.data))
    if saved is None or saved.vocab is None:
        kind = "tagger" if task == "tagging" else "language model"
        raise SpecError(f"{args.params} is a parameter file without a vocabulary: a {kind} "
                        "needs the checkpoint that `bpcompile train --save` wrote",
                        clip(str(args.params)), 1, 1)
    if task == "tagging":
        return _tagger_scores(module, args, params, saved)
    return _language_model_scores(module, settings, args, params, saved)


def _tagger_scores(module, args, params, saved):
    from ..training import seqtrain, sequences
    if saved.tags is None:
        raise SpecError(f"{args.params} has no tag list: it is not a tagger's checkpoint",
                        clip(str(args.params)), 1, 1)
    sentences = [[(w, seqtrain.UD1_TO_UD2.get(t, t)) for w, t in s]
                 for s in sequences.read_conllu(str(args.data))]
    if not sentences:
        raise ValueError("it holds no sentences")
    unknown = sorted({t for s in sentences for _, t in s} - set(saved.tags))
    if unknown:
        raise ValueError(f"it uses tags the tagger does not know: {', '.join(unknown[:8])}")
    tag_ids = {t: i for i, t in enumerate(saved.tags)}
    loss, accuracy = seqtrain.tagger_accuracy(module, params, sentences, saved.vocab, tag_ids)
    return "sentences", len(sentences), {"loss": float(loss), "acc": float(accuracy)}


def _language_model_scores(module, settings, args, params, saved):
    from ..training import seqtrain, sequences
    run = saved.meta.get("run") or {}
    batch_size = args.batch_size or run.get("batch_size") or settings["batch_size"]
    seq_len = args.seq_len or run.get("seq_len") or settings["seq_len"]
    ids = saved.vocab.encode(sequences.read_text_tokens(str(args.data)))
    loss = seqtrain.stream_loss(module, params, ids, batch_size, seq_len)
    return "tokens", len(ids), {"loss": loss, "ppl": math.exp(loss) if loss < 700 else math.inf}


def _report(args, name, unit, count, metrics):
    if args.json:
        values = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
        print(json.dumps({"generator": "bpcompile", "spec": name, "params": str(args.params),
                          "data": str(args.data), unit.split()[-1]: count, "metrics": values}))
        return
    print(f"{name} on {args.data}: {count} {unit}")
    for key, label, form in _METRICS:
        if key in metrics:
            print(f"{label} {form.format(float(metrics[key]))}")
