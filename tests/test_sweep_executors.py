"""Sweeps on engines: the job graph, `run --until`, sweep-file resources, Ray (same results as local),
Slurm through submitit (its local executor, and the sbatch scripts it would submit), --collect."""
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audiocomp.cli import app
from audiocomp.config import ConfigError
from audiocomp.runs import Run
from audiocomp.stages import pipeline, sweep, sweep_jobs

PIPELINE = """
stages:
  - {id: data, stage: prepare}
  - {id: fp32, stage: train, from: data}
  - {id: test, stage: eval, from: fp32}
"""


def make_sweep(tmp_path: Path, tiny_overrides, body: str, name: str = "sweep.yaml") -> Path:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    sets = ", ".join(json.dumps(s) for s in [*tiny_overrides, "train.epochs=1"])
    path = tmp_path / name
    path.write_text(f"pipeline: pipeline.yaml\nset: [{sets}]\n{body}")
    return path


def graph(plan, **kw):
    return {j.id: j for j in sweep_jobs.build(plan, 1, **kw)}


def test_one_job_per_shared_run_then_one_per_combination(tmp_path, tiny_overrides):
    # a and b set nothing different: 1 prepare, per lr one train and one eval that a and b share
    path = make_sweep(tmp_path, tiny_overrides, "grid: {train.lr: [0.01, 0.003]}\nruns: [{name: a}, {name: b}]")
    plan = sweep.load(path, tmp_path / "runs", tmp_path / "out")
    jobs = graph(plan)
    names = {c.id: dict(zip(("data", "fp32", "test"), c.run_names)) for c in plan.combos}
    a1, a2, b1, b2 = (names[k] for k in ("000-a_0.01", "001-a_0.003", "002-b_0.01", "003-b_0.003"))
    assert a1 == b1 and a2 == b2 and a1["fp32"] != a2["fp32"]
    prep = a1["data"]
    assert [(j.id, j.kind, j.deps) for j in jobs.values()] == [
        (prep, "shared", []),
        (a1["fp32"], "shared", [prep]), (a1["test"], "shared", [a1["fp32"]]),
        (a2["fp32"], "shared", [prep]), (a2["test"], "shared", [a2["fp32"]]),
        ("000-a_0.01", "combo", [a1["test"]]), ("001-a_0.003", "combo", [a2["test"]]),
        ("002-b_0.01", "combo", [a1["test"]]), ("003-b_0.003", "combo", [a2["test"]])]
    assert sorted(jobs[prep].combos) == sorted(names) and jobs[a1["fp32"]].combos == ["000-a_0.01", "002-b_0.01"]
    argv = jobs[a1["fp32"]].argv
    assert argv[argv.index("--until") + 1] == "fp32" and argv[argv.index("--out") + 1] == str(tmp_path / "out/shared" / a1["fp32"])
    assert jobs["001-a_0.003"].argv == plan.argv(plan.combos[1], 1, [])
    assert jobs[prep].log == str(tmp_path / "out/logs" / f"{prep}.log") and jobs[prep].cwd == os.getcwd()

    # a finished run gets no job (those after it no longer wait for it); a finished combination neither
    done = Run.create(prep, "prepare", plan.runs_dir)
    done.start("prepare", plan.combos[0].steps[0].cfg)
    done.finish()
    assert prep not in graph(plan) and graph(plan)[a1["fp32"]].deps == []
    info = {"status": "done", "stages": [{"run": n} for n in plan.combos[0].run_names]}
    (plan.combo_dir(plan.combos[0])).mkdir(parents=True)
    (plan.combo_dir(plan.combos[0]) / "pipeline.json").write_text(json.dumps(info))
    for n in plan.combos[0].run_names[1:]:  # (`finished` only asks that they exist)
        (plan.runs_dir / n).mkdir()
        (plan.runs_dir / n / "manifest.json").write_text("{}")
    resumed = graph(plan, resume=True)
    assert "000-a_0.01" not in resumed and a1["fp32"] not in resumed  # now used by 002-b alone: part of its job
    assert resumed["002-b_0.01"].deps == []


def test_a_job_after_a_failed_parent_is_not_run_and_names_the_job_that_failed(tmp_path):
    job = sweep_jobs.Job("000-a", "combo", ["run", "nonexistent.yaml"], str(tmp_path), "a.log", 1, ["train-x"])
    ok = {"id": "prepare-x", "status": "done"}
    result = sweep_jobs.run_job(job, ok, {"id": "train-x", "status": "failed", "error": "TypeError: bogus"})
    assert result == {"id": "000-a", "status": "failed", "error": "not run: job train-x failed (TypeError: bogus)"}
    assert not (tmp_path / "a.log").exists()  # nothing was started
    after = sweep_jobs.run_job(sweep_jobs.Job("b", "combo", [], str(tmp_path), "b.log", 1, ["000-a"]), result)
    assert after["error"] == result["error"]


def test_until_plans_the_stage_and_what_it_needs(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE + "  - {id: other, stage: train, from: data, set: [train.lr=0.1]}\n"
                               "  - {id: table, stage: report, from: test}\n")
    assert [s.spec.id for s in pipeline.plan(path, until="fp32")] == ["data", "fp32"]
    assert [s.spec.id for s in pipeline.plan(path, until="table")] == ["data", "fp32", "test", "table"]
    assert {s.spec.id: s.name for s in pipeline.plan(path, until="test")} == \
        {s.spec.id: s.name for s in pipeline.plan(path) if s.spec.id in ("data", "fp32", "test")}
    with pytest.raises(ConfigError, match="--until nope: no stage with that id"):
        pipeline.plan(path, until="nope")


def test_sweep_file_resources_and_slurm_options(tmp_path, tiny_overrides):
    path = make_sweep(tmp_path, tiny_overrides, "resources: {cpus: 3, gpus: 0.5}\nslurm: {time: '1-02:00:30'}\n"
                                                "runs: [{name: a}, {name: cpu, set: [train.device=cpu]}]")
    plan = sweep.load(path)
    a, cpu = plan.combos
    assert a.overrides[0] == "train.device=cuda" and a.steps[1].cfg.train.device == "cuda"
    assert cpu.steps[1].cfg.train.device == "cpu"  # an explicit device wins over the GPU request
    assert plan.threads(jobs=2) == 3 and plan.spec.slurm.time == 26 * 60 + 1
    for body, message in [("resources: {cpu: 1}", "resources.cpu: unknown key; did you mean 'cpus'? (allowed: cpus, gpus)"),
                          ("slurm: {time: '4h'}", "slurm.time: '4h' is not valid: expected minutes or [D-]HH:MM:SS"),
                          ("slurm: {partion: gpu}", "did you mean 'partition'?")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            sweep.load(make_sweep(tmp_path, tiny_overrides, body, "bad.yaml"))


def test_a_missing_extra_is_one_line(tmp_path, tiny_overrides, monkeypatch):
    path = make_sweep(tmp_path, tiny_overrides, "grid: {eval.top_k: [1, 3]}")
    for module, executor, extra in [("ray", "ray", "ray"), ("submitit", "slurm", "slurm")]:
        monkeypatch.setitem(sys.modules, module, None)
        result = CliRunner().invoke(app, ["sweep", str(path), "--executor", executor, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2
        assert result.output.strip() == f"error: --executor {executor} needs the {extra} extra: pip install 'audiocomp[{extra}]'"


FAKE_SLURM = """#!/bin/sh
# sbatch: keep the script, answer like Slurm with the next job id
n=$(( $(cat "$CAPTURE/last" 2>/dev/null || echo 1000) + 1 ))
echo $n > "$CAPTURE/last"
if [ "$n" = "$REFUSE" ]; then echo "sbatch: error: invalid partition specified: gpu" >&2; exit 1; fi
cp "$1" "$CAPTURE/$n.sh"
echo "Submitted batch job $n"
"""

SBATCH = """#!/bin/bash

# Parameters
{array}#SBATCH --cpus-per-task=2
{dependency}#SBATCH --error=F/{pattern}_0_log.err
#SBATCH --gpus-per-task=1
#SBATCH --job-name=audiocomp-sweep
{kill}#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=F/{pattern}_0_log.out
#SBATCH --partition=gpu
#SBATCH --signal=USR2@90
#SBATCH --time=90
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output F/{pattern}_%t_log.out --error F/{pattern}_%t_log.err PY -u -m submitit.core._submit F
"""


def test_slurm_submission_writes_arrays_with_afterok_dependencies(tmp_path, tiny_overrides, monkeypatch):
    pytest.importorskip("submitit")
    from audiocomp.stages import sweep_slurm

    bin_, capture = tmp_path / "bin", tmp_path / "capture"
    bin_.mkdir(), capture.mkdir()
    for tool, text in (("sbatch", FAKE_SLURM), ("srun", "#!/bin/sh\nexit 1\n")):
        (bin_ / tool).write_text(text)
        (bin_ / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CAPTURE", str(capture))
    path = make_sweep(tmp_path, tiny_overrides, "grid: {eval.top_k: [1, 2, 3]}\nresources: {cpus: 2}\n"
                      "slurm: {partition: gpu, time: '1:30:00', gpus_per_task: 1, array_parallelism: 2}")
    where = ["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, ["sweep", str(path), "--executor", "slurm", *where])
    assert result.exit_code == 0, result.output
    assert "1003_2  002-3" in result.output and "cancel: scancel 1001 1002 1003" in result.output
    jobs = sweep_jobs.build(sweep.load(path, tmp_path / "runs", tmp_path / "out"), 2)
    prep, train = jobs[0].id, jobs[1].id
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert summary["status"] == "submitted" and summary["executor"] == "slurm"
    assert {j["id"]: j["slurm_id"] for j in summary["jobs"]} == {
        prep: "1001", train: "1002", "000-1": "1003_0", "001-2": "1003_1", "002-3": "1003_2"}

    def script(n: int) -> str:
        text = (capture / f"{n}.sh").read_text()
        return text.replace(str((tmp_path / "out" / "slurm").resolve()), "F").replace(shlex.quote(sys.executable), "PY")

    plain = dict(array="", dependency="", kill="", pattern="%j")
    assert script(1001) == SBATCH.format(**plain)
    assert script(1002) == SBATCH.format(**plain | dict(dependency="#SBATCH --dependency=afterok:1001\n",
                                                        kill="#SBATCH --kill-on-invalid-dep=yes\n"))
    assert script(1003) == SBATCH.format(array="#SBATCH --array=0-2%2\n", pattern="%A_%a",
                                         dependency="#SBATCH --dependency=afterok:1002\n",
                                         kill="#SBATCH --kill-on-invalid-dep=yes\n")
    # nothing ran: --collect says so, and exits 1
    result = CliRunner().invoke(app, ["sweep", str(path), *where, "--collect"])
    assert result.exit_code == 1 and "sweep incomplete: 0 done, 0 skipped, 0 failed, 3 pending" in result.output
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["jobs"][0]["slurm_id"] == "1001"

    # sbatch refuses the second submission: one line, and what went in is recorded with its cancel command
    monkeypatch.setenv("REFUSE", "1005")
    out = tmp_path / "refused"
    result = CliRunner().invoke(app, ["sweep", str(path), "--executor", "slurm", "--runs-dir", str(tmp_path / "runs"),
                                      "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (  # (above it, submitit echoes sbatch's stderr)
        f"error: sbatch failed for {train}: sbatch: error: invalid partition specified: "
                                      "gpu; already submitted, cancel with: scancel 1004")
    assert json.loads((out / "sweep.json").read_text())["status"] == "submission failed"

    missing = make_sweep(tmp_path, tiny_overrides, "grid: {eval.top_k: [1, 2]}", "no-time.yaml")
    with pytest.raises(ConfigError, match="slurm.time: required by --executor slurm"):
        sweep_slurm.submit(sweep.load(missing, tmp_path / "runs", tmp_path / "out2"))


def attempts(runs: Path) -> dict[str, int]:
    return {p.name: Run(p).manifest["attempts"] for p in runs.iterdir() if (p / "manifest.json").is_file()}


@pytest.mark.slow
def test_submitit_local_executor_runs_the_graph_and_a_failed_parent_blocks_its_children(tmp_path, tiny_overrides):
    pytest.importorskip("submitit")
    from audiocomp.stages import sweep_slurm

    path = make_sweep(tmp_path, tiny_overrides, "grid: {eval.top_k: [1, 3]}\nresources: {cpus: 1}\n"
                      'runs: [{name: good}, {name: bad, set: ["fp32:model.kwargs.bogus=1"]}]')
    plan = sweep.load(path, tmp_path / "runs", tmp_path / "out")
    sub = sweep_slurm.submit(plan, cluster="local")
    assert len(sub.ids) == 5  # prepare, both trainings, the good combinations; the bad ones never started
    for handle in sub.handles.values():
        assert handle.result()["id"] in sub.ids
    summary = sweep_jobs.collect(plan)
    by_id = {c["id"]: c for c in summary["combinations"]}
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 2} and summary["status"] == "failed"
    bad_train = next(n for n in by_id["002-bad_1"]["runs"] if n.startswith("train-"))
    assert by_id["002-bad_1"]["error"].startswith(f"not run: job {bad_train} failed (") and "bogus" in by_id["002-bad_1"]["error"]
    assert all(n == 1 for n in attempts(plan.runs_dir).values())  # every shared run made once
    reused = json.loads((plan.combo_dir(plan.combos[0]) / "pipeline.json").read_text())
    assert [s["status"] for s in reused["stages"]] == ["reused", "reused", "ran"]
    assert (tmp_path / "out" / "report" / "report.md").is_file()


# timings, and zipped_bytes: torch.save names the archive's root folder after the file it writes, here a random
# temp name (runs.atomic_path), so identical tensors deflate to a size that varies by a byte between saves
TIMING = re.compile(r"seconds|_s$|_ms$|latency|throughput|per_s|time|started|ended|zipped_bytes")


def without_timings(obj):
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if not TIMING.search(k)}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_sweep_of_four_jobs_matches_the_local_executor(tmp_path, tiny_overrides, ray_cluster):
    from audiocomp.stages import sweep_ray

    path = make_sweep(tmp_path, tiny_overrides, "grid: {eval.top_k: [1, 3]}\nresources: {cpus: 1}")
    local = sweep.load(path, tmp_path / "local-runs", tmp_path / "local")
    on_ray = sweep.load(path, tmp_path / "ray-runs", tmp_path / "ray")
    assert [c.run_names for c in local.combos] == [c.run_names for c in on_ray.combos]
    first = sweep.run(local, jobs=2, progress=False, quiet=True)
    args = ["sweep", str(path), "--executor", "ray", "--runs-dir", str(on_ray.runs_dir), "--out", str(on_ray.out), "-q"]
    result = CliRunner().invoke(app, args)  # joins the test's Ray cluster
    assert result.exit_code == 0 and "sweep done: 2 done, 0 skipped, 0 failed" in result.output, result.output
    second = json.loads((on_ray.out / "sweep.json").read_text())
    assert first["status"] == second["status"] == "done" and first["threads_per_job"] == second["threads_per_job"] == 1
    assert second["executor"] == "ray" and first["executor"] == "local"
    assert [(j["kind"], j["status"]) for j in second["jobs"]] == [("shared", "done")] * 2 + [("combo", "done")] * 2
    names = {n for c in local.combos for n in c.run_names}
    assert len(names) == 4 and set(attempts(local.runs_dir)) == set(attempts(on_ray.runs_dir)) == names
    assert set(attempts(on_ray.runs_dir).values()) == {1}
    for name in names:
        a, b = (without_timings(json.loads(json.dumps(Run(r / name).metrics()).replace(str(r), "RUNS")))
                for r in (local.runs_dir, on_ray.runs_dir))
        assert a == b and a, name
        if name.startswith("train-"):  # the trained weights themselves, bit for bit
            import torch

            w1, w2 = (torch.load(r / name / "model" / "model.pt", weights_only=True) for r in (local.runs_dir, on_ray.runs_dir))
            assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert (tmp_path / "ray" / "report" / "report.md").is_file()
    again = sweep_ray.run(on_ray, resume=True, progress=False, quiet=True)  # nothing left to run
    assert again["counts"] == {"done": 0, "skipped": 2, "failed": 0} and again["jobs"] == []
