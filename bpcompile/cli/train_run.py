"""Where a `bpcompile train` run starts (fresh, --init weights, or --resume a checkpoint)
and the checkpoint it writes after every epoch (--save).

A run is a pure function of its settings: epoch e shuffles with
default_rng(seed + e), and the optimizer's state_dict holds its moments and its
step count (the schedule's position). So a checkpoint holds the params, the
optimizer state and the number of completed epochs, plus the settings that
decide the updates (compared on --resume: another seed, batch size or optimizer
would not continue the same run), the history so far, and a sequence model's
vocabulary and tags (without which its weights cannot be used). A module with
dropout draws its masks from one generator per run (np.random.default_rng(seed)):
the checkpoint keeps its state, and --resume sets it back, so that a resumed
run draws the masks the uninterrupted run would have drawn.
"""

from dataclasses import dataclass, field
from typing import Optional

from ..errors import SpecError
from ..limits import clip


@dataclass
class Start:
    """Where the run starts: params None means module.init_params(seed)."""
    params: Optional[dict] = None
    epoch: int = 0                          # completed epochs
    optimizer: dict = field(default_factory=dict)
    vocab: object = None
    tags: Optional[tuple] = None
    history: list = field(default_factory=list)
    run: Optional[dict] = None              # the settings recorded in a resumed checkpoint
    rng: Optional[dict] = None              # the saved generator state (bit_generator.state)


def _file_error(path, err):
    return SpecError(str(err), clip(str(path)), 1, 1)


def load_start(args, compiled, module):
    """The Start of the run that --resume or --init ask for (a fresh one otherwise)."""
    from ..training import checkpoint
    resume, init = getattr(args, "resume", None), getattr(args, "init", None)
    if resume and init:
        raise SpecError("--resume and --init exclude each other: a resumed run starts from "
                        "its checkpoint's weights", clip(resume), 1, 1)
    if resume:
        try:
            saved = checkpoint.load_checkpoint(resume, module, checkpoint.spec_hash(compiled.spec))
        except ValueError as err:
            raise _file_error(resume, err) from None
        if saved.meta.get("kept_best"):
            raise _file_error(resume, f"{resume} holds the weights of the best epoch "
                              f"({saved.meta['kept_best']}, --keep-best), not the end of a run: "
                              "it cannot be resumed (start from it with --init)")
        return Start(saved.params, saved.epoch, saved.optimizer, saved.vocab, saved.tags,
                     list(saved.meta.get("history", [])), saved.meta.get("run"), saved.rng)
    if init:
        return _initial_weights(init, module)
    return Start()


def _initial_weights(path, module):
    """--init: a plain parameter file, or a checkpoint (whose vocabulary and tags come along)."""
    from ..training import checkpoint
    try:
        params = checkpoint.load_params(path, module)
        saved = None
        if _is_checkpoint_file(path):
            saved = checkpoint.load_checkpoint(path, module)
    except ValueError as err:
        raise _file_error(path, err) from None
    if saved is None:
        return Start(params)
    return Start(params, vocab=saved.vocab, tags=saved.tags)


def _is_checkpoint_file(path):
    import numpy as np
    with np.load(path, allow_pickle=False) as archive:
        return "format" in archive.files


def check_resume(start, run, epochs, path):
    """Refuse to resume a run under other settings, or one that is already done."""
    if start.run is None:
        return
    saved, now = _flat(_jsonable(start.run)), _flat(_jsonable(run))
    if saved != now:
        keys = sorted(set(saved) | set(now), key=lambda k: (k not in _FIRST, _FIRST.index(k)
                                                            if k in _FIRST else 0, k))
        differences = [f"{key}: saved {_short(saved.get(key))}, now {_short(now.get(key))}"
                       for key in keys if saved.get(key) != now.get(key)]
        raise SpecError(f"cannot resume {path}: it was trained with other settings ("
                        + "; ".join(differences[:4]) + "); give the same options as the run "
                        "that wrote it", clip(str(path)), 1, 1)
    if epochs <= start.epoch:
        raise SpecError(f"{path} has already trained {start.epoch} epochs: give --epochs "
                        f"greater than {start.epoch} to continue", clip(str(path)), 1, 1)


_FIRST = ("optimizer", "lr", "seed", "batch_size", "seq_len")     # named first when they differ


def _flat(settings, prefix=""):
    """{"optimizer": {"lr": 0.1, "schedule": {"name": ...}}} -> {"lr": 0.1, "schedule.name": ...}:
    so that a refusal names the one setting that differs."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, "" if key == "optimizer" else f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _jsonable(value):
    import json
    return json.loads(json.dumps(value, sort_keys=True))


def _short(value):
    import json
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def run_generator(module, seed, start, path):
    """The generator dropout draws its masks from during the run, or None for a module
    without a train mode: np.random.default_rng(seed), set to the state a resumed
    checkpoint saved."""
    import numpy as np
    from ..training.metrics import has_modes
    if not has_modes(module):
        return None
    rng = np.random.default_rng(seed)
    if start.run is None:                   # a fresh run (or --init weights)
        return rng
    if start.rng is None:
        raise SpecError(f"cannot resume {path}: it holds no random generator state, so the "
                        "dropout masks of the resumed epochs would differ from the run's",
                        clip(str(path)), 1, 1)
    try:
        rng.bit_generator.state = start.rng
    except (TypeError, ValueError, KeyError) as err:
        raise SpecError(f"cannot resume {path}: its random generator state is damaged ({err})",
                        clip(str(path)), 1, 1) from None
    return rng


def load_optimizer_state(optimizer, start, path):
    if optimizer is None or not start.optimizer:
        return
    try:
        optimizer.load_state_dict(start.optimizer)
    except ValueError as err:
        raise SpecError(f"cannot resume {path}: {err}", clip(str(path)), 1, 1) from None


class Checkpointer:
    """on_epoch_end of the training loops: records the history and, with --save,
    writes the checkpoint after every epoch."""

    def __init__(self, args, compiled, optimizer, run, start, steps_per_epoch, vocab=None,
                 tags=None, rng=None):
        from ..training import checkpoint
        self.args, self.optimizer, self.run, self.rng = args, optimizer, run, rng
        self.spec_hash = checkpoint.spec_hash(compiled.spec)
        self.history = list(start.history)
        self.steps_per_epoch, self.vocab, self.tags = steps_per_epoch, vocab, tags
        self.path = save_path(args)
        self.added = bool(self.path) and self.path != str(args.save)

    def __call__(self, epoch, params, record):
        self.history.append(_plain_record(record))
        if self.path:
            self.save(params, epoch)
        return False

    def save(self, params, epoch, kept_best=None):
        from ..training import checkpoint
        steps = self.optimizer.steps if self.optimizer is not None else epoch * self.steps_per_epoch
        meta = {"run": self.run, "history": self.history}
        if kept_best is not None:
            meta["kept_best"] = kept_best
        try:
            checkpoint.save_checkpoint(
                self.path, params, spec_hash=self.spec_hash, epoch=epoch, step=steps,
                optimizer=self.optimizer.state_dict() if self.optimizer is not None else None,
                vocab=self.vocab, tags=self.tags, meta=meta,
                rng=self.rng.bit_generator.state if self.rng is not None else None,
                force=getattr(self.args, "force", False))
        except ValueError as err:
            raise SpecError(f"cannot write the checkpoint: {err}", clip(self.path), 1, 1) from None

    def finish(self, params, history_of_run, best_key=None, out=None):
        """After training: with --keep-best (`best_key`, the record key the loop
        watched) the kept weights replace the last checkpoint, marked so that
        --resume refuses them; say where the checkpoint is."""
        if not self.path or not history_of_run:
            return
        last = history_of_run[-1]["epoch"]
        best = best_epoch(history_of_run, best_key) if best_key else None
        if best is not None:
            self.save(params, last, kept_best=best)
        print(f"checkpoint written to {self.path}" + (" (.npz added)" if self.added else "")
              + f": epoch {last}" + (f", the weights of epoch {best}" if best else ""),
              file=out, flush=True)


def best_epoch(history, key):
    """The epoch whose weights BestWeights keeps for `key` (the first best finite value)."""
    from ..training.train import BestWeights
    best = BestWeights(key)
    for record in history:
        if key in record:
            _consider(best, record)
    return best.epoch


def _consider(best, record):
    import math
    value = float(record[best.key])
    if math.isfinite(value) and (best.value is None or (
            value > best.value if best.higher else value < best.value)):
        best.epoch, best.value = record["epoch"], value


def _plain_record(record):
    """The epoch's record with Python numbers (a loop may give NumPy scalars), for JSON."""
    import numbers
    return {key: (int(value) if key == "epoch" else float(value))
            if isinstance(value, numbers.Number) else value for key, value in record.items()}


def save_path(args):
    """The file --save writes (".npz" added to a name without a suffix), or None."""
    from ..training.checkpoint import checkpoint_path
    if not getattr(args, "save", None):
        return None
    try:
        return checkpoint_path(args.save)[0]
    except ValueError as err:
        raise SpecError(f"--save: {err}", clip(str(args.save)), 1, 1) from None
