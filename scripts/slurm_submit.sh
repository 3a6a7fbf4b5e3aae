#!/usr/bin/env bash
# Submit a minicount sweep to Slurm as a job array of N workers plus the report step:
#
#   scripts/slurm_submit.sh N [sweep|reproduce] ARGS... --out DIR
#
# runs sbatch --array=1-N scripts/slurm_sweep.sbatch with the arguments, then a one-task job
# that starts once every array task has ended (--dependency=afterany) and writes the report
# with `python -m minicount sweep --report-only DIR` unless a worker already did. Prints the
# two job ids. Options for sbatch go in its own environment variables (SBATCH_PARTITION,
# SBATCH_TIMELIMIT, SBATCH_GRES, ...); MINICOUNT_SPLIT and PYTHON as in slurm_sweep.sbatch.
set -euo pipefail

usage="usage: $0 N [sweep|reproduce] ARGS... --out DIR"
if [[ $# -lt 2 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "$usage" >&2
    exit 2
fi
n=$1
shift
out=
figures=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
    --out) out=${args[i + 1]:-} ;;
    --out=*) out=${args[i]#--out=} ;;
    --no-figures) figures=(--no-figures) ;;
    esac
done
if [[ -z $out ]]; then
    echo "$0: give the run folder with --out DIR (the workers and the report step share it)" >&2
    exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
array=$(sbatch --parsable --array="1-$n" "$here/slurm_sweep.sbatch" "$@")
array=${array%%;*}  # (--parsable prints id;cluster on a multi-cluster setup)
printf -v report '%q -m minicount sweep --report-only %q %s' "$python" "$out" "${figures[*]}"
printf -v complete '%q' "$out/COMPLETE"
report_job=$(sbatch --parsable --job-name=minicount-report --output="slurm-%j-report.out" \
    --dependency="afterany:$array" \
    --wrap "if test -e $complete; then echo 'the report is written (by a worker)'; else $report; fi")
report_job=${report_job%%;*}
echo "array job $array ($n workers), report job $report_job"
echo "progress: $python -m minicount sweep --status $out"
