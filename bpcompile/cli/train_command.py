"""`bpcompile train`: compile a layer spec, load data, train, report, write the outputs.

The optimizer settings are in train_optim, the start of a run (--resume, --init) and
its checkpoints (--save) in train_run, `bpcompile eval` in eval_command."""

import math
import os
import sys
import time
import zipfile
import zlib

import numpy as np

from ..compiler import compile_file, load_module
from ..errors import SpecError
from ..limits import clip, shorten
from .output import check_output, is_stdout
from .train_args import DEFAULTS
from .train_optim import OPTIMIZER_KEYS, build_optimizer, describe, optimizer_settings, run_config
from .train_run import (Checkpointer, check_resume, load_optimizer_state, load_start,
                        run_generator, save_path)

# what reading a data file may raise besides ValueError and OSError
DATA_ERRORS = (ValueError, OSError, EOFError, KeyError, IndexError, zipfile.BadZipFile, zlib.error)

TASKS = ("tagging", "language_model")
TASK_NAMES = {"tagging": "tagger", "language_model": "language model"}
CONLLU_SUFFIXES = (".conllu", ".conllu.gz")
TEST_PARTS = 10      # the last 1/10 of the sentences (tokens) is the test set, unless --test


def plural(count, word):
    """'1 epoch', '2 epochs'."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# ---------------------------------------------------------------------------
# settings

def training_settings(spec, args):
    """epochs, lr, batch_size, seq_len: the command line, else the spec's `train:`, else
    the defaults; task: the spec's `train.task` (None when absent); and optimizer:
    the optimizer settings (train_optim.OptimizerSettings), checked the same way."""
    given = spec.get("train", default={}) or {}
    if not isinstance(given, dict):
        raise spec.error("train must map epochs/lr/batch_size to numbers", "train")
    spec.check_keys(set(DEFAULTS) | {"task"} | set(OPTIMIZER_KEYS), "train") if given else None
    settings = {}
    for key, default in DEFAULTS.items():
        kind = float if key == "lr" else int
        value = given.get(key, default)          # checked even when the command line overrides it
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0 < value < math.inf) or (kind is int and not float(value).is_integer()):
            raise spec.error(f"train.{key} must be a finite positive {kind.__name__}, got "
                             f"{shorten(value)}", "train", key)
        option = getattr(args, key, None)
        if option is not None and not 0 < option < math.inf:
            raise SpecError(f"--{key.replace('_', '-')} must be a finite positive number, got "
                            f"{option}", spec.file, 1, 1)
        settings[key] = kind(value) if option is None else option
    settings["task"] = given.get("task")
    if settings["task"] is not None and settings["task"] not in TASKS:
        raise spec.error(f"train.task must be tagging or language_model, got "
                         f"{shorten(settings['task'])}", "train", "task")
    val_split = getattr(args, "val_split", None)
    if val_split is not None and not 0 < val_split < 1:
        raise SpecError(f"--val-split must be a fraction between 0 and 1, got {val_split}",
                        spec.file, 1, 1)
    settings["optimizer"] = optimizer_settings(spec, args, given)
    return settings


def fit_to_module(module, data):
    """Reshape flat examples to the module's input shape when the sizes agree."""
    shape = tuple(module.INPUT_SHAPE)
    fitted = []
    for i, array in enumerate(data):
        if i % 2 == 0 and array.shape[1:] != shape and int(np.prod(array.shape[1:])) == int(np.prod(shape)):
            array = array.reshape((len(array),) + shape)
        fitted.append(array)
    return tuple(fitted)


# ---------------------------------------------------------------------------
# outputs

OUTPUT_OPTIONS = (("--save", "save"), ("--plot", "plot"), ("--history", "history"))


def _named_outputs(args):
    found = [(option, save_path(args) if name == "save" else getattr(args, name, None))
             for option, name in OUTPUT_OPTIONS]
    return [(option, path) for option, path in found if path is not None]


def _force(args):
    return getattr(args, "force", False)


def check_outputs(args):
    """Every file `train` will write, checked before anything else happens: the
    paths, the suffixes of --plot and --history, and that matplotlib is there."""
    outputs = _named_outputs(args)
    for option, path in outputs:
        if is_stdout(path):
            raise SpecError(f"{option} needs a file name: standard output carries the progress",
                            "-", 1, 1)
        check_output(path, _force(args), option)
    for i, (first, a) in enumerate(outputs):
        for second, b in outputs[i + 1:]:
            if _same_file(a, b):
                raise SpecError(f"{first} and {second} name the same file", clip(a), 1, 1)
    _check_formats(args)


def _check_formats(args):
    from ..training import history, plot
    checks = [("plot", plot.plot_format), ("plot", lambda path: plot.require_matplotlib()),
              ("history", history.history_format)]
    for name, check in checks:
        path = getattr(args, name, None)
        if path:
            try:
                check(path)
            except ValueError as err:
                raise SpecError(str(err), clip(path), 1, 1) from None


def _same_file(a, b):
    return os.path.abspath(a) == os.path.abspath(b)


def _write(option, path, write, args):
    """check_output again (the file may have changed while training), then write."""
    from .output import write_file
    write_file(path, write, _force(args), option)


def write_outputs(args, history):
    """--plot and --history, each written atomically (the Checkpointer writes --save)."""
    from ..training import history as history_file, plot
    if args.plot:
        image = plot.curves_bytes(history, plot.plot_format(args.plot))
        _write("--plot", args.plot, lambda f: f.write(image), args)
        print(f"curves written to {args.plot}")
    if getattr(args, "history", None):
        data = history_file.history_bytes(history, history_file.history_format(args.history))
        _write("--history", args.history, lambda f: f.write(data), args)
        print(f"history written to {args.history}")


# ---------------------------------------------------------------------------
# the command

def loss_options(compiled):
    """The spec's loss options ({} for a loss given by its name alone): `loss:` is a
    name or {name: {option: value}}, already checked by the compiler."""
    loss = compiled.spec.get("loss")
    if isinstance(loss, dict):
        (_, options), = loss.items()
        return dict(options or {})
    return {}


def check_trainable_loss(compiled, command):
    """Refuse a spec that `command` (train, eval) cannot minimize or score: loss: none
    (the module is a piece of a larger model, with no targets), and reduction: none
    (J is one loss per example, not a number to minimize or report)."""
    spec, loss = compiled.spec, compiled.model.loss
    if loss.name == "none":
        raise spec.error(f"{command} needs a loss: with loss: none the module returns the "
                         "network's output (a piece of a larger model) and there is nothing "
                         "to train against; give softmax_cross_entropy, "
                         "sigmoid_binary_cross_entropy or mse", "loss")
    if loss_options(compiled).get("reduction") == "none":
        raise spec.error(f"{command} needs one number to minimize and report, but reduction: "
                         "none makes J one loss per example; use reduction: mean (or sum)",
                         "loss", loss.name, "reduction")


def check_parallel_loss(compiled, ranks):
    """Under MPI each shard's gradient is weighted by its share of the batch's examples,
    which gives the batch's gradient of a mean over examples (or over their N*K
    entries) only: refuse the options that weight the terms otherwise."""
    options = loss_options(compiled)
    odd = [name for name in ("class_weights", "ignore_index") if name in options]
    if options.get("reduction") == "sum":
        odd.append("reduction")
    if ranks is None or not odd:
        return
    raise compiled.spec.error(f"data-parallel training weights each rank's mean loss by its "
                              f"share of the examples, which is not this loss's J with "
                              f"{odd[0]}: train it in one process (without mpirun)",
                              "loss", compiled.model.loss.name, odd[0], key=True)


def _reduction_words(compiled):
    """What a sum reduction does to the step size (said in the run's first line)."""
    if loss_options(compiled).get("reduction") != "sum":
        return ""
    return ("; reduction: sum, so J and its gradient grow with the batch: the lr acts as "
            "lr * batch size would on the mean")


def run_training(args, ranks=None):
    check_outputs(args)
    compiled = compile_file(args.spec, args.target)
    if compiled.model is None:
        raise SpecError("train needs a layer spec (with `layers:` and `loss:`)", args.spec, 1, 1)
    check_trainable_loss(compiled, "train")
    check_parallel_loss(compiled, ranks)
    settings = training_settings(compiled.spec, args)
    module = load_module(compiled.source, compiled.name)
    if compiled.model.sequence:
        return run_sequence_training(compiled, module, settings, args, ranks)
    if settings["task"] is not None:
        raise compiled.spec.error("train.task is for sequence specs (a tagger or a language "
                                  "model); this spec's examples have no time axis", "train", "task")
    return run_example_training(compiled, module, settings, args, ranks)


def _progress(args):
    return not args.quiet


def _load_examples(compiled, module, args):
    from ..training import datasets
    try:
        data = fit_to_module(module, datasets.load_dataset(args.data, dtype=compiled.model.dtype))
    except DATA_ERRORS as err:
        raise SpecError(f"cannot load data: {err}", clip(args.data), 1, 1) from None
    if data[0].shape[1:] != tuple(module.INPUT_SHAPE):
        raise SpecError(f"the data's examples have shape {data[0].shape[1:]}, but the spec's input is "
                        f"{tuple(module.INPUT_SHAPE)}", args.spec, *compiled.spec.where("input"))
    return data


def _validation(data, args):
    """(training data, validation pair or None) after --val-split."""
    from ..training import datasets
    if args.val_split is None:
        return data, None
    try:
        x_train, y_train, x_val, y_val = datasets.split_validation(data[0], data[1], args.val_split,
                                                                   args.seed)
    except ValueError as err:
        raise SpecError(f"--val-split: {err}", clip(args.data), 1, 1) from None
    return (x_train, y_train, data[2], data[3]), (x_val, y_val)


def _parallel_words(ranks, settings):
    if ranks is None:
        return ""
    return (f"; data-parallel over {ranks.size} MPI ranks (global batch "
            f"{settings['batch_size']})")


def _root_finish(ranks, run, params, history, best, args):
    """_finish on rank 0 alone (the final checkpoint, --plot, --history)."""
    from ..training.train import root_only
    root_only(ranks, lambda: _finish(run, params, history, best, args), params)


def run_example_training(compiled, module, settings, args, ranks=None):
    """An MLP or a convolutional network on examples with labels."""
    from ..training import train
    data, validation = _validation(_load_examples(compiled, module, args), args)
    steps_per_epoch = -(-len(data[0]) // settings["batch_size"])
    run = _prepare_run(compiled, module, settings, args, steps_per_epoch)
    sizes = f"{len(data[0])} train / " + (f"{len(validation[0])} validation / " if validation else "")
    print(f"training {compiled.name} on {args.data}: {sizes}{len(data[2])} test examples, "
          f"{_run_words(settings, run)}{_parallel_words(ranks, settings)}"
          f"{_reduction_words(compiled)}", flush=True)
    start = time.perf_counter()
    step = _example_step(module, run, ranks)
    try:
        params, history = train.train(module, data, epochs=settings["epochs"], lr=settings["lr"],
                                      batch_size=settings["batch_size"], seed=args.seed,
                                      params=run.start.params, progress=_progress(args),
                                      step=step, start_epoch=run.start.epoch + 1,
                                      on_epoch_end=run.checkpointer, validation=validation,
                                      keep_best=args.keep_best, ranks=ranks,
                                      loss_options=loss_options(compiled), rng=run.rng)
    except ValueError as err:
        raise SpecError(f"training failed: {err}", args.spec, 1, 1) from None
    if history:
        print(f"done in {time.perf_counter() - start:.1f}s: {_final_scores(history[-1])}")
    best = train.best_key(module.LOSS, validation is not None) if args.keep_best else None
    _root_finish(ranks, run, params, history, best, args)
    return 0


def _example_step(module, run, ranks):
    """The optimizer's step, in train mode with the run's generator for a module with
    dropout or batch norm; under MPI the data-parallel step."""
    from ..training.train import mode_keywords
    if ranks is not None:
        from ..training.distributed import example_step
        return example_step(module, run.optimizer.update, ranks, rng=run.rng)
    keywords = mode_keywords(module, run.rng)

    def step(params, x, y):
        return run.optimizer.step(params, x, y, **keywords)
    # many batches in one call (the module's sgd_epoch) where the optimizer allows it
    step.epoch = lambda params, x, y, batch_size: run.optimizer.epoch(
        params, x, y, batch_size, rng=keywords.get("rng"))
    return step


class _Run:
    """The run's start (fresh, --init or --resume), optimizer, checkpointer and the
    generator dropout draws from (None without a train mode)."""

    def __init__(self, start, optimizer, checkpointer, words, rng=None):
        self.start, self.optimizer, self.checkpointer, self.words, self.rng = (
            start, optimizer, checkpointer, words, rng)


def _prepare_run(compiled, module, settings, args, steps_per_epoch, language_model=False,
                 vocab=None, tags=None, start=None):
    """Load --resume/--init, build the optimizer, check a resume, make the checkpointer."""
    start = load_start(args, compiled, module) if start is None else start
    optimizer = build_optimizer(module, settings["optimizer"], settings["lr"], settings["epochs"],
                                steps_per_epoch, language_model)
    recorded = {"optimizer": run_config(optimizer, settings["lr"]), "seed": args.seed,
                "batch_size": settings["batch_size"], "val_split": args.val_split}
    if compiled.model.sequence:
        recorded["test"] = getattr(args, "test", None)
    if language_model:
        recorded["seq_len"] = settings["seq_len"]
    check_resume(start, recorded, settings["epochs"], getattr(args, "resume", None))
    load_optimizer_state(optimizer, start, getattr(args, "resume", None))
    rng = run_generator(module, args.seed, start, getattr(args, "resume", None))
    checkpointer = Checkpointer(args, compiled, optimizer, recorded, start, steps_per_epoch,
                                vocab=vocab, tags=tags, rng=rng)
    words = describe(optimizer, settings["lr"], steps_per_epoch)
    return _Run(start, optimizer, checkpointer, words, rng)


def _run_words(settings, run):
    """'3 epochs, batch size 8, sgd, lr 0.1 constant' (+ where it resumes, where it saves)."""
    words = (f"{plural(settings['epochs'], 'epoch')}, batch size {settings['batch_size']}, "
             f"{run.words}")
    if run.start.epoch:
        words += f"; resuming after epoch {run.start.epoch}"
    path = run.checkpointer.path
    if path:
        words += f"; checkpoint after every epoch to {path}" + (
            " (.npz added)" if run.checkpointer.added else "")
    return words


def _finish(run, params, history, best_key, args):
    """The final checkpoint (--keep-best), then --plot and --history over the whole run
    (a resumed run's earlier epochs included)."""
    run.checkpointer.finish(params, history, best_key)
    write_outputs(args, run.checkpointer.history)


def _final_scores(record):
    """'test accuracy 97.50%, test loss 0.0812' (or RMSE and R^2 for mse)."""
    if "test_acc" in record:
        return f"test accuracy {100 * record['test_acc']:.2f}%, test loss {record['test_loss']:.4f}"
    return (f"test loss {record['test_loss']:.4f}, RMSE {record['test_rmse']:.4f}, "
            f"R^2 {record['test_r2']:.4f}")


# ---------------------------------------------------------------------------
# sequences

def _future_seeing_layer(model):
    """(name, direction) of the first recurrent layer that does not run forward only, or None:
    a reverse or bidirectional scan reads the later tokens."""
    from ..frontends.sequence_layers import RECURRENT_KINDS, layer_direction
    return next(((layer.name, layer_direction(layer)) for layer in model.layers
                 if layer.kind in RECURRENT_KINDS and layer_direction(layer) != "forward"), None)


def _task_error(compiled, settings, message):
    if settings["task"] is not None:
        return compiled.spec.error(message, "train", "task")
    return compiled.spec.error(message, "layers")


def sequence_task(compiled, module, settings):
    """'tagging' or 'language_model': train.task, else inferred (see train --help).

    A language model predicts the next token, so it needs one output per
    vocabulary entry and only forward recurrent layers (a reverse or bidirectional
    layer's backward scan would see the word it is asked to predict)."""
    vocab = getattr(module, "VOCAB", None)
    if vocab is None:
        raise compiled.spec.error("training on a CoNLL-U or text file needs token ids as input "
                                  "(input: {vocab: N})", "input")
    backward = _future_seeing_layer(compiled.model)
    outputs = int(module.OUTPUTS)
    task = settings["task"]
    if task is None:
        task = "language_model" if outputs == int(vocab) and backward is None else "tagging"
    if task == "language_model" and backward is not None:
        name, direction = backward
        raise _task_error(compiled, settings, f"a language model cannot be bidirectional or "
                          f"reverse: {name} is {direction}, its backward scan sees the next "
                          f"word it is to predict")
    if task == "language_model" and outputs != int(vocab):
        raise _task_error(compiled, settings, f"a language model predicts the next token: its "
                          f"last layer needs {vocab} outputs (the vocabulary), it has {outputs}")
    return task


def _data_task(path):
    return "tagging" if path.endswith(CONLLU_SUFFIXES) else "language_model"


def check_data_for_task(compiled, settings, task, data):
    """Refuse digits/npz data, and a CoNLL-U file for a language model or text for a tagger."""
    name = compiled.name
    if data == "digits" or data.endswith(".npz") or os.path.isdir(data):
        raise SpecError(f"{name} is a sequence spec ({TASK_NAMES[task]}): --data needs a "
                        f"{'CoNLL-U file (.conllu)' if task == 'tagging' else 'text file (.txt)'}",
                        compiled.spec.file, 1, 1)
    if _data_task(data) == task:
        return
    why = (f"set train: {{task: {_data_task(data)}}} if you mean it" if settings["task"] is None
           else "")
    if task == "tagging":
        message = (f"{name} is a tagger, but --data {shorten(data)} is not CoNLL-U: a tagger "
                   "trains on a .conllu file, a language model on text")
    else:
        message = (f"{name} is a language model, but --data {shorten(data)} is a CoNLL-U "
                   "treebank: a language model trains on a text file (.txt), a tagger on "
                   f"CoNLL-U{'; ' + why if why else ''}")
    raise _task_error(compiled, settings, message)


def check_sequence_loss(compiled, command):
    """The tagger's and the language model's loops read softmax cross-entropy's
    cache (its probabilities, its token count): refuse another loss, or options,
    with a located error instead of a failure deep in the loop."""
    loss, options = compiled.model.loss, loss_options(compiled)
    if loss.name == "softmax_cross_entropy" and not options:
        return
    where = ("loss", loss.name, next(iter(options))) if options else ("loss",)
    what = f"loss option {next(iter(options))}" if options else f"loss {loss.name}"
    raise compiled.spec.error(f"{command} of a sequence spec (a tagger or a language model) "
                              f"takes softmax_cross_entropy without options, not the {what} "
                              "(the module itself supports it; its training loop here does "
                              "not yet)", *where, key=bool(options))


def run_sequence_training(compiled, module, settings, args, ranks=None):
    """A tagger (CoNLL-U data) or a language model (text), as the spec says."""
    check_sequence_loss(compiled, "train")
    task = sequence_task(compiled, module, settings)
    data = str(args.data)
    check_data_for_task(compiled, settings, task, data)
    try:
        if task == "tagging":
            params, history = _train_tagger(compiled, module, settings, args, ranks)
        else:
            params, history = _train_language_model(compiled, module, settings, args, ranks)
    except DATA_ERRORS as err:
        reason = str(err) or type(err).__name__
        if isinstance(err, EOFError):
            reason = "the compressed file is truncated"
        raise SpecError(f"cannot train on {shorten(data)}: {reason}", args.spec, 1, 1) from None
    return 0


def _common(settings, args):
    return dict(epochs=settings["epochs"], lr=settings["lr"], batch_size=settings["batch_size"],
                seed=args.seed, keep_best=args.keep_best, progress=_progress(args))


def _tagger_splits(data, args):
    from ..training import sequences
    sentences = sequences.read_conllu(data)
    if not sentences:
        raise ValueError(f"{data} holds no sentences")
    test = sequences.read_conllu(args.test) if args.test else None
    if test is not None and not test:
        raise ValueError(f"{args.test} holds no sentences")
    if test is None and len(sentences) < 2:
        raise ValueError(f"{data} holds one sentence: at least two are needed (one "
                         "to train on, one to test on), or give --test FILE")
    if test is None:
        cut = max(1, len(sentences) // TEST_PARTS)
        sentences, test = sentences[:-cut], sentences[-cut:]
    validation = None
    if args.val_split is not None:
        keep, held = _split_indices(len(sentences), args.val_split, args.seed)
        sentences, validation = [sentences[i] for i in keep], [sentences[i] for i in held]
    return sentences, validation, test


def _split_indices(n, fraction, seed):
    from ..training import datasets
    index = np.arange(n)
    keep, _, held, _ = datasets.split_validation(index, index, fraction, seed)
    return keep, held


def _train_tagger(compiled, module, settings, args, ranks=None):
    from ..training import seqtrain
    sentences, validation, test = _tagger_splits(str(args.data), args)
    start = load_start(args, compiled, module)
    sentences, validation, test, tags = seqtrain.fit_tagger_data(module, sentences, validation,
                                                                 test, sys.stdout)
    if start.tags is not None:
        tags = _known_tags(start.tags, [sentences, validation, test], args)
    vocab = start.vocab if start.vocab is not None else seqtrain.tagger_vocabulary(module, sentences)
    steps_per_epoch = -(-len(sentences) // settings["batch_size"])
    run = _prepare_run(compiled, module, settings, args, steps_per_epoch, vocab=vocab,
                       tags=list(tags), start=start)
    sizes = f"{len(sentences)} train / " + (f"{len(validation)} validation / " if validation else "")
    print(f"training {compiled.name} (tagger) on {args.data}: {sizes}{len(test)} test sentences, "
          f"{_run_words(settings, run)}{_parallel_words(ranks, settings)}", flush=True)

    if ranks is None:
        def step(params, x, y, mask):
            return run.optimizer.step(params, x, y, mask=mask)
    else:
        from ..training.distributed import tagger_step
        step = tagger_step(module, run.optimizer.update, ranks)
    params, _, history = seqtrain.train_tagger(
        module, sentences, test, validation=validation, vocab=vocab, tags=tags,
        params=run.start.params, step=step, start_epoch=run.start.epoch + 1,
        on_epoch_end=run.checkpointer, ranks=ranks, **_common(settings, args))
    _root_finish(ranks, run, params, history, ("val_acc" if validation else "test_acc")
                 if args.keep_best else None, args)
    return params, history


def _known_tags(tags, corpora, args):
    """The checkpoint's tag list, after checking that the data uses no other tag."""
    seen = {t for corpus in corpora if corpus for sentence in corpus for _, t in sentence}
    unknown = sorted(seen - set(tags))
    if unknown:
        raise ValueError(f"the data uses tags the checkpoint's tagger does not know: "
                         f"{', '.join(unknown[:8])}")
    return tuple(tags)


def _train_language_model(compiled, module, settings, args, ranks=None):
    from ..training import seqtrain, sequences
    data = str(args.data)
    tokens = sequences.read_text_tokens(data)
    if len(tokens) < 2:
        raise ValueError(f"{data} holds {len(tokens)} tokens")
    start = load_start(args, compiled, module)
    vocab = start.vocab if start.vocab is not None else sequences.Vocabulary.build(
        [tokens], max_size=int(module.VOCAB))
    ids = vocab.encode(tokens)
    test_cut = len(ids) - len(ids) // TEST_PARTS
    val_cut = test_cut
    if args.val_split is not None:      # a stream: the validation text is the end of the training text
        val_cut = test_cut - max(1, int(round(args.val_split * test_cut)))
    train_ids, val_ids, test_ids = ids[:val_cut], ids[val_cut:test_cut], ids[test_cut:]
    steps_per_epoch = seqtrain.lm_steps_per_epoch(len(train_ids), settings["batch_size"],
                                                  settings["seq_len"])
    run = _prepare_run(compiled, module, settings, args, steps_per_epoch, language_model=True,
                       vocab=vocab, start=start)
    sizes = f"{len(train_ids)} train / " + (f"{len(val_ids)} validation / " if len(val_ids) else "")
    print(f"training {compiled.name} (language model) on {data}: {sizes}{len(test_ids)} test "
          f"tokens, vocabulary {len(vocab)}, {_run_words(settings, run)}"
          f"{_parallel_words(ranks, settings)}", flush=True)
    params, history = seqtrain.train_language_model(
        module, train_ids, val_ids if len(val_ids) else None, test_ids=test_ids,
        seq_len=settings["seq_len"], params=run.start.params,
        step=_lm_step(module, run.optimizer, ranks), start_epoch=run.start.epoch + 1,
        on_epoch_end=run.checkpointer, ranks=ranks, **_common(settings, args))
    _root_finish(ranks, run, params, history, ("val_ppl" if len(val_ids) else "test_ppl")
                 if args.keep_best else None, args)
    return params, history


def _lm_step(module, optimizer, ranks=None):
    """Truncated BPTT's step through the optimizer (None: seqtrain's default clipped SGD,
    which is data-parallel by itself when given `ranks`)."""
    if optimizer is None:
        return None
    if ranks is not None:
        from ..training.distributed import language_model_step
        return language_model_step(module, optimizer.update, ranks)

    def step(params, x, y, state):
        loss, cache = module.forward(params, x, y, None, state)
        optimizer.update(params, module.backward(params, cache))
        return loss, cache["state"]
    return step


def run_command(args):
    """Run the training command that `args.command` names."""
    from .eval_command import run_eval
    if args.command == "train":
        return run_training_on_every_rank(args)
    return {"train": run_training, "eval": run_eval}[args.command](args)


# ---------------------------------------------------------------------------
# data parallel: `mpirun -n N bpcompile train ...`

def _ranks():
    """The MPI Group when mpirun started more than one process, else None."""
    from ..training import distributed
    try:
        return distributed.group()
    except ImportError as err:
        if distributed.world_rank() != 0:
            raise SystemExit(1) from None           # rank 0 says why
        raise SpecError(str(err), "bpcompile", 1, 1) from None


def run_training_on_every_rank(args):
    """`train`, as before in one process; under mpirun every rank runs it on its
    shard of each global batch, rank 0 alone prints and writes (the others' standard
    output goes to /dev/null), and a failure ends every rank (distributed.run)."""
    import contextlib
    from ..training import distributed
    ranks = _ranks()
    if ranks is None:
        return run_training(args)
    with contextlib.ExitStack() as stack:
        if not ranks.is_root:
            stack.enter_context(contextlib.redirect_stdout(
                stack.enter_context(open(os.devnull, "w"))))
        return distributed.run(lambda: run_training(args, ranks))
