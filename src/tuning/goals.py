"""What a study optimises: objectives (`--objective model_size_mb:min`), constraints
(`--constraint "model_size_mb<=5"`), and which trials are best.

    objectives = parse_objectives([DEFAULT_OBJECTIVE, "model_size_mb"])   # directions inferred
    constraints = parse_constraints(["test_time_s<=0.2"])
    values = [recorded[o.metric] for o in objectives]                  # the trial's Optuna values

A trial's recorded metrics (TRIAL_METRICS) are the run's summary metrics and the last epoch's
values. The best set is the best trial (one objective; ties broken by BEST_TIE_RULE) or the
Pareto front (several), of the feasible COMPLETE trials only.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mlproject import metrics
from mlproject.config import ConfigError

# What a trial records (mlproject.metrics, the catalogue): its run's summary metrics and its last
# epoch's; the ones with a better direction can be objectives and constraints, the cv_* ones only
# with --cv. tests/test_tune.py checks a real trial's run records each of them.
EPOCH_METRICS = metrics.curves()  # prunable: reported after every epoch
TRIAL_METRICS = metrics.goals()  # {name: "max" | "min"}, the --cv ones included
DEFAULT_OBJECTIVE = metrics.DEFAULT_OBJECTIVE
# Trials tied on the (single) objective are ranked by the lower validation loss (the model more
# sure of the same right answers; on digits' 180 validation images accuracy moves in steps of
# 0.56 points and ties are common), then by the earlier trial. Never by trial order alone.
BEST_TIE_RULE = "higher objective, then lower val_loss, then earlier trial"


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "max" | "min"

    @property
    def optuna_direction(self) -> str:
        return "maximize" if self.direction == "max" else "minimize"

    def __str__(self) -> str:
        return f"{self.metric}:{self.direction}"


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str  # "<=" | ">="
    bound: float

    def violation(self, value: float) -> float:
        """Optuna's constraint value: <= 0 when satisfied, else by how much it is not."""
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def _items(texts) -> list[str]:
    """Repeated options, each possibly comma-separated (MLproject passes one string)."""
    return [t.strip() for text in texts or () for t in str(text).split(",") if t.strip()]


def parse_objectives(texts, cv: int | None = None) -> list[Objective]:
    """`METRIC` or `METRIC:min|max` per item (direction inferred from TRIAL_METRICS when left
    out); [val_accuracy:max] when none. ConfigError on an unknown metric, a cv_* metric without
    `cv` (when given), a bad direction or a metric given twice."""
    out = []
    for item in _items(texts) or [DEFAULT_OBJECTIVE]:
        name, _, direction = item.partition(":")
        name = metrics.usable(name.strip(), "--objective", cv)
        direction = direction.strip().lower() or TRIAL_METRICS[name]
        if direction not in ("min", "max"):
            raise ConfigError(f"--objective {item!r}: direction {direction!r} must be min or max")
        if any(o.metric == name for o in out):
            raise ConfigError(f"--objective {name!r} given twice; give each metric once")
        out.append(Objective(name, direction))
    return out


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_constraints(texts, cv: int | None = None) -> list[Constraint]:
    """`METRIC<=VALUE` or `METRIC>=VALUE` per item. ConfigError on a malformed item, an unknown
    metric (or a cv_* one without `cv`, when given) or the same bound given twice (one <= and
    one >= on a metric make a band: allowed)."""
    out = []
    for item in _items(texts):
        m = _CONSTRAINT.match(item)
        if not m:
            raise ConfigError(f"--constraint {item!r}: give METRIC<=VALUE or METRIC>=VALUE, e.g. model_size_mb<=5")
        c = Constraint(metrics.usable(m.group(1), "--constraint", cv), m.group(2), float(m.group(3)))
        if any((o.metric, o.op) == (c.metric, c.op) for o in out):
            raise ConfigError(f"--constraint: {c.metric} {c.op} given twice; give each bound once")
        out.append(c)
    return out


def recorded(run_metrics: dict, last_epoch) -> dict[str, float]:
    """A trial's TRIAL_METRICS from its run's summary metrics and its last epoch's stats."""
    out = {**run_metrics, **{n: getattr(last_epoch, n) for n in EPOCH_METRICS}}
    return {n: float(out[n]) for n in TRIAL_METRICS if n in out}


def violated(constraints: list[Constraint], values: dict) -> list[str]:
    """The constraints `values` break, as 'model_size_mb<=5 (got 11.2)'."""
    return [f"{c} (got {values[c.metric]:.4g})" for c in constraints if c.violation(values[c.metric]) > 0]


def feasible(trial) -> bool:
    """Whether an Optuna trial satisfies every constraint it recorded (Optuna's rule: each <= 0)."""
    return all(v <= 0 for v in trial.constraints.values())


def better(objective: Objective, a: float, b: float) -> bool:
    return a > b if objective.direction == "max" else a < b


def dominates(objectives: list[Objective], a, b) -> bool:
    """Values `a` are at least as good as `b` in every objective and better in one."""
    return all(not better(o, y, x) for o, x, y in zip(objectives, a, b)) and \
        any(better(o, x, y) for o, x, y in zip(objectives, a, b))


def rank_key(objective: Objective, value: float, val_loss: float | None, number: int) -> tuple:
    """Sort key (smallest first) of BEST_TIE_RULE."""
    loss = val_loss if val_loss is not None and math.isfinite(val_loss) else math.inf
    return (-value if objective.direction == "max" else value, loss, number)


def _val_loss(trial) -> float | None:
    return trial.user_attrs.get("metrics", {}).get("val_loss")


def best_trial(trials, objectives: list[Objective]):
    """The best of `trials` (Optuna FrozenTrials) by the first objective among the feasible
    COMPLETE ones, ties broken by BEST_TIE_RULE; None when there is none."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and feasible(t)]
    if not done:
        return None
    return min(done, key=lambda t: rank_key(objectives[0], t.values[0], _val_loss(t), t.number))


def best_set(study, objectives: list[Objective]) -> list:
    """The best trial (one objective) or the Pareto front of the feasible COMPLETE trials
    (several), sorted by BEST_TIE_RULE on the first objective. The front is Optuna's
    (`study.best_trials`, which honours constraints); the single best is ours, because
    `study.best_trial` breaks ties by trial order alone."""
    from optuna.trial import TrialState

    if len(objectives) == 1:
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if feasible(t)]
        best = best_trial(done, objectives)
        return [best] if best else []
    return sorted(study.best_trials, key=lambda t: rank_key(objectives[0], t.values[0], _val_loss(t), t.number))


def enters_best_set(trials, objectives: list[Objective], values: list[float], val_loss: float | None,
                    number: int) -> bool:
    """Whether a feasible trial finishing with `values` joins the best set of the COMPLETE
    feasible `trials` so far: a new best (one objective, BEST_TIE_RULE) or not dominated (several).
    Once out it never comes back (trials are only added), so its weights are needed only now.
    (The trial is still running, so Optuna's front, which holds finished trials only, cannot say.)"""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and feasible(t) and t.number != number]
    if len(objectives) == 1:
        best = best_trial(done, objectives)
        return best is None or rank_key(objectives[0], values[0], val_loss, number) < \
            rank_key(objectives[0], best.values[0], _val_loss(best), best.number)
    return not any(dominates(objectives, t.values, values) for t in done)
