"""MACs and parameters of every registered model, in every format it supports, against independent counts:
torch's FlopCounterMode (MACs = FLOPs / 2) and the recurrent-layer formula by hand for MACs; the modules'
own parameters, BatchNorm folding worked out from the module list, and hand counts for parameters. And the
same model gets the same numbers in eval, prune, quantize and the report."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from audiocomp.compress import quantization as q
from audiocomp.compress.onnx import export_onnx
from audiocomp.compress.pruning import PruneContext, prune_model
from audiocomp.config import PruneConfig, QuantizeConfig
from audiocomp.evaluate.counts import count_macs, parameter_counts
from audiocomp.models import MODELS, ModelSpec, build_model, save_model
from audiocomp.models.reshape import record_shapes

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
BIG = ("resnet50", "resnet152")  # their slow formats are marked slow


def small_spec(name: str, **kwargs) -> ModelSpec:
    """The model with its defaults on a small input (torchvision models at 64x64)."""
    spectrogram = MODELS.get(name).input_kind == "spectrogram"
    vision = name.startswith(("resnet", "mobilenet"))
    return ModelSpec(name, 5, [1, 32, 21] if spectrogram else [4000], kwargs, norm_mode="global",
                     input_size=[64, 64] if vision else None)


def flop_counter_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2


def lstm_macs_by_hand(lstm: nn.LSTM, steps: int) -> int:
    """T x directions x sum over layers of 4H(in + H); a layer after the first takes H x directions inputs."""
    dirs, h = 2 if lstm.bidirectional else 1, lstm.hidden_size
    return steps * dirs * sum(4 * h * ((lstm.input_size if layer == 0 else h * dirs) + h)
                              for layer in range(lstm.num_layers))


def independent_macs(model: nn.Module, spec: ModelSpec) -> int:
    """FlopCounterMode counts nn.LSTM as 0: the recurrent part by hand, the rest by the flop counter."""
    x = torch.randn(1, *spec.feature_shape)
    total = flop_counter_macs(model, x)
    for m in model.modules():
        if isinstance(m, nn.LSTM):
            frame = spec.kwargs.get("frame_length", 400)
            steps = spec.feature_shape[0] // frame if spec.name == "lstm_raw" else spec.feature_shape[-1]
            total += lstm_macs_by_hand(m, steps)
    return total


def taylor_pruned(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """Structured pruning with the project's pruner (Torch-Pruning, or LSTM hidden-size surgery), no fine-tuning."""
    g = torch.Generator().manual_seed(0)
    calib = [(torch.randn(4, *spec.feature_shape, generator=g), torch.randint(0, 5, (4,), generator=g))]
    ctx = PruneContext(cfg=PruneConfig(method="taylor", channel_ratio=0.5), example=torch.randn(1, *spec.feature_shape),
                       calibration=calib, loss=nn.CrossEntropyLoss(), finetune=lambda m, tag: [])
    prune_model(model, ctx)
    return model.eval()


def case(name: str, slow: bool):
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


# ------------------------------------------------------------------------------------------------ MACs

def test_lstm_macs_of_the_issue_example_by_hand():
    """`lstm` (2 layers of 128, 10 classes) on a 1x64x63 input: 63 steps of 4*128*(64+128) + 4*128*(128+128)
    MACs, plus the 128 -> 10 head. Torch-Pruning's counter said 65x more."""
    model = build_model(ModelSpec("lstm", 10, [1, 64, 63]))
    assert count_macs(model, torch.randn(1, 1, 64, 63)) == 63 * (4 * 128 * (64 + 128) + 4 * 128 * (128 + 128)) + 128 * 10


@pytest.mark.parametrize("kwargs", [{"bidirectional": True, "num_layers": 3, "hidden_size": 16}, {"num_layers": 1}])
def test_recurrent_macs_by_hand_for_other_layouts(kwargs):
    spec = small_spec("lstm", **kwargs)
    model = build_model(spec)
    assert count_macs(model, torch.randn(1, *spec.feature_shape)) == independent_macs(model, spec)


@pytest.mark.parametrize("name", MODELS.names())
def test_macs_of_every_registered_model_against_an_independent_count(name):
    spec = small_spec(name)
    model = build_model(spec).eval()
    ours = count_macs(model, torch.randn(1, *spec.feature_shape))
    assert ours == independent_macs(model, spec) > 0
    # batch-first LSTMs, counted on a batch of 3: three times the MACs of one item
    assert count_macs(model, torch.randn(3, *spec.feature_shape)) == 3 * ours


@pytest.mark.parametrize("name", [case(n, n in BIG) for n in MODELS.names()])
def test_macs_of_every_registered_model_after_taylor_pruning(name):
    spec = small_spec(name)
    torch.manual_seed(0)
    model = build_model(spec)
    before = count_macs(model, torch.randn(1, *spec.feature_shape))
    taylor_pruned(model, spec)
    after = count_macs(model, torch.randn(1, *spec.feature_shape))
    assert after == independent_macs(model, spec) and after < before
    # what eval reports for the saved pruned model: its architecture, rebuilt from the recorded shapes
    from audiocomp.evaluate.facts import architecture_macs

    assert architecture_macs(ModelSpec.from_dict({**spec.to_dict(), "shapes": record_shapes(model)})) == after


# ------------------------------------------------------------------------------------------ parameters

def trained_like(model: nn.Module) -> nn.Module:
    """Biases and BatchNorm statistics as after training. Freshly built they are zeros and ones, so equal
    tensors (e.g. every folded bias) would be stored once by the ONNX exporter."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model.eval()


def own_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def folded_parameters(model: nn.Module) -> int:
    """Parameters once every BatchNorm is folded into the convolution before it: its weight and bias go, and
    a convolution without a bias gains one."""
    total, last_conv = own_parameters(model), None
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            last_conv = m
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            total -= m.weight.numel() + m.bias.numel()
            total += m.num_features if last_conv.bias is None else 0
    return total


class _Epochs(list):
    def set_epoch(self, epoch):
        pass


def quantized_counts(model: nn.Module, spec: ModelSpec, backend: str, method: str, folder: Path) -> dict:
    g = torch.Generator().manual_seed(2)
    calib = [(torch.randn(4, *spec.feature_shape, generator=g), torch.randint(0, 5, (4,), generator=g))]
    cfg = QuantizeConfig(backend=backend, method=method, qat_epochs=1, calibration_batch_size=4)
    _, step, _ = q.quantize(model, spec, calib, cfg, folder, train_batches=_Epochs(calib))
    return parameter_counts(folder / step["artifact"])


RECURRENT = ("lstm", "lstm_raw")
FORMATS = ["fp32", "taylor", "magnitude", "torch-fp16", "torch-dynamic", "torch-static", "torch-qat", "onnx",
           "onnxruntime-dynamic", "onnxruntime-static"]
SLOW_FORMATS = ("taylor", "torch-static", "torch-qat", "onnx", "onnxruntime-dynamic", "onnxruntime-static")
CASES = [pytest.param(n, f, marks=pytest.mark.slow) if n in BIG and f in SLOW_FORMATS else (n, f)
         for n in MODELS.names() for f in FORMATS
         if not (n in RECURRENT and f in ("torch-static", "torch-qat"))]  # static INT8 of an LSTM is not a format


@pytest.mark.parametrize("name,fmt", CASES)
def test_parameters_of_every_model_in_every_format(name, fmt, tmp_path):
    spec = small_spec(name)
    torch.manual_seed(0)
    model = trained_like(build_model(spec))
    float_count = own_parameters(model)
    if fmt in ("fp32", "taylor", "magnitude"):
        if fmt == "taylor":
            taylor_pruned(model, spec)
        if fmt == "magnitude":
            prune_model(model, PruneContext(cfg=PruneConfig(method="magnitude", sparsity=0.5), example=None,
                                            calibration=[], loss=None, finetune=lambda m, tag: []))
        counts = parameter_counts(save_model(model, spec, tmp_path))  # the artifact: model.pt
        assert counts["parameters"] == own_parameters(model) == parameter_counts(model)["parameters"]
        assert counts["nonzero"] == sum(int(torch.count_nonzero(p)) for p in model.parameters())
        assert fmt != "taylor" or counts["parameters"] < float_count
        assert fmt != "magnitude" or counts["nonzero"] < 0.75 * counts["parameters"]
        assert counts["quant_params"] == 0
        return
    if fmt == "onnx":
        counts = parameter_counts(export_onnx(model, spec.feature_shape, tmp_path / "model.onnx"))
    else:
        counts = quantized_counts(model, spec, *fmt.split("-"), tmp_path)
    if fmt in ("torch-fp16", "torch-dynamic"):  # stored as they were (dynamic: packed INT8 weights unpacked)
        assert counts["parameters"] == float_count
    else:  # BatchNorm folded into the convolutions (static INT8, QAT and every ONNX graph)
        assert counts["parameters"] == folded_parameters(model)
    assert 0 < counts["nonzero"] <= counts["parameters"]
    quantized = fmt in ("torch-dynamic", "torch-static", "torch-qat", "onnxruntime-dynamic", "onnxruntime-static")
    assert (counts["quant_params"] > 0) == quantized


def test_hand_counts_of_a_tiny_cnn(tmp_path):
    """cnn with channels [4, 8], hidden 8, 4 classes, 3x3 kernels, one input channel."""
    spec = ModelSpec("cnn", 4, [1, 16, 20], {"channels": [4, 8], "hidden": 8})
    model = trained_like(build_model(spec))
    conv1, bn1, conv2, bn2, fc1, fc2 = 4 * 1 * 9, 2 * 4, 8 * 4 * 9, 2 * 8, 8 * 8 + 8, 4 * 8 + 4
    assert conv1 + bn1 + conv2 + bn2 + fc1 + fc2 == 456
    assert parameter_counts(model) == {"parameters": 456, "nonzero": 456, "quant_params": 0}
    folded = conv1 + 4 + conv2 + 8 + fc1 + fc2  # BN gone, its shift now the convolutions' biases
    static = quantized_counts(model, spec, "torch", "static", tmp_path / "static")
    # per-channel weights carry a scale and a zero point per output channel (4 + 8 + 8 + 4 channels); each
    # quantized layer its output scale and zero point (4 layers); two Quantize steps (input, after pooling)
    assert static["parameters"] == folded and static["quant_params"] == 2 * (4 + 8 + 8 + 4) + 2 * 4 + 2 * 2
    qdq = quantized_counts(model, spec, "onnxruntime", "static", tmp_path / "qdq")
    # QDQ: weights and (INT32) biases each with per-channel scales and zero points; five activation points
    # (normalised input, after each ReLU, logits) with one scale and one zero point each
    assert qdq["parameters"] == folded and qdq["quant_params"] == 2 * 2 * (4 + 8 + 8 + 4) + 5 * 2
    dynamic = quantized_counts(model, spec, "torch", "dynamic", tmp_path / "dynamic")
    # the two Linear layers: packed per-tensor weights (scale, zero point) and the module's own pair
    assert dynamic["parameters"] == 456 and dynamic["quant_params"] == 2 * (2 + 2)


def test_onnx_rule_ignores_normalisation_and_shape_constants(tmp_path):
    """per-bin normalisation stores F means and F deviations in the graph; an LSTM's export adds int64 shape
    constants: neither is a weight or a bias."""
    spec = ModelSpec("lstm", 4, [1, 16, 20], {"hidden_size": 8}, norm_mode="per_bin")
    model = build_model(spec)
    model.set_norm({"mean": [0.5] * 16, "std": [2.0] * 16})
    counts = parameter_counts(export_onnx(model, spec.feature_shape, tmp_path / "m.onnx"))
    assert counts == {"parameters": own_parameters(model), "nonzero": own_parameters(model), "quant_params": 0}


# -------------------------------------------------------------------------------- one number everywhere

def test_the_same_model_gets_the_same_counts_in_eval_prune_quantize_and_report(trained_run, tmp_path):
    from audiocomp.config import load_config
    from audiocomp.report.tables import model_rows
    from audiocomp.runs import Run
    from audiocomp.stages import evaluate, prune, quantize

    runs, model_run, cfg = trained_run
    pcfg = load_config([], ["prune.method=hybrid", "prune.sparsity=0.5", "prune.channel_ratio=0.25",
                            "bench.iterations=3"], base=cfg.to_dict())
    pruned = prune.run(pcfg, model_run, runs, name="counts-pruned", force=True, progress=False)
    qcfg = load_config([], ["quantize.backend=onnxruntime", "quantize.latency_runs=2"], base=cfg.to_dict())
    quant = quantize.run(qcfg, pruned, runs, name="counts-int8", force=True, allow_degraded=True, progress=False)
    evals = {r.name: evaluate.run(cfg, r, runs, name=f"counts-eval-{r.name}", force=True, progress=False)
             .metrics()["model_facts"] for r in (model_run, pruned, quant)}
    p, qm = pruned.metrics(), quant.metrics()
    keys = ("parameters", "nonzero", "quant_params", "macs")
    assert {k: p["before"][k] for k in keys} == {k: evals[model_run.name][k] for k in keys}
    assert {k: p["after"][k] for k in keys} == {k: evals[pruned.name][k] for k in keys}
    assert {k: qm["model_facts"][k] for k in keys} == {k: evals[quant.name][k] for k in keys}
    assert model_run.metrics()["parameters"] == evals[model_run.name]["parameters"]
    assert evals[quant.name]["macs"] == evals[pruned.name]["macs"]  # quantization inherits its float MACs
    rows = {r["run"]: r for r in model_rows([Run(runs / n) for n in (*evals, *(f"counts-eval-{n}" for n in evals))])}
    for run_name, facts in evals.items():
        assert {k: rows[run_name][k] for k in ("parameters", "nonzero", "macs")} == \
               {k: facts[k] for k in ("parameters", "nonzero", "macs")}
    # the hybrid sparse encoding against the dense original: raw file, and like for like (both compressed)
    c, b, a = p["change"], p["before"], p["after"]
    assert c["sparse_vs_dense_original"] == round(b["file_bytes"] / a["sparse_bytes"], 4)
    assert c["sparse_vs_zipped_dense_original"] == round(b["zipped_bytes"] / a["sparse_bytes"], 4)
    assert c["sparse_vs_zipped_dense_original"] < c["sparse_vs_dense_original"]
