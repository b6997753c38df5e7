"""Search-space parsing: ranges, lists, fixed values, any option, conditional options, and their
error messages; every sampler of the project searching a space."""
import math

import optuna
import pytest

from mlproject.config import ConfigError
from tuning.space import LOG_SCALE, OPTION_TYPES, SearchSpace, parse_dimension
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
    log, typ = name in LOG_SCALE, OPTION_TYPES[name]
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
    ("epochs", "5:2", "--epochs '5:2': empty or inverted range (low 5 must be < high 2)"),
    ("pretrained", "true,maybe", "--pretrained 'true,maybe': 'maybe' is not true or false"),
    ("model", "lenet5,lenet5", "--model 'lenet5,lenet5': repeated values"),
    ("batch_size", "32,48.5", "'48.5' is not a whole number"),
    ("batch_size", "32,32", "repeated values"),
])
def test_bad_dimensions(name, text, message):
    with pytest.raises(ConfigError) as e:
        parse_dimension(name, text, name in LOG_SCALE, OPTION_TYPES[name])
    assert message in str(e.value)


def parse(values, **base):
    return SearchSpace.parse(values, base)


def test_defaults_and_momentum_only_for_sgd():
    sgd = parse({})
    assert set(sgd.searched()) == {"lr", "batch_size", "weight_decay", "momentum"}
    assert sgd.dims["lr"].log and sgd.dims["weight_decay"].log and not sgd.dims["momentum"].log
    adam = parse({}, optimizer="adam")
    assert "momentum" not in adam.dims
    assert "momentum" in parse({"momentum": "0.8:0.95"}, optimizer="adam").searched()


def test_int_ranges_and_any_option_searched_or_fixed():
    space = SearchSpace.parse({"epochs": "5:30", "model": "resnet18,tv:mobilenet_v3_small,lenet5",
                                      "augment": "none,crop,crop+flip", "scheduler": "cosine", "head_dropout": "0:0.5"})
    assert space.fixed_options == {"scheduler": "cosine"}  # one value: a fixed option, as `mlproject train --scheduler cosine`
    assert space.dims["epochs"].integer and space.dims["model"].choices == ("resnet18", "tv:mobilenet_v3_small", "lenet5")
    assert space.dims["augment"].choices == ("none", "crop", "crop+flip")  # text: a comma separates, + combines
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    values = space.suggest(trial)
    assert isinstance(values["epochs"], int) and 5 <= values["epochs"] <= 30
    assert isinstance(trial.distributions["epochs"], optuna.distributions.IntDistribution)
    assert values["model"] in space.dims["model"].choices and 0 <= values["head_dropout"] <= 0.5


@pytest.mark.parametrize("values, base, message", [
    ({"dataset": "digits,mnist"}, {}, "--dataset 'digits,mnist': cannot vary within one study: every trial must see the same data"),
    ({"seed": "0,1"}, {}, "--seed '0,1': cannot vary within one study: every trial uses the study's seed"),
    ({"head_hidden": "64,256"}, {}, "--head-hidden '64,256' is searched but applies only with head=mlp; the study's --head is linear"),
    ({"nesterov": "true,false"}, {"optimizer": "adam"}, "--nesterov 'true,false' is searched but applies only with optimizer=sgd"),
    ({"pretrained": "true,false", "model": "lenet5"}, {}, "applies only with model not built-in; the study's --model is lenet5"),
])
def test_options_that_cannot_vary_or_never_apply(values, base, message):
    with pytest.raises(ConfigError) as e:
        SearchSpace.parse(values, base)
    assert message in str(e.value)


def test_conditional_options_are_sampled_only_where_they_apply():
    """momentum and nesterov only in SGD trials, head_hidden only with the MLP head, pretrained
    only for timm/torchvision models (False for a built-in): define-by-run."""
    space = parse({"optimizer": "sgd,adam", "head": "linear,mlp", "head_hidden": "16,64", "nesterov": "true,false",
                   "model": "lenet5,resnet18", "pretrained": "true,false", "lr": "0.01", "batch_size": "32",
                   "weight_decay": "0"})
    assert space.describe()["space.momentum"] == "0.5:0.99 if optimizer=sgd"
    assert space.describe()["space.head_hidden"] == "16,64 if head=mlp"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = space.suggest(trial)
        p = trial.params
        assert ("momentum" in p) == ("nesterov" in p) == (p["optimizer"] == "sgd"), p
        assert ("head_hidden" in p) == (p["head"] == "mlp"), p
        assert ("pretrained" in p) == (p["model"] == "resnet18"), p
        if p["model"] == "lenet5":
            assert values["pretrained"] is False
        study.tell(trial, 0.0)
        seen.add((p["optimizer"], p["head"], p["model"]))
    assert len(seen) == 8  # every branch was taken
    # momentum given explicitly is Adam's beta1 too: sampled in every trial
    given = parse({"optimizer": "sgd,adam", "momentum": "0.8:0.9"})
    assert given.dims["momentum"].condition == ""


def test_fixed_values_leave_the_search_and_suggest_samples_the_rest():
    space = parse({"lr": "0.01", "batch_size": "16,32"})
    assert space.fixed() == {"lr": 0.01}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = space.suggest(trial)
    assert values["lr"] == 0.01 and values["batch_size"] in (16, 32)
    assert 1e-6 <= values["weight_decay"] <= 1e-2 and 0.5 <= values["momentum"] <= 0.99
    assert set(trial.params) == {"batch_size", "weight_decay", "momentum"}


def test_grid_needs_explicit_values():
    space = parse({"batch_size": "16,32", "lr": "0.0002,0.00005", "weight_decay": "0", "momentum": "0.9",
                   "model": "lenet5,softmax", "epochs": "2:4"})
    assert space.grid() == {"model": ["lenet5", "softmax"], "lr": [0.0002, 0.00005], "batch_size": [16, 32],
                            "epochs": [2, 3, 4]}
    with pytest.raises(ConfigError, match=r"--sampler grid needs explicit values, but --lr is the range 0.0001:0.1 \(log\)"):
        parse({"batch_size": "16,32"}, optimizer="adam").grid()


def test_describe_for_the_parent_run():
    space = parse({"lr": "1e-4:1e-1", "batch_size": "32,64"}, optimizer="adam")
    assert space.describe() == {"space.lr": "0.0001:0.1 (log)", "space.weight_decay": "1e-06:0.01 (log)",
                                "space.batch_size": "32,64"}


# a space every sampler can search: grid needs explicit values, the others get ranges (two
# continuous dimensions: CMA-ES samples one alone independently); batch size is categorical for
# all, weight decay fixed
SAMPLER_SPACE = {"batch_size": "32,64", "weight_decay": "0"}
GRID_VALUES = {"lr": "0.001,0.1", "momentum": "0.5,0.9"}
RANGES = {"lr": "0.001:0.1", "momentum": "0.5:0.9"}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_samples_inside_the_space_and_repeats_with_its_seed(sampler):
    space = parse({**SAMPLER_SPACE, **(GRID_VALUES if sampler == "grid" else RANGES)})
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
