"""Objectives, constraints and the best set: parsing and its error texts, Pareto dominance and
the tie rule, on real Optuna trials (no training)."""
import itertools

import optuna
import pytest
from optuna.trial import TrialState

from mlproject.config import ConfigError
from tuning.goals import (TRIAL_METRICS, Objective, best_set, dominates, enters_best_set, parse_constraints,
                          parse_objectives, violated)


def test_objectives_default_inferred_and_overridden():
    assert parse_objectives(()) == [Objective("val_accuracy", "max")]
    assert parse_objectives(["val_accuracy", "model_size_mb", "test_time_s", "params_total", "val_loss"]) == [
        Objective("val_accuracy", "max"), Objective("model_size_mb", "min"), Objective("test_time_s", "min"),
        Objective("params_total", "min"), Objective("val_loss", "min")]
    assert parse_objectives(["model_size_mb:max"]) == [Objective("model_size_mb", "max")]
    # MLproject passes one string: comma-separated items
    assert parse_objectives(["val_accuracy,model_size_mb:min"]) == [Objective("val_accuracy", "max"),
                                                                    Objective("model_size_mb", "min")]


def test_every_recorded_metric_is_an_objective_the_right_way_round_and_a_constraint():
    names = list(TRIAL_METRICS)
    objectives = parse_objectives([",".join(names)])  # each with its inferred direction
    assert [o.metric for o in objectives] == names
    for o in objectives:
        # lower is better for a spread over --cv folds; higher for accuracies and throughputs; lower
        # for losses, times, sizes, parameter counts
        spread = o.metric.endswith("_std")
        higher = not spread and any(word in o.metric for word in ("accuracy", "throughput"))
        assert higher or spread or any(word in o.metric for word in ("loss", "time_s", "size_mb", "params")), \
            f"{o.metric}: say here which way it is better"
        assert (o.direction, o.optuna_direction) == (("max", "maximize") if higher else ("min", "minimize")), o
    assert [(c.metric, c.op, c.bound) for c in parse_constraints([f"{n}>=0.5" for n in names])] == \
        [(n, ">=", 0.5) for n in names]


def test_cv_metrics_are_objectives_and_constraints_only_with_cv():
    assert parse_objectives(["cv_val_accuracy_std"], cv=5) == [Objective("cv_val_accuracy_std", "min")]
    assert parse_objectives(["cv_val_accuracy_mean"], cv=5) == [Objective("cv_val_accuracy_mean", "max")]
    assert [str(c) for c in parse_constraints(["cv_val_accuracy_std<=0.02"], cv=5)] == ["cv_val_accuracy_std<=0.02"]
    without = r"cv_val_accuracy_std: recorded only with --cv K \(cross-validation\); add --cv 5, or use val_accuracy$"
    with pytest.raises(ConfigError, match="^--objective " + without):
        parse_objectives(["cv_val_accuracy_std"], cv=0)
    with pytest.raises(ConfigError, match="^--constraint " + without):
        parse_constraints(["cv_val_accuracy_std<=0.02"], cv=0)
    with pytest.raises(ConfigError, match=r"unknown --objective metric 'lr'"):  # recorded, but no goal
        parse_objectives(["lr"], cv=5)


@pytest.mark.parametrize("texts, message", [
    (["val_acc"], "unknown --objective metric 'val_acc' (did you mean: val_accuracy"),
    (["modelsize_mb"], "(did you mean: model_size_mb?)"),
    (["model_size_mb:smallest"], "--objective 'model_size_mb:smallest': direction 'smallest' must be min or max"),
    (["val_accuracy", "val_accuracy:max"], "--objective 'val_accuracy' given twice"),
])
def test_bad_objectives(texts, message):
    with pytest.raises(ConfigError) as e:
        parse_objectives(texts)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_constraints_parse_and_report_what_they_break():
    cs = parse_constraints(["model_size_mb<=5", "test_time_s <= 0.2", "val_accuracy>=0.9"])
    assert [str(c) for c in cs] == ["model_size_mb<=5", "test_time_s<=0.2", "val_accuracy>=0.9"]
    assert [c.violation(v) for c, v in zip(cs, (6.0, 0.1, 0.8))] == pytest.approx([1.0, -0.1, 0.1])
    values = {"model_size_mb": 11.2, "test_time_s": 0.1, "val_accuracy": 0.95}
    assert violated(cs, values) == ["model_size_mb<=5 (got 11.2)"]
    assert len(parse_constraints(["model_size_mb<=5,model_size_mb>=1"])) == 2  # a band is allowed


@pytest.mark.parametrize("texts, message", [
    (["model_size_mb<5"], "--constraint 'model_size_mb<5': give METRIC<=VALUE or METRIC>=VALUE"),
    (["model_size_mb<=five"], "give METRIC<=VALUE or METRIC>=VALUE"),
    (["size<=5"], "unknown --constraint metric 'size'"),
    (["test_time_s<=0.2", "test_time_s<=0.3"], "--constraint: test_time_s <= given twice"),
])
def test_bad_constraints(texts, message):
    with pytest.raises(ConfigError) as e:
        parse_constraints(texts)
    assert message in str(e.value)


def test_dominance_follows_each_direction():
    objs = [Objective("val_accuracy", "max"), Objective("model_size_mb", "min")]
    assert dominates(objs, (0.9, 1.0), (0.8, 2.0)) and dominates(objs, (0.9, 1.0), (0.9, 2.0))
    assert not dominates(objs, (0.9, 1.0), (0.9, 1.0))  # equal: neither dominates
    assert not dominates(objs, (0.9, 3.0), (0.8, 2.0))  # a trade-off


def _study(points, directions, constraints=None):
    """A real Optuna study whose trials have `points` as values and val_loss user attrs."""
    study = optuna.create_study(directions=directions)
    for i, (values, val_loss) in enumerate(points):
        trial = study.ask()
        trial.set_user_attr("metrics", {"val_loss": val_loss})
        if constraints:
            trial.set_constraint("c", constraints[i])
        study.tell(trial, values)
    return study


def test_pareto_front_matches_a_brute_force_computation_and_optuna():
    objs = [Objective("val_accuracy", "max"), Objective("model_size_mb", "min")]
    points = [((a, s), 0.1) for a, s in itertools.product((0.8, 0.9, 0.95), (0.5, 1.0, 4.0))][::2] + \
             [((0.97, 8.0), 0.1), ((0.9, 0.5), 0.1)]
    study = _study(points, ["maximize", "minimize"])
    front = best_set(study, objs)
    brute = [t.number for t in study.trials
             if not any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
                        for o in study.trials)]
    assert sorted(t.number for t in front) == sorted(brute)
    assert front[0].values[0] == max(t.values[0] for t in front)  # sorted by the first objective


def test_infeasible_trials_are_never_best_or_on_the_front():
    objs = [Objective("val_accuracy", "max"), Objective("model_size_mb", "min")]
    study = _study([((0.99, 0.1), 0.1), ((0.9, 1.0), 0.1), ((0.8, 2.0), 0.1)], ["maximize", "minimize"],
                   constraints=[1.0, 0.0, -1.0])
    assert [t.number for t in best_set(study, objs)] == [1]  # trial 0 dominates all, but is infeasible
    single = _study([((0.99,), 0.1), ((0.9,), 0.1)], ["maximize"], constraints=[0.5, -0.5])
    assert [t.number for t in best_set(single, objs[:1])] == [1] and single.best_trial.number == 1


def test_ties_are_broken_by_val_loss_then_trial_number():
    one = [Objective("val_accuracy", "max")]
    study = _study([((0.9667,), 0.30), ((0.9667,), 0.12), ((0.95,), 0.01), ((0.9667,), 0.12)], ["maximize"])
    assert best_set(study, one)[0].number == 1  # not trial 0 (first of the ties); 3 ties 1 on loss too
    # entering the best set: only a strictly better rank (later trials never return to it)
    assert enters_best_set(study.trials, one, [0.9667], 0.11, 4)
    assert not enters_best_set(study.trials, one, [0.9667], 0.12, 4)
    assert not enters_best_set(study.trials, one, [0.95], 0.0, 4)
    two = [Objective("val_accuracy", "max"), Objective("model_size_mb", "min")]
    front = _study([((0.9, 1.0), 0.1)], ["maximize", "minimize"])
    assert enters_best_set(front.trials, two, [0.8, 0.5], 0.1, 1)  # a trade-off joins the front
    assert enters_best_set(front.trials, two, [0.9, 1.0], 0.1, 1)  # equal: not dominated
    assert not enters_best_set(front.trials, two, [0.8, 2.0], 0.1, 1)
    running = front.ask()  # only COMPLETE trials count
    assert running.number == 1 and front.trials[1].state == TrialState.RUNNING
