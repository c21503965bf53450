"""`bpcompile eval SPEC --params FILE --data DATA`: the metrics `train` printed for the
test set, one line each (or JSON), for layer specs, taggers and language models; a
sequence model needs the checkpoint's vocabulary; refusals are one error line."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bpcompile.cli.main import main
from bpcompile.training import train

ERROR = re.compile(r"^[^\n]+:\d+:\d+: error: [^\n]+\n$")
REPO = Path(__file__).resolve().parent.parent
MLP = "name: net\ninput: [64]\nlayers:\n  - linear: 10\nloss: softmax_cross_entropy\n"
DATA = REPO / "examples" / "data"


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _last_epoch(out):
    return [line for line in out.splitlines() if line.startswith("epoch ")][-1]


def test_eval_reports_the_test_metrics_train_printed(tmp_path, capsys):
    spec = tmp_path / "net.yaml"
    spec.write_text(MLP)
    status, out, err = _run(capsys, "train", spec, "--epochs", 2, "--quiet", "--save", tmp_path / "p")
    assert status == 0, err
    loss, acc = re.search(r"test loss ([\d.]+) acc ([\d.]+)%", _last_epoch(out)).groups()
    status, out, err = _run(capsys, "eval", spec, "--params", tmp_path / "p.npz")
    assert status == 0, err
    assert out.splitlines() == ["net on digits: 360 test examples", f"loss {loss}",
                                f"accuracy {acc}%"]
    status, out, err = _run(capsys, "eval", spec, "--params", tmp_path / "p.npz", "--json")
    report = json.loads(out)
    assert report["examples"] == 360 and report["generator"] == "bpcompile"
    assert f"{report['metrics']['loss']:.4f}" == loss and f"{100 * report['metrics']['acc']:.2f}" == acc
    # a plain parameter file (save_params, or weights ported from PyTorch) is enough here
    train.save_params(tmp_path / "plain.npz", train.load_params(tmp_path / "p.npz"))
    status, out2, err = _run(capsys, "eval", spec, "--params", tmp_path / "plain.npz", "--json")
    assert json.loads(out2)["metrics"] == report["metrics"]


def test_eval_of_an_mse_regression_prints_rmse_and_r2(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, :1] - x[:, 1:2]).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    spec = tmp_path / "reg.yaml"
    spec.write_text("name: reg\ninput: [3]\nlayers:\n  - linear: 1\nloss: mse\n")
    assert _run(capsys, "train", spec, "--data", tmp_path / "d.npz", "--epochs", 3, "--quiet",
                "--save", tmp_path / "p.npz")[0] == 0
    status, out, err = _run(capsys, "eval", spec, "--params", tmp_path / "p.npz", "--data",
                            tmp_path / "d.npz")
    assert status == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["loss", "rmse", "r2"]
    params = train.load_params(tmp_path / "p.npz")
    prediction = x[40:] @ params["linear1.W"].T + params["linear1.b"]
    rmse = float(np.sqrt(np.mean((prediction - y[40:]) ** 2)))
    assert out.splitlines()[2] == f"rmse {rmse:.4f}"


def test_eval_of_a_tagger_and_a_language_model_uses_the_checkpoints_vocabulary(tmp_path, capsys):
    tagger = REPO / "examples" / "pos_tagger.yaml"
    assert _run(capsys, "train", tagger, "--data", DATA / "tiny.conllu", "--epochs", 1, "--quiet",
                "--save", tmp_path / "tagger.npz", "--test", DATA / "tiny.conllu")[0] == 0
    out = capsys.readouterr().out
    status, out, err = _run(capsys, "eval", tagger, "--params", tmp_path / "tagger.npz", "--data",
                            DATA / "tiny.conllu")
    assert status == 0, err
    assert re.fullmatch(r"pos_tagger on .*tiny.conllu: \d+ sentences\nloss [\d.]+\n"
                        r"accuracy [\d.]+%\n", out)
    lm = tmp_path / "lm.yaml"
    lm.write_text("name: lm\ninput: {vocab: 40}\nlayers:\n  - embedding: 4\n  - lstm: {hidden: 6}\n"
                  "  - linear: 40\nloss: softmax_cross_entropy\n")
    status, out, err = _run(capsys, "train", lm, "--data", DATA / "tiny.txt", "--epochs", 1,
                            "--quiet", "--save", tmp_path / "lm.npz")
    assert status == 0, err
    status, out, err = _run(capsys, "eval", lm, "--params", tmp_path / "lm.npz", "--data",
                            DATA / "tiny.txt", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["tokens"] > 2000
    assert report["metrics"]["ppl"] == pytest.approx(np.exp(report["metrics"]["loss"]))
    # without the vocabulary the weights mean nothing: a plain parameter file is refused
    train.save_params(tmp_path / "plain.npz", train.load_params(tmp_path / "lm.npz"))
    status, out, err = _run(capsys, "eval", lm, "--params", tmp_path / "plain.npz", "--data",
                            DATA / "tiny.txt")
    assert status == 1 and ERROR.match(err) and "without a vocabulary" in err and out == ""


def test_eval_refusals_are_one_error_line(tmp_path, capsys):
    spec = tmp_path / "net.yaml"
    spec.write_text(MLP)
    other = tmp_path / "other.yaml"
    other.write_text(MLP.replace("linear: 10", "linear: 10\n  - relu\n  - linear: 10"))
    assert _run(capsys, "train", spec, "--epochs", 1, "--quiet", "--save", tmp_path / "p.npz")[0] == 0
    for argv, message in (
            (["eval", other, "--params", tmp_path / "p.npz"], "no parameter 'linear2.W'"),
            (["eval", spec, "--params", tmp_path / "missing.npz"], "missing.npz: no such file"),
            (["eval", spec, "--params", tmp_path / "p.npz", "--data", DATA / "tiny.txt"],
             "cannot load data"),
    ):
        status, out, err = _run(capsys, *argv)
        assert status == 1 and ERROR.match(err) and message in err, err
    spec.write_text(MLP + "# a comment changes nothing\n")
    assert _run(capsys, "eval", spec, "--params", tmp_path / "p.npz")[0] == 0
    other_spec = tmp_path / "renamed.yaml"            # the same parameters, another model
    other_spec.write_text(MLP.replace("name: net", "name: net2\ndtype: float64"))
    status, out, err = _run(capsys, "eval", other_spec, "--params", tmp_path / "p.npz")
    assert status == 1 and ERROR.match(err) and "saved for another spec" in err
