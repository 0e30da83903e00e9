"""Run the CPU benchmarks one after another (what `make bench` does). Each prints its own figures
with the baseline measured in the same run. Needs the full-size synthetic scan; bench_train
generates it into .cache/ when it is missing."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = [
    ["bench_core.py"],
    ["bench_data.py"],
    ["bench_kernels.py"],
    ["bench_train.py", "--steps", "5"],
    ["bench_analysis.py", "--rf-neurons", "256", "--mei-steps", "5"],
    ["bench_sensorium.py", "--steps", "2"],
    ["bench_sweep.py"],
]


def main():
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    failed = []
    for cmd in BENCHES:
        print(f"\n=== {' '.join(cmd)}", flush=True)
        rc = subprocess.call([sys.executable, os.path.join(HERE, cmd[0]), *cmd[1:]], env=env)
        if rc:
            failed.append(cmd[0])
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
