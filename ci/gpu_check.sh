#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: build every package for this GPU, run the
# whole test suite (CUDA cases included), run one op's CUDA tests per package under
# compute-sanitizer (memcheck, racecheck), benchmark every op against torchvision's CUDA
# kernels, and write one markdown report. Nothing is downloaded or installed system-wide.
#
#   bash ci/gpu_check.sh [REPORT]        REPORT defaults to gpu-report.md
#
# Needs: an NVIDIA GPU, nvcc, a CUDA build of torch >= 2.11 with torchvision, and the build
# requirements (scikit-build-core, pybind11, cmake; ninja preferred) already in $PYTHON's
# environment. pytest (+ pytest-xdist, pytest-timeout) and compute-sanitizer are used when
# present; what is missing is named in the report and its stage is skipped.
#
# The wheels go into a --target folder put first on PYTHONPATH ($WORK/site), never into
# the environment. Every stage has a time limit (seconds, overridable) so the report is
# always written; together they stay under 8 minutes:
#   DETOPS_GPU_LIMIT_PROBE=40 _BUILD=120 _TESTS=160 _SANITIZER=70 _BENCH=80
# Other settings: PYTHON (default python3), DETOPS_GPU_CHECK_WORK (default build/gpu-check:
# CMake build folders kept between runs, results/ rewritten), DETOPS_CUDA_ARCHS (default:
# the GPU's own, e.g. 90), DETOPS_GPU_TEST_WORKERS (pytest-xdist workers; 0: one process).
#
# Beside REPORT it writes REPORT's stem + -logs.tar.gz: every stage's full output.
#
# Exit status: 0 every stage ran and passed; 1 a stage failed or timed out, or a check
# was left undone (report written); 2 bad usage; 3 no NVIDIA GPU found (nothing built);
# 4 a prerequisite is missing or the probe failed (nothing built).

set -uo pipefail

# Sanitizer targets: per package, a small test file and a -k expression picking one op's
# CUDA cases (against the reference oracle only: torchvision's kernels are not ours to
# check). Each run must stay well under DETOPS_GPU_LIMIT_SANITIZER.
SANITIZE=(
  "nms test_differential.py cuda and test_nms_matches_oracle and reference"
  "roi test_roi_differential.py cuda and roi_align and not ps_roi_align and not torchvision"
  "deform test_devices.py cuda"
  "deform_attn test_devices.py cuda"
  "fpn test_upsample_add.py cuda"
)
SANITIZER_ERROR_EXIT=86 # as ci/gpu_report.py's SANITIZER_ERROR_EXIT

log() {
  local t=$(($(date +%s) - GPU_CHECK_START))
  printf '[gpu-check %d:%02d] %s\n' $((t / 60)) $((t % 60)) "$*"
}

# Appends a command line, quoted so it can be pasted, to the report's Commands section.
note_cmd() {
  local stage=$1
  shift
  local line
  printf -v line '%q ' "$@"
  printf '%s\t%s\n' "$stage" "${line% }" >>"$RES/commands.tsv"
}

# run_stage NAME LIMIT SIGNAL COMMAND...: output to the console and RES/NAME.log, one row
# in stages.tsv. SIGNAL is what the limit sends first (INT lets pytest print its summary).
run_stage() {
  local name=$1 limit=$2 signal=$3
  shift 3
  local t0 rc status note=""
  t0=$(date +%s)
  log "$name: start (limit ${limit} s)"
  timeout -s "$signal" -k 10 "$limit" "$@" </dev/null 2>&1 | tee "$RES/$name.log"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) status=ok ;;
    124 | 137)
      status=timeout
      note="stopped by the ${limit} s limit"
      ;;
    *) status=failed ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" $(($(date +%s) - t0)) "$limit" "$note" >>"$RES/stages.tsv"
  log "$name: $status (exit status $rc)"
  return "$rc"
}

skip_stage() {
  printf '%s\tskipped\t\t0\t\t%s\n' "$1" "$2" >>"$RES/stages.tsv"
  log "$1: skipped: $2"
}

# ---------------------------------------------------------------------------------------
# Stages that are more than one command run as `bash ci/gpu_check.sh --stage NAME` under
# `timeout`, which stops the whole process group (pip, cmake, nvcc, pytest) at the limit.

stage_build() {
  local pip=("$PYTHON" -m pip --disable-pip-version-check --no-input)
  local settings=(-Ccmake.define.detops_core_DIR="$WORK/site/detops_core/cmake")
  local pybind11_dir
  # Older pybind11 releases register no CMake entry point: tell CMake where it is.
  if pybind11_dir=$("$PYTHON" -m pybind11 --cmakedir 2>/dev/null); then
    settings+=(-Ccmake.define.pybind11_DIR="$pybind11_dir")
  fi
  export DETOPS_CUDA=ON DETOPS_CUDA_ARCHS="$ARCHS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"
  echo "DETOPS_CUDA=ON DETOPS_CUDA_ARCHS=$ARCHS CMAKE_BUILD_PARALLEL_LEVEL=$JOBS" >"$RES/build-settings.txt"
  log "build: DETOPS_CUDA_ARCHS=$ARCHS CMAKE_BUILD_PARALLEL_LEVEL=$JOBS, wheels into $WORK/wheels, installed into $WORK/site"

  local install=("${pip[@]}" install --no-index --no-deps --no-compile --upgrade --target "$WORK/site")
  local lock=()
  command -v flock >/dev/null && lock=(flock "$WORK/site.lock")

  # Builds `pkg` into wheels/, then installs it into site/ at once, so that a build stopped
  # by the time limit still leaves the packages that finished to test.
  build_one() {
    local pkg=$1 t0 rc whl
    t0=$(date +%s)
    local cmd=("${pip[@]}" wheel --no-build-isolation --no-deps --no-index -w "$WORK/wheels/$pkg"
      "${settings[@]}" -Cbuild-dir="$WORK/cmake/$pkg" "$ROOT/packages/$pkg")
    note_cmd build "${cmd[@]}"
    "${cmd[@]}" >"$RES/build-$pkg.log" 2>&1
    rc=$?
    if [[ $rc == 0 ]]; then
      whl=("$WORK/wheels/$pkg"/*.whl)
      note_cmd build "${install[@]}" "${whl[@]}"
      "${lock[@]}" "${install[@]}" "${whl[@]}" >>"$RES/build-$pkg.log" 2>&1
      rc=$?
    fi
    printf '%s\t%s\n' "$rc" $(($(date +%s) - t0)) >"$RES/build-$pkg.rc"
    if [[ $rc == 0 ]]; then
      log "build: $pkg ok in $(($(date +%s) - t0)) s"
    else
      log "build: $pkg FAILED (exit status $rc); the end of $RES/build-$pkg.log:"
      tail -n 30 "$RES/build-$pkg.log"
    fi
    return "$rc"
  }

  # Every other package finds detops-core's CMake helper and headers in site/.
  build_one core || return 1

  # The rest need only detops-core to build (fpn needs roi at run time only): all at once,
  # each with every core for its compiler jobs; each has few .cu files.
  local pkg pids=() failed=0
  for pkg in "${PACKAGES[@]}"; do
    [[ $pkg == core ]] && continue
    build_one "$pkg" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done

  # Fails too when a package with .cu sources installed no _C_cuda.so.
  local kernels=("$PYTHON" "$ROOT/ci/gpu_report.py" kernels --json "$RES/kernels.json" --site "$WORK/site")
  note_cmd build env PYTHONPATH="$WORK/site" "${kernels[@]}"
  "${kernels[@]}" || failed=1
  return "$failed"
}

stage_sanitizer() {
  local line pkg file kexpr tool
  for line in "${SANITIZE[@]}"; do
    read -r pkg file kexpr <<<"$line"
    for tool in memcheck racecheck; do
      (
        local t0 rc name="sanitizer-$pkg-$tool.log" path="$ROOT/packages/$pkg/tests/$file"
        t0=$(date +%s)
        if [[ ! -f $path ]]; then
          echo "no such test file: $path" >"$RES/$name"
          rc=nofile
        else
          # No caching allocator: memcheck then sees each tensor's own bounds, not a pool's.
          local cmd=("$SANITIZER" --tool "$tool" --error-exitcode "$SANITIZER_ERROR_EXIT" --print-limit 20
            "$PYTHON" -m pytest --import-mode=importlib -q -p no:cacheprovider "$path" -k "$kexpr")
          note_cmd sanitizer env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "${cmd[@]}"
          (cd "$ROOT/ci" && PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 5 "$SANITIZER_RUN_LIMIT" "${cmd[@]}") \
            >"$RES/$name" 2>&1 </dev/null
          rc=$?
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pkg" "$tool" "$file" "$kexpr" "$rc" $(($(date +%s) - t0)) "$name" \
          >>"$RES/sanitizer.tsv"
        log "sanitizer: $pkg $tool: exit status $rc ($(grep -Eo '(ERROR|RACECHECK) SUMMARY: .*' "$RES/$name" | tail -n 1))"
      ) &
    done
  done
  wait
}

# ---------------------------------------------------------------------------------------

usage() {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

main() {
  case ${1:-} in
    -h | --help)
      usage
      return 0
      ;;
    -*)
      echo "gpu_check.sh: unknown option $1" >&2
      usage >&2
      return 2
      ;;
  esac
  if (($# > 1)); then
    echo "gpu_check.sh: one argument at most (the report's path)" >&2
    return 2
  fi
  local report=${1:-gpu-report.md}
  [[ $report == /* ]] || report=$PWD/$report

  ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  PYTHON=${PYTHON:-python3}
  WORK=${DETOPS_GPU_CHECK_WORK:-$ROOT/build/gpu-check}
  [[ $WORK == /* ]] || WORK=$PWD/$WORK
  RES=$WORK/results
  GPU_CHECK_START=$(date +%s)
  # Progress as it happens: Python holds its output back when it goes to a pipe (tee).
  export ROOT PYTHON WORK RES GPU_CHECK_START PYTHONUNBUFFERED=1
  local l_probe=${DETOPS_GPU_LIMIT_PROBE:-40} l_build=${DETOPS_GPU_LIMIT_BUILD:-120}
  local l_tests=${DETOPS_GPU_LIMIT_TESTS:-160} l_san=${DETOPS_GPU_LIMIT_SANITIZER:-70}
  local l_bench=${DETOPS_GPU_LIMIT_BENCH:-80}

  rm -rf "$RES" "$WORK/site" "$WORK/wheels"
  mkdir -p "$RES" "$WORK/site" "$WORK/wheels"
  local quoted
  printf -v quoted '%q ' "$@"
  printf 'run\tbash ci/gpu_check.sh %s\n' "${quoted% }" >"$RES/commands.tsv"
  log "detops GPU check: report $report, logs $RES"

  # The CUDA toolkit's tools are often installed off PATH.
  local cuda_bin=${CUDA_HOME:-/usr/local/cuda}/bin
  if ! command -v nvcc >/dev/null && [[ -x $cuda_bin/nvcc ]]; then PATH=$PATH:$cuda_bin; fi
  SANITIZER=$(command -v compute-sanitizer || true)
  if [[ -z $SANITIZER && -x $cuda_bin/compute-sanitizer ]]; then SANITIZER=$cuda_bin/compute-sanitizer; fi
  export PATH SANITIZER DETOPS_COMPUTE_SANITIZER=$SANITIZER
  for tool in timeout tee; do
    if ! command -v "$tool" >/dev/null; then
      echo "gpu_check.sh: '$tool' (coreutils) is not on PATH" >&2
      return 4
    fi
  done
  if ! command -v "$PYTHON" >/dev/null; then
    echo "gpu_check.sh: no Python interpreter '$PYTHON' (set PYTHON to the one that has torch)" >&2
    return 4
  fi

  local report_cmd=("$PYTHON" "$ROOT/ci/gpu_report.py" render --work "$RES" --out "$report" --site "$WORK/site")
  finish() {
    local rc
    "${report_cmd[@]}"
    rc=$?
    tar -czf "${report%.md}-logs.tar.gz" -C "$WORK" results 2>/dev/null || true
    log "done: exit status $rc (0 passed, 1 failed or incomplete, 3 no GPU, 4 missing prerequisite)"
    return "$rc"
  }

  note_cmd probe "$PYTHON" ci/gpu_report.py probe --json "$RES/env.json" --shell "$RES/env.sh"
  run_stage probe "$l_probe" TERM "$PYTHON" "$ROOT/ci/gpu_report.py" probe --json "$RES/env.json" --shell "$RES/env.sh"
  local rc=$?
  if ((rc != 0)); then
    if ((rc != 3 && rc != 4)); then
      echo "gpu_check.sh: the probe itself failed (exit status $rc): see the output above" >&2
    fi
    finish
    return $((rc == 3 ? 3 : 4))
  fi
  # shellcheck source=/dev/null
  source "$RES/env.sh"

  ARCHS=${DETOPS_CUDA_ARCHS:-$DETOPS_GPU_ARCH}
  JOBS=$(nproc 2>/dev/null || echo 4)
  mapfile -t PACKAGES < <(cd "$ROOT/ci" && "$PYTHON" -c 'import packages; print("\n".join(packages.present()))')
  export ARCHS JOBS PACKAGES_LIST="${PACKAGES[*]}" PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  run_stage build "$l_build" TERM bash "${BASH_SOURCE[0]}" --stage build
  if ! compgen -G "$WORK/site/detops_core" >/dev/null; then
    skip_stage tests "nothing was built"
    skip_stage sanitizer "nothing was built"
    skip_stage bench "nothing was built"
    finish
    return $?
  fi

  local dirs=() d
  for d in "$ROOT"/packages/*/tests; do dirs+=("$d"); done
  if [[ $HAVE_PYTEST == 1 ]]; then
    local workers=${DETOPS_GPU_TEST_WORKERS:-$((JOBS / 2 > 8 ? 8 : JOBS / 2))}
    local pytest=("$PYTHON" -m pytest --import-mode=importlib -q -ra --junitxml="$RES/tests.xml")
    if [[ $HAVE_PYTEST_XDIST == 1 && $workers -gt 1 ]]; then pytest+=(-n "$workers"); else workers=1; fi
    if [[ $HAVE_PYTEST_TIMEOUT == 1 ]]; then pytest+=(--timeout=120); fi
    pytest+=("${dirs[@]}")
    # Several workers share the cores: two CPU threads each keeps the machine busy without
    # oversubscribing it (one worker keeps torch's default).
    local threads=()
    ((workers > 1)) && threads=(env OMP_NUM_THREADS=2)
    note_cmd tests "${threads[@]}" "${pytest[@]}"
    (cd "$ROOT/ci" && run_stage tests "$l_tests" INT "${threads[@]}" "${pytest[@]}")
  else
    skip_stage tests "pytest is not installed in $PYTHON's environment"
  fi

  if [[ $HAVE_PYTEST != 1 ]]; then
    skip_stage sanitizer "pytest is not installed in $PYTHON's environment"
  elif [[ -z $SANITIZER ]]; then
    skip_stage sanitizer "compute-sanitizer is not on PATH (nor in $cuda_bin)"
  else
    export SANITIZER_RUN_LIMIT=$((l_san > 15 ? l_san - 5 : l_san))
    run_stage sanitizer "$l_san" TERM bash "${BASH_SOURCE[0]}" --stage sanitizer
  fi

  local bench=("$PYTHON" ci/bench.py --device cuda --seconds 0.25 --keep-going
    --json "$RES/bench.json" --markdown "$RES/bench.md")
  note_cmd bench "${bench[@]}"
  (cd "$ROOT" && run_stage bench "$l_bench" TERM "${bench[@]}")

  finish
}

if [[ ${1:-} == --stage ]]; then
  read -r -a PACKAGES <<<"$PACKAGES_LIST"
  "stage_$2"
  exit
fi
main "$@"
