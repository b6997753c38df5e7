"""Cached backbone features: with a frozen backbone, train only the head on features computed once.

    cached = cached_features(model, data, cfg, device)   # None where caching does not apply
    if cached:
        fit(cached.model, cached.data, cfg, device)      # trains model's own head, on features

With `--freeze backbone` and `--augment` resolving to none, the backbone maps each image to the
same vector in every epoch and every trial (it runs in eval mode, BatchNorm statistics frozen), so
those vectors, the head's inputs, are computed once and stored in `cache_dir()`. The key hashes
everything they depend on: the backbone's weights and buffers (so model name, pretrained weights
and initial seed), the preprocessing (input size, channels, normalisation), the split images and labels, the
device type and the torch version. Any change gives a new key, hence a new file; a study's trials
share one file. The head trained on the features is the model's own head module, so the full
model (backbone + trained head) is what gets logged and served. Test accuracy comes from the
cached test features too (equal to the whole model's, tests/test_features.py); test time is the
head's time now plus the backbone's, measured over the test split when the features were made.

Caching applies when the head is the network's last step (timm, torchvision and built-in models
but SqueezeNet-style heads, which are followed by a ReLU and pooling): checked on real images,
since a forward hook cannot see what the network does after the head.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .data import Split, Splits
from .models import Classifier

FORMAT = 1  # bump when the file layout or what a key covers changes
ENV = "MLPROJECT_CACHE_DIR"
_memo: dict[str, dict[str, torch.Tensor]] = {}  # key -> features, for trials in one process
_digests: dict[int, bytes] = {}  # id(tensor) -> digest, while the tensor lives (tensors compare by value)


@dataclass
class CachedFeatures:
    model: Classifier  # the head alone (shares its parameters with the full model)
    data: Splits  # float features (N, D) with the original labels
    key: str
    status: str  # "hit" (memory or disk) or "miss" (computed and stored)
    path: Path
    time_s: float  # computing or loading the features
    backbone_s: dict[str, float]  # seconds the backbone took per split when the features were computed


def cache_dir() -> Path:
    """$MLPROJECT_CACHE_DIR, else $XDG_CACHE_HOME/mlproject/features, else ~/.cache/mlproject/features."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlproject" / "features"


def applies(cfg: TrainConfig) -> bool:
    """Whether cfg asks for training the head on cached features."""
    return cfg.cache_features and cfg.freeze == "backbone" and cfg.augmentation() == "none"


class _HeadInput:
    """A forward pre-hook on the head that keeps its input (the backbone's features)."""

    def __init__(self, head: nn.Module):
        self.value = None
        self.handle = head.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.value = args[0]


@torch.no_grad()
def head_is_last(model: Classifier, images: torch.Tensor) -> bool:
    """True when model(images) equals head(backbone features) on these images: nothing runs
    after the head, so training the head on cached features is training the model."""
    model.eval()
    head = model.net.get_submodule(model.head)
    hook = _HeadInput(head)
    try:
        out = model(images)
    finally:
        hook.handle.remove()
    feats = hook.value
    return feats is not None and feats.dim() == 2 and torch.allclose(head(feats), out, rtol=1e-4, atol=1e-5)


def _digest(t: torch.Tensor) -> bytes:
    """sha256 of a tensor's bytes, once per tensor object: a study's trials share one Splits, so
    CIFAR-10's 150 MB are hashed once per worker, not once per trial (0.4 s each here). Split
    tensors are never changed in place (data.py builds new ones), so a tensor's digest stays true."""
    d = _digests.get(id(t))
    if d is None:
        d = _digests[id(t)] = hashlib.sha256(t.contiguous().numpy().tobytes()).digest()
        weakref.finalize(t, _digests.pop, id(t), None)  # the id may be reused once t is gone
    return d


def _hash_split(h, split: Split) -> None:
    h.update(_digest(split.labels))
    if split.images is not None:
        h.update(str((split.images.dtype, tuple(split.images.shape))).encode())
        h.update(_digest(split.images))
    else:  # streamed from files: their names, sizes and modification times, and the decode size
        for f in split.files:
            st = os.stat(f)
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        h.update(str((split.size, split.mode)).encode())


def cache_key(model: Classifier, data: Splits, device: torch.device) -> str:
    """Hex digest over the backbone's state, the preprocessing, the splits and the device type."""
    h = hashlib.sha256(f"mlproject-features-{FORMAT}|torch-{torch.__version__}|{device.type}".encode())
    head_prefix = model.head + "."
    for name, t in model.net.state_dict().items():  # parameters and buffers (BatchNorm statistics)
        if name.startswith(head_prefix) or name == model.head:
            continue
        h.update(name.encode())
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    p = model.preprocess
    if isinstance(p, nn.Module) and hasattr(p, "mean"):
        h.update(str((p.in_channels, p.out_channels, p.size)).encode())
        h.update(p.mean.cpu().numpy().tobytes() + p.std.cpu().numpy().tobytes())
    for split in (data.train, data.val, data.test):
        _hash_split(h, split)
    return h.hexdigest()[:32]


@torch.no_grad()
def compute_features(model: Classifier, split: Split, device: torch.device, batch_size: int = 256,
                     num_workers: int = 0) -> torch.Tensor:
    """The head's inputs for every image of `split`, float32 on the CPU, in split order."""
    from .train import autocast

    model.eval().to(device)
    head = model.net.get_submodule(model.head)
    hook = _HeadInput(head)
    out = []
    try:
        for images, _ in split.batches(batch_size, num_workers=num_workers):
            with autocast(device):
                model(images.to(device, non_blocking=True))
            out.append(hook.value.float())
    finally:
        hook.handle.remove()
    if not out:
        return torch.zeros((0, head.in_features if hasattr(head, "in_features") else 0))
    return torch.cat(out).cpu()


def _save(path: Path, feats: dict[str, torch.Tensor]) -> None:
    # write then rename: workers of one study that compute the same key at once never see half a file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(feats, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        feats = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not there yet, or damaged (disk full, killed writer on another file system): recompute
        return None
    return feats if isinstance(feats, dict) and {"train", "val", "test", "backbone_s"} <= feats.keys() else None


def cached_features(model: Classifier, data: Splits, cfg: TrainConfig, device: torch.device) -> CachedFeatures | None:
    """Features of data's splits for `model`'s frozen backbone, from memory, disk or computed
    (then stored); None when cfg does not ask for it or the head is not the network's last step."""
    if not applies(cfg) or not len(data.train):
        return None
    probe = data.train.first_images(min(4, len(data.train)))
    if not head_is_last(model.cpu(), probe):
        return None
    start = time.perf_counter()
    key = cache_key(model, data, device)
    path = cache_dir() / f"{key}.pt"
    status = "hit"
    feats = _memo.get(key) or _load(path)
    if feats is None:
        status = "miss"
        feats, seconds = {}, {}
        for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
            t = time.perf_counter()
            feats[name] = compute_features(model, split, device, max(cfg.batch_size, 256), cfg.num_workers)
            seconds[name] = time.perf_counter() - t
        feats["backbone_s"] = torch.tensor([seconds["train"], seconds["val"], seconds["test"]], dtype=torch.float64)
        _save(path, feats)
    _memo.clear()  # one study's features in memory at a time
    _memo[key] = feats
    head = model.net.get_submodule(model.head)
    head_model = Classifier(head, nn.Identity(), head="", frozen=False)
    fdata = Splits(Split(data.train.labels, images=feats["train"]), Split(data.val.labels, images=feats["val"]),
                   Split(data.test.labels, images=feats["test"]), data.info)
    backbone_s = dict(zip(("train", "val", "test"), feats["backbone_s"].tolist()))
    return CachedFeatures(head_model, fdata, key, status, path, time.perf_counter() - start, backbone_s)
