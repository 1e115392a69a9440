#!/usr/bin/env bash
# The PDEBench-comparable preset at full size on one GPU machine, without runform (what
# runform.vast.yaml runs, stage by stage). Needs PDEBench's 1D_Burgers_Sols_Nu0.001.hdf5 at
# data/burgers1d/ (or pass its folder as $1: it is linked there). From this folder:
#
#   bash scripts/pdebench_gpu.sh [/path/to/folder/with/the/file] [stages...]
#
# With stage names after the folder, only those run (e.g. `check_splits fno` to train the FNO
# baseline alone; eval needs every model stage). Compare eval's "FNO baseline" row (PDEBench
# nRMSE on test rows 0-999, 31 predicted frames after 10 given) with PDEBench's paper.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
if [[ $# -ge 1 && -d $1 ]]; then
  mkdir -p data/burgers1d
  ln -sf "$(realpath "$1")/1D_Burgers_Sols_Nu0.001.hdf5" data/burgers1d/1D_Burgers_Sols_Nu0.001.hdf5
  shift
fi
test -f data/burgers1d/1D_Burgers_Sols_Nu0.001.hdf5 || {
  echo "data/burgers1d/1D_Burgers_Sols_Nu0.001.hdf5 missing (PDEBench's 1D Burgers, nu=0.001)" >&2
  exit 1
}
STAGES=("$@")
[[ ${#STAGES[@]} -gt 0 ]] || STAGES=(check_splits precompute operator diff_residual consistency_distill steady_prior fno eval)
NGPU=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")
declare -A MOD=([check_splits]=check_splits [precompute]=precompute [operator]=train_operator
  [diff_residual]=train_residual [consistency_distill]=distill [steady_prior]=train_steady_prior
  [fno]=train_fno [eval]=evaluate)
declare -A CFG=([check_splits]=base [precompute]=encoder [operator]=operator
  [diff_residual]=diff_residual [consistency_distill]=consistency_distill
  [steady_prior]=steady_prior [fno]=fno [eval]=eval)
for s in "${STAGES[@]}"; do
  args=(-m "burgers1d.${MOD[$s]}" --config "configs/pdebench/${CFG[$s]}.yaml")
  [[ $s == check_splits ]] || args+=(--device cuda)
  echo "== $s ($(date -u +%T))"
  case $s in
    operator|diff_residual|consistency_distill|steady_prior|fno)
      /usr/bin/time -f "$s: %e s wall" torchrun --standalone --nproc_per_node="$NGPU" "${args[@]}" ;;
    *) /usr/bin/time -f "$s: %e s wall" python "${args[@]}" ;;
  esac
done
