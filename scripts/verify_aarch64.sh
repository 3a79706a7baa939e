#!/usr/bin/env bash
# Run an exported bundle's predict.py on aarch64 (Debian 12 userland, Python 3.11, emulated by qemu-user as a
# Cortex-A72, the Raspberry Pi 4's core) and on this x86-64 machine, both with the wheels its requirements.txt
# pins, and compare the answers (src/audiocomp/deploy/agreement.py: float and INT8 rules).
#
#   scripts/verify_aarch64.sh [--out RESULT.json] [--onnxruntime VERSION] BUNDLE CLIP_OR_DIR...
#
# --onnxruntime runs the aarch64 side with that onnxruntime instead of the pinned one (numpy<2 below 1.19),
# to test the oldest runtime that loads the bundle; the x86 reference keeps the pins.
# The userland and the wheels are cached in ${AUDIOCOMP_CACHE:-~/.cache/audiocomp}/aarch64-bookworm (built here:
# qemu-user-static via apt-get when missing and root, Debian arm64 packages unpacked with dpkg -x, wheels via
# pip --platform). Exit: 0 agree, 1 disagree, 2 usage, 3 cannot emulate here (reason on stderr and in the JSON).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3 )}  # runs pip and x86
CACHE=${AUDIOCOMP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/audiocomp}/aarch64-bookworm
OUT=bench-results/verify_aarch64.json  # + .x86_64.jsonl, .aarch64.jsonl, .meta.json beside it
ORT=""
SUITES="bookworm bookworm-updates"
PY_ARM=3.11
# the wheel tags pip accepts on Debian 12 aarch64 (glibc 2.36): manylinux2014 = 2_17 up to 2_36
PLATFORMS=(--platform manylinux2014_aarch64 $(for v in $(seq 17 36); do echo "--platform manylinux_2_${v}_aarch64"; done))
BUILD=1  # bump when the userland recipe changes

usage() { echo "usage: $0 [--out RESULT.json] [--onnxruntime VERSION] BUNDLE CLIP_OR_DIR..." >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --onnxruntime) ORT=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    --*) usage ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || usage
BUNDLE=$(cd "$1" && pwd) || usage
shift
for f in bundle.json requirements.txt predict.py labels.json; do
  [ -f "$BUNDLE/$f" ] || { echo "error: $BUNDLE: no $f (not a bundle: audiocomp export --target ...)" >&2; exit 2; }
done
OUT=$(realpath -m "$OUT")
mkdir -p "$(dirname "$OUT")" "$CACHE/logs"
LOG=$CACHE/logs/verify-$$.log
: > "$LOG"
ls -t "$CACHE"/logs/verify-*.log | tail -n +21 | xargs -r rm -f  # keep the 20 latest logs

skip() {  # cannot emulate here: say why, write it down, exit 3
  echo "SKIP: $*" >&2
  printf '{"skipped": %s}\n' "$("$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$*")" > "$OUT"
  exit 3
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
run_logged() { "$@" >> "$LOG" 2>&1; }

[ "$(uname -m)" = x86_64 ] || skip "the host is $(uname -m), not x86_64: nothing to compare with"
"$PYTHON" -m pip --version > /dev/null 2>&1 || skip "$PYTHON has no pip (set PYTHON to a python3 with pip)"

# ---- qemu-user (a CI step: installed here when missing, as root)
t0=$(now)
if ! command -v qemu-aarch64-static > /dev/null; then
  [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null || skip "qemu-aarch64-static missing and cannot be installed (needs root and apt-get: apt-get install qemu-user-static)"
  echo "installing qemu-user-static (apt-get)" >&2
  run_logged apt-get update -q && run_logged env DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static \
    || skip "apt-get install qemu-user-static failed (network?); see $LOG"
fi
QEMU=$(command -v qemu-aarch64-static)
qemu_s=$(since "$t0")

exec 9> "$CACHE/.lock"  # one builder at a time; readers wait
flock 9

# ---- the userland: Debian 12 arm64 packages of python3.11 and the libraries the wheels link, unpacked
ROOT=$CACHE/root
t0=$(now)
if [ ! -f "$ROOT/.complete-$BUILD" ]; then
  echo "building the aarch64 userland in $ROOT (once)" >&2
  KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f $KEYRING ] || skip "$KEYRING missing (apt-get install debian-archive-keyring)"
  command -v dpkg > /dev/null || skip "dpkg missing: the userland is built from Debian packages"
  APT=$CACHE/apt
  rm -rf "$APT" "$ROOT.tmp"
  mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/debs" "$APT/etc/preferences.d" "$ROOT.tmp"
  touch "$APT/status"
  for suite in $SUITES; do echo "deb [arch=arm64 signed-by=$KEYRING] http://deb.debian.org/debian $suite main"; done > "$APT/etc/sources.list"
  echo "deb [arch=arm64 signed-by=$KEYRING] http://deb.debian.org/debian-security bookworm-security main" >> "$APT/etc/sources.list"
  # a private apt: arm64 indexes and downloads only, the host's dpkg and sources untouched
  OPTS=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Dir::State="$APT" -o Dir::State::Lists="$APT/lists"
        -o Dir::State::status="$APT/status" -o Dir::Cache="$APT" -o Dir::Cache::archives="$APT/archives"
        -o Dir::Etc::SourceList="$APT/etc/sources.list" -o Dir::Etc::SourceParts=/nonexistent
        -o Dir::Etc::Preferences="$APT/etc/preferences" -o Dir::Etc::PreferencesParts="$APT/etc/preferences.d"
        -o Debug::NoLocking=1 -o Acquire::Languages=none -o APT::Sandbox::User=root)
  run_logged apt-get "${OPTS[@]}" update || skip "cannot fetch the Debian arm64 package lists (network?); see $LOG"
  # python3.11 and every library it needs (libffi8 for soundfile's cffi, libstdc++6 for onnxruntime), minus the
  # packages an unpacked root never runs (perl, dpkg, tar, mime helpers)
  PKGS=$(apt-cache "${OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
           --no-replaces --no-enhances --no-pre-depends python3.11-minimal libpython3.11-stdlib libstdc++6 libffi8 \
         | grep -v '^ ' | grep -v '^<' | sort -u \
         | grep -vxE 'perl|perl-base|perl-modules-5.36|libperl5.36|dpkg|tar|install-info|mailcap|mime-support|libgdbm-compat4')
  (cd "$APT/debs" && run_logged apt-get "${OPTS[@]}" download $(for p in $PKGS; do echo "$p:arm64"; done)) \
    || skip "cannot download Debian arm64 packages (network?); see $LOG"
  for deb in "$APT"/debs/*.deb; do dpkg -x "$deb" "$ROOT.tmp"; done
  # onnxruntime's CPU detection (cpuinfo) reads /proc/cpuinfo and crashes on the host's x86 text. qemu-user's
  # -L prefix serves the emulated process ROOT/proc/cpuinfo for /proc/cpuinfo when that file exists: one
  # Cortex-A72 (CPU part 0xd08) entry per host CPU, as a Pi 4 reports it. No mount namespace needed.
  mkdir -p "$ROOT.tmp/proc"
  for i in $(seq 0 $(($(nproc) - 1))); do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i"
  done > "$ROOT.tmp/proc/cpuinfo"
  printf 'Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B (emulated)\n' >> "$ROOT.tmp/proc/cpuinfo"
  arch=$("$QEMU" -cpu cortex-a72 -L "$ROOT.tmp" "$ROOT.tmp/usr/bin/python$PY_ARM" -c 'import platform; print(platform.machine(), platform.python_version())' 2>> "$LOG") \
    || skip "the emulated python$PY_ARM does not start under $QEMU; see $LOG"
  [ "${arch%% *}" = aarch64 ] || skip "the emulated python reports '${arch}', not aarch64"
  echo "${arch#* }" > "$ROOT.tmp/.python-version"
  rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT" && touch "$ROOT/.complete-$BUILD"
fi
userland_s=$(since "$t0")

# ---- wheels: the bundle's requirements (or the --onnxruntime variant) for aarch64 / CPython 3.11, and for x86
REQ_ARM=$CACHE/logs/requirements-arm-$$.txt
trap 'rm -f "$REQ_ARM"' EXIT
cp "$BUNDLE/requirements.txt" "$REQ_ARM"
if [ -n "$ORT" ]; then
  sed -i "s/^onnxruntime==.*/onnxruntime==$ORT/" "$REQ_ARM"
  if [ "$(printf '%s\n' "$ORT" 1.19 | sort -V | head -1)" != 1.19 ]; then  # built against numpy 1.x
    sed -i 's/^numpy==.*/numpy<2/' "$REQ_ARM"
  fi
fi
key() { sha256sum "$1" | cut -c1-12; }
install_wheels() {  # dir requirements [pip platform options...]
  local dir=$1 req=$2; shift 2
  [ -f "$dir/.complete" ] && return 0
  rm -rf "$dir.tmp"
  run_logged "$PYTHON" -m pip install --disable-pip-version-check --no-warn-conflicts --only-binary=:all: \
    --target "$dir.tmp" "$@" -r "$req" || return 1
  rm -rf "$dir" && mv "$dir.tmp" "$dir" && touch "$dir/.complete"
}
dists() { ls "$1" | sed -n 's/\.dist-info$//p' | "$PYTHON" -c 'import json,sys; print(json.dumps(dict(l.strip().rsplit("-", 1) for l in sys.stdin)))'; }
t0=$(now)
SITE_ARM=/opt/site-$(key "$REQ_ARM")  # as the emulated process sees it (under ROOT)
install_wheels "$ROOT$SITE_ARM" "$REQ_ARM" "${PLATFORMS[@]}" --python-version $PY_ARM --implementation cp \
  || skip "cannot fetch aarch64 wheels for $(tr '\n' ' ' < "$REQ_ARM") (network, or no wheel); see $LOG"
SITE_X86=$CACHE/x86-site-$(key "$BUNDLE/requirements.txt")-$("$PYTHON" -c 'import sys; print("%d%d" % sys.version_info[:2])')
install_wheels "$SITE_X86" "$BUNDLE/requirements.txt" || skip "cannot install the x86 wheels of $BUNDLE/requirements.txt; see $LOG"
# the Pi's next OS (Debian 13) has Python 3.13: do its aarch64 wheels exist too? (downloaded, not run)
W313=$CACHE/wheels-313-$(key "$BUNDLE/requirements.txt")
if [ ! -f "$W313.json" ]; then  # cached when found; a failure is recorded as null and retried next time
  rm -rf "$W313.tmp"
  if run_logged "$PYTHON" -m pip download --disable-pip-version-check --only-binary=:all: --no-deps -d "$W313.tmp" \
       "${PLATFORMS[@]}" --python-version 3.13 --implementation cp -r "$BUNDLE/requirements.txt"; then
    ls "$W313.tmp" | "$PYTHON" -c 'import json,sys; print(json.dumps(sorted(l.strip() for l in sys.stdin)))' > "$W313.json"
  fi
  rm -rf "$W313.tmp"
fi
wheels_s=$(since "$t0")
flock -u 9

# ---- the two runs: the same predict.py, every clip in one process, all class probabilities, 1 thread
K=$("$PYTHON" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$BUNDLE/labels.json")
FMT=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["format"])' "$BUNDLE/bundle.json")
BASE=${OUT%.json}
t0=$(now)
env PYTHONPATH="$SITE_X86" PYTHONNOUSERSITE=1 "$PYTHON" "$BUNDLE/predict.py" "$BUNDLE" "$@" --json --top-k "$K" --threads 1 \
  > "$BASE.x86_64.jsonl" 2> "$BASE.x86_64.stderr" || true  # a clip that fails is an error line, judged below
x86_s=$(since "$t0")
t0=$(now)
env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 PYTHONPATH="$SITE_ARM" \
  "$QEMU" -cpu cortex-a72 -L "$ROOT" "$ROOT/usr/bin/python$PY_ARM" -s "$BUNDLE/predict.py" "$BUNDLE" "$@" \
  --json --top-k "$K" --threads 1 > "$BASE.aarch64.jsonl" 2> "$BASE.aarch64.stderr" || true
arm_s=$(since "$t0")
for side in x86_64 aarch64; do  # no answer at all (the model did not load): the result says why
  if [ ! -s "$BASE.$side.jsonl" ]; then
    "$PYTHON" -c 'import json,sys; print(json.dumps({"pass": False, "error": sys.argv[1] + ": " + sys.argv[2]}))' \
      "$side" "$(tail -1 "$BASE.$side.stderr")" > "$OUT"
    echo "FAIL: predict.py on $side answered nothing: $(tail -1 "$BASE.$side.stderr")" >&2
    exit 1
  fi
done

# ---- compare, summarise
"$PYTHON" - "$BASE.meta.json" <<EOF
import json, sys
from pathlib import Path
w313 = Path("$W313.json")
meta = {
    "bundle": "$BUNDLE",
    "reference": {"machine": "x86_64: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)", "python": "$("$PYTHON" -c 'import platform; print(platform.python_version())')",
                  **{k: v for k, v in $(dists "$SITE_X86").items() if k in ("onnxruntime", "numpy", "soundfile", "soxr")},
                  "wall_s": $x86_s},
    "other": {"machine": "aarch64: qemu-user $("$QEMU" --version | head -1 | awk '{print $3}') -cpu cortex-a72, Debian 12 userland",
              "python": "$(cat "$ROOT/.python-version")",
              **{k: v for k, v in $(dists "$ROOT$SITE_ARM").items() if k in ("onnxruntime", "numpy", "soundfile", "soxr")},
              "wall_s": $arm_s},
    "aarch64_wheels": $(dists "$ROOT$SITE_ARM"),
    "python313_aarch64_wheels": json.loads(w313.read_text()) if w313.exists() else None,
    "timings_s": {"qemu_install": $qemu_s, "userland": $userland_s, "wheels": $wheels_s, "x86_run": $x86_s,
                  "aarch64_run": $arm_s},
    "cache": "$CACHE", "log": "$LOG",
}
Path(sys.argv[1]).write_text(json.dumps(meta, indent=2))
EOF
echo "timings: qemu ${qemu_s} s, userland ${userland_s} s, wheels ${wheels_s} s, x86 run ${x86_s} s, aarch64 run ${arm_s} s"
"$PYTHON" "$REPO/src/audiocomp/deploy/agreement.py" "$BASE.x86_64.jsonl" "$BASE.aarch64.jsonl" --format "$FMT" \
  --meta "$BASE.meta.json" --out "$OUT"
