"""The search space: `--lr 1e-4:1e-1`, `--batch-size 32,64,128`, `--momentum 0.9` (fixed).

    space = SearchSpace.parse({"lr": "1e-4:1e-1", "batch_size": "32,64"}, optimizer="sgd")
    overrides = space.suggest(trial)   # {"lr": 0.003, "batch_size": 64, ...} for TrainConfig

A value LOW:HIGH is a continuous range (log scale for lr and weight decay), A,B,C a categorical
choice, and a single value fixes the option (it leaves the search).
"""
from __future__ import annotations

from dataclasses import dataclass

from mlproject.config import ConfigError

# name -> (default range, log scale, type). Defaults cover what the seeds tried by hand:
# lr 1e-5..1e-1 (seeds 000-003), batch 16..512 (seed 000), weight decay 0..1e-2 (seed 003:
# 0, 1e-4, 1e-3, 1e-2 -> log range from 1e-6), momentum 0..0.98 (seed 003).
DEFAULTS = {
    "lr": ("1e-4:1e-1", True, float),
    "batch_size": ("32,64,128,256", False, int),
    "weight_decay": ("1e-6:1e-2", True, float),
    "momentum": ("0.5:0.99", False, float),
}
SEARCHED = tuple(DEFAULTS)


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # "range" | "choice" | "fixed"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()

    def describe(self) -> str:
        if self.kind == "range":
            return f"{self.low:g}:{self.high:g}" + (" (log)" if self.log else "")
        if self.kind == "choice":
            return ",".join(f"{c:g}" for c in self.choices)
        return f"{self.choices[0]:g}"


def parse_dimension(name: str, text: str, log: bool, typ=float) -> Dimension:
    """One option's value: 'LOW:HIGH', 'A,B,C' or 'V'. ConfigError on empty, inverted or
    non-positive-on-log-scale ranges."""
    flag = "--" + name.replace("_", "-")
    text = str(text).strip()

    def number(s: str):
        try:
            v = float(s)
        except ValueError:
            raise ConfigError(f"{flag} {text!r}: {s!r} is not a number") from None
        if typ is int:
            if v != int(v):
                raise ConfigError(f"{flag} {text!r}: {s!r} is not a whole number")
            return int(v)
        return v

    if not text:
        raise ConfigError(f"{flag}: empty value; give LOW:HIGH, A,B,C or one value")
    if ":" in text:
        lo_s, _, hi_s = text.partition(":")
        if typ is int:
            raise ConfigError(f"{flag} {text!r}: give a list of values (e.g. 32,64,128), not a range")
        lo, hi = number(lo_s), number(hi_s)
        if not lo < hi:
            raise ConfigError(f"{flag} {text!r}: empty or inverted range (low {lo:g} must be < high {hi:g})")
        if log and lo <= 0:
            raise ConfigError(f"{flag} {text!r}: a log-scale range needs low > 0, got {lo:g}")
        return Dimension(name, "range", lo, hi, log)
    values = tuple(number(v) for v in text.split(",") if v.strip())
    if not values:
        raise ConfigError(f"{flag} {text!r}: no values")
    if len(set(values)) != len(values):
        raise ConfigError(f"{flag} {text!r}: repeated values")
    return Dimension(name, "fixed" if len(values) == 1 else "choice", choices=values)


@dataclass
class SearchSpace:
    dims: dict[str, Dimension]

    @classmethod
    def parse(cls, values: dict[str, str | None], optimizer: str = "sgd") -> "SearchSpace":
        """Dimensions for lr, batch_size, weight_decay, momentum from the given texts (None: the
        default range). Momentum is searched only for SGD; Adam's beta1 stays at its given value."""
        dims = {}
        for name, (default, log, typ) in DEFAULTS.items():
            text = values.get(name)
            if name == "momentum" and optimizer != "sgd" and text is None:
                continue  # Adam/AdamW: beta1 keeps TrainConfig's value unless asked for
            dims[name] = parse_dimension(name, default if text is None else text, log, typ)
        return cls(dims)

    def searched(self) -> dict[str, Dimension]:
        return {n: d for n, d in self.dims.items() if d.kind != "fixed"}

    def fixed(self) -> dict:
        return {n: d.choices[0] for n, d in self.dims.items() if d.kind == "fixed"}

    def suggest(self, trial) -> dict:
        """Sample the searched dimensions from an Optuna trial; fixed ones are returned as they are."""
        out = self.fixed()
        for name, d in self.searched().items():
            if d.kind == "range":
                out[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
            else:
                out[name] = trial.suggest_categorical(name, list(d.choices))
        return out

    def grid(self) -> dict[str, list]:
        """GridSampler's search space; ConfigError if a dimension is a continuous range."""
        ranges = [d for d in self.searched().values() if d.kind == "range"]
        if ranges:
            d = ranges[0]
            flag = "--" + d.name.replace("_", "-")
            raise ConfigError(f"--sampler grid needs explicit values, but {flag} is the range {d.describe()}; "
                              f"give a list such as {flag} {d.low:g},{d.high:g} or fix it")
        return {n: list(d.choices) for n, d in self.searched().items()}

    def describe(self) -> dict[str, str]:
        """{'space.lr': '0.0001:0.1 (log)', ...}: the parent run's search-space params."""
        return {f"space.{n}": d.describe() for n, d in self.dims.items()}
