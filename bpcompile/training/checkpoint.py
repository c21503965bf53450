"""Checkpoints: everything a training run needs to continue exactly, in one .npz.

A checkpoint is an ordinary .npz archive (read with np.load(allow_pickle=False),
never with pickle) holding only numeric arrays and 0-d str arrays:

    format            "bpcompile-checkpoint"           (0-d str)
    format_version    1                                (0-d int64)
    spec_sha256       spec_hash(spec) of the spec trained (0-d str)
    epoch, step       completed epochs and optimizer steps (0-d int64)
    <layer>.<name>    each parameter under its own name, e.g. linear1.W, so that
                      np.load(path)["linear1.W"] reads it as from a plain
                      parameter file (train.load_params reads both)
    optimizer/<key>   Optimizer.state_dict(): optimizer/config, optimizer/steps,
                      optimizer/state/exp_avg/linear1.W, ...
    vocab             taggers and language models: {"tokens": [...], "pad_token": ...,
                      "unk_token": ...} as JSON (0-d str); optional
    tags              the tag list of a tagger, JSON; optional
    rng               the state of the run's random generator, JSON; optional
    meta              any other JSON-ready settings of the run; optional

What the training loop must store for an exact resume: the params and the
optimizer's state_dict (which holds the schedule's position); the number of
completed epochs (and steps); and its randomness. A loop whose randomness is
a pure function of (seed, epoch), like `train.train` (shuffling with
``np.random.default_rng(seed + epoch)``), stores the seed and the batch size
in `meta` and checks them on resume; a loop that draws from one long-lived
Generator stores ``rng.bit_generator.state`` in `rng` and sets it back on
resume. A checkpoint saved between epochs is the only resume point a
loop has to support (epoch = completed epochs).

The spec's hash is sha256 of the parsed spec without its `train:` block (see
`spec_hash`): comments, layout and training defaults may change between the
run and its resume; anything that changes the model may not.

`load_params` also reads the plain parameter files `train.save_params` and
`--save` write (keys like "linear1.W"), for `--init`.
"""

import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from ..cli.output import NPZ_MARKER, write_file

FORMAT = "bpcompile-checkpoint"
FORMAT_VERSION = 1
_SCALARS = ("format", "format_version", "spec_sha256", "epoch", "step")
_JSON_FIELDS = ("vocab", "tags", "rng", "meta")
OPTIMIZER_PREFIX = "optimizer/"
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError)


@dataclass
class Checkpoint:
    """A loaded checkpoint. `optimizer` is the dict to give Optimizer.load_state_dict
    (empty when none was saved); `vocab` is a sequences.Vocabulary or None."""
    params: Dict[str, np.ndarray]
    spec_hash: str
    epoch: int
    step: int = 0
    optimizer: Dict[str, np.ndarray] = field(default_factory=dict)
    vocab: object = None
    tags: Optional[Tuple[str, ...]] = None
    rng: Optional[dict] = None
    meta: dict = field(default_factory=dict)
    version: int = FORMAT_VERSION


# --- the spec's identity --------------------------------------------------------------------

def spec_hash(spec):
    """sha256 (hex) of a parsed spec (a Spec, or the mapping yaml.safe_load gave),
    without its `train:` block, canonically serialised: key order, comments
    and formatting do not change it."""
    data = getattr(spec, "data", spec)
    if not isinstance(data, dict):
        raise ValueError(f"spec_hash needs a parsed spec (a mapping), got {type(data).__name__}")
    model = {k: v for k, v in data.items() if k != "train"}
    text = json.dumps(_canonical(model), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value):
    """JSON-ready data with one spelling per YAML value (keys become JSON strings, so
    that int and str keys sort together; sets are sorted)."""
    if isinstance(value, dict):
        return {json.dumps(_canonical(k), sort_keys=True): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"set": sorted((_canonical(v) for v in value), key=json.dumps)}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    return {type(value).__name__: str(value)}          # dates and times of YAML


# --- saving ---------------------------------------------------------------------------------

def checkpoint_path(path):
    """(the file name a checkpoint is written to, whether ".npz" was added): a name
    without any suffix gets ".npz"; a name with one is kept as it is."""
    name = os.fspath(path)
    if not name or name == "-":
        raise ValueError(f"a checkpoint needs a file name, got {name!r}")
    if Path(name).suffix:
        return name, False
    return name + ".npz", True


def save_checkpoint(path, params, *, spec_hash, epoch, step=0, optimizer=None, vocab=None,
                    tags=None, rng=None, meta=None, force=False, option="--save"):
    """Write a checkpoint atomically (temporary file beside it, then os.replace;
    mode 0644 less the umask) and return the name written (see checkpoint_path).

    `optimizer` is Optimizer.state_dict(); `vocab` a sequences.Vocabulary or a
    list of tokens; `tags` a list of str; `rng` a Generator's
    bit_generator.state; `meta` a JSON-ready dict. Refuses, like every output
    of bpcompile, to replace a file it did not write unless `force`
    (bpcompile.SpecError); bad contents are a ValueError and nothing is written.
    """
    arrays = checkpoint_arrays(params, spec_hash=spec_hash, epoch=epoch, step=step,
                               optimizer=optimizer, vocab=vocab, tags=tags, rng=rng, meta=meta)
    name, _ = checkpoint_path(path)
    write_file(name, lambda f: write_npz(f, arrays), force, option)
    return name


def checkpoint_arrays(params, *, spec_hash, epoch, step=0, optimizer=None, vocab=None, tags=None,
                      rng=None, meta=None):
    """The arrays of a checkpoint (see the module docstring), checked."""
    if not isinstance(spec_hash, str) or len(spec_hash) != 64 or not all(
            c in "0123456789abcdef" for c in spec_hash):
        raise ValueError(f"spec_hash must be a sha256 hex digest (see spec_hash()), "
                         f"got {spec_hash!r}")
    arrays = {"format": np.array(FORMAT), "format_version": np.array(FORMAT_VERSION, np.int64),
              "spec_sha256": np.array(spec_hash), "epoch": _count_array("epoch", epoch),
              "step": _count_array("step", step)}
    for key, value in _named_arrays("parameter", params).items():
        arrays[_param_name(key)] = value
    for key, value in _named_arrays("optimizer state", optimizer or {}).items():
        arrays[OPTIMIZER_PREFIX + key] = value
    fields = {"vocab": None if vocab is None else _vocab_json(vocab),
              "tags": None if tags is None else _string_list("tags", tags),
              "rng": rng, "meta": meta}
    for key, value in fields.items():
        if value is not None:
            arrays[key] = _json_array(key, value)
    return arrays


def write_npz(f, arrays):
    """np.savez's archive (stored, .npy members) written straight to the binary file
    `f`, with bpcompile's marker as the zip comment so that a later save may
    replace it without --force (np.load ignores the comment)."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, value, allow_pickle=False)
        archive.comment = NPZ_MARKER


def _param_name(key):
    """A parameter's entry name: its own (layer.name), which cannot be mistaken for the
    checkpoint's other entries."""
    if "." not in key or key in _SCALARS + _JSON_FIELDS or key.startswith(OPTIMIZER_PREFIX):
        raise ValueError(f"parameter name {key!r} is not of the form layer.name")
    return key


def is_param_entry(key):
    """Whether the archive entry `key` of a checkpoint is a parameter."""
    return "." in key and key not in _SCALARS + _JSON_FIELDS and not key.startswith(
        OPTIMIZER_PREFIX)


def _count_array(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return np.array(int(value), dtype=np.int64)


def _named_arrays(what, arrays):
    checked = {}
    for name, value in dict(arrays).items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} names must be non-empty strings, got {name!r}")
        array = np.asarray(value)
        if array.dtype.kind not in "biufcU":
            raise ValueError(f"{what} {name!r} has dtype {array.dtype}: only numbers and str")
        checked[name] = array
    return checked


def _vocab_json(vocab):
    tokens = _string_list("vocab", getattr(vocab, "tokens", vocab))
    data = {"tokens": tokens}
    for key in ("pad_token", "unk_token"):
        if getattr(vocab, key, None) is not None:
            data[key] = getattr(vocab, key)
    return data


def _string_list(name, values):
    if isinstance(values, (str, bytes)) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{name} must be a list of str")
    return list(values)


def _json_array(name, value):
    try:
        return np.array(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be JSON-ready data ({err})") from None


# --- loading --------------------------------------------------------------------------------

def load_checkpoint(path, module=None, spec_hash=None):
    """Read a checkpoint written by save_checkpoint into a `Checkpoint`.

    With `spec_hash`, a checkpoint of another spec is refused. With a
    generated `module`, the params must be exactly the module's (names and
    shapes; they are copied into ``module.init_params()`` so its layout and
    dtype are kept), and the optimizer's state arrays must fit them. Every
    refusal is a ValueError that names the file."""
    name = os.fspath(path)
    arrays = _read_npz(name)
    if "format" not in arrays:
        raise ValueError(f"{name}: not a checkpoint but a parameter file (no 'format' entry); "
                         "load it with load_params (--init)")
    try:
        checkpoint = _checkpoint(arrays)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    if spec_hash is not None and checkpoint.spec_hash != spec_hash:
        raise ValueError(f"{name}: the checkpoint was saved for another spec (its sha256 "
                         f"{checkpoint.spec_hash[:12]}..., this spec's {spec_hash[:12]}...)")
    if module is not None:
        try:
            checkpoint.params = fit_params(checkpoint.params, module)
            _check_optimizer_shapes(checkpoint.optimizer, module)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    return checkpoint


def load_params(path, module=None):
    """The parameters of a plain parameter file (keys "linear1.W", as `--save` and
    train.save_params write them) or of a checkpoint (its layer.name entries). With a
    `module`, they are checked and copied into its layout (see fit_params)."""
    name = os.fspath(path)
    arrays = _read_npz(name)
    params = checkpoint_params(arrays) if "format" in arrays else arrays
    if module is None:
        return params
    try:
        return fit_params(params, module)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def checkpoint_params(arrays):
    """The parameter entries of a checkpoint's arrays."""
    return {k: v for k, v in arrays.items() if is_param_entry(k)}


def is_checkpoint(arrays):
    """Whether the arrays of an .npz file are a checkpoint (not plain parameters)."""
    return "format" in arrays


def fit_params(loaded, module):
    """`loaded` copied into a fresh ``module.init_params()``: exactly the module's
    names, each of its shape, numeric and finite (cast to the module's dtype)."""
    params = module.init_params()
    missing = [k for k in params if k not in loaded]
    extra = [k for k in loaded if k not in params]
    if missing or extra:
        parts = ([f"no parameter {', '.join(map(repr, missing[:5]))}"] if missing else []) + (
            [f"unexpected parameter {', '.join(map(repr, extra[:5]))}"] if extra else [])
        raise ValueError("; ".join(parts) + f" (the module's are {', '.join(list(params)[:8])}"
                         + (", ..." if len(params) > 8 else "") + ")")
    for key, target in params.items():
        value = np.asarray(loaded[key])
        if value.shape != target.shape:
            raise ValueError(f"{key} has shape {value.shape}, the module expects {target.shape}")
        if value.dtype.kind not in "iuf":
            raise ValueError(f"{key} has dtype {value.dtype}, not a real number type")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{key} holds NaN or infinite values")
        np.copyto(target, value, casting="unsafe")     # float64 weights into a float32 module
    return params


def _read_npz(name):
    try:
        loaded = np.load(name, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file") from None
    except _READ_ERRORS as err:
        raise ValueError(f"{name}: not a readable .npz file ({err})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: not an .npz file (it holds a single .npy array)")
    with loaded as archive:
        try:
            return {key: np.array(archive[key]) for key in archive.files}
        except _READ_ERRORS as err:
            raise ValueError(f"{name}: not a readable .npz file ({err})") from None


def _checkpoint(arrays):
    if _text(arrays, "format") != FORMAT:
        raise ValueError(f"not a bpcompile checkpoint (format {_text(arrays, 'format')[:40]!r})")
    version = _integer(arrays, "format_version")
    if version > FORMAT_VERSION:
        raise ValueError(f"checkpoint format version {version} is newer than this bpcompile "
                         f"reads ({FORMAT_VERSION}): update bpcompile")
    missing = [k for k in _SCALARS if k not in arrays]
    unknown = sorted(k for k in arrays if k not in _SCALARS + _JSON_FIELDS
                     and not k.startswith(OPTIMIZER_PREFIX) and not is_param_entry(k))
    if missing or unknown:
        raise ValueError("damaged checkpoint: " + "; ".join(
            ([f"no {', '.join(missing)}"] if missing else [])
            + ([f"unknown entries {', '.join(map(repr, unknown[:5]))}"] if unknown else [])))
    params = checkpoint_params(arrays)
    if not params:
        raise ValueError("damaged checkpoint: no parameters (layer.name entries)")
    digest = _text(arrays, "spec_sha256")
    fields = {k: _json(arrays, k) for k in _JSON_FIELDS if k in arrays}
    return Checkpoint(
        params=params, spec_hash=digest, epoch=_integer(arrays, "epoch"),
        step=_integer(arrays, "step"),
        optimizer={k[len(OPTIMIZER_PREFIX):]: v for k, v in arrays.items()
                   if k.startswith(OPTIMIZER_PREFIX)},
        vocab=_vocabulary(fields["vocab"]) if "vocab" in fields else None,
        tags=tuple(_string_list("tags", fields["tags"])) if "tags" in fields else None,
        rng=fields.get("rng"), meta=fields.get("meta", {}), version=version)


def _text(arrays, key):
    value = arrays.get(key)
    if value is None or value.shape != () or value.dtype.kind != "U":
        raise ValueError(f"damaged checkpoint: {key} is not a 0-d str array")
    return str(value)


def _integer(arrays, key):
    value = arrays.get(key)
    if value is None or value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
        raise ValueError(f"damaged checkpoint: {key} is not a 0-d integer >= 0")
    return int(value)


def _json(arrays, key):
    try:
        return json.loads(_text(arrays, key))
    except json.JSONDecodeError as err:
        raise ValueError(f"damaged checkpoint: {key} is not JSON ({err})") from None


def _vocabulary(data):
    from .sequences import Vocabulary
    if not isinstance(data, dict) or "tokens" not in data:
        raise ValueError("damaged checkpoint: vocab has no tokens")
    options = {k: data[k] for k in ("pad_token", "unk_token") if isinstance(data.get(k), str)}
    return Vocabulary(_string_list("vocab", data["tokens"]), **options)


def _check_optimizer_shapes(optimizer, module):
    """Each per-parameter optimizer array names a parameter of the module and has its shape
    (the optimizer checks the rest when it loads the state)."""
    shapes = {k: tuple(v) for k, v in module.PARAMS.items()}
    for key, value in optimizer.items():
        if not key.startswith("state/") or key == "state/step":
            continue
        param = key[len("state/"):].partition("/")[2]
        if param not in shapes:
            raise ValueError(f"the optimizer state {key!r} names no parameter of the module")
        if value.shape != shapes[param]:
            raise ValueError(f"the optimizer state {key!r} has shape {value.shape}, the "
                             f"parameter's is {shapes[param]}")
