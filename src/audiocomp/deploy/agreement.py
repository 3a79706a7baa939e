"""Compare two runs of the same bundle's predict.py (`--json --top-k <all classes>`) on the same clips, e.g.
x86-64 against emulated aarch64, under the rule for the model's format; print a summary, write JSON.

Standard library only: scripts/verify_aarch64.sh runs it with whatever python3 the host has.

    python agreement.py REFERENCE.jsonl OTHER.jsonl --format fp32 --out result.json [--meta meta.json]

Float rule: the same top-1 on every clip whose reference top-2 margin exceeds MARGIN, and every class
probability within PROB_TOL. INT8 rule (other kernels may round differently): top-1 agreement >= MIN_INT8.
Exit status: 0 pass, 1 fail, 2 unusable input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

MARGIN = 1e-4  # float: clips whose top-2 probabilities are closer than this may swap legitimately
PROB_TOL = 1e-4  # float: max |probability difference|, any clip, any class
MIN_INT8 = 0.98  # INT8: min top-1 agreement


def read_answers(path: Path) -> dict[str, dict]:
    """file -> {"probs": {label: score}, "top1": label} or {"error": message}, from predict.py --json lines."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            try:
                r = json.loads(line)
                out[r["file"]] = ({"error": r["error"]} if "error" in r else
                                  {"probs": {t["label"]: t["score"] for t in r["top"]}, "top1": r["top"][0]["label"]})
            except (ValueError, KeyError, IndexError, TypeError):
                raise ValueError(f"{path}:{n}: not a predict.py --json line") from None
    return out


def margin(probs: dict[str, float]) -> float:
    top2 = sorted(probs.values(), reverse=True)[:2]
    return top2[0] - (top2[1] if len(top2) > 1 else 0.0)


def compare(ref: dict[str, dict], other: dict[str, dict], fmt: str) -> dict:
    """The agreement figures and the verdict; clips missing or failed on either side count against it."""
    int8 = "int8" in fmt
    files = sorted(ref)
    # a clip counts as failed when either side has no answer or not every class's probability
    failed = [f for f in files if "error" in ref[f] or "error" in other.get(f, {"error": "missing"})
              or ref[f]["probs"].keys() != other[f]["probs"].keys()]
    both = [f for f in files if f not in failed]
    agree = [f for f in both if ref[f]["top1"] == other[f]["top1"]]
    decisive = [f for f in both if margin(ref[f]["probs"]) > MARGIN]
    swaps = [f for f in decisive if ref[f]["top1"] != other[f]["top1"]]
    max_diff = max((abs(p - other[f]["probs"][label]) for f in both for label, p in ref[f]["probs"].items()),
                   default=0.0)
    agreement = len(agree) / len(files) if files else 0.0
    if int8:
        rule = f"INT8: top-1 agreement >= {MIN_INT8:.0%}"
        ok = bool(files) and not failed and agreement >= MIN_INT8
    else:
        rule = f"float: same top-1 where the reference top-2 margin > {MARGIN:g}, |probability difference| <= {PROB_TOL:g}"
        ok = bool(files) and not failed and not swaps and max_diff <= PROB_TOL
    return {"format": fmt, "rule": rule, "clips": len(files), "failed": failed, "top1_agreement": round(agreement, 6),
            "top1_agree": len(agree), "decisive_clips": len(decisive), "decisive_disagreements": len(swaps),
            "max_abs_prob_diff": max_diff, "pass": ok,
            "disagreements": [{"file": f, "reference": ref[f]["top1"], "other": other[f]["top1"],
                               "reference_margin": round(margin(ref[f]["probs"]), 6)}
                              for f in both if ref[f]["top1"] != other[f]["top1"]]}


def table(result: dict, meta: dict) -> str:
    rows = ["| Side | Machine | Python | onnxruntime | numpy | predict.py wall s |", "|---|---|---|---|---|---|"]
    for side in ("reference", "other"):
        m = meta.get(side, {})
        rows.append(f"| {side} | {m.get('machine', '?')} | {m.get('python', '?')} | {m.get('onnxruntime', '?')} | "
                    f"{m.get('numpy', '?')} | {m.get('wall_s', '?')} |")
    r = result
    rows += ["", f"{r['clips']} clips ({r['format']}): top-1 agreement {r['top1_agree']}/{r['clips']} "
                 f"({r['top1_agreement']:.2%}); clips with reference margin > {MARGIN:g}: {r['decisive_clips']}, "
                 f"top-1 differs on {r['decisive_disagreements']}; max |probability difference| "
                 f"{r['max_abs_prob_diff']:.2g}; failed clips {len(r['failed'])}",
             f"{'PASS' if r['pass'] else 'FAIL'} ({r['rule']})"]
    return "\n".join(rows)


def write_json(path: Path, obj) -> None:
    """Temp file + rename: a reader never sees half a result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path, help="predict.py --json output on the reference machine")
    ap.add_argument("other", type=Path, help="the same on the machine under test")
    ap.add_argument("--format", required=True, help="the bundle's format (bundle.json): fp32, onnx-int8-static, ...")
    ap.add_argument("--out", type=Path, required=True, help="result JSON")
    ap.add_argument("--meta", type=Path, help="JSON merged into the result (machines, versions, timings)")
    args = ap.parse_args(argv)
    try:
        ref, other = read_answers(args.reference), read_answers(args.other)
        meta = json.loads(args.meta.read_text(encoding="utf-8")) if args.meta else {}
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = {**meta, **compare(ref, other, args.format)}
    write_json(args.out, result)
    print(table(result, meta))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
