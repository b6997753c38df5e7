"""Cached backbone features: same results as the uncached path, reused by key, rebuilt on change."""
from __future__ import annotations

import pytest
import torch

import mlproject.features as features
from mlproject.config import TrainConfig
from mlproject.app.experiment import prepare, run_training
from mlproject.train import fit

FROZEN = dict(freeze="backbone", epochs=2, num_workers=0, lr=0.05, head_dropout=0.2, log_model=False,
              experiment="features")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache dir and memo; `cache.computed` counts feature computations per split."""
    monkeypatch.setenv(features.ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(features, "_memo", {})
    computed = []
    real = features.compute_features

    def counting(*a, **k):
        computed.append(1)
        return real(*a, **k)

    monkeypatch.setattr(features, "compute_features", counting)
    return computed


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smallcnn", "resnet18", "tv:mobilenet_v3_small"])
def test_cached_and_uncached_give_the_same_run(store, cache, model):
    """Same seed: the same per-epoch losses and accuracies, the same test accuracy (within float
    tolerance); the cached run trains the head on features (tag miss) and logs it."""
    uncached = run_training(TrainConfig(model=model, cache_features=False, **FROZEN))
    cached = run_training(TrainConfig(model=model, **FROZEN))
    assert len(cache) == 3  # train, val, test: computed once each
    for u, c in zip(uncached.history.epochs, cached.history.epochs, strict=True):
        assert c.train_loss == pytest.approx(u.train_loss, rel=1e-4)
        assert c.train_accuracy == pytest.approx(u.train_accuracy, abs=1e-9)
        assert c.val_loss == pytest.approx(u.val_loss, rel=1e-4)
        assert c.val_accuracy == pytest.approx(u.val_accuracy, abs=1e-9)
    assert cached.metrics["test_accuracy"] == pytest.approx(uncached.metrics["test_accuracy"], abs=1e-9)
    assert cached.metrics["final_train_accuracy"] == pytest.approx(uncached.metrics["final_train_accuracy"], abs=1e-9)
    u_run, c_run = store.get_run(uncached.run_id), store.get_run(cached.run_id)
    assert u_run.data.tags["feature_cache"] == "off" and c_run.data.tags["feature_cache"] == "miss"
    assert c_run.data.params["cache_features"] == "True"
    assert c_run.data.metrics["feature_cache_time_s"] > 0 and "feature_cache_time_s" not in u_run.data.metrics
    assert c_run.data.metrics["test_time_s"] > 0 and c_run.data.metrics["test_throughput_ips"] > 0
    # the whole model was trained: its head's weights moved, its backbone's did not
    assert c_run.data.metrics["params_trainable"] < c_run.data.metrics["params_total"]


def test_cache_is_reused_in_memory_and_on_disk(cache, tmp_path):
    cfg = TrainConfig(model="lenet5", **FROZEN)
    first = prepare(cfg)
    assert first.features.status == "miss" and first.features.path.exists() and len(cache) == 3
    second = prepare(cfg, data=first.data)  # the next trial in this worker: from memory
    assert second.features.status == "hit" and second.features.key == first.features.key and len(cache) == 3
    features._memo.clear()  # another worker process: from disk
    third = prepare(cfg, data=first.data)
    assert third.features.status == "hit" and len(cache) == 3
    assert torch.equal(third.features.data.train.images, first.features.data.train.images)
    # the backbone's measured time travels with the features: a hit reports the same test time share
    assert third.features.backbone_s == first.features.backbone_s and first.features.backbone_s["test"] > 0
    kept = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith("model-names-")]  # model_names' too
    assert kept == [first.features.path]  # no temp files left


@pytest.mark.parametrize("change", [
    {"image_size": 24},  # preprocessing: input size
    {"seed": 1},  # initial (frozen) weights and the split
    {"val_fraction": 0.2},  # the data in each split
    {"model": "basecnn"},  # another backbone
])
def test_cache_key_changes_with_what_features_depend_on(cache, change):
    base = prepare(TrainConfig(model="lenet5", **FROZEN))
    other = prepare(TrainConfig(**{**TrainConfig(model="lenet5", **FROZEN).to_params(), **change}))
    assert other.features.status == "miss" and other.features.key != base.features.key
    assert other.features.path != base.features.path and base.features.path.exists()


def test_cache_key_changes_with_weights_and_normalisation(cache):
    p = prepare(TrainConfig(model="lenet5", **FROZEN))
    key = features.cache_key(p.model, p.data, p.device)
    with torch.no_grad():
        p.model.preprocess.mean.add_(0.01)
    assert features.cache_key(p.model, p.data, p.device) != key
    with torch.no_grad():
        p.model.preprocess.mean.sub_(0.01)
        head = p.model.net.get_submodule(p.model.head)
        next(head.parameters()).add_(1.0)  # the head is trained: its weights are not part of the key
    assert features.cache_key(p.model, p.data, p.device) == key
    with torch.no_grad():
        next(p.model.net.parameters()).add_(1.0)  # a backbone weight
    assert features.cache_key(p.model, p.data, p.device) != key


@pytest.mark.parametrize("options, tag", [
    (dict(augment="true"), "off"),  # features differ every epoch
    (dict(augment="flip"), "off"),
    (dict(freeze="none"), "off"),
    (dict(cache_features=False), "off"),
    (dict(model="tv:squeezenet1_0"), "unsupported"),  # ReLU and pooling follow its 1x1-conv head
])
def test_cache_does_not_apply(store, cache, options, tag):
    cfg = TrainConfig(**{**TrainConfig(model="lenet5", **FROZEN).to_params(), "epochs": 1, **options})
    p = prepare(cfg)
    assert p.features is None and cache == [] and p.trained == (p.model, p.data)
    if options.get("model"):  # squeezenet: tagged, trained the uncached way
        result = run_training(cfg, p)
        assert store.get_run(result.run_id).data.tags["feature_cache"] == tag


@pytest.mark.parametrize("augment, applies", [
    ("none", True), ("false", True), ("0", True), ("crop", False), ("flip", False), ("crop,flip", False), ("true", False),
])
def test_cache_applies_only_where_augmentation_resolves_to_none(augment, applies):
    assert features.applies(TrainConfig(model="lenet5", augment=augment, **FROZEN)) is applies


def test_head_trained_on_features_is_the_models_head(cache):
    cfg = TrainConfig(model="smallcnn", **FROZEN)
    p = prepare(cfg)
    head_model, fdata = p.trained
    backbone_before = {k: v.clone() for k, v in p.model.net.state_dict().items() if not k.startswith(p.model.head)}
    fit(head_model, fdata, cfg, p.device)
    with torch.no_grad():
        logits = p.model(p.data.test.images)
        assert torch.allclose(head_model(fdata.test.images), logits, rtol=1e-4, atol=1e-4)
    after = p.model.net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in backbone_before.items())


def test_split_digests_are_computed_once_per_tensor_and_follow_the_data(cache):
    p = prepare(TrainConfig(model="lenet5", **FROZEN))
    key = features.cache_key(p.model, p.data, p.device)
    assert id(p.data.train.images) in features._digests  # remembered for the next trial
    copy = p.data.train.images.clone()
    copy[0, 0, 0, 0] ^= 1  # one pixel of another tensor: another digest, another key
    from mlproject.data import Split, Splits

    changed = Splits(Split(p.data.train.labels, images=copy), p.data.val, p.data.test, p.data.info)
    assert features.cache_key(p.model, changed, p.device) != key
    assert features.cache_key(p.model, p.data, p.device) == key
    n = len(features._digests)
    del changed, copy  # a tensor gone: its digest is forgotten, so a new tensor at its id is hashed anew
    import gc

    gc.collect()
    assert len(features._digests) == n - 1
