"""mlproject.model_names: the names timm and torchvision list, cached per installed version, so that
`mlproject models` and name checks answer without importing them."""
import json

import pytest

from mlproject import model_names
from mlproject.builtin import BUILTINS
from mlproject.config import ConfigError
from mlproject.models import resolve_model

from test_cli import fresh


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(model_names.CACHE_ENV, str(tmp_path))
    return tmp_path


def test_the_cached_names_are_what_timm_and_torchvision_list(cache):
    import timm
    import torchvision

    assert model_names.cached_names() is None
    built = model_names.known_names()  # from the libraries, then written
    (stored,) = cache.glob("model-names-*.json")
    assert f"timm{timm.__version__}" in stored.name and f"torchvision{torchvision.__version__.split('+')[0]}" in stored.name
    assert model_names.cached_names() == built
    for pattern in ("resnet1*", "*vit_tiny*", "*"):
        for pretrained in (False, True):
            found = model_names.list_models(pattern, pretrained=pretrained)
            assert found["timm"] == timm.list_models(pattern, pretrained=pretrained), (pattern, pretrained)
    assert model_names.list_models("*")["torchvision"] == torchvision.models.list_models(module=torchvision.models)
    assert model_names.list_models("lenet*")["builtin"] == [n for n in BUILTINS if n.startswith("lenet")]
    assert model_names.list_models("lenet*", pretrained=True)["builtin"] == []


def test_a_name_is_resolved_and_an_unknown_one_refused_from_the_cache(cache, monkeypatch):
    names = model_names.known_names()
    # what is stored decides, not timm's registry: a name only the file holds resolves
    stored = next(cache.glob("model-names-*.json"))
    stored.write_text(json.dumps({**names, "timm": [*names["timm"], "resnet_from_the_file"]}))
    assert resolve_model("resnet_from_the_file") == ("timm", "resnet_from_the_file")
    assert resolve_model("resnet18.a1_in1k") == ("timm", "resnet18.a1_in1k")  # a pretrained tag after the name
    assert resolve_model("tv:resnet18") == ("torchvision", "resnet18")
    with pytest.raises(ConfigError, match=r"unknown model 'resnet1888' \(did you mean: resnet18"):
        resolve_model("resnet1888")


@pytest.mark.parametrize("content", ["{not json", json.dumps({"timm": ["x"]}), ""])
def test_a_broken_cache_file_is_listed_again_and_rewritten(cache, content):
    model_names.known_names()
    stored = next(cache.glob("model-names-*.json"))
    stored.write_text(content)
    assert model_names.cached_names() is None
    assert "resnet18" in model_names.known_names()["timm"]
    assert model_names.cached_names() is not None  # rewritten whole


def test_models_answers_from_the_cache_without_torch_or_timm(cache, tmp_path):
    model_names.known_names()  # the first use, in this process: later commands read the file
    proc, loaded = fresh(tmp_path, "mlproject", "models", "resnet1*")
    assert proc.returncode == 0, proc.stderr
    assert "# timm (" in proc.stdout and "\nresnet18\n" in proc.stdout and "tv:resnet18" in proc.stdout
    assert loaded == []


# tune's checks build the sampler (Optuna: a fraction of a second); neither loads torch or timm
@pytest.mark.parametrize("command, args, loaded", [("mlproject", ["train", "--model", "resnet1888"], []),
                                                   ("tune", ["--model", "resnet18,resnet1888"], ["optuna"])],
                         ids=["train", "tune"])
def test_an_unknown_model_is_refused_before_torch_loads_once_names_are_cached(cache, tmp_path, command, args, loaded):
    model_names.known_names()
    proc, imported = fresh(tmp_path, command, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Error: unknown model 'resnet1888' (did you mean: resnet18, "), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and imported == loaded
