"""The optimizer, schedule and clipping of `bpcompile train`: the command line, else the
spec's `train:` block, else plain SGD at a constant rate, turned into an
`optim.Optimizer` (or None for a language model's default clipped SGD, kept so that
a run without options gives exactly the numbers it always gave).

Every setting is checked by `optim` (ValueErrors that name it); here they become
one error line at the setting's position in the spec, or naming the option.
"""

from ..errors import SpecError
from ..limits import shorten

# the spec key of each setting; the command-line option is --key with "-" for "_"
OPTIMIZER_KEYS = ("optimizer", "momentum", "nesterov", "weight_decay", "betas", "eps",
                  "schedule", "lr_step_size", "gamma", "eta_min", "warmup", "clip_norm",
                  "clip_value")
CHOICES = {"optimizer": ("sgd", "adam", "adamw"), "schedule": ("constant", "step", "cosine")}
LM_CLIP_NORM = 5.0          # the language model's gradient-norm clip unless told otherwise
# the first word of an optim ValueError -> the setting it is about
_BLAME = {"beta1": "betas", "beta2": "betas", "step_size": "lr_step_size",
          "warmup_steps": "warmup", "warm-up": "warmup", "max_norm": "clip_norm",
          "total_steps": "warmup"}


def option_name(key):
    return "--" + key.replace("_", "-")


class OptimizerSettings:
    """The settings given (key -> value) and where each came from (spec or command line)."""

    def __init__(self, spec, given, from_spec):
        self.spec, self.given, self.from_spec = spec, given, from_spec

    def get(self, key, default=None):
        return self.given.get(key, default)

    def error(self, key, message):
        """A SpecError about setting `key`: at its place in the spec, or naming its option."""
        if key in self.from_spec:
            return self.spec.error(f"train.{key}: {message}", "train", key)
        where = option_name(key) if key in self.given else "training settings"
        return SpecError(f"{where}: {message}", self.spec.file, 1, 1)


def optimizer_settings(spec, args, train_block):
    """The optimizer settings of the run: `args` (argparse) over `train_block` (a dict)."""
    given, from_spec = {}, set()
    for key in OPTIMIZER_KEYS:
        option = getattr(args, key, None)
        if option is not None:
            given[key] = tuple(option) if key == "betas" else option
        elif key in train_block:
            given[key] = train_block[key]
            from_spec.add(key)
    settings = OptimizerSettings(spec, given, from_spec)
    for key, choices in CHOICES.items():
        if key in given and given[key] not in choices:
            raise settings.error(key, f"expected one of {', '.join(choices)}, got "
                                      f"{shorten(given[key])}")
    if "betas" in from_spec and isinstance(given["betas"], list):
        given["betas"] = tuple(given["betas"])
    _check_counts(settings)
    _check_unused(settings)
    return settings


def _check_counts(settings):
    for key, low in (("lr_step_size", 1), ("warmup", 0)):
        value = settings.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                float(value).is_integer() and value >= low):
            raise settings.error(key, f"must be a whole number >= {low}, got {shorten(value)}")
        settings.given[key] = int(value)


def _check_unused(settings):
    """A schedule option for another schedule is refused, not ignored."""
    schedule = settings.get("schedule", "constant")
    for key, needs in (("lr_step_size", "step"), ("gamma", "step"), ("eta_min", "cosine")):
        if key in settings.given and schedule != needs:
            raise settings.error(key, f"applies to the {needs} schedule, not to {schedule}")
    if schedule == "step" and "lr_step_size" not in settings.given:
        raise settings.error("schedule", "the step schedule needs --lr-step-size "
                                         "(train.lr_step_size): the epochs between decays")


def build_optimizer(module, settings, lr, epochs, steps_per_epoch, language_model=False):
    """The run's optim.Optimizer; None for a language model given no setting at all
    (then seqtrain.clipped_sgd runs, as before). Schedules count optimizer steps:
    --lr-step-size is in epochs (times the steps per epoch), the cosine spans the
    whole run (epochs * steps per epoch), --warmup is in steps."""
    from ..training import optim
    if language_model and not settings.given:
        return None
    key = None
    try:
        key = "schedule"
        schedule = _schedule(settings, epochs, steps_per_epoch)
        key = None
        clip_norm, clip_value = settings.get("clip_norm"), settings.get("clip_value")
        if language_model and clip_norm is None and clip_value is None:
            clip_norm = LM_CLIP_NORM
        if clip_norm == 0 and not isinstance(clip_norm, bool):
            clip_norm = None                        # --clip-norm 0: no clipping
        return optim.Optimizer(
            module, settings.get("optimizer", "sgd"), lr, momentum=settings.get("momentum"),
            nesterov=settings.get("nesterov", False), weight_decay=settings.get("weight_decay"),
            betas=settings.get("betas"), eps=settings.get("eps"), schedule=schedule,
            clip_norm=clip_norm, clip_value=clip_value)
    except ValueError as err:
        raise settings.error(_blamed(err, settings) or key or "optimizer", str(err)) from None


def _schedule(settings, epochs, steps_per_epoch):
    from ..training import optim
    name = settings.get("schedule", "constant")
    step_size = settings.get("lr_step_size")
    return optim.make_schedule(
        name, total_steps=max(1, epochs * steps_per_epoch),
        step_size=None if step_size is None else step_size * max(1, steps_per_epoch),
        gamma=settings.get("gamma", 0.1), eta_min=settings.get("eta_min", 0.0),
        warmup_steps=settings.get("warmup", 0))


def _blamed(err, settings):
    """The setting an optim ValueError is about, judged by its first word."""
    first = str(err).split(" ", 1)[0].strip(":,")
    key = _BLAME.get(first, first)
    if key in settings.given:
        return key
    return next((k for k in settings.given if k in str(err)), None)


def run_config(optimizer, lr):
    """The optimizer's settings as a checkpoint records them (compared on --resume)."""
    if optimizer is None:
        return {"optimizer": "sgd", "lr": lr, "language_model_clip_norm": LM_CLIP_NORM}
    return optimizer.config()


def describe(optimizer, lr, steps_per_epoch):
    """'sgd, lr 0.1 constant' / 'adam (weight decay 0.01), lr 0.001 cosine to 0 over 300
    steps after 30 warm-up steps, clip norm 1': what the start line says."""
    if optimizer is None:
        return f"sgd, lr {lr:g} constant, clip norm {LM_CLIP_NORM:g}"
    hyper = optimizer.hyper
    extras = []
    if hyper.get("momentum"):
        extras.append(f"{'nesterov ' if hyper['nesterov'] else ''}momentum {hyper['momentum']:g}")
    if "betas" in hyper:
        extras.append(f"betas {hyper['betas'][0]:g} {hyper['betas'][1]:g}, eps {hyper['eps']:g}")
    if hyper.get("weight_decay"):
        extras.append(f"weight decay {hyper['weight_decay']:g}")
    text = optimizer.name + (f" ({', '.join(extras)})" if extras else "")
    text += f", lr {optimizer.base_lr:g} " + _describe_schedule(optimizer.schedule.config(),
                                                                 steps_per_epoch)
    if optimizer.clip_norm is not None:
        text += f", clip norm {optimizer.clip_norm:g}"
    if optimizer.clip_value is not None:
        text += f", clip value {optimizer.clip_value:g}"
    return text


def _describe_schedule(config, steps_per_epoch):
    name = config["name"]
    if name == "warmup":
        return (_describe_schedule(config["then"], steps_per_epoch)
                + f" after {config['steps']} warm-up steps")
    if name == "step":
        epochs = config["step_size"] // max(1, steps_per_epoch)
        return f"times {config['gamma']:g} every {epochs} epoch{'s' if epochs != 1 else ''}"
    if name == "cosine":
        return f"cosine to {config['eta_min']:g} over {config['total_steps']} steps"
    return "constant"
