"""`bpcompile train`: compile a layer spec, load data, run SGD, report, save."""

import math
import sys
import time
import zipfile
import zlib

import numpy as np

from ..compiler import compile_file, load_module
from ..errors import SpecError
from ..limits import clip, shorten
from .output import check_output, is_stdout

# what reading a data file may raise besides ValueError and OSError
DATA_ERRORS = (ValueError, OSError, EOFError, KeyError, IndexError, zipfile.BadZipFile, zlib.error)

DEFAULTS = {"epochs": 10, "lr": 0.1, "batch_size": 32, "seq_len": 35}


def training_settings(spec, args):
    """epochs, lr, batch_size: the command line, else the spec's `train:`, else defaults."""
    given = spec.get("train", default={}) or {}
    if not isinstance(given, dict):
        raise spec.error("train must map epochs/lr/batch_size to numbers", "train")
    spec.check_keys(set(DEFAULTS), "train") if given else None
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


def check_outputs(args):
    """Every file `train` will write, checked before anything else happens."""
    force = getattr(args, "force", False)
    outputs = [(option, getattr(args, name, None)) for option, name in
               (("--save", "save"), ("--plot", "plot"))]
    outputs = [(option, path) for option, path in outputs if path is not None]
    for option, path in outputs:
        if is_stdout(path):
            raise SpecError(f"{option} needs a file name: standard output carries the progress",
                            "-", 1, 1)
        check_output(path, force, option)
    if len(outputs) == 2 and _same_file(outputs[0][1], outputs[1][1]):
        raise SpecError("--save and --plot name the same file", clip(args.save), 1, 1)


def _same_file(a, b):
    import os
    return os.path.abspath(a) == os.path.abspath(b)


def _write(option, path, write, args):
    """check_output again (the file may have changed while training), then write."""
    from .output import write_file
    write_file(path, write, getattr(args, "force", False), option)


def run_training(args):
    from ..training import datasets, train
    check_outputs(args)
    compiled = compile_file(args.spec)
    if compiled.model is None:
        raise SpecError("train needs a layer spec (with `layers:` and `loss:`)", args.spec, 1, 1)
    settings = training_settings(compiled.spec, args)
    module = load_module(compiled.source, compiled.name)
    if compiled.model.sequence:
        return run_sequence_training(compiled, module, settings, args)
    try:
        data = fit_to_module(module, datasets.load_dataset(args.data, dtype=compiled.model.dtype))
    except DATA_ERRORS as err:
        raise SpecError(f"cannot load data: {err}", clip(args.data), 1, 1) from None
    if data[0].shape[1:] != tuple(module.INPUT_SHAPE):
        raise SpecError(f"the data's examples have shape {data[0].shape[1:]}, but the spec's input is "
                        f"{tuple(module.INPUT_SHAPE)}", args.spec, *compiled.spec.where("input"))
    print(f"training {compiled.name} on {args.data}: {len(data[0])} train / {len(data[2])} test "
          f"examples, {settings['epochs']} epochs, lr {settings['lr']:g}, batch size "
          f"{settings['batch_size']}", flush=True)
    start = time.perf_counter()
    try:
        params, history = train.train(module, data, epochs=settings["epochs"], lr=settings["lr"],
                                      batch_size=settings["batch_size"], seed=args.seed,
                                      progress=not args.quiet and sys.stderr.isatty())
    except ValueError as err:
        raise SpecError(f"training failed: {err}", args.spec, 1, 1) from None
    seconds = time.perf_counter() - start
    if history:
        last = history[-1]
        print(f"done in {seconds:.1f}s: test accuracy {100 * last['test_acc']:.2f}%, "
              f"test loss {last['test_loss']:.4f}")
    _save(args, params, train)
    if args.plot:
        png = train.curves_png(history)
        _write("--plot", args.plot, lambda f: f.write(png), args)
        print(f"curves written to {args.plot}")
    return 0


def _save(args, params, train):
    if args.save:
        data = train.params_npz(params)
        _write("--save", args.save, lambda f: f.write(data), args)
        print(f"parameters written to {args.save}")


def run_sequence_training(compiled, module, settings, args):
    """Tagger (CoNLL-U data) or language model (plain text), by the data file."""
    from ..training import seqtrain, sequences, train
    data = str(args.data)
    if data == "digits":
        raise SpecError("a sequence spec needs --data FILE.conllu (tagging) or FILE.txt (language "
                        "modelling)", args.spec, 1, 1)
    common = dict(epochs=settings["epochs"], lr=settings["lr"], batch_size=settings["batch_size"],
                  seed=args.seed)
    try:
        if data.endswith((".conllu", ".conllu.gz")):
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
                cut = max(1, len(sentences) // 10)
                sentences, test = sentences[:-cut], sentences[-cut:]
            print(f"training {compiled.name} on {data}: {len(sentences)} train / {len(test)} test "
                  f"sentences", flush=True)
            params, vocab, history = seqtrain.train_tagger(module, sentences, test, **common)
        else:
            tokens = sequences.read_text_tokens(data)
            if len(tokens) < 2:
                raise ValueError(f"{data} holds {len(tokens)} tokens")
            vocab = sequences.Vocabulary.build([tokens], max_size=int(module.VOCAB))
            ids = vocab.encode(tokens)
            cut = len(ids) * 9 // 10
            print(f"training {compiled.name} on {data}: {cut} train / {len(ids) - cut} valid tokens, "
                  f"vocabulary {len(vocab)}", flush=True)
            params, history = seqtrain.train_language_model(
                module, ids[:cut], ids[cut:], seq_len=settings["seq_len"], **common)
    except DATA_ERRORS as err:
        reason = str(err) or type(err).__name__
        if isinstance(err, EOFError):
            reason = "the compressed file is truncated"
        raise SpecError(f"cannot train on {shorten(data)}: {reason}", args.spec, 1, 1) from None
    _save(args, params, train)
    return 0


def run_command(args):
    """Run the training command that `args.command` names."""
    return {"train": run_training}[args.command](args)
