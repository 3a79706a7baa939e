"""bench output schema (tiny iterations); report tables and plots from fixture runs; the demo's report."""
import json
import statistics

import pytest

BENCH = ["bench.iterations=3", "bench.warmup=1", "bench.batch_sizes=[4]", "bench.threads=[1]",
         "bench.fresh_process=false"]  # fresh processes that import torch take seconds: one ORT probe below


@pytest.fixture(scope="module")
def bench_and_eval(trained_run):
    from audiocomp.config import load_config
    from audiocomp.stages import bench, evaluate

    runs, model_run, cfg = trained_run
    cfg = load_config([], BENCH, base=cfg.to_dict())
    ev = evaluate.run(cfg, model_run, runs, name="rep-eval", force=True, progress=False)
    b = bench.run(cfg, model_run, runs, name="rep-bench", force=True, progress=False)
    return runs, ev, b


def test_bench_schema(bench_and_eval):
    _, _, b = bench_and_eval
    m = b.metrics()
    assert {"cpu", "logical_cores", "versions"} <= set(m["system"]) and m["threads"] == [1]
    for rt in ("torch", "torchscript", "onnxruntime"):
        r = m["runtimes"][rt]
        lat = r["threads"]["1"]["latency"]
        assert lat["n"] == 3 and 0 < lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert {"iqr_ms", "cv", "min_ms"} <= set(lat)
        assert r["threads"]["1"]["throughput"]["4"]["items_per_s"] > 0
    assert m["headline"]["runtime"] in m["runtimes"] and m["headline"]["latency_ms"] > 0
    assert (b.path / "model.onnx").is_file() and (b.path / "input.npy").is_file()
    assert m["device_profile"] is None and m["format"] == "fp32"


def test_fresh_process_memory_and_cold_start(bench_and_eval):
    from audiocomp.evaluate.bench import fresh_process

    _, _, b = bench_and_eval
    fresh = fresh_process("onnxruntime", b.path / "model.onnx", b.path / "input.npy", 1)
    # onnxruntime + numpy + interpreter: tens of MB, far below the torch-laden parent (VmHWM, not ru_maxrss)
    assert 5 < fresh["peak_rss_mb"] < 300 and 0 < fresh["cold_start_s"] < fresh["process_wall_s"]


def test_device_profile_only_sets_threads_and_batches(trained_run):
    from audiocomp.config import load_config
    from audiocomp.stages import bench

    runs, model_run, cfg = trained_run
    cfg = load_config([], BENCH + ["bench.device_profile=rpi4", "bench.runtimes=[onnxruntime]",
                                   "bench.fresh_process=false"], base=cfg.to_dict())
    m = bench.run(cfg, model_run, runs, name="rep-rpi4", force=True, progress=False).metrics()
    assert m["threads"] == [1, 4] and m["batch_sizes"] == [8]
    assert "not on the device" in m["device_profile"]["disclaimer"]
    assert set(m["runtimes"]) == {"onnxruntime"} and "fresh_process" not in m["runtimes"]["onnxruntime"]


def test_report_tables_plots_and_published_numbers(bench_and_eval, tmp_path):
    from audiocomp.config import load_config
    from audiocomp.report.plots import pareto_front
    from audiocomp.stages import report

    runs, _, _ = bench_and_eval
    result = report.run(load_config([], []), [runs], tmp_path)
    row = next(r for r in result["rows"] if r["run"] == "tiny-train")
    assert row["latency_torch_ms"] > 0 and row["latency_onnxruntime_ms"] > 0 and row["macs"] > 0 and row["size_mb"] > 0
    # the training's cost, from the training run's own record
    trained = json.loads((runs / "tiny-train" / "metrics.json").read_text())
    assert row["train_cpu_min"] == pytest.approx(trained["train_cpu_seconds"] / 60)
    assert row["train_samples_per_s"] == statistics.median(e["samples_per_second"] for e in trained["history"])
    md = (tmp_path / "report.md").read_text()
    assert ("| Model | Architecture | Compression | Format | Checkpoint chosen on | Train accuracy | "
            "Validation accuracy [95% CI] | "
            "Test accuracy [95% CI] |") in md
    assert "| torch eager, 1 thread, batch 1 (ms) | ONNX Runtime, 1 thread, batch 1 (ms) |" in md
    assert "| Training CPU-minutes | Training samples/s |" in md
    assert "Published numbers (theirs, not measured here)" in md and "| gtzan-resnet152 | resnet152 | fp16 | 78.0% | 116 |" in md
    for plot in ("accuracy_vs_size.png", "accuracy_vs_latency_torch.png", "accuracy_vs_latency_onnxruntime.png",
                 "methods.png", "tiny-train-curves.png", "rep-eval-confusion.png"):
        assert plot in result["plots"] and (tmp_path / plot).stat().st_size > 1000 and f"]({plot})" in md
    assert "<img src=\"accuracy_vs_size.png\"" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "report.csv").read_text().splitlines()[0].startswith("run,run_dir,model,method")
    # Pareto: (size, accuracy): b dominates c; a is cheapest; d is most accurate
    assert pareto_front([(1, .5), (2, .8), (3, .7), (4, .9)]) == [0, 1, 3]


def test_report_md_csv_and_html_show_the_same_columns(bench_and_eval, tmp_path):
    import csv
    import re

    from audiocomp.config import load_config
    from audiocomp.report.tables import COLUMNS
    from audiocomp.stages import report

    runs, _, _ = bench_and_eval
    report.run(load_config([], []), [runs], tmp_path)
    md_headers = (tmp_path / "report.md").read_text().split("\n\n")[2].splitlines()[0].strip("| ").split(" | ")
    html_headers = re.findall(r"<th>(.*?)</th>", (tmp_path / "report.html").read_text().split("</table>")[0])
    with open(tmp_path / "report.csv", newline="") as fh:
        csv_fields = next(csv.reader(fh))
    by_header = {c.header: c for c in COLUMNS}
    assert md_headers == html_headers and "Test accuracy [95% CI]" in md_headers
    assert csv_fields == [f for h in md_headers for f in by_header[h].csv_fields]


def test_published_numbers_come_from_the_explicit_mapping_only():
    from audiocomp.config import ConfigError
    from audiocomp.report.papers import check_mapping, load_papers, published_for

    studies = load_papers()
    mapped = check_mapping({"fp16": "gtzan-resnet152/fp16", "hybrid": "esc-us8k-cnn/hybrid-pruned", "ours": None},
                           studies)
    assert published_for({"run": "fp16", "dataset": "gtzan"}, mapped) == "gtzan-resnet152/fp16: 78.0% / 116 MB"
    assert published_for({"run": "hybrid", "dataset": "esc50"}, mapped) == "esc-us8k-cnn/hybrid-pruned: 89.0%"
    # no mapping, mapped to none, or measured on another dataset than the study's: no published number
    for row in ({"run": "cnn-taylor", "dataset": "esc50"}, {"run": "ours", "dataset": "gtzan"},
                {"run": "hybrid", "dataset": "audioset"}):
        assert published_for(row, mapped) is None
    with pytest.raises(ConfigError, match="report.published.x: 'gtzan-resnet152/int4' is not a published row"):
        check_mapping({"x": "gtzan-resnet152/int4"}, studies)


@pytest.mark.slow
def test_demo_ends_with_a_report_with_plots(tmp_path):
    from audiocomp.stages import demo

    result = demo.run(tmp_path, ["features.sample_rate=8000", "features.n_mels=32", "model.kwargs.channels=[8,16]",
                                 "train.epochs=1", "features.workers=1"], progress=False)
    page = (tmp_path / "report" / "report.html").read_text()
    assert len(result["plots"]) >= 4 and all(f'src="{p}"' in page for p in result["plots"])
    made = {s["id"]: s["run"] for s in result["pipeline"]["stages"]}  # runs named <stage>-<model>-<hash>
    assert json.loads((tmp_path / "runs" / made["demo-export"] / "metrics.json").read_text())["max_abs_diff"] < 1e-4
