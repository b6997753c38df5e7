"""Search-space parsing: ranges, lists, fixed values, and their error messages; every sampler of
the project searching a space."""
import math

import optuna
import pytest

from mlproject.config import ConfigError
from tuning.space import DEFAULTS, SearchSpace, parse_dimension
from tuning.study import SAMPLERS, create_sampler


@pytest.mark.parametrize("name, text, kind, expect", [
    ("lr", "1e-4:1e-1", "range", (1e-4, 1e-1)),
    ("lr", "0.0002,0.00005", "choice", (0.0002, 0.00005)),
    ("lr", "0.01", "fixed", (0.01,)),
    ("batch_size", "32,64,128", "choice", (32, 64, 128)),
    ("batch_size", "64", "fixed", (64,)),
    ("momentum", "0:0.99", "range", (0.0, 0.99)),
])
def test_parse(name, text, kind, expect):
    default, log, typ = DEFAULTS[name]
    d = parse_dimension(name, text, log, typ)
    assert d.kind == kind
    assert ((d.low, d.high) if kind == "range" else d.choices) == expect
    assert d.log == (log and kind == "range")
    if typ is int and kind != "range":
        assert all(isinstance(v, int) for v in d.choices)


@pytest.mark.parametrize("name, text, message", [
    ("lr", "1e-1:1e-4", "--lr '1e-1:1e-4': empty or inverted range (low 0.1 must be < high 0.0001)"),
    ("lr", "0.1:0.1", "empty or inverted range"),
    ("lr", "0:1e-1", "--lr '0:1e-1': a log-scale range needs low > 0, got 0"),
    ("weight_decay", "-1e-3:1e-2", "a log-scale range needs low > 0"),
    ("lr", "", "--lr: empty value"),
    ("lr", "fast:1", "'fast' is not a number"),
    ("batch_size", "32:128", "--batch-size '32:128': give a list of values"),
    ("batch_size", "32,48.5", "'48.5' is not a whole number"),
    ("batch_size", "32,32", "repeated values"),
])
def test_bad_dimensions(name, text, message):
    default, log, typ = DEFAULTS[name]
    with pytest.raises(ConfigError) as e:
        parse_dimension(name, text, log, typ)
    assert message in str(e.value)


def test_defaults_and_momentum_only_for_sgd():
    sgd = SearchSpace.parse({}, optimizer="sgd")
    assert set(sgd.searched()) == {"lr", "batch_size", "weight_decay", "momentum"}
    assert sgd.dims["lr"].log and sgd.dims["weight_decay"].log and not sgd.dims["momentum"].log
    adam = SearchSpace.parse({}, optimizer="adam")
    assert "momentum" not in adam.dims
    assert "momentum" in SearchSpace.parse({"momentum": "0.8:0.95"}, optimizer="adam").searched()


def test_fixed_values_leave_the_search_and_suggest_samples_the_rest():
    space = SearchSpace.parse({"lr": "0.01", "batch_size": "16,32"}, optimizer="sgd")
    assert space.fixed() == {"lr": 0.01}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = space.suggest(trial)
    assert values["lr"] == 0.01 and values["batch_size"] in (16, 32)
    assert 1e-6 <= values["weight_decay"] <= 1e-2 and 0.5 <= values["momentum"] <= 0.99
    assert set(trial.params) == {"batch_size", "weight_decay", "momentum"}


def test_grid_needs_explicit_values():
    space = SearchSpace.parse({"batch_size": "16,32", "lr": "0.0002,0.00005", "weight_decay": "0",
                               "momentum": "0.9"}, optimizer="sgd")
    assert space.grid() == {"batch_size": [16, 32], "lr": [0.0002, 0.00005]}
    with pytest.raises(ConfigError, match=r"--sampler grid needs explicit values, but --lr is the range 0.0001:0.1 \(log\)"):
        SearchSpace.parse({"batch_size": "16,32"}, optimizer="adam").grid()


def test_describe_for_the_parent_run():
    space = SearchSpace.parse({"lr": "1e-4:1e-1", "batch_size": "32,64"}, optimizer="adam")
    assert space.describe() == {"space.lr": "0.0001:0.1 (log)", "space.batch_size": "32,64",
                                "space.weight_decay": "1e-06:0.01 (log)"}


# a space every sampler can search: grid needs explicit values, the others get ranges (two
# continuous dimensions: CMA-ES samples one alone independently); batch size is categorical for
# all, weight decay fixed
SAMPLER_SPACE = {"batch_size": "32,64", "weight_decay": "0"}
GRID_VALUES = {"lr": "0.001,0.1", "momentum": "0.5,0.9"}
RANGES = {"lr": "0.001:0.1", "momentum": "0.5:0.9"}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_samples_inside_the_space_and_repeats_with_its_seed(sampler):
    space = SearchSpace.parse({**SAMPLER_SPACE, **(GRID_VALUES if sampler == "grid" else RANGES)}, optimizer="sgd")
    fixed_seen = []

    def objective(trial):
        values = space.suggest(trial)
        fixed_seen.append(values["weight_decay"])
        return -abs(math.log10(values["lr"]) + 2) - values["momentum"] + values["batch_size"] / 1000

    def run(seed):
        study = optuna.create_study(sampler=create_sampler(sampler, space, seed), direction="maximize")
        study.optimize(objective, n_trials=6)
        return study

    study = run(0)
    trials = study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 6
    assert fixed_seen == [0.0] * 6  # the fixed value reaches every trial without being sampled
    for t in trials:
        assert set(t.params) == {"lr", "momentum", "batch_size"}, t.params
        assert t.params["batch_size"] in (32, 64)
        for name, d in space.dims.items():
            if d.kind == "range":
                assert d.low <= t.params[name] <= d.high, (name, t.params)
            elif d.kind == "choice":
                assert t.params[name] in d.choices, (name, t.params)
    # six different points: a grid never repeats one, the others draw continuous values
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6
    # reproducible from the seed (a study's --seed), and another seed samples otherwise
    assert [t.params for t in run(0).trials] == [t.params for t in trials]
    assert [t.params for t in run(1).trials] != [t.params for t in trials]
    # the sampler named is the one that sampled: GridSampler and CmaEsSampler leave their marks
    grid_ids = [t.system_attrs.get("grid_id") for t in trials]
    cma = [t.number for t in trials if "cma:generation" in t.system_attrs]
    if sampler == "grid":
        assert sorted(grid_ids) == sorted(set(grid_ids)) and None not in grid_ids
        assert study.sampler.is_exhausted(study) is False  # 6 of its 8 points
    else:
        assert grid_ids == [None] * 6
    if sampler == "cmaes":  # its first trial is drawn independently, the rest by CMA-ES
        assert cma == [1, 2, 3, 4, 5], cma
    else:
        assert cma == []
