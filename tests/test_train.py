"""fit() options on small in-memory arrays: optimizers, schedulers, label smoothing, early stopping,
gradient clipping, augmentation, multi-label training with mAP, devices."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from audiocomp.config import AugmentConfig, ConfigError, FeaturesConfig, TrainConfig
from audiocomp.evaluate.metrics import average_precision
from audiocomp.train import augment
from audiocomp.train.augment import augment_batch, mixup, pitch_source_bins, resample
from audiocomp.features.batches import ArrayBatches
from audiocomp.features.extract import FeatureExtractor, mel_band_hz
from audiocomp.evaluate.scoring import predict_scores, score_metrics
from audiocomp.train.device import resolve_device
from audiocomp.train.loop import TIMING_KEYS, fit
from tiny_training import small_net, toy


def run_fit(tmp_path, multilabel=False, epochs=3, batch=32, **train_kw):
    x, y = toy(multilabel=multilabel)
    train = ArrayBatches(x, y, range(64), batch, shuffle=True, seed=0)
    val = ArrayBatches(x, y, range(64, 96), batch)
    cfg = TrainConfig(epochs=epochs, batch_size=batch, **{"lr": 0.01, **train_kw})
    torch.manual_seed(0)
    model = small_net()
    log = []
    result = fit(model, train, val, cfg, 3, multilabel, tmp_path, log.append, torch.device("cpu"), progress=False)
    return model, result, log, val


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizers_learn_the_toy_problem(tmp_path, optimizer):
    lr = 0.1 if optimizer == "sgd" else 0.02
    _, result, log, _ = run_fit(tmp_path, epochs=6, optimizer=optimizer, lr=lr, weight_decay=1e-4)
    assert log == result.history and len(log) == 6
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert max(r["val_accuracy"] for r in log) >= 0.8
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()


def test_schedulers_change_the_learning_rate_as_documented(tmp_path):
    lrs = {}
    for sched in ("none", "cosine", "step", "onecycle"):
        _, _, log, _ = run_fit(tmp_path / sched, epochs=4, scheduler=sched, step_size=1, gamma=0.5, lr=0.01)
        lrs[sched] = [r["lr"] for r in log]  # the rate each epoch started with
    assert lrs["none"] == [0.01] * 4
    assert lrs["step"] == pytest.approx([0.01, 0.005, 0.0025, 0.00125])
    assert lrs["cosine"] == pytest.approx([0.01 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)])
    one = lrs["onecycle"]  # stepped per batch: starts at lr / 25, warms up towards lr, then anneals
    assert one[0] == pytest.approx(0.01 / 25) and max(one) > 0.008 and one[-1] < max(one) / 2


def test_label_smoothing_is_applied(tmp_path):
    _, _, plain, _ = run_fit(tmp_path / "a", epochs=6, lr=0.03)
    _, _, smooth, _ = run_fit(tmp_path / "b", epochs=6, lr=0.03, label_smoothing=0.3)
    floor = -(0.8 * np.log(0.8) + 2 * 0.1 * np.log(0.1))  # entropy of the smoothed target (0.8, 0.1, 0.1)
    assert plain[-1]["train_loss"] < 0.5 < floor <= smooth[-1]["train_loss"]
    assert smooth[-1]["val_loss"] < floor  # validation loss is plain cross-entropy


def test_early_stopping_on_val_loss(tmp_path):
    _, result, log, _ = run_fit(tmp_path, epochs=10, lr=1.0, optimizer="sgd", early_stopping=2, monitor="val_loss")
    assert result.stopped_early and len(log) < 10
    best = min(range(len(log)), key=lambda i: log[i]["val_loss"]) + 1
    assert result.best_epoch == best and len(log) == best + 2  # patience 2 after the best epoch


def test_gradient_clipping_bounds_each_step(tmp_path):
    torch.manual_seed(0)
    model = small_net()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    x, y = toy()
    cfg = TrainConfig(epochs=1, batch_size=96, optimizer="sgd", momentum=0.0, lr=1.0, grad_clip=1e-3)
    fit(model, ArrayBatches(x, y, range(96), 96), None, cfg, 3, False, tmp_path, lambda r: None,
        torch.device("cpu"), progress=False)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before).norm()) == pytest.approx(1e-3, rel=1e-3)  # one step of lr x clipped norm


def test_augmentation_is_off_by_default_and_does_what_it_says():
    gen = torch.Generator().manual_seed(0)
    spec = torch.randn(4, 1, 16, 20)
    assert augment_batch(spec, AugmentConfig(), gen) is spec  # defaults: nothing touched
    wave = torch.randn(4, 800)
    assert augment_batch(wave, AugmentConfig(), gen) is wave

    masked = augment_batch(spec, AugmentConfig(spec_time_mask=5, spec_freq_mask=4), gen)
    changed = (masked != spec)
    assert changed.any() and changed.float().mean() < 0.6
    assert float(changed[:, :, :, :].any(dim=2).sum(dim=-1).max()) <= 20  # masks are bands, not noise

    gained = augment_batch(wave, AugmentConfig(gain_db=6), gen)
    ratio = (gained / wave).mean(dim=1)
    assert torch.allclose(gained, wave * ratio[:, None], atol=1e-5)  # one gain per clip
    assert ((ratio >= 10 ** (-6 / 20) - 1e-6) & (ratio <= 10 ** (6 / 20) + 1e-6)).all()
    shifted = augment_batch(wave, AugmentConfig(time_shift=0.5), gen)
    assert torch.allclose(shifted.sort(dim=1).values, wave.sort(dim=1).values)  # a circular shift
    noisy = augment_batch(wave, AugmentConfig(noise_std=0.1), gen)
    assert 0.05 < float((noisy - wave).std()) < 0.2

    spec_gain = augment_batch(spec, AugmentConfig(gain_db=6), gen)
    offset = (spec_gain - spec).flatten(1)
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-5)  # dB: one offset per clip
    assert (offset.abs() <= 6 + 1e-5).all() and offset[:, 0].std() > 0
    rolled = augment_batch(spec, AugmentConfig(time_shift=0.5), gen)
    shifts = []
    for before, after in zip(spec, rolled):  # every clip is its own frames rolled in time by 0..10 frames
        shifts.append(next(s for s in range(11) if torch.equal(after, torch.roll(before, s, dims=-1))))
    assert len(set(shifts)) > 1

    xm, soft = mixup(spec, torch.tensor([0, 1, 2, 0]), 0.4, 3, gen)
    assert soft.shape == (4, 3) and torch.allclose(soft.sum(1), torch.ones(4))


def test_resample_moves_bins_and_stretches_time_as_documented():
    floor = -80.0
    x = torch.full((1, 1, 16, 40), floor)
    x[0, 0, 5, 10:20] = 0.0  # a tone at bin 5 from frame 10 to 19
    one, bins = torch.ones(1), torch.arange(16.0)[None]
    up = resample(x, one, torch.zeros(1), bins - 3)  # 3 bins up: the tone at bin 8, same frames
    torch.testing.assert_close(up, torch.roll(x, 3, dims=2), atol=1e-4, rtol=0)
    down = resample(x, one, torch.zeros(1), bins + 2)
    torch.testing.assert_close(down, torch.roll(x, -2, dims=2), atol=1e-4, rtol=0)
    # twice as slow, the window at the start: frames 0..19 become 0..39, so the tone spans frames 20..39
    slow = resample(x, torch.tensor([2.0]), -one, bins)[0, 0, 5]
    loud = (slow > -40).nonzero().flatten()
    assert loud.min() in (19, 20, 21) and loud.max() == 39
    # twice as fast, placed at the end: the clip in the last 20 frames, silence (the floor) before it
    fast = resample(x, torch.tensor([0.5]), one, bins)
    torch.testing.assert_close(fast[..., :19], torch.full_like(fast[..., :19], floor), atol=1e-4, rtol=0)
    assert ((fast[0, 0, 5] > -40).nonzero().flatten() >= 24).all() and (fast[0, 0, 5] > -40).sum() == 5
    assert fast[0, 0, 4].max() <= floor + 1e-4  # nothing leaks into other bins


def test_stretch_and_shift_draw_within_their_ranges_from_the_generator(monkeypatch):
    x = torch.randn(64, 1, 16, 40)
    cfg = AugmentConfig(time_stretch=0.25, freq_shift=2)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, x)  # the same draws after a resume
    assert a.min() >= x.min() - 1e-4 and a.max() <= x.max() + 1e-4  # bilinear: within the input's range
    drawn = {}  # what augment_batch hands to resample
    monkeypatch.setattr(augment, "resample",
                        lambda x, rate, place, source: drawn.update(rate=rate, place=place, source=source) or x)
    augment_batch(x, cfg, torch.Generator().manual_seed(3))
    rate, place, source = drawn["rate"], drawn["place"], drawn["source"]
    bins = torch.arange(16.0)[None] - source  # how far each output bin's content moved up
    assert torch.allclose(bins, bins[:, :1].expand_as(bins), atol=1e-5)  # one shift per item, the same for every bin
    bins = bins[:, 0]
    assert 1 / 1.25 - 1e-6 <= rate.min() and rate.max() <= 1.25 + 1e-6 and (rate < 1).any() and (rate > 1).any()
    assert place.abs().max() <= 1 and bins.abs().max() <= 2 and (bins < -1).any() and (bins > 1).any()


def test_band_centres_match_librosa():
    import librosa

    for cfg in (FeaturesConfig(n_mels=64), FeaturesConfig(n_mels=40, sample_rate=16000, f_min=50, f_max=7000)):
        ref = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.f_min, fmax=cfg.f_max or cfg.sample_rate / 2)[1:-1]
        np.testing.assert_allclose(mel_band_hz(cfg).numpy(), ref, rtol=1e-9)


@pytest.mark.parametrize("low, semitones", [(150.0, 12.0), (400.0, 7.0), (2000.0, -5.0), (3000.0, 2.0)])
def test_pitch_shift_moves_a_tone_where_the_shifted_tone_lies(low, semitones):
    """A log-mel of a tone shifted by n semitones peaks in the band of the tone 2^(n/12) higher, in the
    linear (< 1 kHz) and the logarithmic part of the mel scale alike; a shift by whole bins does not."""
    cfg = FeaturesConfig(n_mels=64, duration=1.0)
    extract, t = FeatureExtractor(cfg), np.arange(cfg.sample_rate) / cfg.sample_rate
    tone = lambda hz: torch.from_numpy(extract(np.sin(2 * np.pi * hz * t).astype(np.float32)))[None]
    x, target = tone(low), tone(low * 2 ** (semitones / 12))
    source = pitch_source_bins(mel_band_hz(cfg), torch.tensor([semitones]))
    shifted = resample(x, torch.ones(1), torch.zeros(1), source)
    frame = 20
    assert shifted[0, 0, :, frame].argmax() == target[0, 0, :, frame].argmax() != x[0, 0, :, frame].argmax()
    if low < 1000:  # there a band is ~51 Hz wide: a semitone is a fraction of a band at 150 Hz, ~2 at 1 kHz
        moved = int(target[0, 0, :, frame].argmax() - x[0, 0, :, frame].argmax())
        assert moved != round(semitones)


def test_pitch_shift_needs_log_mel_bands_and_excludes_the_bin_shift(tmp_path):
    with pytest.raises(ValueError, match="set one of them"):
        AugmentConfig(pitch_shift=2, freq_shift=2)
    with pytest.raises(ConfigError, match="pitch_shift"):  # run_fit passes no band frequencies (not log-mel)
        run_fit(tmp_path, epochs=1, augment=AugmentConfig(pitch_shift=2))


def test_augmented_training_runs(tmp_path):
    _, result, log, _ = run_fit(tmp_path, epochs=2, augment=AugmentConfig(spec_time_mask=2, spec_freq_mask=1,
                                                                           mixup_alpha=0.4))
    assert len(log) == 2 and all(np.isfinite(r["train_loss"]) for r in log)


def test_multilabel_training_uses_bce_sigmoid_and_map(tmp_path):
    model, result, log, val = run_fit(tmp_path, multilabel=True, epochs=5, lr=0.02, monitor="val_map")
    assert "val_map" in log[0] and "train_accuracy" not in log[0]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    scores, targets, _ = predict_scores(model, val, torch.device("cpu"), multilabel=True)
    assert ((scores >= 0) & (scores <= 1)).all() and not np.allclose(scores.sum(1), 1)  # sigmoid, not softmax
    m = score_metrics(scores, targets, 3, multilabel=True)
    assert len(m["per_class_ap"]) == 3
    assert m["map"] == pytest.approx(np.mean(m["per_class_ap"]))
    assert m["map"] > 0.8  # chance is about 0.4 (the positive rate)
    assert m["per_class_ap"][0] == pytest.approx(average_precision(scores[:, 0], targets[:, 0]))


def test_average_precision_by_hand():
    # ranked: pos, neg, pos -> precision at hits 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1])) == pytest.approx(5 / 6)


def test_device_resolution():
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("tpu9")


@pytest.mark.skipif(not os.environ.get("AUDIOCOMP_TEST_COMPILE"),
                    reason="torch.compile takes about 90 s to compile on a 2-core CPU; set AUDIOCOMP_TEST_COMPILE=1")
def test_compiled_training_matches_eager(tmp_path):
    _, _, eager, _ = run_fit(tmp_path / "e", epochs=1)
    _, _, compiled, _ = run_fit(tmp_path / "c", epochs=1, compile=True)
    assert compiled[0]["train_loss"] == pytest.approx(eager[0]["train_loss"], rel=1e-4)


def test_the_best_epoch_is_chosen_on_validation_never_on_training_loss(tmp_path):
    _, result, log, _ = run_fit(tmp_path / "auto", epochs=6, lr=0.001)  # monitor auto
    assert result.monitor == "val_accuracy" and result.selection == "best val_accuracy"
    accs = [r["val_accuracy"] for r in log]
    assert result.best_epoch == accs.index(max(accs)) + 1  # the first epoch with the best validation accuracy
    assert result.best_epoch < len(log) and log[-1]["train_loss"] < log[result.best_epoch - 1]["train_loss"]
    _, multi, _, _ = run_fit(tmp_path / "multi", multilabel=True, epochs=1)
    assert multi.monitor == "val_map"


def test_keep_last_keeps_the_last_epoch_whatever_validation_says(tmp_path):
    from audiocomp.models.io import safe_torch_load

    _, best, _, _ = run_fit(tmp_path / "best", epochs=6, lr=0.001)
    assert best.best_epoch < 6  # on this toy run validation prefers an earlier epoch...
    model, last, log, _ = run_fit(tmp_path / "last", epochs=6, lr=0.001, keep="last")
    assert [r["val_accuracy"] for r in log] == [r["val_accuracy"] for r in best.history]  # ...of the same run
    assert last.monitor is None and last.selection == "last epoch (train.keep: last)" and last.best_epoch == 6
    kept = safe_torch_load(tmp_path / "last/best.pt")
    assert all(torch.equal(kept[k], v) for k, v in model.state_dict().items())  # the final weights
    with pytest.raises(ConfigError, match="train.early_stopping=2 stops at the best validation epoch"):
        run_fit(tmp_path / "stop", epochs=2, keep="last", early_stopping=2)


@pytest.mark.parametrize("multilabel,monitor", [(False, "val_map"), (True, "val_accuracy"), (True, "val_macro_f1")])
def test_a_monitor_the_data_does_not_produce_is_a_config_error(tmp_path, multilabel, monitor):
    with pytest.raises(ConfigError, match=f"train.monitor={monitor}: not produced on a (multi|single)-label set"):
        run_fit(tmp_path, multilabel=multilabel, epochs=1, monitor=monitor)


def test_without_a_validation_part_the_last_epoch_is_kept_and_early_stopping_is_refused(tmp_path):
    from audiocomp.models.io import safe_torch_load

    x, y = toy()
    train = ArrayBatches(x, y, range(64), 32, shuffle=True, seed=0)
    torch.manual_seed(0)
    model = small_net()
    result = fit(model, train, None, TrainConfig(epochs=3, lr=0.5, optimizer="sgd"), 3, False, tmp_path,
                 lambda r: None, torch.device("cpu"), progress=False)
    assert result.monitor is None and result.selection == "last epoch (no validation part)"
    assert result.best_epoch == 3  # whatever the training loss did
    best = safe_torch_load(tmp_path / "best.pt")
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="train.early_stopping=2: this split has no validation part"):
        fit(small_net(), train, None, TrainConfig(epochs=3, early_stopping=2), 3, False, tmp_path / "es",
            lambda r: None, torch.device("cpu"), progress=False)


def test_precision_auto_is_bf16_only_on_cpus_with_native_bf16(monkeypatch):
    from audiocomp.train import device

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert device.resolve_precision("auto", cpu) == "fp32"
    assert device.resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert device.resolve_precision("auto", torch.device("mps")) == "fp32"
    assert device.resolve_precision("bf16", cpu) == "bf16" and device.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ConfigError, match="fp16: float16 autocast needs CUDA"):
        device.resolve_precision("fp16", cpu)


@pytest.mark.parametrize("precision,channels_last", [("bf16", True), ("fp32", False)])
def test_precision_and_memory_format_of_training_and_of_what_is_saved(tmp_path, precision, channels_last):
    """The convolutions train in the configured precision and layout; validation runs in float32; the model
    and best.pt end in float32 and the default layout."""
    x, y = toy()
    torch.manual_seed(0)
    model = small_net()
    seen = []
    model[0].register_forward_hook(lambda m, i, out: seen.append(
        (m.training, out.dtype, out.is_contiguous(memory_format=torch.channels_last))))
    cfg = TrainConfig(epochs=6, batch_size=32, lr=0.02, precision=precision, channels_last=channels_last)
    result = fit(model, ArrayBatches(x, y, range(64), 32, shuffle=True), ArrayBatches(x, y, range(64, 96), 32), cfg,
                 3, False, tmp_path, lambda r: None, torch.device("cpu"), progress=False)
    train_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    assert {s[1:] for s in seen if s[0]} == {(train_dtype, channels_last)}
    assert {s[1] for s in seen if not s[0]} == {torch.float32}  # validation in float32
    assert result.precision == precision
    assert max(r["val_accuracy"] for r in result.history) >= 0.8  # it learns in bf16 too
    weight = model[0].weight
    assert weight.dtype == torch.float32 and weight.is_contiguous()
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(t.is_contiguous() for t in best.values())


def test_bf16_channels_last_training_resumes_exactly(tmp_path):
    """Interrupted after two epochs and resumed from last.pt: the same history and weights as a run that never
    stopped (bf16 autocast, channels_last, SpecAugment, mixup and a per-batch schedule)."""
    x, y = toy()
    cfg = TrainConfig(epochs=4, batch_size=16, lr=0.02, optimizer="adamw", scheduler="onecycle", precision="bf16",
                      channels_last=True, augment=AugmentConfig(spec_time_mask=2, spec_freq_mask=2, mixup_alpha=0.3))

    def train(folder, resume=False, stop_after=None):
        torch.manual_seed(0)
        model = small_net()
        log = []

        def record(r):
            log.append(r)
            if stop_after and len(log) == stop_after:
                raise KeyboardInterrupt  # interrupted right after the epoch's checkpoint
        try:
            fit(model, ArrayBatches(x, y, range(64), 16, shuffle=True), ArrayBatches(x, y, range(64, 96), 16), cfg,
                3, False, folder, record, torch.device("cpu"), resume=resume, progress=False)
        except KeyboardInterrupt:
            pass
        return model, log

    straight, straight_log = train(tmp_path / "a")
    _, first = train(tmp_path / "b", stop_after=2)
    resumed, rest = train(tmp_path / "b", resume=True)
    untimed = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in first + rest]
    assert untimed == [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in straight_log]
    assert len(first) == 2 and len(rest) == 2
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_the_kept_model_is_the_moving_average_of_the_weights(tmp_path):
    """train.ema_decay: best.pt holds the exponential moving average of the weights after every step (the
    first step copied, then e = d e + (1 - d) w), computed here by hand from plain runs of 1, 2 and 3 steps."""
    x, y = toy()
    data = ArrayBatches(x, y, range(96), 96)  # one step per epoch

    def weights_after(epochs: int, **kw) -> dict:
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=epochs, batch_size=96, optimizer="sgd", lr=0.5, deterministic=True, **kw)
        out = tmp_path / f"{epochs}-{kw}"
        fit(small_net(), data, None, cfg, 3, False, out, lambda r: None, torch.device("cpu"), progress=False)
        return {k: v for k, v in torch.load(out / "best.pt").items() if k.endswith(("weight", "bias"))}

    steps = [weights_after(k) for k in (1, 2, 3)]
    d = 0.8
    by_hand = {k: d * (d * steps[0][k] + (1 - d) * steps[1][k]) + (1 - d) * steps[2][k] for k in steps[0]}
    averaged = weights_after(3, ema_decay=d)
    for k in by_hand:
        torch.testing.assert_close(averaged[k], by_hand[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(averaged[k], steps[2][k]) for k in by_hand)  # not the last step's weights


def test_torchrun_with_one_process_is_still_ddp(monkeypatch):
    from audiocomp.train import distributed

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert not distributed.from_env().enabled  # a plain process: no process group
    monkeypatch.setenv("WORLD_SIZE", "1")
    d = distributed.from_env()
    assert d.enabled and (d.rank, d.world, d.local_rank) == (0, 1, 0)  # torchrun, one process: DDP of one
