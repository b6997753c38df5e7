"""Checkpoints of the training loop (mlproject.train.Checkpoint) on the real digits data (CPU): a run
stopped mid-epoch (by a callback, or by a real SIGTERM at a batch boundary), saved to disk and
resumed in a fresh model ends bit for bit where the uninterrupted run ends, for fit and for
cross_validate; checkpoints of other runs are refused with one line."""
from __future__ import annotations

import dataclasses
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from mlproject import signals
from mlproject.config import TrainConfig
from mlproject.data import Split, create_dataset, peek_dataset
from mlproject.models import create_model, set_normalisation
from mlproject.signals import Interrupted, handle_signals
from mlproject.train import (NOT_TRAINING_OPTIONS, Checkpoint, CheckpointError, History, cross_validate, fit,
                             seed_everything, training_options)

CPU = torch.device("cpu")
# smallcnn: convolutions and BatchNorm (running statistics, batch counters); crop+flip: the
# augmentation generator; an mlp head with dropout: the global torch generator; cosine: a scheduler
# whose state is the learning rate's; SGD with momentum: an optimizer state. 16 px: 0.2-0.5 s an epoch.
OPTIONS = {"model": "smallcnn", "image_size": 16, "epochs": 3, "lr": 0.05, "augment": "crop+flip", "head": "mlp",
           "head_dropout": 0.2, "scheduler": "cosine", "num_workers": 0}
BATCHES = 20  # per epoch: 1,257 training digits in batches of 64


class Stop(Exception):
    """Raised from on_checkpoint: the run stops after that checkpoint."""


@pytest.fixture(scope="module")
def digits():
    return create_dataset(TrainConfig(**OPTIONS).validate())


def build(data, **changes):
    cfg = TrainConfig(**{**OPTIONS, **changes}).validate()
    seed_everything(cfg.seed)  # initial weights from the seed, as experiment.prepare does
    model, _ = create_model(cfg, peek_dataset(cfg))
    set_normalisation(model, data.info.mean, data.info.std)
    return cfg, model


def disturb():
    """Draw from every global generator, as whatever ran in a process before a resume would."""
    random.random(), np.random.rand(), torch.rand(7)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different


def assert_same_history(a: History, b: History):
    """Every EpochStats field but its times identical (repr: exact for floats, and nan is nan), and
    the images counted."""
    strip = lambda h: [{k: repr(v) for k, v in dataclasses.asdict(e).items()  # noqa: E731
                        if k not in ("epoch_time_s", "val_time_s")}
                       for e in h.epochs]
    assert strip(a) == strip(b)
    assert a.train_images == b.train_images


@pytest.fixture(scope="module")
def reference(digits):
    """The uninterrupted run: (model, history)."""
    cfg, model = build(digits)
    return model, fit(model, digits, cfg, CPU)


@pytest.fixture
def own_signal_handlers():
    """handle_signals() in this process for the test; the previous handlers back after it."""
    before = {s: signal.getsignal(s) for s in signals.NAMES}
    handle_signals()
    yield
    for s, handler in before.items():
        signal.signal(s, handler)
    assert not signals.pending()


def test_a_run_stopped_mid_epoch_and_resumed_from_disk_ends_bit_for_bit_as_the_uninterrupted_one(
        digits, reference, tmp_path):
    path = tmp_path / "run.ckpt"

    def on_checkpoint(ckpt: Checkpoint):
        if (ckpt.epoch, ckpt.batch) == (2, 7):
            ckpt.save(path)
            raise Stop

    cfg, model = build(digits)
    with pytest.raises(Stop):
        fit(model, digits, cfg, CPU, on_checkpoint=on_checkpoint, checkpoint_every_s=0)  # 0: at every batch

    disturb()
    cfg, fresh = build(digits, run_name="resumed", experiment="other", num_workers=1)  # not training options
    ckpt = Checkpoint.load(path, cfg)
    assert (ckpt.epoch, ckpt.batch, ckpt.seen, ckpt.fold) == (2, 7, 7 * 64, 0)
    assert [e.epoch for e in ckpt.history.epochs] == [1] and ckpt.history.train_images == len(digits.train)
    history = fit(fresh, digits, cfg, CPU, resume=ckpt)
    assert_same_weights(fresh, reference[0])
    assert_same_history(history, reference[1])
    assert [e.epoch for e in history.epochs] == [1, 2, 3]


@pytest.mark.parametrize("where", ["batch", "validation", "on_epoch"])
def test_a_sigterm_writes_the_checkpoint_before_interrupted_and_it_resumes_exactly(
        digits, reference, tmp_path, own_signal_handlers, where):
    """A real SIGTERM to this process: in the 27th training step (epoch 2, batch 7), in epoch 2's
    validation, or in epoch 1's on_epoch callback. The checkpoint is written at the next batch
    boundary (after the current batch; no step after it), then Interrupted comes."""
    path = tmp_path / "run.ckpt"
    cfg, model = build(digits)
    steps, order, sent = [], [], []

    def sigterm():  # once: a second signal after signals.SAME_REQUEST_S would end the test process
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs now, inside the step or callback

    def step_hook(module, args):
        if module.training:
            steps.append(1)
            if where == "batch" and len(steps) == BATCHES + 7:
                sigterm()
        elif where == "validation" and len(steps) == 2 * BATCHES:
            sigterm()

    def on_epoch(stats):
        if where == "on_epoch" and stats.epoch == 1:
            sigterm()

    def on_checkpoint(ckpt: Checkpoint):
        order.append(("checkpoint", len(steps)))
        ckpt.save(path)

    model.net.register_forward_pre_hook(step_hook)
    with pytest.raises(Interrupted) as raised:
        fit(model, digits, cfg, CPU, on_epoch=on_epoch, on_checkpoint=on_checkpoint)
    order.append(("interrupted", len(steps)))
    assert str(raised.value) == "SIGTERM"
    at = {"batch": BATCHES + 7, "validation": 2 * BATCHES, "on_epoch": BATCHES}[where]
    assert order == [("checkpoint", at), ("interrupted", at)]  # once, before Interrupted, no step between

    ckpt = Checkpoint.load(path, cfg)
    expected = {"batch": (2, 7, 1), "validation": (2, BATCHES, 1), "on_epoch": (2, 0, 1)}[where]
    assert (ckpt.epoch, ckpt.batch, len(ckpt.history.epochs)) == expected
    disturb()
    cfg, fresh = build(digits)
    history = fit(fresh, digits, cfg, CPU, resume=ckpt)
    assert_same_weights(fresh, reference[0])
    assert_same_history(history, reference[1])


def test_a_signal_in_the_last_on_epoch_checkpoints_the_finished_run(digits, tmp_path, own_signal_handlers):
    cfg, model = build(digits, model="softmax", head="linear", head_dropout=0.0, epochs=1)
    saved = []
    with pytest.raises(Interrupted):
        fit(model, digits, cfg, CPU, on_epoch=lambda stats: os.kill(os.getpid(), signal.SIGTERM),
            on_checkpoint=saved.append)
    [ckpt] = saved
    assert (ckpt.epoch, ckpt.batch, len(ckpt.history.epochs)) == (2, 0, 1)  # epoch cfg.epochs + 1: all done
    cfg, fresh = build(digits, model="softmax", head="linear", head_dropout=0.0, epochs=1)
    history = fit(fresh, digits, cfg, CPU, resume=ckpt)  # trains nothing: the run as it ended
    assert_same_weights(fresh, model)
    assert_same_history(history, ckpt.history)


def test_taking_checkpoints_changes_nothing_and_comes_at_every_batch_for_0_s(digits, reference):
    cfg, model = build(digits)
    where = []
    history = fit(model, digits, cfg, CPU, on_checkpoint=lambda c: where.append((c.epoch, c.batch)),
                  checkpoint_every_s=0)
    assert where == [(e, b) for e in (1, 2, 3) for b in range(1, BATCHES + 1)]
    assert_same_weights(model, reference[0])
    assert_same_history(history, reference[1])
    # no signal and no period: no checkpoint; an hour: none in a run of seconds
    for every in (None, 3600):
        cfg, model = build(digits, model="softmax", head="linear", head_dropout=0.0, epochs=1)
        calls = []
        fit(model, digits, cfg, CPU, on_checkpoint=calls.append, checkpoint_every_s=every)
        assert calls == []


def cv_options(**changes):
    # AdamW (moment estimates, step counts) and a step schedule, 2 folds and the refit of 2 epochs
    return {"cv": 2, "epochs": 2, "optimizer": "adamw", "lr": 0.01, "scheduler": "step", **changes}


@pytest.fixture(scope="module")
def cv_reference(digits):
    cfg, model = build(digits, **cv_options())
    return model, cross_validate(model, digits, cfg, CPU)


@pytest.mark.parametrize("fold, epoch, batch", [(2, 2, 3), (3, 1, 4)])  # in fold 2; in the refit (fold 3)
def test_a_cross_validation_stopped_in_a_fold_resumes_exactly_and_skips_the_folds_done(
        digits, cv_reference, tmp_path, fold, epoch, batch):
    path = tmp_path / "cv.ckpt"

    def on_checkpoint(ckpt: Checkpoint):
        if (ckpt.fold, ckpt.epoch, ckpt.batch) == (fold, epoch, batch):
            ckpt.save(path)
            raise Stop

    cfg, model = build(digits, **cv_options())
    with pytest.raises(Stop):
        cross_validate(model, digits, cfg, CPU, on_checkpoint=on_checkpoint, checkpoint_every_s=0)

    disturb()
    cfg, fresh = build(digits, **cv_options())
    torch.nn.init.zeros_(fresh.net.classifier[-1].weight)  # other weights: the checkpoint's initial ones count
    ckpt = Checkpoint.load(path, cfg)
    assert len(ckpt.folds_done) == fold - 1
    folds_reported, fold_epochs = [], []
    cv = cross_validate(fresh, digits, cfg, CPU, on_fold=lambda s: folds_reported.append(s.fold),
                        on_fold_epoch=lambda i, s: fold_epochs.append((i, s.epoch)), resume=ckpt)
    assert folds_reported == ([2] if fold == 2 else [])  # the folds done are not run, nor reported, again
    assert fold_epochs == ([(2, 2)] if fold == 2 else [])
    ref_model, ref = cv_reference
    assert_same_weights(fresh, ref_model)
    for got, want in zip([*cv.folds, cv.refit, cv.mean], [*ref.folds, ref.refit, ref.mean], strict=True):
        assert_same_history(got, want)


def written(digits, tmp_path, **changes) -> tuple[Path, TrainConfig]:
    """A checkpoint file of a softmax run after its first batch, and the run's config."""
    path = tmp_path / "run.ckpt"
    cfg, model = build(digits, model="softmax", head="linear", head_dropout=0.0, epochs=1, **changes)

    def on_checkpoint(ckpt):
        ckpt.save(path)
        raise Stop

    with pytest.raises(Stop):
        fit(model, digits, cfg, CPU, on_checkpoint=on_checkpoint, checkpoint_every_s=0)
    return path, cfg


def refusal(path, cfg) -> str:
    with pytest.raises(CheckpointError) as raised:
        Checkpoint.load(path, cfg)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_checkpoints_of_other_runs_and_broken_files_are_refused_with_one_line(digits, tmp_path):
    path, cfg = written(digits, tmp_path)
    assert Checkpoint.load(path, dataclasses.replace(cfg, device="cpu", data_dir="elsewhere")).batch == 1
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file of the atomic write is gone

    message = refusal(path, dataclasses.replace(cfg, lr=0.1))
    assert "lr=0.05" in message and "lr=0.1" in message, message
    assert "epochs=1" in refusal(path, dataclasses.replace(cfg, epochs=2))
    with pytest.raises(CheckpointError, match="lr=0.05.*lr=0.1"):  # fit checks a checkpoint given directly too
        fit(build(digits, model="softmax", head="linear", head_dropout=0.0, epochs=1)[1], digits,
            dataclasses.replace(cfg, lr=0.1), CPU, resume=Checkpoint.load(path, cfg))
    cv_cfg = dataclasses.replace(cfg, cv=2)
    with pytest.raises(CheckpointError, match="cv=0, this run has cv=2"):  # a plain run's does not resume a cv
        cross_validate(build(digits, model="softmax", head="linear", head_dropout=0.0, epochs=1)[1], digits,
                       cv_cfg, CPU, resume=Checkpoint.load(path, cfg))
    with pytest.raises(CheckpointError, match="fold 0 is not one of a --cv 2 run's"):  # nor one of a fit with cv set
        cross_validate(build(digits, model="softmax", head="linear", head_dropout=0.0, epochs=1)[1], digits,
                       cv_cfg, CPU, resume=dataclasses.replace(Checkpoint.load(path, cfg),
                                                                options=training_options(cv_cfg)))

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "cannot be read" in refusal(truncated, cfg)
    assert "cannot be read" in refusal(tmp_path / "missing.ckpt", cfg)
    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    assert "not a training checkpoint" in refusal(other, cfg)
    state = torch.load(path, weights_only=False)
    torch.save({**state, "version": 99}, other)
    assert "format version 99" in refusal(other, cfg)


def test_training_options_leave_out_what_does_not_change_the_arithmetic():
    options = training_options(TrainConfig())
    assert set(NOT_TRAINING_OPTIONS) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert not set(NOT_TRAINING_OPTIONS) & set(options)
    assert {"model", "lr", "epochs", "seed", "augment", "cv", "batch_size", "compile"} <= set(options)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_skip_the_first_ones_after_the_same_permutation_without_decoding_them(
        tmp_path, make_image_folder, monkeypatch, shuffle):
    from mlproject import data as data_mod

    root = make_image_folder(tmp_path / "images", per_class=7, size=(12, 10))
    files = sorted(str(p) for p in root.rglob("*.png"))
    labels = torch.tensor([["cat", "dog", "fish"].index(Path(f).parent.name) for f in files])
    streamed = Split(labels, files=files, size=(10, 12), mode="RGB")
    decoded = []
    get = data_mod.ImageFiles.__getitem__
    monkeypatch.setattr(data_mod.ImageFiles, "__getitem__", lambda self, i: (decoded.append(i), get(self, i))[1])

    def batches(split, skip=0):
        return list(split.batches(4, shuffle=shuffle, generator=torch.Generator().manual_seed(3), skip=skip))

    whole = batches(streamed)
    # the order DataLoader(shuffle=True, generator=...) draws itself: the one of the runs before skip existed
    loader = torch.utils.data.DataLoader(data_mod.ImageFiles(files, labels.tolist(), (10, 12), "RGB"), batch_size=4,
                                         shuffle=shuffle, generator=torch.Generator().manual_seed(3),
                                         collate_fn=data_mod._collate_ok)
    assert [b[1].tolist() for b in whole] == [b[1].tolist() for b in loader]
    decoded.clear()
    rest = batches(streamed, skip=2)
    assert len(decoded) == len(files) - 8  # the 8 skipped files were never opened
    assert len(rest) == len(whole) - 2
    for (a, la), (b, lb) in zip(rest, whole[2:], strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    in_memory = Split(labels, images=torch.arange(len(files), dtype=torch.uint8).view(-1, 1, 1, 1))
    for (a, la), (b, lb) in zip(batches(in_memory, skip=2), batches(in_memory)[2:], strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert batches(in_memory, skip=99) == [] and batches(streamed, skip=99) == []


def test_a_streamed_image_folder_run_resumes_exactly(tmp_path, make_image_folder, monkeypatch):
    """Files decoded by a DataLoader per batch: its base seed and the permutation come from the
    shuffle generator, whose epoch-start state the checkpoint holds."""
    from mlproject import data as data_mod

    monkeypatch.setattr(data_mod, "MAX_IN_MEMORY_BYTES", 0)  # stream, whatever the size
    root = make_image_folder(tmp_path / "images", per_class=12, size=(12, 12))

    def run(**kw):
        cfg = TrainConfig(model="smallcnn", dataset=str(root), image_size=16, epochs=2, batch_size=4, lr=0.05,
                          augment="crop+flip", num_workers=0).validate()
        data = create_dataset(cfg, size=16)
        assert data.train.files is not None  # streamed
        seed_everything(cfg.seed)
        model, _ = create_model(cfg, peek_dataset(cfg))
        set_normalisation(model, data.info.mean, data.info.std)
        return model, fit(model, data, cfg, CPU, **kw)

    model, history = run()
    saved = []

    def on_checkpoint(ckpt):
        if (ckpt.epoch, ckpt.batch) == (2, 2):
            saved.append(ckpt)
            raise Stop

    with pytest.raises(Stop):
        run(on_checkpoint=on_checkpoint, checkpoint_every_s=0)
    disturb()
    resumed, resumed_history = run(resume=saved[0])
    assert_same_weights(resumed, model)
    assert_same_history(resumed_history, history)
