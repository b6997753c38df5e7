"""Tests for mlproject.models: built-in, timm and torchvision models with new heads, freezing,
preprocessing, name resolution, pretrained weights offline, and sizes."""

from __future__ import annotations

import re
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mlproject.models as models_mod
from mlproject.builtin import BUILTINS
from mlproject.config import ConfigError, TrainConfig
from mlproject.data import DatasetShape
from mlproject.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Classifier,
    Preprocess,
    count_parameters,
    create_model,
    list_models,
    model_size_mb,
    resolve_model,
    set_normalisation,
)

DIGITS = DatasetShape(1, 8, 8, 10)
RGB32 = DatasetShape(3, 32, 32, 5)
SHAPES = pytest.mark.parametrize("shape", [DIGITS, RGB32], ids=["digits-1x8x8", "rgb-3x32x32"])


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Tiny batches: one intra-op thread. On small shared machines a second thread makes a resnet18
    forward on 2 images at 32 px ~20x slower (0.7 s instead of 0.03 s) through thread hand-offs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def uint8_batch(shape: DatasetShape, n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, shape.channels, shape.height, shape.width), generator=g, dtype=torch.uint8)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(model: str, shape: DatasetShape = DIGITS, **kw):
    return create_model(TrainConfig(model=model, **kw), shape)


# ---------------------------------------------------------------------------------------------
# built-in models

@pytest.mark.parametrize("name", list(BUILTINS))
@SHAPES
def test_builtin_builds_for_the_data_and_gives_logits(name, shape):
    model, info = build(name, shape)
    assert isinstance(model, Classifier)
    assert (info.name, info.source) == (name, "builtin")
    # without --image-size: the built-in's declared design size, or (0) the data's own size
    assert info.input_size == (BUILTINS[name][1] or max(shape.height, shape.width))
    assert info.in_channels == shape.channels and model.preprocess.size == info.input_size
    assert info.head == "classifier" and isinstance(model.net.classifier, nn.Linear)
    assert info.mean is None and info.std is None  # trained from scratch: data statistics later
    assert info.first_layer is not None and model.net.get_submodule(info.first_layer) is not None
    model.eval()
    with torch.no_grad():
        logits = model(uint8_batch(shape))
    assert logits.shape == (4, shape.num_classes) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    model.train()  # a training-mode step works too (smallcnn's BatchNorm needs a batch > 1)
    model(uint8_batch(shape)).sum().backward()
    assert model.net.classifier.weight.grad is not None


def test_new_builtin_has_untouched_batchnorm_statistics():
    model, _ = build("smallcnn", RGB32)
    for mod in model.net.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            assert int(mod.num_batches_tracked) == 0
            assert torch.equal(mod.running_mean, torch.zeros_like(mod.running_mean))
            assert torch.equal(mod.running_var, torch.ones_like(mod.running_var))


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_pixel_builtins_take_image_size(name):
    model, info = build(name, DIGITS, image_size=16)
    assert info.input_size == 16
    first = model.net.get_submodule(info.first_layer)
    assert first.in_features == 1 * 16 * 16
    assert model(uint8_batch(DIGITS)).shape == (4, 10)


@pytest.mark.parametrize("name", ["lenet5", "smallcnn"])
def test_conv_builtin_too_small_image_size_is_a_config_error_naming_a_size_that_works(name):
    with pytest.raises(ConfigError, match=rf"^{name} cannot read 8x8 images; use --image-size \d+ or larger$") as e:
        build(name, DIGITS, image_size=8)
    size = int(re.search(r"--image-size (\d+)", str(e.value)).group(1))
    model, info = build(name, DIGITS, image_size=size)  # the advice works
    assert info.input_size == size and model(uint8_batch(DIGITS)).shape == (4, 10)


# ---------------------------------------------------------------------------------------------
# timm and torchvision models

@pytest.mark.parametrize("model, source, head", [
    ("resnet18", "timm", "fc"),
    ("timm:resnet18", "timm", "fc"),
    ("tv:resnet18", "torchvision", "fc"),
    ("tv:mobilenet_v3_small", "torchvision", "classifier.3"),
])
@SHAPES
def test_library_model_for_the_data(model, source, head, shape):
    net_model, info = build(model, shape)
    assert info.source == source and info.name == model.split(":")[-1]
    assert info.head == head and net_model.head == head
    assert net_model.net.get_submodule(head).out_features == shape.num_classes
    assert info.in_channels == 3  # grey data is repeated to RGB by the preprocessing
    assert info.input_size == max(shape.height, shape.width, 32)
    assert info.mean is None  # no pretrained weights: data statistics
    net_model.eval()
    with torch.no_grad():
        logits = net_model(uint8_batch(shape, n=2))
    assert logits.shape == (2, shape.num_classes)


def test_library_model_first_layer():
    assert build("resnet18")[1].first_layer == "conv1"
    assert build("tv:resnet18")[1].first_layer == "conv1"


@pytest.mark.parametrize("model", ["resnet18", "tv:resnet18"])
def test_library_model_size_from_data_and_image_size(model):
    assert build(model, DatasetShape(3, 40, 48, 4))[1].input_size == 48  # larger than 32: the data's own
    m, info = build(model, DIGITS, image_size=40)
    assert info.input_size == 40 and m.preprocess.size == 40
    x = uint8_batch(DIGITS, n=2)
    assert m.preprocess(x).shape == (2, 3, 40, 40)


def test_torchvision_vit_gets_its_fixed_size():
    assert build("tv:vit_b_16", DIGITS)[1].input_size == 224


# ---------------------------------------------------------------------------------------------
# freezing

FREEZE_MODELS = pytest.mark.parametrize("model", ["resnet18", "tv:resnet18", "smallcnn"])
HEADS = pytest.mark.parametrize("head", ["linear", "mlp"])


@FREEZE_MODELS
@HEADS
def test_full_fine_tuning_trains_everything(model, head):
    m, info = build(model, head=head, head_hidden=32)
    total, trainable = count_parameters(m)
    assert total == trainable == n_params(m) > 0
    m.train()
    assert all(mod.training for mod in m.modules())


@FREEZE_MODELS
@HEADS
def test_frozen_backbone_trains_only_the_head(model, head):
    m, info = build(model, head=head, head_hidden=32, freeze="backbone")
    full, _ = build(model, head=head, head_hidden=32)
    head_module = m.net.get_submodule(info.head)
    total, trainable = count_parameters(m)
    assert total == count_parameters(full)[0]
    assert trainable == n_params(head_module) < total
    assert all(p.requires_grad for p in head_module.parameters())

    m.train()
    head_modules = set(head_module.modules())
    batchnorms = [mod for mod in m.net.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    assert batchnorms
    for mod in m.net.modules():
        assert mod.training == (mod in head_modules), type(mod).__name__
    # a training step leaves the backbone's BatchNorm statistics alone and only the head gets gradients
    before = [bn.running_mean.clone() for bn in batchnorms]
    F.cross_entropy(m(uint8_batch(DIGITS, n=4)), torch.tensor([0, 1, 2, 3])).backward()
    for bn, old in zip(batchnorms, before):
        assert torch.equal(bn.running_mean, old)
    for name, p in m.named_parameters():
        assert (p.grad is not None) == name.startswith(f"net.{info.head}."), name

    m.eval()
    assert not any(mod.training for mod in m.modules())


# ---------------------------------------------------------------------------------------------
# heads

@pytest.mark.parametrize("model, in_features", [("resnet18", 512), ("tv:resnet18", 512), ("lenet5", 84)])
def test_mlp_head(model, in_features):
    m, info = build(model, head="mlp", head_hidden=32, head_dropout=0.25)
    head = m.net.get_submodule(info.head)
    assert isinstance(head, nn.Sequential)
    linears = [mod for mod in head if isinstance(mod, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(in_features, 32), (32, 10)]
    assert any(isinstance(mod, nn.ReLU) for mod in head)
    assert [mod.p for mod in head if isinstance(mod, nn.Dropout)] == [0.25]
    assert m(uint8_batch(DIGITS)).shape == (4, 10)


@pytest.mark.parametrize("model", ["resnet18", "tv:resnet18", "lenet5"])
def test_linear_head_with_dropout(model):
    m, info = build(model, head_dropout=0.5)
    head = m.net.get_submodule(info.head)
    assert isinstance(head, nn.Sequential)
    assert isinstance(head[0], nn.Dropout) and head[0].p == 0.5
    assert isinstance(head[-1], nn.Linear) and head[-1].out_features == 10
    plain = build(model)[0].net.get_submodule(info.head)
    assert isinstance(plain, nn.Linear) and plain.out_features == 10


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_squeezenet_gets_a_1x1_conv_head(head):
    m, info = build("tv:squeezenet1_1", RGB32, head=head, head_hidden=32)
    assert info.head == "classifier.1"
    new = m.net.get_submodule(info.head)
    convs = [new] if head == "linear" else [mod for mod in new if isinstance(mod, nn.Conv2d)]
    assert all(isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1) for c in convs)
    expected = [(512, 5)] if head == "linear" else [(512, 32), (32, 5)]
    assert [(c.in_channels, c.out_channels) for c in convs] == expected
    m.eval()
    with torch.no_grad():
        assert m(uint8_batch(RGB32, n=2)).shape == (2, 5)


# ---------------------------------------------------------------------------------------------
# preprocessing

def test_preprocess_grey_to_rgb_repeats_the_channel():
    x = uint8_batch(DIGITS, n=2)
    out = Preprocess(1, 3, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(x)
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
    for c in range(3):
        assert torch.allclose(out[:, c], x[:, 0].float() / 255)


def test_preprocess_rgb_to_grey_averages():
    x = uint8_batch(RGB32, n=2)
    out = Preprocess(3, 1, 32, (0.0,), (1.0,))(x)
    assert out.shape == (2, 1, 32, 32)
    assert torch.allclose(out, x.float().mean(1, keepdim=True) / 255, atol=1e-6)


@pytest.mark.parametrize("size", [4, 8, 20])
def test_preprocess_resizes(size):
    flat = torch.full((3, 1, 8, 8), 51, dtype=torch.uint8)  # a constant image stays constant at any size
    out = Preprocess(1, 1, size, (0.0,), (1.0,))(flat)
    assert out.shape == (3, 1, size, size)
    assert torch.allclose(out, torch.full_like(out, 0.2))
    x = uint8_batch(DIGITS)
    out = Preprocess(1, 1, size, (0.0,), (1.0,))(x)
    assert out.min() >= 0 and out.max() <= 1


def test_preprocess_normalises_with_the_given_statistics():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    out = Preprocess(3, 3, 2, (0.5, 0.2, 0.0), (0.25, 0.5, 1.0))(x)
    expected = (torch.tensor([0.0, 0.2, 1.0]).view(3, 1) - torch.tensor([0.5, 0.2, 0.0])) / torch.tensor([0.25, 0.5, 1.0])
    assert torch.allclose(out[:, :, 0, 0], expected, atol=1e-6)
    floats = Preprocess(3, 3, 2, (0.5, 0.2, 0.0), (0.25, 0.5, 1.0))(x.float() / 255)  # [0, 1] floats as is
    assert torch.allclose(floats, out, atol=1e-6)


def test_set_normalisation_changes_the_outputs():
    model, _ = build("lenet5", DIGITS)
    model.eval()
    x = uint8_batch(DIGITS)
    with torch.no_grad():
        before = model(x)
        set_normalisation(model, [0.3], [0.2])
        after = model(x)
        expected = model.net((F.interpolate(x.float() / 255, size=(32, 32), mode="bilinear",
                                            align_corners=False) - 0.3) / 0.2)
    assert model.preprocess.mean.flatten().tolist() == pytest.approx([0.3])
    assert model.preprocess.std.flatten().tolist() == pytest.approx([0.2])
    assert not torch.allclose(before, after)
    assert torch.allclose(after, expected, atol=1e-5)


def test_set_normalisation_fits_the_channels():
    rgb_net, _ = build("resnet18", DIGITS)  # grey data, RGB network: grey statistics repeated
    set_normalisation(rgb_net, [0.3], [0.2])
    assert rgb_net.preprocess.mean.flatten().tolist() == pytest.approx([0.3] * 3)
    assert rgb_net.preprocess.std.flatten().tolist() == pytest.approx([0.2] * 3)
    grey_net, _ = build("lenet5", DIGITS)  # RGB statistics for a grey network: averaged
    set_normalisation(grey_net, [0.2, 0.4, 0.6], [0.1, 0.2, 0.3])
    assert grey_net.preprocess.mean.flatten().tolist() == pytest.approx([0.4])
    assert grey_net.preprocess.std.flatten().tolist() == pytest.approx([0.2])


# ---------------------------------------------------------------------------------------------
# names

@pytest.mark.parametrize("name, expected", [
    ("timm:resnet18", ("timm", "resnet18")),
    ("resnet18", ("timm", "resnet18")),  # in timm and torchvision: bare is timm's
    ("resnet18.a1_in1k", ("timm", "resnet18.a1_in1k")),
    ("tv:resnet18", ("torchvision", "resnet18")),
    ("tv:mobilenet_v3_small", ("torchvision", "mobilenet_v3_small")),
    ("lenet5", ("builtin", "lenet5")),
    ("builtin:mlp", ("builtin", "mlp")),
])
def test_resolve_model(name, expected):
    assert resolve_model(name) == expected


def test_unknown_model_suggests_close_names():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet181' \(did you mean: resnet18[,?]") as e:
        resolve_model("resnet181")
    assert "valid:" in str(e.value)


@pytest.mark.parametrize("name, choice", [("tv:lenet5", "torchvision"), ("timm:lenet5", "timm"),
                                          ("builtin:resnet18", "builtin")])
def test_prefix_restricts_the_choices(name, choice):
    with pytest.raises(ConfigError, match=f"unknown model '{name}'") as e:
        resolve_model(name)
    if choice == "builtin":
        assert "valid: basecnn, lenet5, smallcnn, softmax, mlp" in str(e.value)


def test_create_model_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model 'lenet6'.*lenet5"):
        build("lenet6")


def test_list_models():
    found = list_models("resnet1*")
    assert set(found) == {"builtin", "timm", "torchvision"}
    assert "resnet18" in found["timm"] and "resnet18" in found["torchvision"]
    assert "resnet101" in found["torchvision"] and "resnet50" not in found["timm"]
    assert found["builtin"] == []
    assert list_models("lenet*") == {"builtin": ["lenet5"], "timm": [], "torchvision": []}
    assert list_models()["builtin"] == list(BUILTINS)
    pretrained = list_models("resnet18*", pretrained=True)
    assert pretrained["builtin"] == [] and "resnet18.a1_in1k" in pretrained["timm"]


# ---------------------------------------------------------------------------------------------
# pretrained weights, offline

def test_torchvision_pretrained_offline_is_a_config_error(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    with pytest.raises(ConfigError, match=r"pretrained weights for 'resnet18' could not be loaded") as e:
        build("tv:resnet18", RGB32, pretrained=True)
    assert "TORCH_HOME" in str(e.value) and "without --pretrained" in str(e.value)
    assert no_network  # it did try to download


@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_pretrained_is_a_config_error(name):
    with pytest.raises(ConfigError, match=rf"built-in model '{name}' has no pretrained weights"):
        build(name, pretrained=True)


HF_REPO = "timm/resnet18.a1_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """A Hugging Face hub cache holding timm's resnet18.a1_in1k weights (here: a fresh 1000-class
    resnet18's), laid out as huggingface_hub lays it out."""
    import timm
    from safetensors.torch import save_file

    cache = tmp_path_factory.mktemp("hf") / "hub"
    repo = cache / ("models--" + HF_REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    with torch.random.fork_rng():
        torch.manual_seed(123)
        state = timm.create_model("resnet18").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return cache, snapshot / "model.safetensors", state


@pytest.fixture
def use_hf_cache(monkeypatch, hf_cache):
    import huggingface_hub

    cache, _, _ = hf_cache
    # try_to_load_from_cache and hf_hub_download read constants.HF_HUB_CACHE when called
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return hf_cache


@pytest.mark.parametrize("hub_offline", [False, True], ids=["unreachable", "HF_HUB_OFFLINE"])
def test_timm_pretrained_from_the_local_hf_cache(use_hf_cache, no_network, monkeypatch, hub_offline):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", hub_offline)
    _, weights_file, state = use_hf_cache
    shape = DatasetShape(1, 28, 28, 7)
    model, info = create_model(TrainConfig(model="resnet18", pretrained=True, image_size=32), shape)
    assert torch.equal(model.net.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.net.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    assert info.mean == pytest.approx(IMAGENET_MEAN) and info.std == pytest.approx(IMAGENET_STD)
    assert model.preprocess.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    assert info.input_size == 32 and info.source == "timm"
    assert info.head == "fc" and model.net.fc.out_features == 7 and model.net.fc.in_features == 512
    if not hub_offline:  # the hub was unreachable: the cached file was handed to timm directly
        assert model.net.pretrained_cfg.get("file") == str(weights_file)
    assert model(uint8_batch(shape, n=2)).shape == (2, 7)


def test_timm_pretrained_native_size(use_hf_cache, no_network):
    _, info = create_model(TrainConfig(model="resnet18", pretrained=True), DIGITS)
    assert info.input_size == 224  # the weights' own input size


def test_timm_pretrained_not_cached_is_a_config_error(tmp_path, monkeypatch, no_network):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ConfigError, match=r"pretrained weights for 'resnet18' are not in the Hugging Face cache"):
        build("resnet18", pretrained=True)


def test_reachable_tells_an_open_port_from_a_closed_one():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert models_mod._reachable("127.0.0.1", port, timeout_s=1.0)
    assert not models_mod._reachable("127.0.0.1", port, timeout_s=1.0)  # closed now


# ---------------------------------------------------------------------------------------------
# sizes

def test_count_parameters_of_lenet5():
    # conv 3->6 5x5, conv 6->16 5x5, 400->120, 120->84, 84->10
    expected = (3 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    model, _ = build("lenet5", DatasetShape(3, 32, 32, 10))
    assert count_parameters(model) == (expected, expected)
    frozen, _ = build("lenet5", DatasetShape(3, 32, 32, 10), freeze="backbone")
    assert count_parameters(frozen) == (expected, 84 * 10 + 10)


def test_model_size_mb_is_the_serialized_size(tmp_path):
    model, _ = build("lenet5", DatasetShape(3, 32, 32, 10))
    size = model_size_mb(model)
    assert 0.2 < size < 0.3
    torch.save(model.state_dict(), tmp_path / "w.pt")
    assert size == pytest.approx((tmp_path / "w.pt").stat().st_size / 1e6, rel=1e-3)
    assert size == pytest.approx(4 * count_parameters(model)[0] / 1e6, rel=0.05)  # float32 weights
    big, _ = build("resnet18", DatasetShape(3, 32, 32, 10))
    assert model_size_mb(big) == pytest.approx(4 * count_parameters(big)[0] / 1e6, rel=0.05)
