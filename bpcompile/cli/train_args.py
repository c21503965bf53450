"""The command-line options of `bpcompile train` (and the other training commands).

Kept apart from the commands themselves, which import NumPy, so that `--help` answers at once.
"""

TRAINING_COMMANDS = ("train",)


def add_training_parsers(sub):
    """Add the training commands' parsers to `sub` (argparse subparsers)."""
    p = sub.add_parser("train", help="train a layer spec with SGD")
    p.add_argument("spec")
    p.add_argument("--data", default="digits", help="digits (embedded), PATH.npz, or an MNIST folder")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", help="held-out CoNLL-U file for a tagger (default: the last 10%%)")
    p.add_argument("--seq-len", dest="seq_len", type=int, default=None,
                   help="truncated-BPTT chunk length for a language model")
    p.add_argument("--save", help="write the trained parameters here (.npz)")
    p.add_argument("--plot", help="write the training curves here (.png)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true",
                   help="let --save and --plot replace a regular file bpcompile did not write")
