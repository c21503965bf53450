"""The BiLSTM tagger learns the lecture's "time flies like an arrow" sentences,
whose words need their context (flies: noun or verb; like: verb or adposition)."""

import io

import pytest

from bpcompile.compiler import compile_file, load_module
from bpcompile.training.seqtrain import UPOS, tagger_accuracy, train_tagger

pytestmark = pytest.mark.both_targets

SENTENCES = [
    [("time", "NOUN"), ("flies", "VERB"), ("like", "ADP"), ("an", "DET"), ("arrow", "NOUN")],
    [("fruit", "NOUN"), ("flies", "NOUN"), ("like", "VERB"), ("a", "DET"), ("banana", "NOUN")],
    [("an", "DET"), ("arrow", "NOUN"), ("flies", "VERB")],
    [("flies", "NOUN"), ("like", "VERB"), ("fruit", "NOUN")],
]


def test_pos_tagger_learns_the_four_sentences():
    compiled = compile_file("examples/pos_tagger.yaml")
    module = load_module(compiled.source, compiled.name)
    log = io.StringIO()
    params, vocab, history = train_tagger(module, SENTENCES, epochs=60, lr=0.5, batch_size=2,
                                          seed=0, out=log, stop_at=1.0)
    assert history[-1]["train_acc"] == 1.0, log.getvalue()
    tag_ids = {t: i for i, t in enumerate(UPOS)}
    loss, accuracy = tagger_accuracy(module, params, SENTENCES, vocab, tag_ids)
    assert accuracy == 1.0
    # the contexts decide: the same word gets different tags
    assert history[0]["train_acc"] < 1.0


def test_language_model_trains_with_truncated_bptt_and_reports_perplexity(tmp_path):
    from bpcompile.compiler import compile_spec, load_spec
    from bpcompile.training.seqtrain import perplexity, train_language_model
    spec = load_spec(open("examples/rnnlm.yaml").read().replace("vocab: 10000", "vocab: 12")
                     .replace("embedding: 128", "embedding: 8").replace("hidden: 256", "hidden: 16")
                     .replace("linear: 10000", "linear: 12"), "rnnlm_small.yaml")
    compiled = compile_spec(spec)
    module = load_module(compiled.source, compiled.name)
    rng = __import__("numpy").random.default_rng(0)
    # a stream with structure: a repeating 6-word pattern with some noise
    stream = __import__("numpy").array([(i % 6) + 2 if rng.random() > 0.1 else rng.integers(2, 12)
                                        for i in range(3000)])
    params0 = module.init_params(0)
    before = perplexity(module, params0, stream[2400:], batch_size=4, seq_len=10)
    log = io.StringIO()
    params, history = train_language_model(module, stream[:2400], stream[2400:], epochs=3, lr=1.0,
                                           batch_size=4, seq_len=10, out=log)
    after = history[-1]["val_ppl"]
    assert after < before / 2, log.getvalue()
    assert "val loss" in log.getvalue() and "perplexity" in log.getvalue()
    # the train perplexity is the running mean of the epoch's chunks
    assert history[-1]["train_ppl"] == __import__("pytest").approx(__import__("math").exp(history[-1]["train_loss"]))


def test_train_cli_on_conllu_and_text_files(tmp_path, capsys):
    from bpcompile.cli.main import main
    conllu = tmp_path / "tiny.conllu"
    lines = []
    for sentence in SENTENCES * 3:
        lines += [f"{i + 1}\t{w}\t{w}\t{t}\t_\t_\t0\t_\t_\t_" for i, (w, t) in enumerate(sentence)] + [""]
    conllu.write_text("\n".join(lines))
    assert main(["train", "examples/pos_tagger.yaml", "--data", str(conllu), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "train / 1 test sentences" in out and "epoch 2/2" in out
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 40)
    spec = tmp_path / "lm.yaml"
    spec.write_text(open("examples/rnnlm.yaml").read().replace("hidden: 256", "hidden: 8")
                    .replace("embedding: 128", "embedding: 4").replace("linear: 10000", "linear: 10000"))
    assert main(["train", str(spec), "--data", str(text), "--epochs", "1", "--batch-size", "4",
                 "--seq-len", "8"]) == 0
    out = capsys.readouterr().out
    assert "(language model)" in out and "test loss" in out and "perplexity" in out
