"""Knowledge distillation: the loss against a hand computation, its off switches, the run name, and prune
with distillation end to end on the tiny synthetic set."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from audiocomp.config import ConfigError, DistillConfig, load_config
from audiocomp.stages.naming import run_name
from audiocomp.train.distill import distill_loss, objective

STUDENT = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
TEACHER = np.array([[2.0, 1.0, 0.0], [0.5, 0.0, 1.0]])
LABELS = np.array([1, 2])


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _t(a) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def test_distillation_loss_matches_hinton_by_hand():
    alpha, T = 0.3, 2.0
    ce = -_log_softmax(STUDENT)[np.arange(2), LABELS].mean()  # cross-entropy with the labels
    p_t = np.exp(_log_softmax(TEACHER / T))
    kl = (p_t * (np.log(p_t) - _log_softmax(STUDENT / T))).sum(axis=1).mean()  # KL(teacher || student), per item
    expected = (1 - alpha) * ce + alpha * T * T * kl
    got = distill_loss(_t(STUDENT), _t(TEACHER), torch.tensor(LABELS), nn.CrossEntropyLoss(), alpha, T)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    # the same numbers by hand for the first item, so the formula above is itself checked: T=2 halves logits
    s1, t1 = STUDENT[0] / 2, TEACHER[0] / 2
    ps, pt = np.exp(s1) / np.exp(s1).sum(), np.exp(t1) / np.exp(t1).sum()
    assert (pt * np.log(pt / ps)).sum() == pytest.approx(
        (p_t * (np.log(p_t) - _log_softmax(STUDENT / T))).sum(axis=1)[0])


def test_alpha_zero_is_plain_cross_entropy_and_a_perfect_student_adds_nothing():
    y = torch.tensor(LABELS)
    plain = nn.CrossEntropyLoss()(_t(STUDENT), y)
    assert float(distill_loss(_t(STUDENT), _t(TEACHER), y, nn.CrossEntropyLoss(), 0.0, 3.0)) == float(plain)
    # alpha=1 with the teacher's own logits: KL is zero
    assert float(distill_loss(_t(TEACHER), _t(TEACHER), y, nn.CrossEntropyLoss(), 1.0, 3.0)) == pytest.approx(0, abs=1e-12)
    # switched off, or without a teacher, the objective is the task loss
    teacher = nn.Linear(3, 3)
    for cfg, t in ((DistillConfig(enabled=False, alpha=0.9), teacher), (DistillConfig(enabled=True), None)):
        assert float(objective(nn.CrossEntropyLoss(), t, cfg, False)(None, _t(STUDENT), y)) == float(plain)


def test_multilabel_soft_term_is_bce_against_the_teachers_sigmoid():
    alpha, T = 0.5, 2.0
    targets = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731

    def bce(z, p):
        return -(p * np.log(sig(z)) + (1 - p) * np.log(1 - sig(z))).mean()

    expected = (1 - alpha) * bce(STUDENT, targets) + alpha * T * T * bce(STUDENT / T, sig(TEACHER / T))
    got = distill_loss(_t(STUDENT), _t(TEACHER), _t(targets), nn.BCEWithLogitsLoss(), alpha, T, multilabel=True)
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_teacher_sees_the_students_input_and_is_frozen():
    teacher = nn.Linear(4, 3)
    seen = []
    teacher.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    loss = objective(nn.CrossEntropyLoss(), teacher, DistillConfig(enabled=True, alpha=0.5), False)
    x = torch.randn(2, 4)
    student = torch.randn(2, 3, requires_grad=True)
    loss(x, student, torch.tensor([0, 1])).backward()
    assert seen[0] is x and not teacher.training and teacher.weight.grad is None and student.grad is not None


def test_config_bounds_and_run_names():
    with pytest.raises(ConfigError, match="distill.alpha"):
        load_config([], ["distill.alpha=1.5"])
    with pytest.raises(ConfigError, match="distill.temperature"):
        load_config([], ["distill.temperature=0"])
    base = load_config([], [])
    off = load_config([], ["distill.alpha=0.9"])  # switched off: changes nothing, so names nothing
    on = load_config([], ["distill.enabled=true"])
    hotter = load_config([], ["distill.enabled=true", "distill.temperature=8"])
    for stage in ("prune", "quantize"):
        assert run_name(stage, off, ["p"]) == run_name(stage, base, ["p"])
        assert len({run_name(stage, c, ["p"]) for c in (base, on, hotter)}) == 3
    assert run_name("train", on, ["p"]) == run_name("train", base, ["p"])  # training has no teacher


def test_prune_with_distillation_end_to_end(trained_run):
    """A distilled fine-tune trains against the parent (a different loss than without), and says so."""
    from audiocomp.stages import prune

    runs, model_run, cfg = trained_run
    sets = {"prune": cfg.prune.model_copy(update={"method": "taylor", "channel_ratio": 0.5, "finetune_epochs": 1})}
    plain_cfg = cfg.model_copy(update=sets)
    kd_cfg = cfg.model_copy(update=sets | {"distill": DistillConfig(enabled=True, alpha=0.7, temperature=3.0)})
    plain = prune.run(plain_cfg, model_run, runs, progress=False).metrics()
    kd_run = prune.run(kd_cfg, model_run, runs, progress=False)
    kd = kd_run.metrics()
    assert kd_run.name != run_name("prune", plain_cfg, [model_run.name])
    assert kd["distill"] == {"enabled": True, "alpha": 0.7, "temperature": 3.0} and plain["distill"] is None
    assert kd["history"] and kd["history"][0]["train_loss"] != pytest.approx(plain["history"][0]["train_loss"])
    assert kd["after"]["macs"] < kd["before"]["macs"] and "test" in kd["vs_parent"]


def test_qat_with_distillation_records_its_teacher(trained_run):
    from audiocomp.stages import quantize

    runs, model_run, cfg = trained_run
    qc = cfg.quantize.model_copy(update={"method": "qat", "backend": "torch", "qat_epochs": 1})
    kd_cfg = cfg.model_copy(update={"quantize": qc, "distill": DistillConfig(enabled=True, alpha=0.5)})
    m = quantize.run(kd_cfg, model_run, runs, progress=False, allow_degraded=True).metrics()
    assert m["distill"]["enabled"] and m["qat_history"][0]["train_loss"] > 0


def test_train_with_a_teacher_distils_from_it_and_names_it(trained_run):
    """`train --teacher RUN`: the teacher is the run's second parent and in its name (with alpha and
    temperature, whatever distill.enabled says), and the loss is a different one than without it."""
    from audiocomp.stages import train

    runs, teacher, cfg = trained_run
    prep = teacher.parent("prepare")
    plain = train.run(cfg, runs, from_run=prep, progress=False)
    taught = train.run(cfg, runs, from_run=prep, teacher=teacher, progress=False)
    assert taught.name == run_name("train", cfg, [prep.name, teacher.name]) != plain.name
    assert [p["name"] for p in taught.manifest["parents"]] == [prep.name, teacher.name]
    m = taught.metrics()
    assert m["teacher"] == {"run": teacher.name, "alpha": 0.5, "temperature": 4.0} and "teacher" not in plain.metrics()
    assert m["history"][0]["train_loss"] != pytest.approx(plain.metrics()["history"][0]["train_loss"])
    on = cfg.model_copy(update={"distill": DistillConfig(enabled=True)})
    hotter = cfg.model_copy(update={"distill": DistillConfig(temperature=8.0)})
    parents = [prep.name, teacher.name]
    assert run_name("train", on, parents) == taught.name != run_name("train", hotter, parents)
    assert run_name("train", hotter, [prep.name]) == plain.name  # no teacher: distill names nothing


def test_resume_finds_the_teacher_in_the_manifest(trained_run, tmp_path):
    """`train --resume NAME` without --teacher continues the distilled training it was (not a plain one)."""
    import yaml
    from typer.testing import CliRunner

    from audiocomp.cli import app
    from audiocomp.runs import Run

    runs, teacher, cfg = trained_run
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    cli, common = CliRunner(), ["--runs-dir", str(runs), "-q"]
    first = cli.invoke(app, ["train", "-c", str(tmp_path / "c.yaml"), "--from", teacher.parent("prepare").name,
                             "--teacher", teacher.name, "--name", "taught", *common])
    assert first.exit_code == 0, first.output
    Run(runs / "taught").update_manifest(status="failed")  # as an interrupted run is left
    resumed = cli.invoke(app, ["train", "--resume", "taught", *common])
    assert resumed.exit_code == 0, resumed.output
    assert Run(runs / "taught").metrics()["teacher"]["run"] == teacher.name


def test_a_teacher_of_other_data_or_of_other_folds_is_refused(trained_run, tmp_path):
    """A teacher trained on another split has seen this run's validation or test items: refused before any
    run folder is made."""
    from audiocomp.stages import prepare, train

    runs, teacher, cfg = trained_run
    other_cfg = cfg.model_copy(update={"split": cfg.split.model_copy(update={"seed": 7})})
    other = prepare.run(other_cfg, tmp_path / "runs", progress=False).run
    with pytest.raises(ConfigError, match="same prepared split"):
        train.run(cfg, tmp_path / "runs", from_run=other, teacher=teacher, name="kd", progress=False)
    assert not (tmp_path / "runs" / "kd").exists()
    folds_cfg = cfg.model_copy(update={"split": cfg.split.model_copy(update={"kind": "folds", "test_fold": "all"})})
    folds_teacher = train.run(folds_cfg, tmp_path / "runs", progress=False)
    with pytest.raises(ConfigError, match="cross-validates over 5 folds"):
        train.run(folds_cfg, tmp_path / "runs", from_run=folds_teacher.parent("prepare"), teacher=folds_teacher,
                  name="kd-folds", progress=False)
    assert not (tmp_path / "runs" / "kd-folds").exists()


def test_a_quantized_teacher_is_refused(trained_run, tmp_path):
    from audiocomp.stages import quantize, train

    runs, model_run, cfg = trained_run
    int8 = quantize.run(cfg.model_copy(update={"quantize": cfg.quantize.model_copy(update={"method": "dynamic"})}),
                        model_run, tmp_path / "runs", progress=False)
    with pytest.raises(ConfigError, match="holds a int8.* model; a teacher must be a float model"):
        train.run(cfg, tmp_path / "runs", from_run=model_run.parent("prepare"), teacher=int8, name="kd",
                  progress=False)
    assert not (tmp_path / "runs" / "kd").exists()


def test_fit_with_alpha_one_learns_the_teacher_not_the_labels(tmp_path):
    """With alpha=1 the labels carry no weight: a student trained on random labels copies the teacher."""
    from audiocomp.config import TrainConfig
    from audiocomp.features.batches import ArrayBatches
    from audiocomp.train.loop import fit

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen).numpy()
    labels = torch.randint(0, 4, (256,), generator=gen).numpy()  # noise: nothing to learn from them
    teacher = nn.Linear(8, 4)
    cfg = TrainConfig(epochs=30, batch_size=32, lr=0.05, optimizer="adam", precision="fp32", deterministic=True)

    def agreement(alpha: float) -> float:
        torch.manual_seed(1)
        student = nn.Linear(8, 4)
        batches = ArrayBatches(x, labels, range(256), 32, shuffle=True, seed=0)
        fit(student, batches, None, cfg, 4, False, tmp_path / f"a{alpha}", log=lambda r: None,
            device=torch.device("cpu"), progress=False, teacher=teacher,
            distill=DistillConfig(enabled=True, alpha=alpha, temperature=2.0))
        with torch.no_grad():
            return float((student(torch.from_numpy(x)).argmax(1) == teacher(torch.from_numpy(x)).argmax(1)).float().mean())

    assert agreement(1.0) > 0.9 and agreement(0.0) < 0.6


@pytest.mark.parametrize("precision,channels_last", [("bf16", True), ("fp32", False)])
def test_teacher_runs_in_the_students_precision_and_layout(tmp_path, precision, channels_last):
    """The teacher's forward pass is as costly as the student's, so it uses the same autocast and memory
    layout (checked on what its convolution computes, not on the settings)."""
    from tiny_training import small_net, toy

    from audiocomp.config import TrainConfig
    from audiocomp.features.batches import ArrayBatches
    from audiocomp.train.loop import fit

    x, y = toy()
    torch.manual_seed(0)
    teacher, student = small_net(), small_net()
    seen = []
    teacher[0].register_forward_hook(lambda m, i, out: seen.append(
        (out.dtype, out.is_contiguous(memory_format=torch.channels_last))))
    cfg = TrainConfig(epochs=1, batch_size=32, precision=precision, channels_last=channels_last)
    fit(student, ArrayBatches(x, y, range(64), 32, shuffle=True), None, cfg, 3, False, tmp_path, lambda r: None,
        torch.device("cpu"), progress=False, teacher=teacher, distill=DistillConfig(enabled=True))
    assert set(seen) == {(torch.bfloat16 if precision == "bf16" else torch.float32, channels_last)}
