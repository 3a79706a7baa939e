"""Every registered model builds, runs forward and backward on tiny inputs; local checkpoints load."""
from __future__ import annotations

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from audiocomp.cli import app
from audiocomp.models import MODELS, ModelSpec, build_model
from audiocomp.models.io import ModelLoadError, load_pretrained

TINY = {"cnn": {"channels": [4, 8]}, "cnn1d": {"channels": [4, 8]}, "lstm": {"hidden_size": 8},
        "lstm_raw": {"hidden_size": 8, "frame_length": 50}}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_trains_one_step(name):
    info = MODELS.get(name)
    shape = [1, 16, 20] if info.input_kind == "spectrogram" else [800]
    spec = ModelSpec(name, num_classes=3, feature_shape=shape, kwargs=TINY.get(name, {}),
                     input_size=[32, 32] if info.default_channels == 3 else None)
    model = build_model(spec)
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_models_command_lists_every_model_with_parameters():
    result = CliRunner().invoke(app, ["models", "--feature-shape", "1x32x21", "--classes", "5"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.strip().splitlines()}
    assert set(lines) == set(MODELS.names())
    n = sum(p.numel() for p in build_model(ModelSpec("cnn", 5, [1, 32, 21])).parameters())
    assert f"{n:,}" in lines["cnn"]
    assert n < 1_000_000  # the default compact CNN trains on a CPU


def test_replicated_and_adapted_stem_agree_with_pretrained_weights(tmp_path):
    """model.weights: a local torchvision state dict; the mono stem (in_channels=1) gets the RGB kernel
    summed, so on the same mono input it computes what the replicated 3-channel model computes."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    outputs = []
    for channels in (3, 1):
        model = build_model(ModelSpec("resnet18", 4, [1, 32, 32], in_channels=channels))
        skipped = load_pretrained(model.backbone, path)
        assert skipped == ["fc.bias", "fc.weight"]  # only the new 4-class head is left as initialised
        torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
        model.backbone.fc = torch.nn.Identity()
        outputs.append(model.eval()(torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)


def test_pretrained_file_that_matches_nothing_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    model = build_model(ModelSpec("resnet18", 4, [1, 32, 32]))
    with pytest.raises(ModelLoadError, match="no tensor matches"):
        load_pretrained(model.backbone, path)


def test_resnet152_defaults_to_299(tiny_cfg):
    from audiocomp.train.spec import model_spec

    class Prepared:  # what model_spec reads
        class store:
            classes, multilabel = ["a", "b"], False
            features = torch.zeros(1, 1, 32, 63)

        @staticmethod
        def split(i=0):
            return {"norm": None}

    tiny_cfg.model.name = "resnet152"
    assert model_spec(tiny_cfg, Prepared).input_size == [299, 299]
    tiny_cfg.model.input_size = (64, 64)
    assert model_spec(tiny_cfg, Prepared).input_size == [64, 64]


def test_unknown_model_name_is_a_one_line_config_error(tiny_overrides, tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["train", "--runs-dir", str(tmp_path), "-q",
                                      *[a for o in tiny_overrides for a in ("--set", o)], "--set", "model.name=resnet151"])
    assert result.exit_code == 2
    assert "model.name: unknown model 'resnet151'; did you mean 'resnet152'?" in result.output


def test_grid_pool_matches_adaptive_pooling_and_the_pooled_cnn_exports_to_onnx(tmp_path):
    import itertools

    import numpy as np

    from audiocomp.compress.onnx import export_onnx, run_session, session
    from audiocomp.models.cnn import grid_pool

    for h, w, gh, gw in itertools.product(range(1, 8), range(1, 8), (1, 2, 3), (1, 2, 3)):
        x = torch.randn(2, 3, h, w)
        assert torch.allclose(grid_pool((h, w), (gh, gw))(x), torch.nn.AdaptiveAvgPool2d((gh, gw))(x), atol=1e-6)
    # 64 x 63 features -> a 4 x 3 map after four pools: a 2 x 2 grid does not divide it
    model = build_model(ModelSpec("cnn", 10, [1, 64, 63], kwargs={"pooled": [2, 2]})).eval()
    path = export_onnx(model, [1, 64, 63], tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((3, 1, 64, 63)).astype(np.float32)
    assert np.abs(run_session(session(path), x) - model(torch.from_numpy(x)).detach().numpy()).max() < 1e-4


def test_meanmax_head_pools_by_hand_and_exports_to_onnx(tmp_path):
    import numpy as np

    from audiocomp.compress.onnx import export_onnx, run_session, session
    from audiocomp.models.cnn import MeanMaxOverTime

    x = torch.tensor([[[[1.0, 5.0, 0.0], [3.0, 1.0, 0.0]]]])  # (1, 1, F=2, T=3): frequency means 2, 3, 0
    assert MeanMaxOverTime()(x).tolist() == [[pytest.approx(5 / 3 + 3)]]  # mean over time 5/3, max over time 3
    model = build_model(ModelSpec("cnn", 10, [1, 64, 63], kwargs={"head_pool": "meanmax"})).eval()
    assert isinstance(model.backbone[-6], MeanMaxOverTime)
    path = export_onnx(model, [1, 64, 63], tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((3, 1, 64, 63)).astype(np.float32)
    assert np.abs(run_session(session(path), x) - model(torch.from_numpy(x)).detach().numpy()).max() < 1e-4
    with pytest.raises(ValueError, match="head_pool"):
        build_model(ModelSpec("cnn", 10, [1, 64, 63], kwargs={"head_pool": "max"}))


def test_vgg_style_blocks_stack_convolutions_before_each_pooling():
    one = build_model(ModelSpec("cnn", 10, [1, 32, 40], kwargs={"channels": [8, 16]}))
    two = build_model(ModelSpec("cnn", 10, [1, 32, 40], kwargs={"channels": [8, 16], "convs_per_block": 2}))
    convs = [m for m in two.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 8), (8, 16), (16, 16)]
    assert sum(isinstance(m, torch.nn.Conv2d) for m in one.modules()) == 2
    assert two(torch.randn(2, 1, 32, 40)).shape == (2, 10)
