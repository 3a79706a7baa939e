"""Pruning methods on every model family at tiny sizes, the Taylor ranking on a hand-made model, the sparse
encoding, and the sensitivity helpers."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from audiocomp.compress.pruning import (PruneContext, TaylorImportance, dependency_graph, prunable_groups,
                                        prune_model, ratios_from_sensitivity, sensitivity, sparsity_schedule)
from audiocomp.config import ConfigError, PruneConfig
from audiocomp.evaluate.sparse import read_sparse, write_sparse
from audiocomp.models import ModelSpec, build_model, load_model, save_model
from audiocomp.models.reshape import record_shapes
from audiocomp.evaluate.scoring import loss_fn

FAMILIES = {  # name -> (feature shape, kwargs, input size)
    "cnn": ([1, 32, 24], {"channels": [8, 16]}, None),
    "cnn1d": ([4000], {"channels": [8, 16], "first_kernel": 40, "first_stride": 4}, None),
    "lstm": ([1, 16, 12], {"hidden_size": 16}, None),
    "resnet18": ([1, 32, 24], {}, [32, 32]),
    "mobilenet_v3_small": ([1, 32, 24], {}, [32, 32]),
}
CASES = [(f, m) for f in FAMILIES for m in ("magnitude", "taylor", "hybrid")]


def tiny(family: str, seed: int = 0):
    shape, kwargs, size = FAMILIES[family]
    spec = ModelSpec(family, 4, shape, kwargs=dict(kwargs), input_size=size)
    torch.manual_seed(seed)
    return build_model(spec).eval(), spec


def context(example, batches, finetune=None, **cfg) -> PruneContext:
    cfg.setdefault("calibration_batches", len(batches))
    return PruneContext(cfg=PruneConfig(**cfg), example=example, calibration=batches, loss=loss_fn(False),
                        finetune=finetune or (lambda model, tag: []))


def data(spec, n: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *spec.feature_shape, generator=g), torch.randint(0, spec.num_classes, (n,), generator=g)


def test_each_method_on_each_family_shrinks_and_reloads_in_a_fresh_process(tmp_path):
    expected = {}
    for family, method in CASES:
        model, spec = tiny(family)
        x, y = data(spec)
        dense = sum(p.numel() for p in model.parameters())
        prune_model(model, context(x[:1], [(x, y)], method=method, sparsity=0.6, channel_ratio=0.5))
        model.eval()
        params = sum(p.numel() for p in model.parameters())
        nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
        assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict()), (family, method)
        if method == "magnitude":
            assert params == dense and nonzero < 0.6 * dense, (family, method)
        else:
            assert params < 0.6 * dense, (family, method)  # channels really removed
            spec.shapes = record_shapes(model)
        if method == "hybrid":
            assert nonzero < 0.6 * params
        spec.compression = [{"method": method, "format": "fp32"}]
        folder = tmp_path / f"{family}-{method}"
        save_model(model, spec, folder)
        with torch.no_grad():
            out = model(x)
        assert out.shape == (len(x), spec.num_classes) and torch.isfinite(out).all()
        torch.save({"x": x, "out": out}, folder / "expected.pt")
        expected[str(folder)] = out
    script = textwrap.dedent(f"""
        import torch
        from audiocomp.models import load_model
        torch.set_num_threads(1)
        for folder in {list(expected)!r}:
            model, _ = load_model(folder)
            ref = torch.load(folder + "/expected.pt", weights_only=True)
            with torch.no_grad():
                assert torch.equal(model(ref["x"]), ref["out"]), folder
        print("identical", len({list(expected)!r}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"identical {len(expected)}" in result.stdout


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru, self.fc = nn.GRU(6, 8, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.gru(x)[0][:, -1])


def test_structured_pruning_of_other_recurrent_layouts_is_refused_naming_magnitude():
    x, y = torch.randn(4, 5, 6), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ConfigError, match="prune.method=magnitude"):
        prune_model(GRUNet(), context(x[:1], [(x, y)], method="taylor"))
    prune_model(GRUNet(), context(x[:1], [(x, y)], method="magnitude"))  # magnitude works


@pytest.mark.parametrize("criterion", ["taylor", "l1"])
def test_lstm_hidden_surgery_removes_a_dead_unit_without_changing_outputs(criterion):
    """A hidden unit with zero gate weights and biases keeps c = 0 and h = 0: removing it (gate rows, the
    recurrent column, the next layer's and the head's input column) must leave the outputs unchanged."""
    shape, kwargs, _ = FAMILIES["lstm"]
    spec = ModelSpec("lstm", 4, shape, kwargs={"hidden_size": 8, "num_layers": 2, "bidirectional": True})
    torch.manual_seed(0)
    model = build_model(spec).eval()
    lstm = model.backbone.lstm
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith(("weight_ih", "weight_hh", "bias")):
                p.view(4, 8, -1)[:, 3] = 0  # unit 3's rows in every gate
            if name.startswith("weight_hh"):
                p[:, 3] = 0
    x, y = data(spec)
    with torch.no_grad():
        before = model(x)
    prune_model(model, context(x[:1], [(x, y)], method="taylor", criterion=criterion, channel_ratio=0.125))
    assert model.backbone.lstm.hidden_size == 7 and model.backbone.head[-1].in_features == 14
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-6)


def test_unknown_method_names_the_known_ones():
    model, spec = tiny("cnn")
    x, y = data(spec)
    with pytest.raises(ConfigError, match="known: hybrid, magnitude, taylor"):
        prune_model(model, context(x[:1], [(x, y)], method="taylr"))


def handmade():
    """conv1 (4 channels) -> ReLU -> conv2 -> ReLU -> pool -> linear. conv1's channel 1 never activates
    (zero weights and bias); channel 2 activates but nothing reads it (conv2 ignores it: zero gradient)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight.abs_()  # positive filters and inputs: every live channel is active
        model[0].bias.fill_(0.1)
        model[0].weight[1] = 0
        model[0].bias[1] = -1.0
        model[2].weight[:, 2] = 0
    x = torch.rand(6, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return model, x, y


def test_taylor_scores_match_activation_times_gradient_and_rank_dead_channels_last():
    model, x, y = handmade()
    imp = TaylorImportance()
    imp.accumulate(model, [(x[:3], y[:3]), (x[3:], y[3:])], loss_fn(False))
    # reference: |mean over positions of a * dL/da| per sample, summed over samples, at conv2's input
    ref = torch.zeros(4, dtype=torch.float64)
    for xb, yb in [(x[:3], y[:3]), (x[3:], y[3:])]:
        a = model[1](model[0](xb)).detach().requires_grad_(True)
        loss = loss_fn(False)(model[2:](a), yb)
        (g,) = torch.autograd.grad(loss, a)
        ref += (a * g).mean((2, 3)).abs().sum(0).double()
    assert torch.allclose(imp.scores[model[2]], ref, rtol=1e-5, atol=1e-12)
    assert ref[1] == 0 and ref[2] == 0 and (ref[[0, 3]] > 0).all()
    group = dict(prunable_groups(model, dependency_graph(model, x[:1])))["0"]
    scores = imp(group)
    assert set(torch.argsort(scores)[:2].tolist()) == {1, 2}

    original = model[0].weight.detach().clone()
    prune_model(model, context(x[:1], [(x, y)], method="taylor", channel_ratio=0.5))
    assert torch.equal(model[0].weight, original[[0, 3]])  # the dead channels were the ones removed


def test_macs_target_and_iterative_steps_fine_tune_between():
    from audiocomp.evaluate.facts import count_macs

    model, spec = tiny("cnn")
    x, y = data(spec)
    before = count_macs(model, x[:1])
    tags = []
    steps = prune_model(model, context(x[:1], [(x, y)], lambda m, t: tags.append(t) or [{"epoch": 1}],
                                       method="taylor", macs_reduction=2.0, steps=2, finetune_epochs=1))
    assert tags == ["taylor-1", "taylor-2"] and len(steps) == 2
    assert before / count_macs(model, x[:1]) >= 2.0
    assert steps[0]["macs"] > steps[1]["macs"]


def test_magnitude_global_and_layer_scopes_and_fine_tuning_keeps_zeros():
    model, spec = tiny("cnn")
    x, y = data(spec)

    def finetune(m, tag):  # a training step that would regrow every weight if masks were not attached
        with torch.no_grad():
            for p in m.parameters():
                p.add_(1.0)
        return []

    prune_model(model, context(x[:1], [(x, y)], finetune, method="magnitude", sparsity=0.75, scope="layer",
                               steps=3, finetune_epochs=1))
    for module in (model.backbone[0][0], model.backbone[1][0], model.backbone[-1]):
        assert (module.weight == 0).float().mean().item() == pytest.approx(0.75, abs=0.02)
    model, _ = tiny("cnn")
    prune_model(model, context(x[:1], [(x, y)], method="magnitude", sparsity=0.75, scope="global"))
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    assert (weights == 0).float().mean().item() == pytest.approx(0.75, abs=0.001)
    assert sparsity_schedule(0.8, 3)[-1] == pytest.approx(0.8)


def test_sparse_encoding_round_trips_and_shrinks_with_sparsity(tmp_path):
    model, spec = tiny("cnn")
    x, y = data(spec)
    dense = write_sparse(model.state_dict(), tmp_path / "dense.npz")
    prune_model(model, context(x[:1], [(x, y)], method="magnitude", sparsity=0.9))
    size = write_sparse(model.state_dict(), tmp_path / "sparse.npz")
    back = read_sparse(tmp_path / "sparse.npz")
    state = model.state_dict()
    assert list(back) == list(state)
    assert all(torch.equal(back[k], state[k]) and back[k].dtype == state[k].dtype for k in state)
    assert size < dense / 3


def test_sensitivity_rows_and_ratios_from_them():
    model, x, y = handmade()
    ctx = context(x[:1], [(x, y)], method="taylor")
    calls = []
    rows = sensitivity(model, ctx, [0.25, 0.5], lambda m: calls.append(m) or 0.5 - 0.01 * len(calls), progress=False)
    assert [(r["layer"], r["ratio"], r["pruned_channels"]) for r in rows] == [
        ("0", 0.25, 1), ("0", 0.5, 2), ("2", 0.25, 1), ("2", 0.5, 3)]
    assert all(set(r) == {"layer", "channels", "ratio", "pruned_channels", "val_accuracy", "baseline_accuracy",
                          "drop"} for r in rows)
    assert rows[0]["baseline_accuracy"] == pytest.approx(0.49) and rows[0]["drop"] == pytest.approx(0.01)
    assert model[0].out_channels == 4  # the model itself is never pruned
    rows = [{"layer": "a", "ratio": "0.1", "drop": "0.0"}, {"layer": "a", "ratio": "0.5", "drop": "0.005"},
            {"layer": "a", "ratio": "0.9", "drop": "0.3"}, {"layer": "b", "ratio": "0.1", "drop": "0.2"},
            {"layer": "b", "ratio": "0.5", "drop": "0.0"}]
    assert ratios_from_sensitivity(rows, 0.01) == {"a": 0.5, "b": 0.0}


def test_reshape_rebuilds_batchnorm_without_affine_parameters():
    from audiocomp.models.reshape import reshape_to

    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8, affine=False))
    reshape_to(model, {"0.weight": [3, 1, 3, 3], "1.running_mean": [3], "1.running_var": [3]})
    assert model[0].out_channels == 3 and model[1].num_features == 3
