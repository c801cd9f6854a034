"""Where mlyard's per-step overhead goes: ``.venv/bin/python benchmarks/core/profile_core.py``.

1. Runs the 50-step chain (tracking off) under cProfile in the orchestrator process and prints
   the calls per step that matter: DB transactions and commits, state write-throughs, backend
   state files, and the seconds spent waiting for step processes and the fork server.
2. Prints what a forked step process still imports after the fork server's preload, and the
   time ``python -m mlyard.runtime``'s ``main`` takes for one step of that run.
3. Prints the slowest imports of ``python -X importtime -m mlyard.runtime`` (a cold step process,
   as on SLURM or Kubernetes, where there is no fork server).
"""

from __future__ import annotations

import argparse
import pstats
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlyard_runs import MLYARD_CLI, flow_target, mlyard_command, mlyard_environment

#: (label, pstats function pattern) counted per step.
COUNTED = (
    ("metadata transactions", r"store/repository.py:\d+\(transaction\)"),
    ("SQLite commits", r"<method 'commit' of 'sqlite3.Connection' objects>"),
    ("SQL statements executed", r"<method 'execute' of 'sqlite3.Cursor' objects>"),
    ("write_through (state persisted)", r"run_state.py:\d+\(write_through\)"),
    ("backend state files written", r"backends/local/backend.py:\d+\(_write_state\)"),
    ("StepRecord.state reads", r"run_state.py:\d+\(state\)"),
)
#: (label, pattern) whose cumulative seconds are shown.
TIMED = (
    ("whole process", r"\.venv/bin/mlyard:1\(<module>\)|mlyard/cli/main.py:\d+\(main\)"),
    ("importing CLI commands", r"cli/main.py:\d+\(_register_commands\)"),
    ("orchestrator loop", r"reconciler.py:\d+\(_loop\)"),
    ("  waiting for step processes to end", r"backends/local/backend.py:\d+\(wait_for_change\)"),
    ("  waiting for the fork server (once)", r"fork_server.py:\d+\(wait_ready\)"),
    ("  forking (request -> pid)", r"fork_server.py:\d+\(start\)"),
    ("  scheduling ready steps", r"reconciler.py:\d+\(_schedule_ready\)"),
    ("    cache lookups", r"attempts.py:\d+\(try_cache\)"),
    ("    submitting", r"attempts.py:\d+\(submit_new\)"),
    ("  polling + recording outcomes", r"reconciler.py:\d+\(_poll_active\)"),
    ("    recording successes", r"attempts.py:\d+\(record_success\)"),
    ("  metadata transactions (begin + commit)", r"store/repository.py:\d+\(transaction\)"),
)


def _stat(stats: pstats.Stats, pattern: str) -> tuple[int, float]:
    """(calls, cumulative seconds) of the first function matching ``pattern``."""
    regex = re.compile(pattern)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, name), (_, calls, _, cumulative, _) in raw.items():
        if regex.search(f"{filename}:{line}({name})"):
            return calls, cumulative
    return 0, 0.0


def profile_orchestrator(n: int, workdir: Path) -> Path:
    """Run the chain under cProfile; the path of the stats file."""
    stats_file = workdir / "orchestrator.prof"
    command = mlyard_command(flow_target("chain"), {"n": n})
    command[0:1] = [sys.executable, "-m", "cProfile", "-o", str(stats_file), str(MLYARD_CLI)]
    env = mlyard_environment(workdir, tracking=False)
    subprocess.run(command, env=env, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    stats = pstats.Stats(str(stats_file))
    print(f"orchestrator of a {n}-step chain, tracking off (under cProfile, so slower):")
    for label, pattern in TIMED:
        calls, seconds = _stat(stats, pattern)
        print(f"  {label:<44} {seconds:6.2f} s  ({calls} calls, {1000 * seconds / n:.1f} ms/step)")
    for label, pattern in COUNTED:
        calls, _ = _stat(stats, pattern)
        print(f"  {label:<44} {calls / n:6.1f} per step")
    return workdir / "mlyard-home"


STEP_PROBE = """
import sys, time
from mlyard.backends.local.zygote import _preload
_preload([])
before = set(sys.modules)
import mlyard.runtime.__main__ as runtime
started = time.perf_counter()
code = runtime.main([sys.argv[1]])
elapsed = time.perf_counter() - started
imported = sorted({m.split('.')[0] for m in set(sys.modules) - before})
print(f"  runtime main() of one step after the fork server's preload: {1000 * elapsed:.1f} ms "
      f"(exit {code}); top-level packages it still imported: {', '.join(imported)}")
"""


def profile_step_process(home: Path) -> None:
    """Re-run one finished step's task (its result removed) the way a forked child runs it."""
    tasks = sorted((home / "artifacts" / "tasks").glob("*/task.json"))
    task = tasks[len(tasks) // 2]
    (task.parent / "result.json").unlink(missing_ok=True)
    print("step process (fork-server child):")
    subprocess.run([sys.executable, "-c", STEP_PROBE, str(task)], check=True)


def profile_cold_step_imports(top: int) -> None:
    """The slowest cumulative imports of a cold ``python -m mlyard.runtime``."""
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mlyard.runtime", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in probe.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    print(f"cold step process (`python -X importtime -m mlyard.runtime`), top {top} cumulative:")
    for micros, name in sorted(rows, reverse=True)[:top]:
        print(f"  {micros / 1000:7.1f} ms {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Profile mlyard's per-step overhead.")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlyard-profile-") as tmp:
        home = profile_orchestrator(args.steps, Path(tmp))
        profile_step_process(home)
    profile_cold_step_imports(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
