"""The command-line options of `bpcompile train` (and the other training commands).

Kept apart from the commands themselves, which import NumPy, so that `--help` answers at once.
"""

import argparse

from ..codegen.targets import DEFAULT_TARGET, TARGETS

TRAINING_COMMANDS = ("train", "eval")

# The defaults when neither the command line nor the spec's `train:` block gives a value.
DEFAULTS = {"epochs": 10, "lr": 0.1, "batch_size": 32, "seq_len": 35}

DESCRIPTION = """\
Train a layer spec with minibatch SGD and report, after every epoch, the loss
and the metric that fits it (accuracy for cross-entropy, RMSE and R^2 for mse,
perplexity for a language model) on the training, validation and test sets.

--epochs, --lr, --batch-size and --seq-len default to the spec's
`train: {epochs, lr, batch_size, seq_len}` block, else to 10 epochs, lr 0.1,
batch size 32 and BPTT chunks of 35 steps.

A sequence spec is a language model or a tagger: `train: {task: language_model}`
or `{task: tagging}` says which; without it, a spec whose last layer has one
output per vocabulary entry and only forward recurrent layers (no reverse or
bidirectional one, which would see the next token) is a language model, any
other a tagger. A tagger trains on CoNLL-U (.conllu), a language model on
text (.txt); a mismatch is an error.

Optimizers: --optimizer sgd (the default; with --momentum, --nesterov,
--weight-decay), adam or adamw (with --betas, --eps, --weight-decay), the
updates of torch.optim. --schedule constant (the default), step (the rate
times --gamma every --lr-step-size epochs) or cosine (down to --eta-min at the
end of the run), after a linear warm-up of --warmup optimizer steps (batches)
from lr/3 to lr when given. --clip-norm scales the gradients down to that
global 2-norm, --clip-value clamps each entry. A language model clips the
norm at 5 unless told otherwise (--clip-norm N, --clip-value V, or
--clip-norm 0 for none). Every one of these may also be given in the spec's
`train:` block (optimizer, momentum, nesterov, weight_decay, betas, eps,
schedule, lr_step_size, gamma, eta_min, warmup, clip_norm, clip_value); the
command line wins. With none of them, training is plain SGD as before.

Checkpoints: --save FILE writes a checkpoint after every epoch (".npz" is
added to a name without a suffix): the parameters under their own names (so
np.load(FILE)["linear1.W"] and train.load_params read it like a parameter
file), the optimizer's state, the epoch, the spec's hash, the run's settings
and history, and a sequence model's vocabulary and tags. --resume FILE
continues such a run exactly, up to --epochs (same spec, data and settings);
--init FILE starts from the weights of a parameter file or a checkpoint.

Data parallel: `mpirun -n N bpcompile train ...` trains on N processes (pip
install 'bpcompile[mpi]'). --batch-size is then the global batch: every rank
reads the same spec and data, computes the gradient of its part of each batch
(a tagger's parts balanced by tokens, a language model's by stream rows), one
Allreduce sums them, and every rank makes the same update; rank 0 alone prints
and writes. The weights equal one process's with the same batch, to rounding.
"""

EVAL_DESCRIPTION = """\
Score saved parameters on a data set and print one line per metric (--json:
one JSON object). The data forms are those of `train`: digits, PATH.npz and
MNIST folders are scored on their test part; a .conllu or .txt file is scored
whole. A tagger or a language model needs a checkpoint written by
`train --save`, which holds its vocabulary (and tags); a plain parameter file
is enough for the other specs.
"""


def add_training_parsers(sub):
    """Add the training commands' parsers to `sub` (argparse subparsers)."""
    p = sub.add_parser("train", help="train a layer spec with SGD", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="a layer spec (.yaml) with `layers:` and `loss:`")
    p.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET,
                   help="the module trained: numpy (the default) or numba (compiled loops: "
                        "plain SGD with --batch-size 1 runs each epoch in one compiled call; "
                        "needs numba)")
    p.add_argument("--data", default="digits", metavar="DATA",
                   help="digits (the embedded 8x8 UCI digits; the default), PATH.npz (arrays "
                        "x_train, y_train, x_test, y_test), a folder of MNIST or Fashion-MNIST "
                        "IDX files, FILE.conllu[.gz] (a tagger) or FILE.txt (a language model)")
    p.add_argument("--epochs", type=int, default=None, metavar="E",
                   help=f"epochs (default: the spec's train.epochs, else {DEFAULTS['epochs']})")
    p.add_argument("--lr", type=float, default=None, metavar="G",
                   help=f"learning rate (default: the spec's train.lr, else {DEFAULTS['lr']})")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None, metavar="B",
                   help="examples (sentences, stream rows) per step; 1 is per-example SGD "
                        f"(default: the spec's train.batch_size, else {DEFAULTS['batch_size']})")
    p.add_argument("--seq-len", dest="seq_len", type=int, default=None, metavar="T",
                   help="truncated-BPTT chunk length for a language model "
                        f"(default: the spec's train.seq_len, else {DEFAULTS['seq_len']})")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the initial weights, the shuffling and --val-split (default: 0)")
    p.add_argument("--test", metavar="FILE",
                   help="held-out CoNLL-U file for a tagger (default: the last 10%% of --data)")
    p.add_argument("--val-split", dest="val_split", type=float, default=None, metavar="F",
                   help="hold out a fraction F (0 < F < 1) of the training data as a validation "
                        "set, scored after every epoch: drawn with --seed (a language model: "
                        "the end of its training text)")
    p.add_argument("--keep-best", dest="keep_best", action="store_true",
                   help="end with the weights of the best epoch (by validation, else test, "
                        "accuracy; loss for mse; perplexity for a language model): these are "
                        "the weights --save writes")
    p.add_argument("--save", metavar="FILE.npz",
                   help="write a checkpoint here after every epoch (the parameters, readable "
                        "as a parameter file, and what --resume needs); .npz is added to a "
                        "name without a suffix")
    p.add_argument("--resume", metavar="FILE",
                   help="continue the run of this checkpoint (from --save) up to --epochs")
    p.add_argument("--init", metavar="FILE",
                   help="start from these weights: a parameter file (e.g. converted from "
                        "PyTorch with bpcompile.interop) or a checkpoint")
    _add_optimizer_options(p)
    p.add_argument("--plot", metavar="FILE",
                   help="write the loss and metric curves here: .png, .svg or .pdf "
                        "(needs matplotlib: pip install 'bpcompile[plot]')")
    p.add_argument("--history", metavar="FILE",
                   help="write one record per epoch here: .csv or .json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true",
                   help="let --save, --plot and --history replace a regular file bpcompile "
                        "did not write")
    add_eval_parser(sub)


def _add_optimizer_options(p):
    group = p.add_argument_group("optimizer, schedule and clipping (default: the spec's train: "
                                 "block, else plain SGD at a constant rate)")
    group.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None,
                       help="torch.optim's SGD, Adam or AdamW (default: sgd)")
    group.add_argument("--momentum", type=float, default=None, metavar="M",
                       help="sgd momentum, 0 <= M < 1 (default: 0)")
    group.add_argument("--nesterov", action="store_const", const=True, default=None,
                       help="Nesterov momentum (sgd, needs --momentum)")
    group.add_argument("--weight-decay", dest="weight_decay", type=float, default=None,
                       metavar="WD", help="weight decay (default: 0; 0.01 for adamw, decoupled)")
    group.add_argument("--betas", type=float, nargs=2, default=None, metavar=("B1", "B2"),
                       help="adam/adamw moment decay rates (default: 0.9 0.999)")
    group.add_argument("--eps", type=float, default=None, metavar="E",
                       help="adam/adamw denominator term (default: 1e-8)")
    group.add_argument("--schedule", choices=("constant", "step", "cosine"), default=None,
                       help="learning-rate schedule (default: constant)")
    group.add_argument("--lr-step-size", dest="lr_step_size", type=int, default=None,
                       metavar="EPOCHS", help="step schedule: multiply the rate by --gamma "
                                              "every EPOCHS epochs")
    group.add_argument("--gamma", type=float, default=None, metavar="G",
                       help="step schedule: the factor, 0 < G <= 1 (default: 0.1)")
    group.add_argument("--eta-min", dest="eta_min", type=float, default=None, metavar="LR",
                       help="cosine schedule: the rate at the end of the run (default: 0)")
    group.add_argument("--warmup", type=int, default=None, metavar="STEPS",
                       help="linear warm-up from lr/3 to lr over STEPS optimizer steps "
                            "(batches, not epochs) before the schedule (default: 0)")
    group.add_argument("--clip-norm", dest="clip_norm", type=float, default=None, metavar="N",
                       help="scale the gradients to global 2-norm N when larger (a language "
                            "model: default 5; 0 turns clipping off)")
    group.add_argument("--clip-value", dest="clip_value", type=float, default=None, metavar="V",
                       help="clamp every gradient entry to [-V, V]")


def add_eval_parser(sub):
    p = sub.add_parser("eval", help="score saved parameters on test data",
                       description=EVAL_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="the layer spec (.yaml) the parameters were trained for")
    p.add_argument("--params", required=True, metavar="FILE",
                   help="a checkpoint (train --save) or a parameter file")
    p.add_argument("--data", default="digits", metavar="DATA",
                   help="digits, PATH.npz, an MNIST folder (their test part), FILE.conllu "
                        "(a tagger) or FILE.txt (a language model)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None, metavar="B",
                   help="a language model's stream rows (default: the run's)")
    p.add_argument("--seq-len", dest="seq_len", type=int, default=None, metavar="T",
                   help="a language model's chunk length (default: the run's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
