"""A fake SLURM on PATH (sbatch, srun, sacct, scancel) so the submitit SLURM launchers run on a machine without one:
`sbatch` keeps each submission script and, with run_jobs, starts every array task locally as SLURM would."""
from pathlib import Path

SBATCH = r"""#!/bin/bash
script="$1"; jobid=$((1000 + RANDOM))
cp "$script" "{record}/$jobid.sh"
range=$(sed -n 's/^#SBATCH --array=\([0-9]*-[0-9]*\).*/\1/p' "$script")
export SLURM_JOB_ID=$jobid SLURM_NTASKS=1 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 SLURM_JOB_NUM_NODES=1 \
  SLURM_JOB_NODELIST=localhost SLURM_JOB_NAME=fake
if [ "{run_jobs}" = 1 ] && [ -z "$range" ]; then bash "$script" > /dev/null 2>&1 & fi
if [ "{run_jobs}" = 1 ] && [ -n "$range" ]; then
  for i in $(seq "${{range%-*}}" "${{range#*-}}"); do
    SLURM_ARRAY_JOB_ID=$jobid SLURM_ARRAY_TASK_ID=$i bash "$script" > /dev/null 2>&1 &
  done
fi
echo "Submitted batch job $jobid"
"""
# one local task: drop srun's options (and their values), run the command
SRUN = """#!/bin/bash
while [[ "$1" == --* || ! -x "$1" ]]; do shift; done
exec "$@"
"""
# jobs that were only recorded are reported failed, so the launcher stops waiting for them
SACCT = r"""#!/bin/bash
echo "JobID|State|NodeList"
while [ $# -gt 0 ]; do
  if [ "$1" = -j ]; then
    echo "$2|{state}|localhost"; for i in $(seq 0 31); do echo "$2_$i|{state}|localhost"; done; shift
  fi; shift
done
"""


def install_fake_slurm(directory: Path, run_jobs: bool) -> tuple[Path, Path]:
    """(bin dir to put first on PATH, dir where every submitted script is kept)."""
    bin_dir, record = directory / "bin", directory / "submitted"
    bin_dir.mkdir(parents=True)
    record.mkdir()
    scripts = {"sbatch": SBATCH.format(record=record, run_jobs=int(run_jobs)), "srun": SRUN,
               "sacct": SACCT.format(state="RUNNING" if run_jobs else "FAILED"), "scancel": "#!/bin/bash\n"}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir, record
