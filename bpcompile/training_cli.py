"""`bpcompile train`: compile a layer spec, load data, run SGD, report, save."""

import sys
import time

import numpy as np

from .compiler import compile_file, load_module
from .errors import SpecError

DEFAULTS = {"epochs": 10, "lr": 0.1, "batch_size": 32, "seq_len": 35}


def training_settings(spec, args):
    """epochs, lr, batch_size: the command line, else the spec's `train:`, else defaults."""
    given = spec.get("train", default={}) or {}
    if not isinstance(given, dict):
        raise spec.error("train must map epochs/lr/batch_size to numbers", "train")
    spec.check_keys(set(DEFAULTS), "train") if given else None
    settings = {}
    for key, default in DEFAULTS.items():
        value = getattr(args, key, None)
        if value is None:
            value = given.get(key, default)
            kind = float if key == "lr" else int
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
                    kind is int and not float(value).is_integer()):
                raise spec.error(f"train.{key} must be a positive {kind.__name__}, got {value!r}",
                                 "train", key)
            value = kind(value)
        elif value <= 0:
            raise SpecError(f"--{key.replace('_', '-')} must be positive, got {value}", spec.file, 1, 1)
        settings[key] = value
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


def run_training(args):
    from . import datasets, train
    compiled = compile_file(args.spec)
    if not hasattr(compiled, "layers"):
        raise SpecError("train needs a layer spec (with `layers:` and `loss:`)", args.spec, 1, 1)
    settings = training_settings(compiled.spec, args)
    module = load_module(compiled.source, compiled.name)
    if compiled.layers.sequence:
        return run_sequence_training(compiled, module, settings, args)
    try:
        data = fit_to_module(module, datasets.load_dataset(args.data, dtype=compiled.layers.dtype))
    except (ValueError, OSError) as err:
        raise SpecError(f"cannot load data: {err}", str(args.data), 1, 1) from None
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
    if args.save:
        train.save_params(args.save, params)
        print(f"parameters written to {args.save}")
    if args.plot:
        train.plot_curves(args.plot, history)
        print(f"curves written to {args.plot}")
    return 0


def run_sequence_training(compiled, module, settings, args):
    """Tagger (CoNLL-U data) or language model (plain text), by the data file."""
    from . import seqtrain, sequences, train
    data = str(args.data)
    if data == "digits":
        raise SpecError("a sequence spec needs --data FILE.conllu (tagging) or FILE.txt (language "
                        "modelling)", args.spec, 1, 1)
    common = dict(epochs=settings["epochs"], lr=settings["lr"], batch_size=settings["batch_size"],
                  seed=args.seed)
    try:
        if data.endswith((".conllu", ".conllu.gz")):
            sentences = sequences.read_conllu(data)
            test = sequences.read_conllu(args.test) if args.test else None
            if test is None:
                cut = max(1, len(sentences) // 10)
                sentences, test = sentences[:-cut], sentences[-cut:]
            print(f"training {compiled.name} on {data}: {len(sentences)} train / {len(test)} test "
                  f"sentences", flush=True)
            params, vocab, history = seqtrain.train_tagger(module, sentences, test, **common)
        else:
            tokens = sequences.read_text_tokens(data)
            vocab = sequences.Vocabulary.build([tokens], max_size=int(module.VOCAB))
            ids = vocab.encode(tokens)
            cut = len(ids) * 9 // 10
            print(f"training {compiled.name} on {data}: {cut} train / {len(ids) - cut} valid tokens, "
                  f"vocabulary {len(vocab)}", flush=True)
            params, history = seqtrain.train_language_model(
                module, ids[:cut], ids[cut:], seq_len=settings["seq_len"], **common)
    except (ValueError, OSError) as err:
        raise SpecError(f"cannot train on {data}: {err}", args.spec, 1, 1) from None
    if args.save:
        train.save_params(args.save, params)
        print(f"parameters written to {args.save}")
    return 0
