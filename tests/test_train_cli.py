"""`bpcompile train` end to end: every loss, the task of a sequence spec, validation,
keep-best, history files, plots, progress and help text. Each run is a few epochs
on small data in a temporary folder, through bpcompile.cli.main.main."""

import csv
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from bpcompile.cli.main import main

ERROR = re.compile(r"^[^\n]+:\d+:\d+: error: [^\n]+\n$")
REPO = Path(__file__).resolve().parent.parent


def _spec(tmp_path, loss, outputs, extra=""):
    path = tmp_path / "net.yaml"
    path.write_text(f"name: net\ninput: [3]\nlayers:\n  - linear: 8\n  - tanh\n  - linear: {outputs}\n"
                    f"loss: {loss}\n{extra}")
    return str(path)


def _npz(tmp_path, y_train, y_test, seed=0):
    rng = np.random.default_rng(seed)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.normal(size=(len(y_train), 3)).astype(np.float32), y_train=y_train,
             x_test=rng.normal(size=(len(y_test), 3)).astype(np.float32), y_test=y_test)
    return str(path)


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _binary_data(tmp_path, shape_of):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    y = shape_of((x[:, 0] > 0).astype(np.int64))
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    return str(path)


@pytest.mark.parametrize("shape_of", [lambda y: y, lambda y: y.astype(np.float32),
                                      lambda y: y.reshape(-1, 1), lambda y: y.astype(bool)],
                         ids=["int_1d", "float_1d", "column", "bool"])
def test_binary_cross_entropy_trains_on_the_label_forms_users_have(tmp_path, capsys, shape_of):
    spec = _spec(tmp_path, "sigmoid_binary_cross_entropy", 1)
    status, out, err = _run(capsys, "train", spec, "--data", _binary_data(tmp_path, shape_of),
                            "--epochs", "3", "--lr", "0.5", "--batch-size", "8", "--quiet")
    assert status == 0, err
    last = [line for line in out.splitlines() if line.startswith("epoch 3/3")][0]
    accuracy = float(re.search(r"test loss [\d.]+ acc ([\d.]+)%", last).group(1))
    assert accuracy > 80
    assert "test accuracy" in out


@pytest.mark.parametrize("columns", [1, 2])
def test_mse_trains_on_regression_targets_and_reports_rmse_and_r2(tmp_path, capsys, columns):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 3)).astype(np.float32)
    y = np.stack([x[:, 0] - x[:, 1], 0.5 * x[:, 2]], axis=1)[:, :columns]
    y = y[:, 0] if columns == 1 else y
    data = tmp_path / "d.npz"
    np.savez(data, x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    status, out, err = _run(capsys, "train", _spec(tmp_path, "mse", columns), "--data", data,
                            "--epochs", "8", "--batch-size", "8", "--quiet")
    assert status == 0, err
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert all("rmse" in line and "r2" in line and "acc" not in line for line in epochs)
    assert re.search(r"test loss [\d.]+, RMSE [\d.]+, R\^2 0\.[5-9]", out), out


def test_softmax_trains_on_one_hot_rows(tmp_path, capsys):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 3, 80)
    status, out, err = _run(capsys, "train", _spec(tmp_path, "softmax_cross_entropy", 3), "--data",
                            _npz(tmp_path, np.eye(3)[ids[:60]], np.eye(3)[ids[60:]]),
                            "--epochs", "1", "--quiet")
    assert status == 0, err
    assert "acc" in out


def test_labels_that_do_not_fit_the_loss_give_one_error_line(tmp_path, capsys):
    status, out, err = _run(capsys, "train", _spec(tmp_path, "sigmoid_binary_cross_entropy", 1),
                            "--data", _npz(tmp_path, np.array([0, 2] * 10), np.array([0, 1] * 3)),
                            "--epochs", "1", "--quiet")
    assert status == 1 and ERROR.match(err) and "target 2" in err


def test_help_shows_the_defaults_and_the_data_forms(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("else 10)", "else 0.1)", "else 32)", "else 35)", "(default: 0)", "digits",
                     "PATH.npz", "MNIST", ".conllu", ".txt", "--val-split", "--keep-best",
                     "--history", ".png, .svg or .pdf", "pip install 'bpcompile[plot]'"):
        assert expected in text, expected


def test_one_epoch_is_singular_and_progress_in_a_log_has_no_carriage_returns(tmp_path, capsys):
    spec = tmp_path / "mlp.yaml"
    spec.write_text("name: net\ninput: [64]\nlayers:\n  - linear: 10\nloss: softmax_cross_entropy\n")
    status, out, err = _run(capsys, "train", spec, "--epochs", "1")
    assert status == 0
    assert ", 1 epoch," in out.splitlines()[0] and "1 epochs" not in out
    assert "\r" not in err                # stderr is no terminal here: lines only, none this short


# ---------------------------------------------------------------------------
# validation split, keep-best, history and plot files

MLP = "name: net\ninput: [64]\nlayers:\n  - linear: 10\nloss: softmax_cross_entropy\n"


def test_val_split_keep_best_history_and_saved_weights_agree(tmp_path, capsys, monkeypatch):
    from bpcompile.training import datasets, train
    spec = tmp_path / "mlp.yaml"
    spec.write_text(MLP)
    monkeypatch.chdir(tmp_path)
    status, out, err = _run(capsys, "train", spec, "--epochs", "4", "--lr", "2.5", "--seed", "5",
                            "--val-split", "0.2", "--keep-best", "--history", "h.csv",
                            "--save", "p.npz", "--quiet")
    assert status == 0, err
    assert "1150 train / 287 validation / 360 test examples" in out
    lines = (tmp_path / "h.csv").read_text().splitlines()
    rows = list(csv.DictReader(lines[1:]))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"val_loss", "val_acc", "test_acc", "seconds"} <= set(rows[0])
    best = max(range(4), key=lambda i: float(rows[i]["val_acc"]))
    assert f"kept the weights of epoch {best + 1} (best val acc" in out
    # the saved weights are the best epoch's: they score its validation accuracy
    x_train, y_train, x_val, y_val = datasets.split_validation(*datasets.load_digits()[:2], 0.2, 5)
    params = dict(np.load(tmp_path / "p.npz"))

    class Net:
        LOSS, OUTPUTS, DTYPE = "softmax_cross_entropy", 10, np.dtype(np.float32)

        @staticmethod
        def predict(params, x):
            z = x @ params["linear1.W"].T + params["linear1.b"]
            e = np.exp(z - z.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)

    assert train.score(Net, params, x_val, y_val)["acc"] == pytest.approx(float(rows[best]["val_acc"]))


def test_plot_and_history_files_are_written_and_replaced_on_a_second_run(tmp_path, capsys):
    spec = tmp_path / "mlp.yaml"
    spec.write_text(MLP)
    argv = ["train", spec, "--epochs", "2", "--quiet", "--plot", tmp_path / "c.svg",
            "--history", tmp_path / "h.json"]
    for _ in range(2):                   # bpcompile's own files: replaced without --force
        status, out, err = _run(capsys, *argv)
        assert status == 0, err
    assert "curves written to" in out and "history written to" in out
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()
    history = json.loads((tmp_path / "h.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    (tmp_path / "mine.json").write_text("{}")
    status, out, err = _run(capsys, "train", spec, "--quiet", "--history", tmp_path / "mine.json")
    assert status == 1 and "--force" in err and out == ""
    assert (tmp_path / "mine.json").read_text() == "{}"


@pytest.mark.parametrize("argv, message", [
    (["--plot", "c.gif"], "use .png, .svg or .pdf"),
    (["--history", "h.txt"], "use .csv or .json"),
    (["--plot", "x.png", "--history", "x.png"], "--plot and --history name the same file"),
    (["--val-split", "1.5"], "--val-split must be a fraction between 0 and 1"),
])
def test_output_and_option_errors_come_before_training(tmp_path, capsys, monkeypatch, argv,
                                                       message):
    spec = tmp_path / "mlp.yaml"
    spec.write_text(MLP)
    monkeypatch.chdir(tmp_path)
    status, out, err = _run(capsys, "train", spec, "--quiet", *argv)
    assert status == 1 and ERROR.match(err) and message in err, err
    assert out == "" and sorted(os.listdir(tmp_path)) == ["mlp.yaml"]


def test_missing_matplotlib_is_one_line_naming_the_extra_before_training(tmp_path, capsys,
                                                                          monkeypatch):
    spec = tmp_path / "mlp.yaml"
    spec.write_text(MLP)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, out, err = _run(capsys, "train", spec, "--quiet", "--plot", tmp_path / "c.png")
    assert status == 1 and ERROR.match(err) and "pip install 'bpcompile[plot]'" in err
    assert out == ""


# ---------------------------------------------------------------------------
# sequence specs: the task comes from the spec

TAGGER = "\n".join(line for line in (REPO / "examples/pos_tagger.yaml").read_text().splitlines()
                   if not line.startswith("train:")) + "\n"
SMALL_LM = ("name: lm\ninput: {vocab: 60}\nlayers:\n  - embedding: 8\n  - lstm: {hidden: 8}\n"
            "  - linear: 60\nloss: softmax_cross_entropy\n")
CONLLU = REPO / "examples/data/tiny.conllu"
TEXT = REPO / "examples/data/tiny.txt"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_sample_tagger_command_runs(tmp_path, capsys):
    spec = _write(tmp_path, "tagger.yaml", TAGGER.replace("hidden: 64", "hidden: 8")
                  .replace("embedding: 64", "embedding: 8"))
    status, out, err = _run(capsys, "train", spec, "--data", CONLLU, "--epochs", "1", "--quiet",
                            "--val-split", "0.1", "--history", tmp_path / "h.csv")
    assert status == 0, err
    assert "(tagger)" in out and "validation" in out and "val loss" in out and "test loss" in out
    assert "val_acc" in (tmp_path / "h.csv").read_text()


def test_the_sample_language_model_command_runs(tmp_path, capsys):
    spec = _write(tmp_path, "lm.yaml", SMALL_LM)
    status, out, err = _run(capsys, "train", spec, "--data", TEXT, "--epochs", "2", "--quiet",
                            "--batch-size", "4", "--seq-len", "10", "--keep-best",
                            "--plot", tmp_path / "c.png")
    assert status == 0, err
    assert "(language model)" in out and "test loss" in out and "perplexity" in out
    assert "kept the weights of epoch" in out and "best test ppl" in out
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("spec_text, data, message", [
    (TAGGER, TEXT, "pos_tagger is a tagger, but --data"),
    (SMALL_LM, CONLLU, "lm is a language model, but --data"),
    (SMALL_LM.replace("lstm: {hidden: 8}", "lstm: {hidden: 8, bidirectional: true}")
     + "train: {task: language_model}\n", TEXT, "a language model cannot be bidirectional"),
    (TAGGER + "train: {task: language_model}\n", TEXT, "a language model cannot be bidirectional"),
    (SMALL_LM.replace("linear: 60", "linear: 17") + "train: {task: language_model}\n", TEXT,
     "its last layer needs 60 outputs"),
    (SMALL_LM + "train: {task: translation}\n", TEXT, "train.task must be tagging or language_model"),
    (MLP + "train: {task: tagging}\n", "digits", "train.task is for sequence specs"),
    (TAGGER, "digits", "--data needs a CoNLL-U file"),
])
def test_task_and_data_must_agree(tmp_path, capsys, spec_text, data, message):
    spec = _write(tmp_path, "s.yaml", spec_text)
    status, out, err = _run(capsys, "train", spec, "--data", data, "--epochs", "1", "--quiet")
    assert status == 1 and ERROR.match(err) and message in err, err
    assert "Traceback" not in err


def test_a_declared_task_points_at_its_line(tmp_path, capsys):
    spec = _write(tmp_path, "s.yaml", TAGGER + "train: {task: language_model}\n")
    status, _, err = _run(capsys, "train", spec, "--data", TEXT, "--quiet")
    line = spec.read_text().splitlines().index("train: {task: language_model}") + 1
    assert err.startswith(f"{spec}:{line}:15: error: a language model cannot be bidirectional"), err


def test_a_declared_tagging_task_trains_a_vocabulary_sized_tagger(tmp_path, capsys):
    spec = _write(tmp_path, "s.yaml", SMALL_LM + "train: {task: tagging, epochs: 1}\n")
    status, out, err = _run(capsys, "train", spec, "--data", CONLLU, "--quiet")
    assert status == 0, err
    assert "(tagger)" in out


def test_a_pdf_plot_is_replaced_on_a_second_run_and_save_shares_no_name(tmp_path, capsys):
    spec = tmp_path / "mlp.yaml"
    spec.write_text(MLP)
    argv = ["train", spec, "--epochs", "1", "--quiet", "--plot", tmp_path / "c.pdf"]
    for _ in range(2):                   # recognised by its /Creator (bpcompile)
        status, out, err = _run(capsys, *argv)
        assert status == 0, err
    status, out, err = _run(capsys, "train", spec, "--quiet", "--save", tmp_path / "c",
                            "--plot", tmp_path / "c.npz")     # --save c becomes c.npz
    assert status == 1 and ERROR.match(err) and "--save and --plot name the same file" in err


def test_help_describes_the_optimizer_checkpoint_and_eval_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--optimizer {sgd,adam,adamw}", "--momentum", "--nesterov", "--weight-decay",
                     "--betas B1 B2", "--eps", "--schedule {constant,step,cosine}",
                     "--lr-step-size EPOCHS", "--gamma", "--eta-min", "optimizer steps (batches, "
                     "not epochs)", "--clip-norm", "--clip-value", "clips the norm at 5",
                     "--resume FILE", "--init FILE", ".npz is added"):
        assert expected in text, expected
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--params FILE", "--json", "one line per metric", "vocabulary"):
        assert expected in text, expected
