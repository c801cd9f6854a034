"""The "## Embedded core" section of benchmarks/RESULTS.md: machine, command, tables, verdicts."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from cached import CachedResult
from overhead import (
    METAFLOW_LABEL,
    PREFECT_LABEL,
    SMALL_CHAIN,
    FlowResult,
    marginal_ms_per_step,
)
from scale import TIME_GROWTH_LIMIT, ScalePoint, growth_verdict, marginal_kib_per_step

RESULTS = Path(__file__).resolve().parent.parent / "RESULTS.md"
SECTION_TITLE = "## Embedded core"
STEP_TARGET_MS = 50.0
PEER_FACTOR_TARGET = 10.0
CACHED_TARGET_SECONDS = 1.5
#: Issue 19: MLflow tracking on costs at most 1.5x per step and 1 s per run more than off.
TRACKING_STEP_RATIO_TARGET = 1.5
TRACKING_FIXED_TARGET_SECONDS = 1.0
FULL_COMMAND = ".venv/bin/python benchmarks/core/run.py"
SUBSECTION_HEADINGS = {
    "overhead": "### Per-step overhead",
    "cached": "### Fully cached re-run",
    "scale": "### Scale",
}
MLYARD_CONFIGS = (
    "mlyard, tracking off",
    "mlyard, MLflow tracking on",
    "mlyard, tracking off, existing home",
    "mlyard, MLflow tracking on, existing home",
)


def machine_description() -> str:
    """CPU model and count, memory, OS and Python, in one line."""
    model = "unknown CPU"
    with Path("/proc/cpuinfo").open() as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with Path("/proc/meminfo").open() as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    return (
        f"{model}, {os.cpu_count()} cores (shared with other work), "
        f"{total_kib / 2**20:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}, no GPU"
    )


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def overhead_table(results: list[FlowResult], n: int) -> list[str]:
    """One row per contender and flow, with the medians and the marginal cost per step."""
    lines = [
        "| tool | flow | steps | median wall s | overhead ms/step | runs (s) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for result in results:
        if result.n != n:
            continue
        runs = ", ".join(f"{wall:.2f}" for wall in result.walls)
        lines.append(
            f"| {result.contender} | {result.flow} | {result.steps} | {result.median_wall:.2f} "
            f"| {result.per_step_ms:.1f} | {runs} |"
        )
    lines += [
        "",
        f"Marginal cost of one more step (slope between a {SMALL_CHAIN}- and a {n}-step chain) "
        "and the fixed cost of a run (the intercept: start-up, DB creation, API server):",
        "",
        f"| tool | {SMALL_CHAIN}-step chain s | marginal ms/step | fixed s per run |",
        "|---|---:|---:|---:|",
    ]
    for result in results:
        if result.flow == "chain" and result.n != n:
            slope = marginal_ms_per_step(results, result.contender, n)
            if slope is None:
                continue
            fixed = result.median_wall - result.steps * slope / 1000.0
            lines.append(
                f"| {result.contender} | {result.median_wall:.2f} | {slope:.1f} | {fixed:.2f} |"
            )
    lines += [
        "",
        "The slope is the difference of two medians, so it moves with the machine's load, "
        "most for the tools with a long and variable start-up.",
    ]
    return lines


def ratio_lines(results: list[FlowResult], n: int) -> list[str]:
    """mlyard's per-step overhead against each peer's, and the two targets."""

    def per_step(contender: str, flow: str) -> float:
        for result in results:
            if (result.contender, result.flow, result.n) == (contender, flow, n):
                return result.per_step_ms
        raise KeyError(contender)

    lines = [
        "| flow | mlyard config | ms/step | / Metaflow | / Prefect | ≤ 50 ms/step | ≥ 10x less "
        "than Metaflow |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for flow in ("chain", "fanout"):
        metaflow = per_step(METAFLOW_LABEL, flow)
        prefect = per_step(PREFECT_LABEL, flow)
        for config in MLYARD_CONFIGS:
            ours = per_step(config, flow)
            lines.append(
                f"| {flow} | {config.removeprefix('mlyard, ')} | {ours:.1f} "
                f"| {ours / metaflow:.3f} ({metaflow / ours:.1f}x less) "
                f"| {ours / prefect:.3f} ({prefect / ours:.1f}x less) "
                f"| {_met(ours <= STEP_TARGET_MS)} "
                f"| {_met(metaflow / ours >= PEER_FACTOR_TARGET)} |"
            )
    return lines


def tracking_cost_lines(results: list[FlowResult], n: int) -> list[str]:
    """What MLflow tracking on (the default) costs against tracking off, and the targets of
    issue 19: per-step overhead at most 1.5x, fixed cost at most 1 s more."""

    def find(contender: str, flow: str, size: int) -> FlowResult | None:
        for result in results:
            if (result.contender, result.flow, result.n) == (contender, flow, size):
                return result
        return None

    lines = [
        f"| home | flow | ms/step off | ms/step on | on / off (≤ {TRACKING_STEP_RATIO_TARGET}x) |",
        "|---|---|---:|---:|---|",
    ]
    homes = (("fresh", ""), ("existing", ", existing home"))
    for home, suffix in homes:
        for flow in ("chain", "fanout"):
            off = find(f"mlyard, tracking off{suffix}", flow, n)
            on = find(f"mlyard, MLflow tracking on{suffix}", flow, n)
            if off is None or on is None:
                continue
            ratio = on.per_step_ms / off.per_step_ms
            lines.append(
                f"| {home} | {flow} {n} | {off.per_step_ms:.1f} | {on.per_step_ms:.1f} "
                f"| {ratio:.2f}x {_met(ratio <= TRACKING_STEP_RATIO_TARGET)} |"
            )
    lines += [
        "",
        f"| home | marginal ms/step off | on | on / off (≤ {TRACKING_STEP_RATIO_TARGET}x) "
        f"| {SMALL_CHAIN}-step chain s off | on | on − off (≤ {TRACKING_FIXED_TARGET_SECONDS:g} s) "
        "|",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for home, suffix in homes:
        off_label, on_label = f"mlyard, tracking off{suffix}", f"mlyard, MLflow tracking on{suffix}"
        off_small = find(off_label, "chain", SMALL_CHAIN)
        on_small = find(on_label, "chain", SMALL_CHAIN)
        off_slope = marginal_ms_per_step(results, off_label, n)
        on_slope = marginal_ms_per_step(results, on_label, n)
        if None in (off_small, on_small, off_slope, on_slope):
            continue
        assert off_small and on_small and off_slope is not None and on_slope is not None
        slope_ratio = on_slope / off_slope if off_slope > 0 else float("inf")
        extra = on_small.median_wall - off_small.median_wall
        lines.append(
            f"| {home} | {off_slope:.1f} | {on_slope:.1f} | {slope_ratio:.2f}x "
            f"{_met(slope_ratio <= TRACKING_STEP_RATIO_TARGET)} | {off_small.median_wall:.2f} "
            f"| {on_small.median_wall:.2f} | {extra:+.2f} s "
            f"{_met(extra <= TRACKING_FIXED_TARGET_SECONDS)} |"
        )
    lines += [
        "",
        "Per-step overhead is the whole run's wall time per step (first table) and the slope "
        f"between the {SMALL_CHAIN}- and {n}-step chains (second); the fixed cost is the "
        f"difference of the {SMALL_CHAIN}-step chains. With tracking on, MLflow is imported and "
        "its store opened on the run's tracking thread while the first steps run, and finished "
        "steps go to MLflow in batches; the run's end waits for the last batch.",
    ]
    return lines


def cached_lines(cached: CachedResult) -> list[str]:
    on, off = cached.cached_run_tracking_on, cached.cached_run_tracking_off
    return [
        "| what | median s | beyond `python -c pass` s |",
        "|---|---:|---:|",
        f"| `python -c pass` | {cached.python_start:.3f} | 0 |",
        f'| `python -c "import mlyard"` | {cached.import_mlyard:.3f} '
        f"| {cached.import_mlyard - cached.python_start:.3f} |",
        f"| quickstart, cold (first run, MLflow tracking on) | {cached.first_run:.2f} | "
        f"{cached.beyond_start(cached.first_run):.2f} |",
        f"| quickstart, fully cached re-run, MLflow tracking on | {on:.3f} "
        f"| {cached.beyond_start(on):.3f} |",
        f"| quickstart, fully cached re-run, tracking off | {off:.3f} "
        f"| {cached.beyond_start(off):.3f} |",
        "",
        f"Target < {CACHED_TARGET_SECONDS} s beyond interpreter start: "
        f"{_met(cached.beyond_start(max(on, off)) < CACHED_TARGET_SECONDS)} "
        f"({cached.beyond_start(on):.2f} s with tracking on, {cached.beyond_start(off):.2f} s off; "
        f"median of {cached.repetitions}, every step CACHED checked in the JSON).",
    ]


def scale_lines(points: list[ScalePoint], timeout_seconds: float) -> list[str]:
    lines = [
        "| steps | wall s | ms/step | orchestrator peak RSS MiB | KiB/step (peak / steps) "
        "| KiB per extra step |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    slopes = iter(marginal_kib_per_step(points))
    for point in points:
        if point.wall_seconds is None or point.peak_rss_bytes is None:
            lines.append(f"| {point.steps} | > {timeout_seconds:.0f} (stopped) | | | | |")
            continue
        slope = next(slopes)
        lines.append(
            f"| {point.steps} | {point.wall_seconds:.1f} | {point.ms_per_step:.1f} "
            f"| {point.peak_rss_bytes / 2**20:.0f} | {point.kib_per_step:.0f} "
            f"| {'' if slope is None else f'{slope:.1f}'} |"
        )
    time_linear, memory_linear = growth_verdict(points)
    timed = [p for p in points if p.ms_per_step is not None]
    lines.append("")
    if len(timed) >= 2:
        first, last = timed[0], timed[-1]
        assert first.ms_per_step is not None and last.ms_per_step is not None
        lines.append(
            f"Time per step at {last.steps} steps is {last.ms_per_step / first.ms_per_step:.2f}x "
            f"that at {first.steps} (up to {TIME_GROWTH_LIMIT}x counts as about linear)."
        )
    lines += [
        f"Time grows about linearly: {'yes' if time_linear else 'no'}; "
        f"memory grows at most linearly: {'yes' if memory_linear else 'no'} "
        "(criteria in `benchmarks/core/scale.py`).",
    ]
    return lines


def build_section(
    *,
    command: str,
    versions: dict[str, str],
    load_averages: tuple[float, float] | None = None,
    repetitions: int,
    n: int,
    overhead: list[FlowResult] | None,
    cached: CachedResult | None,
    scale: list[ScalePoint] | None,
    scale_timeout_seconds: float,
) -> str:
    """The whole section, from its title to the blank line before the next section."""
    measured_with = f"Measured with `{command}`."
    lines = [
        SECTION_TITLE,
        "",
        f"Command: `{FULL_COMMAND}` (`--quick`: one repetition, no 2000-step DAG)  ",
        f"Machine: {machine_description()}  ",
        *(
            [
                f"Load (1-minute load average, from other work too) at the start / end of this "
                f"run: {load_averages[0]:.1f} / {load_averages[1]:.1f}  "
            ]
            if load_averages
            else []
        ),
        f"Peers: Metaflow {versions.get('metaflow', '?')} (local runtime, local datastore and "
        f"metadata), Prefect {versions.get('prefect', '?')} (default thread-pool task runner, "
        "ephemeral API server on SQLite), in `benchmarks/.venv-peers`; every run of every tool "
        "starts in a fresh temporary home (metadata DB, datastore), timed from process start to "
        "exit; steps add two integers, so the work is taken as zero. Each timed run follows an "
        "untimed 3-step run of the same tool, so every tool starts from a warm file cache (this "
        "machine pages out file cache idle for ~30 s; the tools' runs are interleaved). "
        '"Existing home": mlyard '
        "in a home whose metadata DB and MLflow store an earlier run created (timed with "
        "`--no-cache`), as in daily use; the peers are measured with a fresh home only.",
        "",
    ]
    previous = previous_subsections()
    if overhead is not None:
        lines += [
            f"### Per-step overhead ({n}-step chain, fan-out of {n} + join; median of "
            f"{repetitions})",
            "",
            measured_with,
            "",
            *overhead_table(overhead, n),
            "",
            "Ratios (per-step overhead of mlyard / the peer's) and the targets:",
            "",
            *ratio_lines(overhead, n),
            "",
            "What MLflow tracking (on by default) costs, against tracking off:",
            "",
            *tracking_cost_lines(overhead, n),
            "",
        ]
    elif "overhead" in previous:
        lines.append(previous["overhead"])
    if cached is not None:
        lines += [
            "### Fully cached re-run of the quickstart",
            "",
            measured_with,
            "",
            *cached_lines(cached),
            "",
        ]
    elif "cached" in previous:
        lines.append(previous["cached"])
    if scale is not None:
        lines += [
            "### Scale (layered DAG, 20 wide, each step needs 2 of the layer before; tracking "
            "off; one run per size)",
            "",
            measured_with,
            "",
            *scale_lines(scale, scale_timeout_seconds),
            "",
        ]
    elif "scale" in previous:
        lines.append(previous["scale"])
    return "\n".join(lines)


def _section_pattern() -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(SECTION_TITLE)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)


def previous_subsections() -> dict[str, str]:
    """The subsections already in RESULTS.md, so a run with ``--only`` keeps the others."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    match = _section_pattern().search(text)
    if match is None:
        return {}
    found = {}
    for part in re.split(r"(?m)^(?=### )", match.group(0)):
        for key, heading in SUBSECTION_HEADINGS.items():
            if part.startswith(heading):
                found[key] = part.rstrip() + "\n"
    return found


def write_section(section: str) -> None:
    """Replace this section in RESULTS.md (or append it), leaving the other sections alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = _section_pattern()
    replacement = section.rstrip() + "\n\n"
    if pattern.search(text):
        text = pattern.sub(lambda _: replacement, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + replacement
    RESULTS.write_text(text.rstrip() + "\n")
