"""The search space: any training option, `--model lenet5,resnet18 --lr 1e-4:1e-1 --epochs 5:30`.

    space = SearchSpace.parse({"model": "lenet5,smallcnn", "lr": "1e-4:1e-1"}, base)
    overrides = space.suggest(trial, base)   # {"model": "smallcnn", "lr": 0.003, ...} for TrainConfig

A value LOW:HIGH is a range (numbers only: float options a continuous range, int options an
integer range; LOG_SCALE's on a log scale), A,B,C a categorical choice (any option: model names,
true,false, ...), and a single value fixes the option. lr, batch size, weight decay and momentum are
searched over DEFAULTS unless given; every other option is fixed at its TrainConfig value unless
given as a choice or range.

Conditional options are sampled only in the trials where they apply (define-by-run, as Optuna
intends): momentum and nesterov only in SGD trials (momentum always when given: Adam uses it as
beta1), head_hidden only with the MLP head, pretrained only for timm/torchvision models (a
built-in trial trains from scratch). head_dropout applies to both heads (the linear head drops
its inputs too), so it is not conditional.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from mlproject.config import BOOL_WORDS, ConfigError, TrainConfig, unknown

# name -> (default range, log scale). What the seeds tried by hand, narrowed to what trains at all:
# lr (seeds 000-003 tried 1e-5..1e-1; 1e-5 barely moves in a short study), batch sizes 32..256
# (seed 000 tried 16..512), weight decay (seed 003: 0, 1e-4, 1e-3, 1e-2 -> a log range from 1e-6),
# momentum (seed 003 tried 0..0.98; below 0.5 SGD is slow).
DEFAULTS = {
    "lr": ("1e-4:1e-1", True),
    "batch_size": ("32,64,128,256", True),
    "weight_decay": ("1e-6:1e-2", True),
    "momentum": ("0.5:0.99", False),
}

# options a study cannot vary, with the reason (a study compares trials on one dataset, recorded
# in one place, trained the same way)
NOT_SEARCHABLE = {
    **dict.fromkeys(("dataset", "data_dir", "val_fraction", "test_fraction", "cv", "balance", "allow_empty_classes"),
                    "every trial must see the same data for their metrics to compare; run one study per dataset"),
    "seed": "every trial uses the study's seed, so that trials differ only in what is searched; "
            "run the study again with another --seed",
    **dict.fromkeys(("device", "num_workers", "cache_features", "compile", "checkpoint_every", "checkpoint_dir",
                     "keep_checkpoints"), "it changes how trials run, not what they train"),
    **dict.fromkeys(("experiment", "run_name", "log_model"), "it is where the study records, the same for every trial"),
}
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
OPTION_TYPES = {f.name: _TYPES[f.type if isinstance(f.type, str) else f.type.__name__]
                for f in dataclasses.fields(TrainConfig)}
SEARCHABLE = tuple(n for n in OPTION_TYPES if n not in NOT_SEARCHABLE)  # TrainConfig's order: parents first
LOG_SCALE = {"lr", "weight_decay", "batch_size", "head_hidden"}  # ranges of these are sampled on a log scale


def _builtin(model: str) -> bool:
    from mlproject.model_names import known_names, resolve  # cached names: no torch, no timm

    return resolve(model, known_names())[0] == "builtin"


@dataclass(frozen=True)
class Condition:
    """`option` is sampled only in trials where `applies(trial's value of parent)`."""

    parent: str
    applies: Callable[[Any], bool]
    text: str  # for the space's description and errors: "optimizer=sgd"
    otherwise: Any = None  # the value where it does not apply (None: the study's fixed value)


CONDITIONS = {
    "momentum": Condition("optimizer", lambda v: v == "sgd", "optimizer=sgd"),
    "nesterov": Condition("optimizer", lambda v: v == "sgd", "optimizer=sgd"),
    "head_hidden": Condition("head", lambda v: v == "mlp", "head=mlp"),
    "pretrained": Condition("model", lambda v: not _builtin(v), "model not built-in", otherwise=False),
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _text(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # "range" | "choice" | "fixed"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()
    integer: bool = False  # an integer range (suggest_int)
    condition: str = ""  # sampled only where this holds ("optimizer=sgd"); "" always

    def describe(self) -> str:
        if self.kind == "range":
            text = f"{_text(self.low)}:{_text(self.high)}" + (" (log)" if self.log else "")
        else:
            text = ",".join(_text(c) for c in self.choices)
        return text + (f" if {self.condition}" if self.condition else "")


def parse_dimension(name: str, text: str, log: bool = False, typ=float) -> Dimension:
    """One option's value: 'LOW:HIGH' (numbers), 'A,B,C' or 'V'. ConfigError on empty, inverted
    or non-positive-on-log-scale ranges, values of the wrong type and repeated values."""
    option = flag(name)
    text = str(text).strip()

    def value(s: str):
        s = s.strip()
        if typ is str:
            return s
        if typ is bool:
            if s.lower() not in BOOL_WORDS:
                raise ConfigError(f"{option} {text!r}: {s!r} is not true or false")
            return BOOL_WORDS[s.lower()]
        try:
            v = float(s)
        except ValueError:
            raise ConfigError(f"{option} {text!r}: {s!r} is not a number") from None
        if typ is int:
            if v != int(v):
                raise ConfigError(f"{option} {text!r}: {s!r} is not a whole number")
            return int(v)
        return v

    if not text:
        raise ConfigError(f"{option}: empty value; give LOW:HIGH, A,B,C or one value")
    if ":" in text and typ in (int, float):
        lo_s, _, hi_s = text.partition(":")
        lo, hi = value(lo_s), value(hi_s)
        if not lo < hi:
            raise ConfigError(f"{option} {text!r}: empty or inverted range (low {lo:g} must be < high {hi:g})")
        if log and lo <= 0:
            raise ConfigError(f"{option} {text!r}: a log-scale range needs low > 0, got {lo:g}")
        return Dimension(name, "range", lo, hi, log, integer=typ is int)
    values = tuple(value(v) for v in text.split(",") if v.strip())
    if not values:
        raise ConfigError(f"{option} {text!r}: no values")
    if len(set(values)) != len(values):
        raise ConfigError(f"{option} {text!r}: repeated values")
    return Dimension(name, "fixed" if len(values) == 1 else "choice", choices=values)


@dataclass
class SearchSpace:
    dims: dict[str, Dimension]  # TrainConfig's field order: a condition's parent comes before it
    # options given one value outside DEFAULTS: not dimensions but the study's fixed options, as if
    # given to `mlproject train` (so `--model lenet5` is in the signature's fixed part, as before)
    fixed_options: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, values: dict[str, str | None], base: dict | None = None) -> "SearchSpace":
        """The space for the given texts (None or missing: not given) over `base` (TrainConfig's
        values for what is not given).

        ConfigError for an option a study cannot vary (with the reason), an unknown option, or a
        conditional option searched where it can never apply."""
        base = {**dataclasses.asdict(TrainConfig()), **(base or {})}
        for name, text in values.items():
            if text is None:
                continue
            if name in NOT_SEARCHABLE:
                raise ConfigError(f"{flag(name)} {text!r}: cannot vary within one study: {NOT_SEARCHABLE[name]}")
            if name not in OPTION_TYPES:
                raise unknown("option", name, SEARCHABLE)
        dims, fixed = {}, {}
        for name in SEARCHABLE:
            text = values.get(name)
            if text is None and name not in DEFAULTS:
                continue
            d = parse_dimension(name, DEFAULTS[name][0] if text is None else text,
                                name in LOG_SCALE, OPTION_TYPES[name])
            if d.kind == "fixed" and name not in DEFAULTS:  # one value: a fixed option, not a dimension
                fixed[name] = d.choices[0]
                continue
            cond = CONDITIONS.get(name)
            if cond and not (name == "momentum" and text is not None):  # given momentum is Adam's beta1 too
                parent = dims.get(cond.parent)
                if parent is not None and parent.kind != "fixed":
                    d = dataclasses.replace(d, condition=cond.text)
                elif not cond.applies(parent.choices[0] if parent else fixed.get(cond.parent, base[cond.parent])):
                    if text is None:
                        continue  # a default dimension that cannot apply (momentum with Adam): left out
                    raise ConfigError(f"{flag(name)} {text!r} is searched but applies only with {cond.text}; "
                                      f"the study's {flag(cond.parent)} is "
                                      f"{_text(fixed.get(cond.parent, base[cond.parent]))}")
            dims[name] = d
        return cls(dims, fixed)

    def searched(self) -> dict[str, Dimension]:
        return {n: d for n, d in self.dims.items() if d.kind != "fixed"}

    def fixed(self) -> dict:
        return {n: d.choices[0] for n, d in self.dims.items() if d.kind == "fixed"}

    def suggest(self, trial, base: dict | None = None) -> dict:
        """Sample the searched dimensions that apply from an Optuna trial (in field order, so a
        condition's parent is known first); fixed ones are returned as they are, and an option
        whose condition fails takes its `otherwise` value (pretrained: False for a built-in)."""
        base = {**dataclasses.asdict(TrainConfig()), **(base or {})}
        out = self.fixed()
        for name, d in self.searched().items():
            cond = CONDITIONS.get(name) if d.condition else None
            if cond and not cond.applies(out.get(cond.parent, base[cond.parent])):
                continue
            if d.kind == "range" and d.integer:
                out[name] = trial.suggest_int(name, int(d.low), int(d.high), log=d.log)
            elif d.kind == "range":
                out[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
            else:
                out[name] = trial.suggest_categorical(name, list(d.choices))
        for name, cond in CONDITIONS.items():
            if cond.otherwise is not None and cond.parent in out and not cond.applies(out[cond.parent]):
                out[name] = cond.otherwise
        return out

    def grid(self) -> dict[str, list]:
        """GridSampler's search space; ConfigError if a dimension is a continuous range. A
        conditional option's values still multiply every grid point (GridSampler has no
        conditions): where it does not apply, those points repeat one configuration."""
        ranges = [d for d in self.searched().values() if d.kind == "range" and not d.integer]
        if ranges:
            d = ranges[0]
            raise ConfigError(f"--sampler grid needs explicit values, but {flag(d.name)} is the range {d.describe()}; "
                              f"give a list such as {flag(d.name)} {d.low:g},{d.high:g} or fix it")
        return {n: list(range(int(d.low), int(d.high) + 1)) if d.kind == "range" else list(d.choices)
                for n, d in self.searched().items()}

    def values(self, name: str) -> list:
        """Every value a dimension can take that is checked up front: a choice's values, a range's ends."""
        d = self.dims[name]
        return [d.low, d.high] if d.kind == "range" else list(d.choices)

    def describe(self) -> dict[str, str]:
        """{'space.lr': '0.0001:0.1 (log)', ...}: the parent run's search-space params."""
        return {f"space.{n}": d.describe() for n, d in self.dims.items()}
