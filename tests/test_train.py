"""The training loop and evaluation on the real digits data (CPU)."""
import math

import numpy as np
import pytest
import torch

from mlproject.config import TrainConfig
from mlproject.data import create_dataset, peek_dataset
from mlproject.models import create_model, set_normalisation
from mlproject.train import (TrainingDiverged, augment, evaluate, fit, make_optimizer, make_scheduler,
                             seed_everything, select_device)

CPU = torch.device("cpu")


def build(**changes):
    cfg = TrainConfig(**{"model": "softmax", "epochs": 3, "lr": 0.1, "num_workers": 0, **changes}).validate()
    data = create_dataset(cfg)
    seed_everything(cfg.seed)  # initial weights from the seed, as experiment.prepare does
    model, info = create_model(cfg, peek_dataset(cfg))
    set_normalisation(model, data.info.mean, data.info.std)
    return cfg, model, data


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_every_optimizer_learns_digits(optimizer):
    cfg, model, data = build(optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 0.01, epochs=4)
    history = fit(model, data, cfg, CPU)
    assert [e.epoch for e in history.epochs] == [1, 2, 3, 4]
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    assert history.epochs[-1].val_accuracy > 0.85
    assert history.train_images == 4 * len(data.train)
    result = evaluate(model, data.test, CPU)
    assert result.accuracy > 0.85
    np.testing.assert_allclose(result.probs.sum(1), 1.0, rtol=1e-5)
    assert (result.y_pred == result.probs.argmax(1)).all()
    assert result.accuracy == pytest.approx((result.y_pred == data.test.labels.numpy()).mean())


def test_evaluate_on_the_cpu_runs_a_channels_last_copy_and_leaves_the_model_as_it_was():
    cfg, model, data = build(model="basecnn", epochs=1, lr=0.01)
    fit(model, data, cfg, CPU)
    before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    result = evaluate(model, data.test, CPU)
    # the caller's weights keep their values and their (contiguous) layout: training goes on in it
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k][0]) and v.stride() == before[k][1], k
    with torch.no_grad():  # the model's own NCHW forward: the same predictions, logits within float error
        logits = model(data.test.images)
    np.testing.assert_allclose(result.probs, torch.softmax(logits, 1).numpy(), atol=1e-5)
    assert (result.y_pred == logits.argmax(1).numpy()).all()


def test_a_convolution_as_large_as_a_dense_layer_keeps_its_layout_in_evaluate():
    from mlproject.train import DENSE_CONV_WEIGHTS, _inference_model
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    assert _inference_model(small, CPU) is not small
    assert _inference_model(small, CPU)[0].weight.is_contiguous(memory_format=torch.channels_last)
    dense = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(1, 1, (1, DENSE_CONV_WEIGHTS + 1)))
    assert _inference_model(dense, CPU) is dense  # timm's VGG head: slower in channels_last
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    assert _inference_model(linear, CPU) is linear  # nothing a layout changes


def test_evaluate_on_the_cpu_batches_by_the_cache_and_gives_the_same_results(monkeypatch):
    import mlproject.train as train
    from mlproject.train import INFERENCE_BATCH, _inference_batch_size, _inference_model

    cfg, model, data = build(model="basecnn", epochs=1, lr=0.01)
    fit(model, data, cfg, CPU)
    # basecnn's second convolution: 32 x 28 x 28 floats in, 64 x 28 x 28 out per image
    per_image = (32 + 64) * 28 * 28 * 4
    monkeypatch.setattr(train, "last_level_cache_bytes", lambda: 40 * per_image)  # a 40-image cache
    train._CPU_BATCH.clear()
    model.eval()
    assert _inference_batch_size(model, _inference_model(model, CPU), data.test, CPU, 64) == 20  # half of it
    capped = evaluate(model, data.test, CPU, 64)
    # a cache for thousands of images: the batch is the training one or INFERENCE_BATCH, the larger
    monkeypatch.setattr(train, "last_level_cache_bytes", lambda: 10_000 * per_image)
    train._CPU_BATCH.clear()
    assert _inference_batch_size(model, _inference_model(model, CPU), data.test, CPU, 64) == INFERENCE_BATCH
    assert _inference_batch_size(model, model, data.test, torch.device("cuda"), 512) == 512  # not the cache's
    whole = evaluate(model, data.test, CPU, 64)
    # each image's logits are its own: the batch changes nothing but float rounding
    np.testing.assert_allclose(capped.probs, whole.probs, atol=1e-5)
    assert (capped.y_pred == whole.y_pred).all() and capped.loss == pytest.approx(whole.loss, rel=1e-5)

    # a model whose weights do not fit in the cache's share keeps the larger batch (fewer reads of them)
    monkeypatch.setattr(train, "last_level_cache_bytes", lambda: 2 * sum(p.nbytes for p in model.parameters()) - 8)
    train._CPU_BATCH.clear()
    assert _inference_batch_size(model, _inference_model(model, CPU), data.test, CPU, 64) == INFERENCE_BATCH
    assert sum(p.nbytes for p in model.parameters()) > 0.5 * train.last_level_cache_bytes()


def test_the_last_level_cache_is_read_from_linux_sysfs():
    from mlproject.train import last_level_cache_bytes
    import pathlib
    sizes = [p.read_text().strip() for p in pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size")]
    if not sizes:
        pytest.skip("no cache sizes in this machine's sysfs")
    assert last_level_cache_bytes() == max(int(s[:-1]) * {"K": 2**10, "M": 2**20}[s[-1]] for s in sizes)


def test_same_seed_gives_same_metrics_on_cpu():
    runs = []
    for _ in range(2):
        cfg, model, data = build(model="smallcnn", epochs=2, augment="crop+flip")
        runs.append([(e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy) for e in fit(model, data, cfg, CPU).epochs])
    assert runs[0] == runs[1]
    cfg, model, data = build(model="smallcnn", epochs=2, augment="crop+flip", seed=1)
    other = [(e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy) for e in fit(model, data, cfg, CPU).epochs]
    assert other != runs[0]


def test_non_finite_loss_stops_training_with_a_clear_error():
    cfg, model, data = build()
    with torch.no_grad():
        model.net.classifier.weight[0, 0] = float("nan")  # an injected non-finite loss
    with pytest.raises(TrainingDiverged, match=r"training loss became (nan|inf) in epoch 1 .*lower the learning rate"):
        fit(model, data, cfg, CPU)


def test_on_epoch_sees_every_epoch_and_can_stop_training():
    cfg, model, data = build(epochs=5)
    seen = []

    def on_epoch(stats):
        seen.append(stats)
        if stats.epoch == 2:
            raise KeyError("stop")

    with pytest.raises(KeyError):
        fit(model, data, cfg, CPU, on_epoch=on_epoch)
    assert [s.epoch for s in seen] == [1, 2]
    assert all(math.isfinite(s.val_loss) and s.epoch_time_s > 0 for s in seen)


def test_frozen_backbone_keeps_batchnorm_statistics():
    cfg, model, data = build(model="smallcnn", freeze="backbone", epochs=1)
    bn = model.net.features[4]
    before = bn.running_mean.clone()
    weights = model.net.features[0].weight.clone()
    fit(model, data, cfg, CPU)
    assert torch.equal(bn.running_mean, before)
    assert torch.equal(model.net.features[0].weight, weights)


@pytest.mark.parametrize("scheduler, lrs", [
    ("none", [0.1, 0.1, 0.1]),
    ("step", [0.1, 0.01, 0.001]),
    ("cosine", [0.1, 0.075, 0.025]),
])
def test_schedulers_set_the_learning_rate_per_epoch(scheduler, lrs):
    cfg, model, data = build(scheduler=scheduler, epochs=3)
    history = fit(model, data, cfg, CPU)
    assert [e.lr for e in history.epochs] == pytest.approx(lrs)


def test_adam_uses_momentum_as_beta1_and_sgd_nesterov():
    params = [torch.nn.Parameter(torch.zeros(2))]
    adam = make_optimizer(TrainConfig(optimizer="adam", momentum=0.8), params)
    assert adam.param_groups[0]["betas"] == (0.8, 0.999)
    sgd = make_optimizer(TrainConfig(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=1e-4), params)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["weight_decay"] == 1e-4
    assert make_scheduler(TrainConfig(scheduler="none"), sgd) is None


def test_augment_crops_and_flips_per_sample_deterministically():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    # every output value is either an input value or the zero padding
    assert set(a.unique().tolist()) <= set(x.unique().tolist()) | {0.0}


def test_affine_moves_each_image_its_own_way_within_its_bounds():
    from mlproject.train import AFFINE_DEGREES, AFFINE_SCALE, AFFINE_SHIFT

    # a bright square at the centre of a 32 px image, 64 times: where it lands and how big it is
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0
    a = augment(x, torch.Generator().manual_seed(0), crop=False, flip=False, affine=True)
    b = augment(x, torch.Generator().manual_seed(0), crop=False, flip=False, affine=True)
    assert a.shape == x.shape and torch.equal(a, b)  # deterministic for one seed
    assert len({tuple(img.flatten().round(decimals=3).tolist()) for img in a}) == 64  # per image, not per batch
    mass = a.sum((1, 2, 3))
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cy, cx = (a[:, 0] * ys).sum((1, 2)) / mass, (a[:, 0] * xs).sum((1, 2)) / mass
    # translation: up to AFFINE_SHIFT of the half-size (2.4 px at 32 px), rotation and scale about the centre
    shift = AFFINE_SHIFT * 16 + 0.6  # + the bilinear resampling's own offset
    assert (cy - 15.5).abs().max() <= shift and (cx - 15.5).abs().max() <= shift
    assert (cy - 15.5).abs().max() > 1.0  # it did move some images by more than a pixel
    # area scales by scale^2 (rotation keeps it): 64 px at scale 1
    assert mass.min() >= 64 * (1 - AFFINE_SCALE) ** 2 - 4 and mass.max() <= 64 * (1 + AFFINE_SCALE) ** 2 + 4

    # rotation: a thin horizontal bar through the centre of a 64 px image, 64 times; each output bar's
    # orientation is its pixel mass's principal axis (second central moments), 0 for the input
    bar = torch.zeros(64, 1, 64, 64)
    bar[:, :, 31:33, 8:56] = 1.0
    out = augment(bar, torch.Generator().manual_seed(1), crop=False, flip=False, affine=True)[:, 0]
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    mass = out.sum((1, 2))
    dy = ys - ((out * ys).sum((1, 2)) / mass)[:, None, None]
    dx = xs - ((out * xs).sum((1, 2)) / mass)[:, None, None]
    mu20, mu02, mu11 = (out * dx * dx).sum((1, 2)), (out * dy * dy).sum((1, 2)), (out * dx * dy).sum((1, 2))
    degrees = torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))
    assert degrees.abs().max() <= AFFINE_DEGREES + 1.0, degrees  # within its bound (+ resampling's error)
    assert degrees.abs().max() >= 0.8 * AFFINE_DEGREES, degrees  # and up to it: 64 uniform draws
    assert (degrees > 3).sum() >= 10 and (degrees < -3).sum() >= 10, degrees  # both ways, per image


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (C, H, W) moved by (dy, dx) pixels, zeros where it moved from outside."""
    c, h, w = x.shape
    out = torch.zeros_like(x)
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def what_augment_did(out: torch.Tensor, x: torch.Tensor, pad: int) -> list[tuple[bool, int, int]]:
    """For each output image, (mirrored, dy, dx) such that it is x (mirrored or not) moved by (dy, dx),
    |dy|, |dx| <= pad; AssertionError for an output that is neither."""
    found = []
    for i, o in enumerate(out):
        matches = [(m, dy, dx) for m in (False, True) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
                   if torch.equal(o, shifted(x.flip(2) if m else x, dy, dx))]
        assert len(matches) == 1, f"sample {i} is no translation of the input or of its mirror image"
        found += matches
    return found


# an asymmetric image (every pixel differs, none is 0): a translation and a mirror image never coincide
IMAGE = torch.arange(1, 3 * 16 * 16 + 1, dtype=torch.float32).view(3, 16, 16)
SAMPLES = 200


def test_crop_only_translates_never_mirrors():
    out = augment(IMAGE.expand(SAMPLES, -1, -1, -1), torch.Generator().manual_seed(0), crop=True, flip=False)
    found = what_augment_did(out, IMAGE, pad=2)  # 16 px: padding 16/8
    assert not any(m for m, _, _ in found)
    assert {(dy, dx) for _, dy, dx in found} == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}


def test_flip_only_mirrors_never_shifts():
    out = augment(IMAGE.expand(SAMPLES, -1, -1, -1), torch.Generator().manual_seed(0), crop=False, flip=True)
    found = what_augment_did(out, IMAGE, pad=2)
    assert {(dy, dx) for _, dy, dx in found} == {(0, 0)}
    mirrored = sum(m for m, _, _ in found)
    assert 0.3 * SAMPLES < mirrored < 0.7 * SAMPLES  # each sample with probability 1/2


def test_crop_and_flip_does_both():
    out = augment(IMAGE.expand(SAMPLES, -1, -1, -1), torch.Generator().manual_seed(0), crop=True, flip=True)
    found = what_augment_did(out, IMAGE, pad=2)
    assert {m for m, _, _ in found} == {False, True}
    assert any(m and (dy, dx) != (0, 0) for m, dy, dx in found)  # mirrored and moved in one sample
    assert len({(dy, dx) for _, dy, dx in found}) == 25


@pytest.mark.parametrize("value, dataset, applied", [
    ("true", "digits", (True, False, False)),  # the digits default: crops, no flips
    ("none", "digits", None),
    ("flip", "digits", (False, True, False)),
    ("crop,flip", "digits", (True, True, False)),
    ("affine", "digits", (False, False, True)),
    ("flip+affine", "digits", (False, True, True)),
])
def test_fit_applies_what_augment_resolves_to(monkeypatch, value, dataset, applied):
    from mlproject import train as train_mod

    calls = []

    def spy(x, generator=None, crop=True, flip=True, affine=False):
        calls.append((crop, flip, affine))
        return augment(x, generator, crop=crop, flip=flip, affine=affine)

    monkeypatch.setattr(train_mod, "augment", spy)
    cfg, model, data = build(augment=value, dataset=dataset, epochs=1)
    fit(model, data, cfg, CPU)
    assert set(calls) == ({applied} if applied else set())
    if applied:
        assert len(calls) == math.ceil(len(data.train) / cfg.batch_size)  # every training batch


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (True, False, "cuda"),
                                                 (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert select_device("auto") == torch.device(expected)
    assert select_device() == torch.device(expected)  # auto is the default


def test_named_device_is_that_device_or_refused(monkeypatch):
    assert torch.zeros(2, device=select_device("cpu")).device == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"^--device cuda: no CUDA device is available$"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("cuda") == torch.device("cuda")  # named: taken as it is, no fallback to the CPU
    with pytest.raises(RuntimeError, match="tpu"):  # not a device type: torch's own error names it
        select_device("tpu")


# ------------------------------------------------------------------ device-resident data, compile

def test_resident_moves_a_split_only_to_a_cuda_device_with_room(monkeypatch):
    """CUDA's decision, made on the CPU: the split moves when it takes at most half the free memory."""
    from mlproject import train as train_mod
    from mlproject.data import Split

    split = Split(torch.zeros(10, dtype=torch.long), images=torch.zeros(10, 3, 4, 4, dtype=torch.uint8))
    assert split.nbytes == 10 * 48 + 10 * 8
    assert train_mod.resident(split, CPU) is split
    moved = []
    monkeypatch.setattr(Split, "to", lambda self, device: moved.append(str(device)) or self)
    for free, expected in ((2 * split.nbytes, ["cuda"]), (2 * split.nbytes - 1, [])):
        moved.clear()
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 10 * free))
        train_mod.resident(split, torch.device("cuda"))
        assert moved == expected, free
    streamed = Split(torch.zeros(2, dtype=torch.long), files=["a.png", "b.png"], size=(4, 4))
    assert train_mod.resident(streamed, torch.device("cuda")) is streamed and streamed.nbytes == 0


def test_split_to_its_own_device_is_itself_and_batches_are_the_same():
    cfg, model, data = build()
    assert data.train.to(CPU) is data.train
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    a = [y for _, y in data.train.batches(64, shuffle=True, generator=gen())]
    b = [y for _, y in data.train.to(CPU).batches(64, shuffle=True, generator=gen())]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_in_memory_training_matches_the_dataloader_path_on_digits(tmp_path, monkeypatch):
    """The digits written as PNG files, trained once from memory (tensors sliced per batch) and once
    streamed through a DataLoader: the same accuracy within a small tolerance."""
    from PIL import Image
    from sklearn.datasets import load_digits

    import mlproject.data as data_mod

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = tmp_path / "digits" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(image * 255 / 16).astype(np.uint8), "L").save(folder / f"{i:04d}.png")
    cfg = TrainConfig(model="softmax", dataset=str(tmp_path / "digits"), epochs=3, lr=0.1, num_workers=0)
    results = []
    for limit in (data_mod.MAX_IN_MEMORY_BYTES, 0):  # in memory, then streamed
        monkeypatch.setattr(data_mod, "MAX_IN_MEMORY_BYTES", limit)
        data = create_dataset(cfg)
        torch.manual_seed(0)  # the same initial weights for both
        model, _ = create_model(cfg, peek_dataset(cfg))
        set_normalisation(model, data.info.mean, data.info.std)
        history = fit(model, data, cfg, CPU)
        results.append((data.info.in_memory, history.epochs[-1].val_accuracy, evaluate(model, data.test, CPU).accuracy))
    (mem, val_mem, test_mem), (stream, val_stream, test_stream) = results
    assert mem and not stream
    assert test_mem > 0.85 and abs(test_mem - test_stream) <= 0.01 and abs(val_mem - val_stream) <= 0.01


@pytest.mark.slow
def test_compile_trains_to_the_same_accuracy():
    """--compile (torch.compile, inductor on the CPU here) learns digits like the eager model."""
    results = []
    for compiled in (False, True):
        cfg, model, data = build(model="mlp", compile=compiled, epochs=2)
        fit(model, data, cfg, CPU)
        results.append(evaluate(model, data.test, CPU).accuracy)
    assert results[0] > 0.85 and abs(results[0] - results[1]) <= 0.02


def test_epoch_stats_are_the_catalogues_epoch_metrics():
    """What fit reports per epoch is what mlproject.metrics declares per epoch, in its order (runs
    log EpochStats' fields under these names)."""
    from dataclasses import fields

    from mlproject.metrics import epoch_metrics
    from mlproject.train import EpochStats

    assert tuple(f.name for f in fields(EpochStats)) == ("epoch", *epoch_metrics())
