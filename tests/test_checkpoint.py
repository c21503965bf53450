"""bpcompile/training/checkpoint.py: saving atomically, loading strictly, resuming exactly."""

import json
import os
import stat

import numpy as np
import pytest

from bpcompile.compiler import compile_spec, load_module, load_spec
from bpcompile.errors import SpecError
from bpcompile.training import train
from bpcompile.training.checkpoint import (FORMAT_VERSION, checkpoint_arrays, checkpoint_path,
                                           load_checkpoint, load_params, save_checkpoint,
                                           spec_hash, write_npz)
from bpcompile.training.optim import Optimizer, make_schedule
from bpcompile.training.sequences import Vocabulary

TINY = """\
name: tiny            # a comment
dtype: float64
input: [3]
layers:
  - linear: 4
  - tanh
  - linear: 3
loss: softmax_cross_entropy
train: {epochs: 2, lr: 0.1}
"""

WIDE = """\
name: wide
input: [100]
layers:
  - linear: {out: 200, name: big}
  - linear: 2
loss: softmax_cross_entropy
"""


@pytest.fixture(scope="module")
def tiny():
    return load_module(compile_spec(load_spec(TINY)).source, "tiny")


@pytest.fixture(scope="module")
def wide():
    return load_module(compile_spec(load_spec(WIDE)).source, "wide")


HASH = spec_hash(load_spec(TINY))


def adam_state(module, steps=3):
    """An optimizer state of the documented form (as Optimizer.state_dict gives it)."""
    rng = np.random.default_rng(0)
    state = {"config": np.array(json.dumps({"optimizer": "adam"})),
             "steps": np.array(steps, dtype=np.int64), "state/step": np.array(steps, np.int64)}
    for key, shape in module.PARAMS.items():
        state[f"state/exp_avg/{key}"] = rng.normal(size=shape)
        state[f"state/exp_avg_sq/{key}"] = rng.random(size=shape)
    return state


def save(path, module, **kwargs):
    args = dict(spec_hash=HASH, epoch=1, step=5)
    args.update(kwargs)
    return save_checkpoint(path, module.init_params(3), **args)


# --- the spec's hash ------------------------------------------------------------------------

def test_spec_hash_ignores_comments_order_and_the_train_block():
    same = ("loss: softmax_cross_entropy\ninput: [3]\nname: tiny\ndtype: float64\n"
            "layers: [{linear: 4}, tanh, {linear: 3}]\ntrain: {epochs: 30}\n")
    assert spec_hash(load_spec(same)) == HASH
    assert spec_hash(load_spec(TINY).data) == HASH
    assert len(HASH) == 64 and int(HASH, 16) >= 0


@pytest.mark.parametrize("old, new", [("linear: 4", "linear: 5"), ("tanh", "relu"),
                                      ("float64", "float32"), ("name: tiny", "name: tiny2")])
def test_spec_hash_changes_with_the_model(old, new):
    assert spec_hash(load_spec(TINY.replace(old, new))) != HASH
    assert spec_hash(load_spec(TINY + "l2: 0.01\n")) != HASH


def test_spec_hash_is_stable_for_unusual_yaml_values():
    a = {"name": "x", "weird": {1: "int key", "1": "str key"}, "n": float("inf"),
         "s": {3, 1, 2}, "b": b"\x00"}
    b = {"b": b"\x00", "s": {2, 3, 1}, "n": float("inf"), "weird": {"1": "str key", 1: "int key"},
         "name": "x"}
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) != spec_hash({**a, "weird": {1: "str key", "1": "int key"}})
    with pytest.raises(ValueError, match="needs a parsed spec"):
        spec_hash("name: x")


# --- saving ---------------------------------------------------------------------------------

def test_a_checkpoint_is_written_atomically_with_mode_0644(tmp_path, tiny):
    old = os.umask(0o022)
    try:
        name = save(tmp_path / "run.npz", tiny)
    finally:
        os.umask(old)
    assert name == str(tmp_path / "run.npz")
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o644
    assert os.listdir(tmp_path) == ["run.npz"]


@pytest.mark.parametrize("given, written, added", [
    ("run", "run.npz", True), ("run.npz", "run.npz", False), ("run.ckpt", "run.ckpt", False),
    ("dir.v2/run", "dir.v2/run.npz", True)])
def test_npz_is_added_to_a_name_without_a_suffix(given, written, added):
    assert checkpoint_path(given) == (written, added)


def test_save_returns_the_name_with_npz_added(tmp_path, tiny):
    assert save(tmp_path / "run", tiny) == str(tmp_path / "run.npz")
    assert os.listdir(tmp_path) == ["run.npz"]
    with pytest.raises(ValueError, match="needs a file name"):
        checkpoint_path("-")


def test_a_checkpoint_replaces_its_predecessor_but_not_a_foreign_file(tmp_path, tiny):
    path = tmp_path / "run.npz"
    save(path, tiny, epoch=1)
    save(path, tiny, epoch=2)                        # carries bpcompile's marker: no --force
    assert load_checkpoint(path).epoch == 2
    foreign = tmp_path / "mine.npz"
    np.savez(foreign, a=np.zeros(1))
    with pytest.raises(SpecError, match="not written by bpcompile"):
        save(foreign, tiny)
    save(foreign, tiny, force=True)
    assert load_checkpoint(foreign).epoch == 1


def test_a_checkpoint_holds_only_plain_arrays(tmp_path, tiny):
    path = save(tmp_path / "run.npz", tiny, optimizer=adam_state(tiny), vocab=["<pad>", "a"],
                tags=["NOUN"], rng={"x": 1}, meta={"seed": 3})
    with np.load(path, allow_pickle=False) as archive:
        kinds = {key: archive[key].dtype.kind for key in archive.files}
    assert set(kinds.values()) <= set("iufU")
    assert kinds["format"] == "U" and kinds["linear1.W"] == "f"
    assert "optimizer/state/exp_avg/linear1.W" in kinds and "optimizer/config" in kinds


@pytest.mark.parametrize("kwargs, message", [
    (dict(spec_hash="abc"), "spec_hash must be a sha256 hex digest"),
    (dict(spec_hash="A" * 64), "spec_hash must be"),
    (dict(epoch=-1), "epoch must be an integer >= 0"),
    (dict(epoch=1.0), "epoch must be an integer"),
    (dict(step=True), "step must be an integer"),
    (dict(vocab="abc"), "vocab must be a list of str"),
    (dict(tags=["A", 1]), "tags must be a list of str"),
    (dict(meta={"f": object()}), "meta must be JSON-ready data"),
    (dict(optimizer={"x": np.array([object()])}), "optimizer state 'x' has dtype object"),
])
def test_bad_contents_are_refused_and_nothing_is_written(tmp_path, tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        save(tmp_path / "run.npz", tiny, **kwargs)
    assert os.listdir(tmp_path) == []


# --- loading --------------------------------------------------------------------------------

def test_everything_saved_comes_back(tmp_path, tiny):
    vocab = Vocabulary(["<pad>", "<unk>", "the", "caf\u00e9", "a\x00b"])
    generator = np.random.default_rng(11)
    generator.random(5)
    params = tiny.init_params(3)
    optimizer = adam_state(tiny)
    path = save_checkpoint(tmp_path / "run", params, spec_hash=HASH, epoch=4, step=40,
                           optimizer=optimizer, vocab=vocab, tags=("NOUN", "VERB"),
                           rng=generator.bit_generator.state,
                           meta={"seed": 7, "history": [{"loss": 0.5}]})
    loaded = load_checkpoint(path, tiny, spec_hash=HASH)
    assert (loaded.epoch, loaded.step, loaded.spec_hash, loaded.version) == (4, 40, HASH,
                                                                            FORMAT_VERSION)
    for key in params:
        np.testing.assert_array_equal(loaded.params[key], params[key])
    assert set(loaded.optimizer) == set(optimizer)
    for key in optimizer:
        np.testing.assert_array_equal(loaded.optimizer[key], optimizer[key])
    assert loaded.vocab == vocab and loaded.vocab.tokens[4] == "a\x00b"
    assert (loaded.vocab.pad_id, loaded.vocab.unk_id) == (0, 1)
    assert loaded.tags == ("NOUN", "VERB")
    assert loaded.meta == {"seed": 7, "history": [{"loss": 0.5}]}
    resumed = np.random.default_rng()
    resumed.bit_generator.state = loaded.rng
    np.testing.assert_array_equal(resumed.random(4), generator.random(4))


def test_optional_fields_default_to_none(tmp_path, tiny):
    loaded = load_checkpoint(save(tmp_path / "run.npz", tiny))
    assert (loaded.vocab, loaded.tags, loaded.rng, loaded.meta, loaded.optimizer) == (
        None, None, None, {}, {})


def test_a_checkpoint_of_another_spec_is_refused(tmp_path, tiny):
    path = save(tmp_path / "run.npz", tiny)
    other = spec_hash(load_spec(TINY.replace("tanh", "relu")))
    with pytest.raises(ValueError, match=r"run.npz: the checkpoint was saved for another spec "
                                         rf"\(its sha256 {HASH[:12]}\.\.\., this spec's "
                                         rf"{other[:12]}\.\.\.\)"):
        load_checkpoint(path, spec_hash=other)


def test_params_that_do_not_fit_the_module_are_refused(tmp_path, tiny, wide):
    path = save(tmp_path / "run.npz", tiny)
    with pytest.raises(ValueError, match="no parameter 'big.W', 'big.b'; unexpected parameter "
                                         "'linear2.W', 'linear2.b'"):
        load_checkpoint(path, wide)
    params = tiny.init_params()
    params["linear1.W"] = np.zeros((4, 2))
    path = save_checkpoint(tmp_path / "bad.npz", params, spec_hash=HASH, epoch=0)
    with pytest.raises(ValueError, match=r"bad.npz: linear1.W has shape \(4, 2\), the module "
                                         r"expects \(4, 3\)"):
        load_checkpoint(path, tiny)


def test_optimizer_state_that_does_not_fit_is_refused(tmp_path, tiny):
    state = adam_state(tiny)
    state["state/exp_avg/linear1.W"] = np.zeros((3, 4))
    path = save(tmp_path / "run.npz", tiny, optimizer=state)
    with pytest.raises(ValueError, match=r"'state/exp_avg/linear1.W' has shape \(3, 4\)"):
        load_checkpoint(path, tiny)
    state = adam_state(tiny)
    state["state/exp_avg/lstm.W"] = np.zeros(2)
    path = save(tmp_path / "run.npz", tiny, optimizer=state)
    with pytest.raises(ValueError, match="'state/exp_avg/lstm.W' names no parameter"):
        load_checkpoint(path, tiny)


def rewrite(path, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    change(arrays)
    with open(path, "wb") as f:
        write_npz(f, arrays)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(format_version=np.array(FORMAT_VERSION + 1)),
     f"format version {FORMAT_VERSION + 1} is newer than this bpcompile reads"),
    (lambda a: a.update(format=np.array("something")), "not a bpcompile checkpoint"),
    (lambda a: a.update(surprise=np.zeros(1)), "damaged checkpoint: unknown entries 'surprise'"),
    (lambda a: a.pop("epoch"), "damaged checkpoint: no epoch"),
    (lambda a: a.update(epoch=np.array([1, 2])), "epoch is not a 0-d integer"),
    (lambda a: a.update(spec_sha256=np.array(3)), "spec_sha256 is not a 0-d str array"),
    (lambda a: a.update(meta=np.array("{")), "meta is not JSON"),
    (lambda a: a.update(vocab=np.array('{"words": []}')), "vocab has no tokens"),
    (lambda a: [a.pop(k) for k in list(a) if "." in k and "/" not in k], "no parameters"),
])
def test_a_damaged_checkpoint_is_refused(tmp_path, tiny, change, message):
    path = rewrite(save(tmp_path / "run.npz", tiny, meta={}), change)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)


def test_files_that_are_not_checkpoints_are_refused(tmp_path, tiny):
    with pytest.raises(ValueError, match="nothing.npz: no such file"):
        load_checkpoint(tmp_path / "nothing.npz")
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="text.npz: not a readable .npz file"):
        load_checkpoint(text)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="holds a single .npy array"):
        load_checkpoint(single)
    params = tmp_path / "params.npz"
    train.save_params(params, tiny.init_params())
    with pytest.raises(ValueError, match="not a checkpoint but a parameter file.*load_params"):
        load_checkpoint(params)


def test_a_pickled_object_array_is_never_unpickled(tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, format=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable .npz file"):
        load_checkpoint(evil)
    with pytest.raises(ValueError, match="not a readable .npz file"):
        load_params(evil)


# --- load_params (--init) -------------------------------------------------------------------

def test_load_params_reads_the_plain_format_and_checkpoints(tmp_path, tiny):
    params = tiny.init_params(9)
    plain = tmp_path / "params.npz"
    train.save_params(plain, params)
    checkpoint = save_checkpoint(tmp_path / "run", params, spec_hash=HASH, epoch=1)
    for path in (plain, checkpoint):
        for loaded in (load_params(path), load_params(path, tiny)):
            assert set(loaded) == set(params)
            for key in params:
                np.testing.assert_array_equal(loaded[key], params[key])


def test_load_params_keeps_the_modules_layout_and_dtype(tmp_path, wide):
    rng = np.random.default_rng(0)
    ported = {k: rng.normal(size=shape) for k, shape in wide.PARAMS.items()}   # float64, C order
    path = tmp_path / "ported.npz"
    np.savez(path, **ported)
    loaded = load_params(path, wide)
    fresh = wide.init_params()
    assert fresh["big.W"].flags.f_contiguous and not fresh["big.W"].flags.c_contiguous
    for key in fresh:
        assert loaded[key].dtype == wide.DTYPE == np.float32
        assert loaded[key].flags.f_contiguous == fresh[key].flags.f_contiguous
        np.testing.assert_array_equal(loaded[key], ported[key].astype(np.float32))


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop("linear2.b"), "no parameter 'linear2.b'"),
    (lambda p: p.update({"linear2.bias": np.zeros(3)}), "unexpected parameter 'linear2.bias'"),
    (lambda p: p.update({"linear1.b": np.zeros(5)}), r"linear1.b has shape \(5,\)"),
    (lambda p: p["linear1.W"].__setitem__((0, 0), np.nan), "linear1.W holds NaN or infinite"),
    (lambda p: p.update({"linear1.b": np.zeros(4, dtype=complex)}),
     "linear1.b has dtype complex128, not a real number type"),
    (lambda p: p.update({"linear1.b": np.array(["a"] * 4)}), "linear1.b has dtype <U1, not a real"),
])
def test_load_params_refuses_what_does_not_fit(tmp_path, tiny, change, message):
    params = tiny.init_params()
    change(params)
    path = tmp_path / "p.npz"
    np.savez(path, **params)
    with pytest.raises(ValueError, match="p.npz: " + message):
        load_params(path, tiny)


# --- resuming a run exactly -----------------------------------------------------------------

def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(40, 3)), rng.integers(0, 3, size=40)


def epochs(module, params, optimizer, generator, count, x, y):
    """A loop that shuffles with one long-lived Generator (the case that needs `rng`)."""
    for _ in range(count):
        order = generator.permutation(len(x))
        for start in range(0, len(x), 8):
            index = order[start:start + 8]
            optimizer.step(params, x[index], y[index])


@pytest.mark.parametrize("settings", [{}, dict(momentum=0.9, clip_norm=1.0)])
def test_a_run_resumed_from_a_checkpoint_continues_exactly(tmp_path, tiny, settings):
    if settings and not hasattr(tiny, "sgd_update"):
        pytest.skip("generated modules do not have sgd_update yet")
    x, y = data()
    schedule = make_schedule("cosine", 4 * 5, warmup_steps=3)

    def optimizer():
        return Optimizer(tiny, "sgd", 0.2, schedule=schedule, **settings)
    straight = tiny.init_params(1)
    epochs(tiny, straight, optimizer(), np.random.default_rng(5), 4, x, y)

    params, first, generator = tiny.init_params(1), optimizer(), np.random.default_rng(5)
    epochs(tiny, params, first, generator, 2, x, y)
    path = save_checkpoint(tmp_path / "run", params, spec_hash=HASH, epoch=2, step=first.steps,
                           optimizer=first.state_dict(), rng=generator.bit_generator.state)

    loaded = load_checkpoint(path, tiny, spec_hash=HASH)
    resumed, generator = optimizer(), np.random.default_rng()
    resumed.load_state_dict(loaded.optimizer)
    generator.bit_generator.state = loaded.rng
    assert (loaded.epoch, resumed.steps, resumed.lr) == (2, 10, first.lr)
    epochs(tiny, loaded.params, resumed, generator, 2, x, y)
    for key in straight:
        np.testing.assert_array_equal(loaded.params[key], straight[key])


def test_checkpoint_arrays_are_what_save_writes(tmp_path, tiny):
    arrays = checkpoint_arrays(tiny.init_params(3), spec_hash=HASH, epoch=1, step=5)
    path = save(tmp_path / "run.npz", tiny)
    with np.load(path, allow_pickle=False) as archive:
        assert archive.files == list(arrays)
        for key in arrays:
            np.testing.assert_array_equal(archive[key], arrays[key])


def test_parameters_are_stored_under_their_own_names(tmp_path, tiny):
    """np.load(checkpoint)["linear1.W"] reads a parameter as from a plain parameter file,
    and no other entry can be taken for a parameter."""
    params = tiny.init_params(4)
    path = save_checkpoint(tmp_path / "run", params, spec_hash=HASH, epoch=1,
                           optimizer=adam_state(tiny), meta={"history": []})
    with np.load(path, allow_pickle=False) as archive:
        for key in params:
            np.testing.assert_array_equal(archive[key], params[key])
        others = [k for k in archive.files if k not in params]
    assert all("." not in k or k.startswith("optimizer/") for k in others)
    assert set(train.load_params(path)) == set(params)
    for bad in ("format", "meta", "optimizer/x.y", "nodot"):
        with pytest.raises(ValueError, match="not of the form layer.name"):
            checkpoint_arrays({bad: np.zeros(2)}, spec_hash=HASH, epoch=0)
