"""`bpcompile train --save` checkpoints and `--resume`: a run of 4 epochs and a run of 2
epochs resumed for 2 more give the same parameters bit for bit (layer specs, taggers
and language models, SGD and Adam), and resuming anything else is refused with one
error line. Also `--init`, and what a checkpoint holds."""

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from bpcompile.cli.main import main
from bpcompile.training import checkpoint

ERROR = re.compile(r"^[^\n]+:\d+:\d+: error: [^\n]+\n$")
REPO = Path(__file__).resolve().parent.parent
MLP = "name: net\ninput: [64]\nlayers:\n  - linear: 12\n  - tanh\n  - linear: 10\nloss: softmax_cross_entropy\n"
TAGGER = REPO / "examples" / "pos_tagger.yaml"
CONLLU = REPO / "examples" / "data" / "tiny.conllu"
TEXT = REPO / "examples" / "data" / "tiny.txt"
LM = ("name: lm\ninput: {vocab: 40}\nlayers:\n  - embedding: 8\n  - lstm: {hidden: 12}\n"
      "  - linear: 40\nloss: softmax_cross_entropy\ntrain: {lr: 0.5, batch_size: 4, seq_len: 10}\n")

OPTIONS = {
    "sgd": [],
    "momentum": ["--momentum", "0.9", "--nesterov", "--weight-decay", "1e-3"],
    "adam": ["--optimizer", "adam", "--lr", "0.01", "--schedule", "step", "--lr-step-size", "1",
             "--gamma", "0.5", "--warmup", "3"],
}


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _same_run(a, b):
    """Parameters and optimizer state identical bit for bit; the histories equal but for time."""
    first, second = _arrays(a), _arrays(b)
    numeric = [k for k in first if k not in ("meta",)]
    assert sorted(numeric) == sorted(k for k in second if k != "meta")
    for key in numeric:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    history = [json.loads(str(x["meta"]))["history"] for x in (first, second)]
    for record in history[0] + history[1]:
        record.pop("seconds")
    assert history[0] == history[1]


def _resume_matches_a_straight_run(tmp_path, capsys, base, options):
    straight, pieces = tmp_path / "straight.npz", tmp_path / "pieces.npz"
    status, out, err = _run(capsys, *base, "--epochs", 4, "--save", straight, *options)
    assert status == 0, err
    status, out, err = _run(capsys, *base, "--epochs", 2, "--save", pieces, *options)
    assert status == 0, err
    status, out, err = _run(capsys, *base, "--epochs", 4, "--save", pieces, "--resume", pieces,
                            "--history", tmp_path / "h.json", *options)
    assert status == 0, err
    assert "resuming after epoch 2" in out.splitlines()[0]
    assert [line[:10] for line in out.splitlines() if line.startswith("epoch ")] == [
        "epoch 3/4 ", "epoch 4/4 "]
    _same_run(straight, pieces)
    history = json.loads((tmp_path / "h.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]       # the earlier epochs came along
    return straight


@pytest.mark.parametrize("name", list(OPTIONS))
def test_a_layer_spec_resumed_after_2_epochs_equals_4_epochs_in_one_run(tmp_path, capsys, name):
    spec = tmp_path / "net.yaml"
    spec.write_text(MLP)
    _resume_matches_a_straight_run(tmp_path, capsys, ["train", spec, "--quiet", "--batch-size", 64,
                                                      "--seed", 3], OPTIONS[name])


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_tagger_resumed_equals_one_run_and_keeps_its_vocabulary_and_tags(tmp_path, capsys, name):
    saved = _resume_matches_a_straight_run(
        tmp_path, capsys, ["train", TAGGER, "--data", CONLLU, "--quiet", "--batch-size", 32],
        OPTIONS[name])
    loaded = checkpoint.load_checkpoint(saved)
    assert loaded.epoch == 4 and loaded.tags[:3] == ("ADJ", "ADP", "ADV")
    assert "<unk>" in loaded.vocab and len(loaded.vocab) > 10


@pytest.mark.parametrize("options", [[], ["--optimizer", "adam", "--lr", "0.01"]],
                         ids=["default_clipped_sgd", "adam"])
def test_a_language_model_resumed_equals_one_run(tmp_path, capsys, options):
    spec = tmp_path / "lm.yaml"
    spec.write_text(LM)
    saved = _resume_matches_a_straight_run(tmp_path, capsys,
                                           ["train", spec, "--data", TEXT, "--quiet"], options)
    assert checkpoint.load_checkpoint(saved).vocab is not None


def test_the_checkpoint_is_written_after_every_epoch_and_reads_as_a_parameter_file(tmp_path, capsys,
                                                                                   monkeypatch):
    from bpcompile.training import train
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "net.yaml"
    spec.write_text(MLP)
    epochs_seen = []
    real_save = checkpoint.save_checkpoint

    def spy(path, params, **kwargs):
        epochs_seen.append(kwargs["epoch"])
        return real_save(path, params, **kwargs)
    monkeypatch.setattr(checkpoint, "save_checkpoint", spy)
    status, out, err = _run(capsys, "train", spec, "--epochs", 3, "--quiet", "--save", "run")
    assert status == 0, err
    assert epochs_seen == [1, 2, 3]
    assert "run.npz (.npz added)" in out.splitlines()[0]
    assert "checkpoint written to run.npz (.npz added): epoch 3" in out
    assert not os.path.exists("run")
    assert stat.S_IMODE(os.stat("run.npz").st_mode) == 0o644 & ~_umask()
    params = train.load_params("run.npz")
    assert sorted(params) == ["linear1.W", "linear1.b", "linear2.W", "linear2.b"]
    np.testing.assert_array_equal(np.load("run.npz")["linear1.W"], params["linear1.W"])
    loaded = checkpoint.load_checkpoint("run.npz")
    assert (loaded.epoch, loaded.step) == (3, 3 * 45)       # 1437 examples, batches of 32
    assert loaded.meta["run"]["seed"] == 0 and len(loaded.meta["history"]) == 3


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _first_run(tmp_path, capsys, *options):
    spec = tmp_path / "net.yaml"
    spec.write_text(MLP)
    saved = tmp_path / "run.npz"
    assert _run(capsys, "train", spec, "--epochs", 2, "--quiet", "--save", saved, *options)[0] == 0
    return spec, saved


@pytest.mark.parametrize("change, message", [
    (["--optimizer", "adam"], r"other settings \(optimizer: saved \"sgd\", now \"adam\""),
    (["--lr", "0.2"], r"lr: saved 0.1, now 0.2"),
    (["--seed", "1"], r"seed: saved 0, now 1"),
    (["--batch-size", "16"], r"batch_size: saved 32, now 16"),
    (["--momentum", "0.5"], r"momentum: saved 0.0, now 0.5"),
    (["--epochs", "2"], r"has already trained 2 epochs: give --epochs greater than 2"),
])
def test_resuming_under_other_settings_is_refused(tmp_path, capsys, change, message):
    spec, saved = _first_run(tmp_path, capsys)
    before = saved.read_bytes()
    status, out, err = _run(capsys, "train", spec, "--epochs", 4, "--quiet", "--save", saved,
                            "--resume", saved, *change)
    assert status == 1 and ERROR.match(err) and re.search(message, err), err
    assert out == "" and saved.read_bytes() == before


def test_resuming_with_another_spec_or_a_best_epoch_file_is_refused(tmp_path, capsys):
    spec, saved = _first_run(tmp_path, capsys)
    other = tmp_path / "other.yaml"
    other.write_text(MLP.replace("tanh", "relu"))
    status, _, err = _run(capsys, "train", other, "--epochs", 4, "--resume", saved)
    assert status == 1 and ERROR.match(err) and "saved for another spec" in err
    # the train: block is not part of the model: a changed default does not matter
    spec.write_text(MLP + "train: {epochs: 7}\n")
    assert _run(capsys, "train", spec, "--epochs", 3, "--quiet", "--resume", saved)[0] == 0
    best = tmp_path / "best.npz"
    assert _run(capsys, "train", spec, "--epochs", 2, "--quiet", "--keep-best", "--save", best)[0] == 0
    status, _, err = _run(capsys, "train", spec, "--epochs", 4, "--resume", best)
    assert status == 1 and ERROR.match(err) and "weights of the best epoch" in err
    status, _, err = _run(capsys, "train", spec, "--resume", saved, "--init", saved)
    assert status == 1 and ERROR.match(err) and "exclude each other" in err


def test_a_cosine_run_cannot_be_stretched_on_resume(tmp_path, capsys):
    spec, saved = _first_run(tmp_path, capsys, "--schedule", "cosine")
    status, _, err = _run(capsys, "train", spec, "--epochs", 4, "--resume", saved,
                          "--schedule", "cosine")
    assert status == 1 and ERROR.match(err) and "schedule.total_steps: saved 90, now 180" in err


def test_init_starts_from_given_weights_plain_or_checkpoint(tmp_path, capsys):
    from bpcompile.compiler import compile_file, load_module
    from bpcompile.training import train
    spec, saved = _first_run(tmp_path, capsys)
    compiled = compile_file(str(spec))
    module = load_module(compiled.source, compiled.name)
    plain = tmp_path / "plain.npz"
    weights = {k: np.full(v.shape, 0.01, v.dtype) for k, v in module.init_params(0).items()}
    np.savez(plain, **weights)                          # e.g. ported from PyTorch
    for start, expected in ((plain, weights), (saved, train.load_params(saved))):
        out = tmp_path / f"from_{start.stem}.npz"
        assert _run(capsys, "train", spec, "--epochs", 1, "--quiet", "--init", start,
                    "--save", out)[0] == 0
        # one epoch of plain SGD from `expected`, by hand
        params = {k: np.array(v, copy=True) for k, v in train.load_params(start, module).items()}
        x, y = __import__("bpcompile.training.datasets", fromlist=["x"]).load_digits()[:2]
        order = np.random.default_rng(0 + 1).permutation(len(x))
        x = x.reshape(len(x), -1).astype(np.float32)
        for i in range(0, len(order), 32):
            module.sgd_step(params, x[order[i:i + 32]], y[order[i:i + 32]], 0.1)
        for key, value in train.load_params(out).items():
            np.testing.assert_array_equal(value, params[key], err_msg=key)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **dict(weights, **{"linear1.W": np.zeros((3, 3))}))
    status, _, err = _run(capsys, "train", spec, "--init", bad)
    assert status == 1 and ERROR.match(err) and "linear1.W has shape (3, 3)" in err
