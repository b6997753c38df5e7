"""Models: any timm or torchvision classifier, or a built-in network, with a new head.

    model, info = create_model(cfg, shape)   # shape: data.DatasetShape
    logits = model(uint8_images)             # preprocessing (channels, size, normalisation) inside

Names resolve in this order: built-in, timm, torchvision; `timm:NAME` / `tv:NAME` choose
explicitly (resnet18 is in both: bare `resnet18` is timm's).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import first_line
from .builtin import BUILTINS, create_builtin
from .config import ConfigError, TrainConfig
from .data import DatasetShape
from .model_names import known_names, list_models, resolve  # noqa: F401 (list_models: re-exported)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Training from scratch at the data's own size, but never below 32 px: ImageNet backbones
# downsample by 32, and 8x8 digits through resnet18 would leave no spatial extent to learn from.
MIN_SCRATCH_SIZE = 32


@dataclass
class ModelInfo:
    """How the network was made and what input it reads."""

    name: str  # resolved name, without prefix
    source: str  # "builtin" | "timm" | "torchvision"
    in_channels: int
    input_size: int  # square side in px
    mean: tuple[float, ...] | None  # normalisation of the pretrained weights; None: data statistics
    std: tuple[float, ...] | None
    head: str  # module path of the classifier inside the network
    first_layer: str | None  # module path of the layer that reads the image



class Preprocess(nn.Module):
    """uint8 (or [0, 1] float) images in the data's layout -> the network's normalised input.

    Runs on the batch, on the training device: channel adaptation (grey repeated to RGB, RGB
    averaged to grey), bilinear resize to `size`, and (x - mean) / std.
    """

    def __init__(self, in_channels: int, out_channels: int, size: int, mean, std):
        super().__init__()
        self.in_channels, self.out_channels, self.size = in_channels, out_channels, size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] != self.out_channels:
            x = x.mean(1, keepdim=True) if self.out_channels == 1 else x.expand(-1, self.out_channels, -1, -1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.size)
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Preprocess + network. `forward` returns logits; `head` names the trainable head.

    With `frozen=True` everything but the head stays in eval mode while training, so BatchNorm
    running statistics of the frozen backbone do not drift.
    """

    def __init__(self, net: nn.Module, preprocess: Preprocess, head: str, frozen: bool = False):
        super().__init__()
        self.net, self.preprocess, self.head, self.frozen = net, preprocess, head, frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen and mode:
            self.net.eval()
            self.net.get_submodule(self.head).train()
        return self


class Probabilities(nn.Module):
    """The logged model: images (float32 in [0, 1], N x C x H x W as the data) -> class probabilities."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x).float(), dim=1)


# ---------------------------------------------------------------------------------------------
# names

def resolve_model(name: str) -> tuple[str, str]:
    """(source, name) for a --model value; ConfigError with close matches if it is unknown
    (model_names.resolve, on the cached names: timm is not imported to check a name)."""
    return resolve(name, known_names())


# ---------------------------------------------------------------------------------------------
# creation

def create_model(cfg: TrainConfig, shape: DatasetShape) -> tuple[Classifier, ModelInfo]:
    """Build cfg.model for `shape` (the data's channels, size and classes), with cfg's head/freeze.

    Pretrained weights get the normalisation they were trained with (info.mean/std); otherwise
    the model normalises with placeholders until `set_normalisation` gives it the training data's
    statistics (the model is made before the data is loaded, so bad names fail fast).
    Raises ConfigError for unknown names and unreachable pretrained weights.
    """
    source, name = resolve_model(cfg.model)
    if cfg.pretrained and source == "builtin":
        raise ConfigError(f"--pretrained: built-in model {name!r} has no pretrained weights; "
                          "use a timm or torchvision model")
    native = max(shape.height, shape.width)
    if source == "builtin":
        in_ch = shape.channels
        size = cfg.image_size or BUILTINS[name][1] or native
        try:
            net = create_builtin(name, in_ch, shape.num_classes, size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        norm, first = (None, None), _first_layer_name(net)
    elif source == "timm":
        net, size, norm = _timm(name, cfg, native)
        in_ch, first = 3, net.pretrained_cfg.get("first_conv")
    else:
        net, size, norm = _torchvision(name, cfg, native)
        in_ch, first = 3, _first_layer_name(net)
    head = _replace_head(net, shape.num_classes, cfg, keep=(source == "builtin" and cfg.head == "linear" and not cfg.head_dropout))
    if cfg.freeze == "backbone":
        for p in net.parameters():
            p.requires_grad_(False)
        for p in net.get_submodule(head).parameters():
            p.requires_grad_(True)
    mean, std = norm if norm[0] is not None else ((0.5,), (0.25,))
    preprocess = Preprocess(shape.channels, in_ch, size, _fit_channels(mean, in_ch), _fit_channels(std, in_ch))
    model = Classifier(net, preprocess, head, frozen=cfg.freeze == "backbone")
    info = ModelInfo(name, source, in_ch, size, norm[0], norm[1], head, first)
    return model, info


def set_normalisation(model: Classifier, mean, std) -> None:
    """Set the preprocessing statistics (data statistics for models trained from scratch)."""
    c = model.preprocess.out_channels
    model.preprocess.mean.copy_(torch.tensor(_fit_channels(mean, c)).view(1, -1, 1, 1))
    model.preprocess.std.copy_(torch.tensor(_fit_channels(std, c)).view(1, -1, 1, 1))


def _fit_channels(values, channels: int) -> tuple[float, ...]:
    """Statistics of 1-channel data used for a 3-channel network are repeated, and vice versa averaged."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    return (sum(values) / len(values),) * channels


def _weights_error(name: str, e: Exception, where: str) -> ConfigError:
    first = first_line(e)
    return ConfigError(f"pretrained weights for {name!r} could not be loaded ({type(e).__name__}: {first[:200]}); "
                       f"no network? put them in {where}, or train without --pretrained")


def _timm(name: str, cfg: TrainConfig, native: int):
    import timm

    overlay = _cached_timm_weights(name) if cfg.pretrained else None
    try:
        net = timm.create_model(name, pretrained=cfg.pretrained, pretrained_cfg_overlay=overlay)
    except Exception as e:  # hub/network errors come in many types (OSError, HfHubHTTPError, ...)
        if not cfg.pretrained:
            raise
        raise _weights_error(name, e, "the Hugging Face cache (~/.cache/huggingface, HF_HOME)") from None
    pc = net.pretrained_cfg
    if cfg.image_size:
        size = cfg.image_size
    elif cfg.pretrained or pc.get("fixed_input_size"):
        size = pc["input_size"][-1]
    else:
        size = max(native, MIN_SCRATCH_SIZE)
    norm = (tuple(pc.get("mean", IMAGENET_MEAN)), tuple(pc.get("std", IMAGENET_STD))) if cfg.pretrained else (None, None)
    return net, size, norm


def _reachable(host: str, port: int = 443, timeout_s: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _cached_timm_weights(name: str) -> dict | None:
    """Offline, point timm at weights already in the Hugging Face cache, or fail at once.

    huggingface_hub retries an unreachable hub five times with backoff (53 s measured here)
    before timm gives up; one 3-second connection attempt answers the same question.
    """
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE or _reachable(constants.ENDPOINT.split("://")[-1].split("/")[0]):
        return None
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id if timm.models.get_pretrained_cfg(name) else None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename) if repo else None
        if isinstance(path, str):
            return {"file": path}
    raise ConfigError(f"pretrained weights for {name!r} are not in the Hugging Face cache and "
                      f"{constants.ENDPOINT} is unreachable; put them in ~/.cache/huggingface (HF_HOME) "
                      "or train without --pretrained")


def _torchvision(name: str, cfg: TrainConfig, native: int):
    import torchvision

    weights = None
    if cfg.pretrained:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        try:
            net = torchvision.models.get_model(name, weights=weights)
        except Exception as e:  # URLError, HTTPError, RuntimeError: not cached and not fetchable
            raise _weights_error(name, e, "the torch hub cache (~/.cache/torch/hub/checkpoints, TORCH_HOME)") from None
    else:
        net = torchvision.models.get_model(name, weights=None)
    if cfg.image_size:
        size = cfg.image_size
    elif weights is not None:
        size = int(weights.transforms().crop_size[0])
    elif name.startswith(("vit_", "swin_", "maxvit")):  # fixed-size positional embeddings / windows
        size = 224
    else:
        size = max(native, MIN_SCRATCH_SIZE)
    norm = (IMAGENET_MEAN, IMAGENET_STD) if cfg.pretrained else (None, None)
    return net, size, norm


def _first_layer_name(net: nn.Module) -> str | None:
    for path, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            return path
    return None


def _classifier_path(net: nn.Module) -> str:
    """Module path of the classifier: timm's own answer, else the last Linear (or 1x1 Conv2d for
    SqueezeNet-style heads)."""
    if hasattr(net, "get_classifier") and hasattr(net, "pretrained_cfg"):
        target = net.get_classifier()
        for path, m in net.named_modules():
            if m is target:
                return path
    last = None
    for path, m in net.named_modules():
        if isinstance(m, nn.Linear):
            last = path
    if last is None:
        for path, m in net.named_modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
                last = path
    if last is None:
        raise ConfigError(f"cannot find the classifier layer of {type(net).__name__}")
    return last


def _replace_head(net: nn.Module, num_classes: int, cfg: TrainConfig, keep: bool) -> str:
    """Replace the classifier with a new linear or MLP head for `num_classes`; return its path."""
    path = _classifier_path(net)
    if keep:
        return path
    old = net.get_submodule(path)
    conv = isinstance(old, nn.Conv2d)
    in_f = old.in_channels if conv else old.in_features
    layer = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
    if cfg.head == "linear":
        head = nn.Sequential(nn.Dropout(cfg.head_dropout), layer(in_f, num_classes)) if cfg.head_dropout else layer(in_f, num_classes)
    else:
        head = nn.Sequential(layer(in_f, cfg.head_hidden), nn.ReLU(), nn.Dropout(cfg.head_dropout),
                             layer(cfg.head_hidden, num_classes))
    net.set_submodule(path, head)
    return path


# ---------------------------------------------------------------------------------------------
# sizes

def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def model_size_mb(model: nn.Module) -> float:
    """Size of the serialized weights (torch.save of the state_dict) in MB (10^6 bytes), the
    'Model Size' column of the reports (seed 001: 565KB for BaseCNN)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 1e6
