"""The config schema: one pydantic model per section, `extra="forbid"` so a misspelled key is an error."""
from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    dataset: str = "synth"
    root: Optional[str] = None  # dataset folder; relative paths resolve against the working directory
    subset: Optional[str] = None  # e.g. "esc10" for ESC-50
    manifest: Optional[str] = None  # csv adapter: manifest path (relative to root)
    # the published dataset these files are (csv and folder adapters), e.g. urbansound8k: the report then sets
    # that dataset's published numbers beside the rows (report.published). A label: it names no run
    corpus: Optional[str] = None
    segment_seconds: Optional[float] = None  # cut clips into fixed segments (GTZAN 30 s -> 10 x 3 s)
    on_error: Literal["skip", "fail"] = "skip"
    max_items: Optional[int] = Field(None, ge=1)  # a subset stratified by class (seeded), for smoke tests


class SynthConfig(Section):
    """The `synth` pipeline stage: the seeded synthetic set, generated into data.root when it holds none."""
    per_class: int = Field(40, ge=2)  # clips per class
    duration: float = Field(1.5, ge=0.2)  # seconds
    seed: int = 0  # same seed, same files


class FeaturesConfig(Section):
    kind: Literal["logmel", "waveform", "mfcc"] = "logmel"
    sample_rate: int = Field(22050, ge=1000, le=192000)
    duration: float = Field(5.0, gt=0)  # seconds after pad/crop
    duration_policy: Literal["pad", "crop-center", "crop-start", "segment"] = "crop-center"
    n_fft: int = Field(2048, ge=16)
    hop_length: int = Field(512, ge=1)
    win_length: Optional[int] = None
    n_mels: int = Field(128, ge=1)
    f_min: float = Field(0.0, ge=0)
    f_max: Optional[float] = None
    top_db: Optional[float] = Field(80.0, gt=0)
    n_mfcc: int = Field(40, ge=1)
    normalize: Literal["none", "global", "per_bin"] = "per_bin"
    workers: Optional[int] = Field(None, ge=1)  # None: all cores


class SplitConfig(Section):
    kind: Literal["holdout", "folds", "group"] = "holdout"
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)  # carved from the training part; 0: no validation part
    # how validation is carved: auto draws it like the test part (whole groups when the test part holds out
    # whole groups, else single items), stratified by class
    val_by: Literal["auto", "group", "item"] = "auto"
    test_fold: Union[int, Literal["all"], None] = None  # folds: which official fold is the test fold
    val_fold: Optional[int] = None
    seed: Optional[int] = None  # None: the top-level seed


class ModelConfig(Section):
    name: str = "cnn"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: Optional[str] = None  # a local torchvision checkpoint (no downloads)
    input_size: Optional[tuple[int, int]] = None  # resize spectrograms to (H, W), e.g. [299, 299]
    in_channels: Optional[int] = Field(None, ge=1, le=3)  # None: the model's own default


class AugmentConfig(Section):
    spec_time_mask: int = Field(0, ge=0)  # max frames masked (SpecAugment), 0 = off
    spec_freq_mask: int = Field(0, ge=0)  # max mel bins masked
    mixup_alpha: float = Field(0.0, ge=0)
    gain_db: float = Field(0.0, ge=0)  # random gain in [-gain_db, gain_db] (log-mel dB: an offset)
    time_shift: float = Field(0.0, ge=0, le=1)  # max circular shift, fraction of the clip (samples or frames)
    # spectrograms: stretch time by a factor in [1/(1+s), 1+s] (a random crop when longer, silence-padded when
    # shorter), the time-stretch augmentation of SB-CNN done on the spectrogram; log-mel only: shift the pitch
    # by up to pitch_shift semitones (every band's content moves to the band of its frequency times
    # 2^(semitones/12), SB-CNN's pitch shift); freq_shift moves all bins by up to that many bins instead, which
    # is a pitch shift only in the upper (logarithmic) bands and an octave or more in the lowest
    time_stretch: float = Field(0.0, ge=0, le=1)
    pitch_shift: float = Field(0.0, ge=0, le=12)
    freq_shift: float = Field(0.0, ge=0)
    noise_std: float = Field(0.0, ge=0)  # waveform: Gaussian noise

    @model_validator(mode="after")
    def _one_frequency_move(self):
        if self.pitch_shift > 0 and self.freq_shift > 0:
            raise ValueError("pitch_shift and freq_shift both move the bands: set one of them")
        return self


class TrainConfig(Section):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-4, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "cosine", "step", "onecycle"] = "none"
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: Optional[float] = Field(None, gt=0)
    # exponential moving average of the weights and BN statistics, updated every step: validation, the kept
    # epoch and model/ use the average (a steadier, usually better model on small sets). None: off
    ema_decay: Optional[float] = Field(None, gt=0, lt=1)
    early_stopping: Optional[int] = Field(None, ge=1)  # patience in epochs on the validation metric
    # picks the best epoch; auto: val_accuracy (single-label) or val_map (multi-label)
    monitor: Literal["auto", "val_accuracy", "val_loss", "val_macro_f1", "val_map"] = "auto"
    # the epoch whose weights the run keeps: best (on the monitor; its validation score is then optimistic,
    # since that part chose it) or last (validation chooses nothing, so it can judge the model afterwards)
    keep: Literal["best", "last"] = "best"
    seeds: int = Field(1, ge=1)  # independent trainings (seed, seed+1, ...) in seeds/<k>/: mean +- std
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # autocast precision of the forward pass (weights, optimizer and loss stay float32). auto: float16 with
    # loss scaling on CUDA, bfloat16 on CPUs with native bf16 (AMX or AVX512-BF16), else float32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # NHWC memory format for models with 2-D convolutions (faster oneDNN kernels)
    compile: bool = False
    deterministic: bool = True
    threads: Optional[int] = Field(None, ge=1)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class PruneConfig(Section):
    method: str = "magnitude"  # magnitude | taylor | hybrid (compress/pruning.py)
    # unstructured (magnitude, and hybrid's first phase)
    sparsity: float = Field(0.5, ge=0, lt=1)  # fraction of conv/linear/LSTM weights set to zero
    scope: Literal["global", "layer"] = "global"  # one |w| threshold for all layers, or the same sparsity per layer
    # structured (taylor, and hybrid's second phase)
    criterion: Literal["taylor", "l1", "l2"] = "taylor"  # channel importance
    channel_ratio: float = Field(0.5, ge=0, lt=1)  # fraction of each group's channels removed
    macs_reduction: Optional[float] = Field(None, gt=1)  # instead: prune until MACs drop by this factor (2.0 = half)
    channel_scope: Literal["global", "layer"] = "layer"  # rank channels across all layers or within each
    max_layer_ratio: float = Field(0.9, gt=0, lt=1)  # never remove more of one layer's channels
    round_to: Optional[int] = Field(None, ge=1)  # keep channel counts multiples of this
    calibration_batches: int = Field(8, ge=1)  # fixed seeded training batches for Taylor importance
    sensitivity: Optional[str] = None  # sensitivity.csv from `prune sensitivity`: per-layer channel ratios
    max_drop: float = Field(0.01, ge=0, le=1)  # with sensitivity: largest accepted accuracy drop per layer
    sensitivity_ratios: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    # schedule
    steps: int = Field(1, ge=1)  # iterative pruning: steps with fine-tuning after each
    finetune_epochs: int = Field(0, ge=0)  # per step
    finetune_lr: Optional[float] = Field(None, gt=0)  # None: train.lr


class QuantizeConfig(Section):
    method: Literal["dynamic", "fp16", "static", "qat"] = "static"
    backend: Literal["torch", "onnxruntime"] = "torch"  # onnxruntime: dynamic or static (QDQ)
    engine: Literal["auto", "x86", "fbgemm", "qnnpack", "onednn"] = "auto"  # auto: qnnpack on ARM, x86 otherwise
    # activation ranges: torch offers minmax/histogram, onnxruntime minmax/entropy/percentile; auto: histogram
    # (torch) or minmax (onnxruntime)
    calibration: Literal["auto", "minmax", "histogram", "entropy", "percentile"] = "auto"
    percentile: float = Field(99.999, gt=90, le=100)  # onnxruntime percentile calibration
    calibration_batches: int = Field(8, ge=1)  # batches of the training split (never test)
    calibration_batch_size: int = Field(32, ge=1)
    per_channel: bool = True  # per-channel symmetric INT8 weights (onnxruntime; always on for torch static)
    keep_float: list[Literal["first", "last"]] = Field(default_factory=list)  # layers left in float32
    fp16_compute: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: float16 on CUDA, else float32
    qat_epochs: int = Field(2, ge=1)
    qat_lr: float = Field(1e-4, gt=0)
    latency_runs: int = Field(50, ge=1)  # batch-1 single-thread timings (median) of float vs quantized
    allow_degraded: bool = False  # keep a model whose accuracy fell near chance instead of failing


class DistillConfig(Section):
    """Knowledge distillation wherever a compressed model is fine-tuned (prune steps, hybrid, QAT, compress
    rungs): the stage's parent model (`--from`), frozen, teaches; and in a training run given a teacher
    (`train --teacher RUN`: a teacher given is a teacher used, whatever `enabled` says).
    Loss = (1 - alpha) CE(student, y) + alpha T^2 KL(softmax(teacher/T) || softmax(student/T)) (Hinton et al.
    2015); multi-label sets: BCE of student/T against sigmoid(teacher/T), times T^2 (train/distill.py). Off:
    the run name is unchanged."""
    enabled: bool = False
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the teacher term; 0 = plain fine-tuning
    temperature: float = Field(4.0, gt=0)  # softens both sides' logits


class CompressConfig(Section):
    """`audiocomp compress`: ladders of structured pruning ratios (each rung fine-tuned from the previous one,
    and also quantized to ONNX Runtime static INT8), the smallest rung within `max_drop` on validation chosen."""
    methods: list[Literal["structured", "hybrid"]] = Field(default_factory=lambda: ["structured", "hybrid"], min_length=1)
    # fraction of the parent's channels removed per coupled group, increasing: one rung each
    ratios: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [0.25, 0.5, 0.7, 0.8, 0.9],
                                                               min_length=1)
    max_drop: float = Field(0.01, ge=0, le=1)  # largest accepted validation accuracy drop vs the parent
    # a rung past its ladder's first miss of max_drop (same method and form) is not a candidate
    sequential: bool = True
    # with sequential: a ladder stops training once every form has missed (its deeper rungs cannot be chosen);
    # faster, and the front then holds the rungs up to that miss only
    stop_at_miss: bool = False
    target: Literal["size", "macs", "latency"] = "size"  # what "smallest" means
    finetune_epochs: int = Field(2, ge=0)  # per rung (prune.finetune_lr or train.lr)
    # the fine-tuning epoch a rung keeps (train.keep for rungs): last, because validation then judges the rung;
    # its best epoch on that same part scored about 2 points above its last one (docs/ours-recipes-record.md)
    rung_epoch: Literal["last", "best"] = "last"
    int8: bool = True  # also quantize every rung (ONNX Runtime static QDQ, calibrated on training batches)
    latency_runs: int = Field(30, ge=3)  # batch-1, 1-thread ONNX Runtime timings per form (median)
    jobs: int = Field(1, ge=1)  # ladders (methods) run in parallel processes; `compress --jobs` overrides it


class IntervalConfig(Section):
    """Percentile bootstrap of accuracies and paired differences (evaluate/stats.py)."""
    n_boot: int = Field(2000, ge=100)  # resamples
    seed: int = 0
    level: float = Field(0.95, gt=0, lt=1)


class EvalConfig(Section):
    split: Literal["train", "val", "test"] = "test"
    batch_size: int = Field(64, ge=1)
    top_k: int = Field(3, ge=1)
    interval: IntervalConfig = Field(default_factory=IntervalConfig)  # also used by prune, quantize, report


class BenchConfig(Section):
    threads: list[int] = Field(default_factory=lambda: [1, 0])  # thread counts to measure; 0 = all cores
    batch_sizes: list[int] = Field(default_factory=lambda: [16])  # throughput batches (latency is batch 1)
    warmup: int = Field(5, ge=0)
    iterations: int = Field(50, ge=3)  # timed calls per latency measurement
    runtimes: list[Literal["torch", "torchscript", "onnxruntime"]] = Field(
        default_factory=lambda: ["torch", "torchscript", "onnxruntime"])
    fresh_process: bool = True  # peak memory and cold start of a new process per runtime
    device_profile: Optional[Literal["rpi4", "jetson-nano"]] = None  # thread/batch presets only


class ExportConfig(Section):
    target: Literal["x86", "rpi4", "jetson-nano"] = "x86"  # the bundle's device (deploy/bundle.py TARGETS)
    with_frontend: bool = False  # log-mel front end inside the ONNX graph: the device feeds raw samples
    tolerance: Optional[float] = Field(None, gt=0)  # float graphs: max |logit diff| / max(1, |logit|); None: 1e-3
    torchscript: bool = False  # also write model.ts.pt (the traced float model, features in)


class ReportConfig(Section):
    title: str = "audiocomp report"
    formats: list[Literal["md", "csv", "html"]] = Field(default_factory=lambda: ["md", "csv", "html"])
    plots: bool = True
    papers: Optional[str] = None  # published numbers (YAML); None: the shipped data/paper_results.yaml
    # row name (stage id, or run name) -> "study-id/row-id" of the published row it reproduces, or null
    published: dict[str, Optional[str]] = Field(default_factory=dict)
    # row name -> the row its paired test difference is taken against instead of its parent's, when that row is
    # in the report (e.g. ours-cnn: cnn sets each of our rows beside the faithful reproduction's)
    compare: dict[str, str] = Field(default_factory=dict)


class TrackingConfig(Section):
    """A view of each run in an experiment tracker (tracking.py); changes no result, so it names no run."""
    mlflow: bool = False
    mlflow_uri: Optional[str] = None  # None: sqlite:///<runs dir>/mlflow.db (the MLflow UI needs no server)
    experiment: str = Field("audiocomp", min_length=1)  # MLflow experiment name
    tensorboard: bool = False  # event files in <run>/tensorboard/
    log_models: bool = False  # copy model files to MLflow; otherwise the run dir is referenced by a tag


# sections that change no result: never part of a run name or any other content hash
UNHASHED = ("tracking",)


class Config(Section):
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def section_hash(self, *sections: str) -> str:
        """Short stable hash of the named sections (all but UNHASHED when none): names runs and feature stores."""
        data = self.to_dict()
        return stable_hash({s: data[s] for s in sections or data if s not in UNHASHED})


def stable_hash(obj: Any, length: int = 10) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
