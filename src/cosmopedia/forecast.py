"""`cosmopedia forecast`: the GPU-hours (and wall time) generation will take, per source
and in total, before any GPU job ran or for the shards a run has not generated yet.

Model of one generate job (one shard of P prompts, G GPUs; docs/cluster.md, "Sizing"):

    stream  = P x tokens per prompt / (tokens/s per GPU x G)
    wall    = start-up + stream + drain + rest of the job
    GPU-hours = G x wall;  overhead = (start-up + drain) / wall

An engine without GPUs (G = 0: dummy, endpoint, a CPU engine) is counted in engine-hours
of job wall time, with a throughput per job. Each number comes from, in this order: the
command line; what the finished shards measured (their provenance, cosmopedia.accounting:
tokens per second of stream, mean start-up, drain and rest of the job, tokens per
prompt); a stated default (none for the throughput). A given throughput is the engine's
with every request slot busy, so the drain is added; a measured one covers whole streams,
drain included, so it is not added again. The output names the source of each number.

Prompts per shard: a generated shard's own rows; a prompts shard already built (its
Parquet footer); `--prompts SOURCE=N` or `--seed-rows SOURCE=N` (the source's total, the
part not generated split evenly over its other shards); else what planning knows offline
(`planned_prompts`: local seed files' rows x the source's prompts per seed row). Hub seed
files' rows are not known offline: such a shard is "unknown", never guessed, unless other
shards of its source are known (their mean is then used, and said).

planned_prompts opens local seed files (Parquet footers, jsonl lines): this command does,
Snakemake's planning never does, and the forecast at the end of a run does not either
(`progress_lines`: built prompts shards and generated rows only).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field

from cosmopedia import accounting, layout, plan, settings
from cosmopedia.errors import CliError

# Defaults when nothing is given or measured; each is printed with its reason.
DEFAULT_TOKENS_PER_PROMPT = 800.0
DEFAULT_TOKENS_PER_PROMPT_WHY = (
    "Cosmopedia v0.1: ~25 B tokens in 31.1 M texts (dataset card); --tokens-per-prompt"
)
DEFAULT_STARTUP_S = 300.0
DEFAULT_STARTUP_WHY = (
    "loading Mixtral-8x7B and warming TGI up takes 3-5 min (docs/cluster.md); --startup-s"
)
DEFAULT_DRAIN_S = 90.0
DEFAULT_DRAIN_WHY = (
    "the last, longest generations of a shard finish in 1-2 min (docs/cluster.md); --drain-s"
)


# --- prompts per shard, from what planning knows offline ------------------------------------


def prompts_per_seed_row(config: dict, source: str) -> int | None:
    """Prompts one seed row gives: 1 (family prompts, fan_out one), the number of styles or
    audiences (fan_out all), None for openstax (a row is a book: its units are counted by
    the prompts step)."""
    spec = config["sources"][source]
    family = spec["family"]
    if family == "openstax":
        return None
    if spec.get("fan_out", "one") != "all":
        return 1
    job = plan.prompts_job(config, source)
    names = job.styles if job.styles is not None else job.audiences
    return len(names or ())


def seed_rows(path: str) -> int:
    """Rows of a local seed file: the Parquet footer, or the non-blank lines of a
    .jsonl(.zst) (bad lines included: ingest may quarantine some)."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as raw:
        stream = raw
        if path.endswith(".zst"):
            import zstandard

            stream = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
        return sum(1 for line in stream if line.strip())


def planned_prompts(config: dict) -> dict[str, int | None]:
    """Prompts of every planned shard (key `<source>/<shard>`) as far as known offline:
    local seed files' rows x prompts per seed row; None for Hub seed files (their rows are
    not in the config) and openstax (units per book). `config`: validated (defaults
    filled). Reads local seed files: for commands, never at Snakemake's parse time."""
    out: dict[str, int | None] = {}
    per_row = {source: prompts_per_seed_row(config, source) for source in config["sources"]}
    for shard in plan.plan_shards(config):
        factor = per_row[shard.source]
        if shard.is_hub or factor is None:
            out[shard.key] = None
        else:
            out[shard.key] = seed_rows(shard.path) * factor
    return out


# --- the forecast --------------------------------------------------------------------------


@dataclass
class Given:
    """What the command line gives (None: measure, else the default)."""

    tokens_per_s_per_gpu: float | None = None
    tokens_per_s_per_job: float | None = None  # for an engine without GPUs
    tokens_per_prompt: float | None = None
    gpus_per_job: int | None = None
    startup_s: float | None = None
    drain_s: float | None = None
    prompts: dict[str, int] = field(default_factory=dict)  # source -> prompts, all shards
    seed_rows: dict[str, int] = field(default_factory=dict)  # source -> seed rows
    jobs: int | None = None  # generate jobs running at once
    count_seed_files: bool = True  # read local seed files for planned prompts


@dataclass
class Value:
    value: float | None
    why: str


@dataclass
class SourceForecast:
    source: str
    shards: int
    generated: int
    prompts: int | None  # all shards (generated ones: their rows)
    tokens: float | None  # generated shards' tokens + the others' prompts x tokens per prompt
    how: str  # how the prompts are known
    spent_hours: float  # measured, generated shards in the forecast's unit
    spent: list[accounting.Totals]  # measured, generated shards, per unit
    hours: float | None  # forecast, shards not generated
    overhead_hours: float | None  # forecast start-up + drain
    job_walls: list[float]  # forecast wall time of each job not generated (s)

    @property
    def remaining(self) -> int:
        return self.shards - self.generated


@dataclass
class Forecast:
    unit: str  # accounting.GPU or accounting.ENGINE
    engine: str
    gpus: int
    gpus_why: str
    tokens_per_s: Value
    tokens_per_prompt: Value
    startup_s: Value
    drain_s: Value
    other_s: Value
    drain_added: bool  # False: the measured rate covers whole streams, drain included
    sources: list[SourceForecast]
    measured: list[accounting.Totals]
    root: str
    jobs: int | None


def _prompts_of_shards(
    config: dict, root: str, shards, generated: dict, given: Given
) -> dict[str, tuple[list[float | None], str]]:
    """source -> (prompts per shard not generated, in plan order; how they are known)."""
    offline = None
    by_source: dict[str, list] = {}
    for shard in shards:
        by_source.setdefault(shard.source, []).append(shard)
    out = {}
    for source, source_shards in by_source.items():
        rest = [s for s in source_shards if s.key not in generated]
        counts: list[float | None] = []
        for s in rest:
            built = layout.shard_path(root, "prompts", s.source, s.name)
            counts.append(float(seed_rows(built)) if os.path.exists(built) else None)
        built_n = sum(c is not None for c in counts)
        done_rows = sum(generated[s.key].rows for s in source_shards if s.key in generated)
        how = []
        if len(rest) < len(source_shards):
            how.append(f"{len(source_shards) - len(rest)} shard(s) generated: their rows")
        if built_n:
            how.append(f"{built_n} prompts shard(s) built: their rows")
        unknown = [i for i, c in enumerate(counts) if c is None]
        total = None
        if source in given.prompts:
            total, what = given.prompts[source], f"--prompts {source}={given.prompts[source]:,}"
        elif source in given.seed_rows:
            per_row = prompts_per_seed_row(config, source)
            if per_row is None:
                raise CliError(
                    f"--seed-rows {source}: the prompts of a {config['sources'][source]['family']}"
                    " seed row are not known before its prompts step; give --prompts instead"
                )
            total = given.seed_rows[source] * per_row
            what = f"--seed-rows {source}={given.seed_rows[source]:,} x {per_row} per row"
        if unknown and total is not None:
            left = max(total - done_rows - sum(c for c in counts if c is not None), 0)
            for i in unknown:
                counts[i] = left / len(unknown)
            if len(unknown) == len(source_shards):
                how.append(f"{what}, split evenly over its {len(unknown)} shard(s)")
            else:
                how.append(f"{what}: the rest split evenly over {len(unknown)} shard(s)")
        elif unknown:
            if given.count_seed_files:
                if offline is None:
                    offline = planned_prompts(config)
                planned = {i: offline[rest[i].key] for i in unknown}
                for i, n in planned.items():
                    counts[i] = None if n is None else float(n)
                if any(n is not None for n in planned.values()):
                    factor = prompts_per_seed_row(config, source)
                    how.append(f"planned offline: seed file rows x {factor} prompt(s) per row")
            known = [c for c in counts if c is not None]
            known += [generated[s.key].rows for s in source_shards if s.key in generated]
            missing = [i for i in unknown if counts[i] is None]
            if missing and known:
                mean = sum(known) / len(known)
                for i in missing:
                    counts[i] = mean
                how.append(f"{len(missing)} shard(s) at the mean of the known ones")
            elif missing and not given.count_seed_files:
                how.append("UNKNOWN (seed files not counted here: cosmopedia forecast counts them)")
            elif missing:
                how.append(_unknown_prompts(config, source))
        out[source] = (counts, "; ".join(how) or "all generated")
    return out


def _unknown_prompts(config: dict, source: str) -> str:
    spec = config["sources"][source]
    why = []
    if "hub" in spec:
        why.append("the rows of Hub seed files are not known offline")
    if spec["family"] == "openstax":
        why.append("a book's units are counted by its prompts step")
    hint = f"--prompts {source}=N" + ("" if spec["family"] == "openstax" else " or --seed-rows")
    return f"UNKNOWN ({'; '.join(why)}): give {hint}"


def _pick(given: float | None, flag: str, measured: float | None, what: str, default, why):
    if given is not None:
        return Value(given, f"given: {flag}")
    if measured is not None:
        return Value(measured, f"measured: {what}")
    return Value(default, why)


def _given_rate(given: Given, unit: str) -> float | None:
    if unit == accounting.GPU and given.tokens_per_s_per_job is not None:
        raise CliError(
            "--tokens-per-s-per-job: this config's jobs hold GPUs: give --tokens-per-s-per-gpu"
        )
    if unit == accounting.ENGINE and given.tokens_per_s_per_gpu is not None:
        raise CliError(
            "--tokens-per-s-per-gpu: this config's engine holds no GPU (engine-hours): give "
            "--tokens-per-s-per-job, or --gpus-per-job N to count a GPU engine"
        )
    if unit == accounting.GPU:
        return given.tokens_per_s_per_gpu
    return given.tokens_per_s_per_job


def make_forecast(config: dict, root: str, given: Given) -> Forecast:
    """The forecast of every shard not generated under `root`, from `given`, what the
    generated shards measured, and the defaults."""
    from cosmopedia.generation import engines

    shards = plan.plan_shards(config)
    job = plan.generate_job(config)
    engine = job.generation.engine
    if given.gpus_per_job is not None:
        gpus, gpus_why = given.gpus_per_job, "given: --gpus-per-job"
    else:
        gpus = engines.gpus(job)
        g = job.generation
        gpus_why = (
            f"generation.instances {g.instances} x gpus_per_instance {g.gpus_per_instance}"
            if gpus
            else "holds no GPU: engine-hours of job wall time"
        )
    unit = accounting.GPU if gpus > 0 else accounting.ENGINE
    devices = max(gpus, 1)

    entries = [{"source": s.source, "shard": s.name} for s in shards]
    usages = accounting.read_usages(root, entries, missing_ok=True)
    generated = {u.key: u for u in usages}
    measured = accounting.totals(usages)
    same = next((t for t in measured if t.unit == unit), None)
    n = f"{same.shards} generated shard(s)" if same else ""
    per = "per GPU" if unit == accounting.GPU else "per job"
    flag = "--tokens-per-s-per-gpu" if unit == accounting.GPU else "--tokens-per-s-per-job"

    given_rate = _given_rate(given, unit)
    measured_rate = same.tokens_per_s if same else None
    if given_rate is not None:
        rate = Value(given_rate, f"given: {flag}; with every request slot busy")
        drain_added = True
    elif measured_rate is not None:
        what = f"measured: {n}, tokens generated per second of stream {per}, drain included"
        rate, drain_added = Value(measured_rate, what), False
    else:
        rate, drain_added = Value(None, f"nothing measured yet: give {flag}"), True
    drain_measured = same.mean("drain_s") if same and same.drain_known else None
    drain = _pick(
        given.drain_s, "--drain-s", drain_measured, f"mean of {n}",
        DEFAULT_DRAIN_S, f"default: {DEFAULT_DRAIN_WHY}",
    )  # fmt: skip
    if not drain_added:
        drain.why += "; part of the streams the measured rate covers: not added again"
    tokens = _pick(
        given.tokens_per_prompt, "--tokens-per-prompt", same.tokens_per_prompt if same else None,
        f"mean generated tokens per prompt of {n}", DEFAULT_TOKENS_PER_PROMPT,
        f"default: {DEFAULT_TOKENS_PER_PROMPT_WHY}",
    )  # fmt: skip
    startup = _pick(
        given.startup_s, "--startup-s", same.mean("startup_s") if same else None,
        f"mean of {n}", DEFAULT_STARTUP_S,
        f"default: {DEFAULT_STARTUP_WHY}",
    )  # fmt: skip
    other = (
        Value(same.mean("other_s"), f"measured: mean of {n}")
        if same
        else Value(0.0, "nothing measured: not counted")
    )

    prompts = _prompts_of_shards(config, root, shards, generated, given)
    sources = []
    for source in sorted(config["sources"]):
        mine = [s for s in shards if s.source == source]
        counts, how = prompts[source]
        done = [generated[s.key] for s in mine if s.key in generated]
        walls, hours, overhead = [], 0.0, 0.0
        known = all(c is not None for c in counts) and rate.value is not None
        if known:
            for count in counts:
                stream_s = count * tokens.value / (rate.value * devices)
                tail = drain.value if drain_added else min(drain.value, stream_s)
                wall = startup.value + stream_s + (tail if drain_added else 0.0) + other.value
                walls.append(wall)
                hours += devices * wall / 3600
                overhead += devices * (startup.value + tail) / 3600
        total_prompts = total_tokens = None
        if all(c is not None for c in counts):
            total_prompts = round(sum(counts)) + sum(u.rows for u in done)
            total_tokens = sum(counts) * tokens.value + sum(u.tokens_in_shard for u in done)
        sources.append(
            SourceForecast(
                source=source,
                shards=len(mine),
                generated=len(done),
                prompts=total_prompts,
                tokens=total_tokens,
                how=how,
                spent_hours=sum(u.hours for u in done if u.unit == unit),
                spent=accounting.totals(done),
                hours=hours if known else None,
                overhead_hours=overhead if known else None,
                job_walls=walls,
            )
        )
    return Forecast(
        unit=unit,
        engine=engine,
        gpus=gpus,
        gpus_why=gpus_why,
        tokens_per_s=rate,
        tokens_per_prompt=tokens,
        startup_s=startup,
        drain_s=drain,
        other_s=other,
        drain_added=drain_added,
        sources=sources,
        measured=measured,
        root=root,
        jobs=given.jobs,
    )


# --- text ------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _count(n: float | None) -> str:
    if n is None:
        return "unknown"
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    return f"{n:,.0f}"


def _seconds(value: float) -> str:
    return f"{value:,.0f} s" if value >= 100 else f"{value:.1f} s"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def forecast_lines(f: Forecast) -> list[str]:
    """The forecast as text: every assumption first, one line per source, the total."""
    unit_label = accounting.unit_label(f.unit, [f.engine])
    per = "per GPU" if f.unit == accounting.GPU else "per job"
    rate = f.tokens_per_s
    jobs = f", {f.gpus} GPUs per job ({f.gpus_why})" if f.gpus else f" ({f.gpus_why})"
    lines = [
        f"Forecast of generation in {unit_label}: engine {f.engine}{jobs}, one generate job "
        f"per shard. Per job: wall = start-up + prompts x tokens per prompt / (tokens/s {per}"
        + (" x GPUs" if f.gpus else "")
        + ")"
        + (" + drain" if f.drain_added else "")
        + " + rest; "
        + ("GPU-hours = GPUs x wall" if f.gpus else "engine-hours = wall")
        + "; overhead = (start-up + drain) / wall.",
        "Assumptions:",
        "  throughput: "
        + (f"{rate.value:,.0f} tokens/s {per}" if rate.value is not None else "UNKNOWN")
        + f" ({rate.why})",
        f"  tokens per prompt: {f.tokens_per_prompt.value:,.0f} ({f.tokens_per_prompt.why})",
        f"  start-up: {_seconds(f.startup_s.value)} per job ({f.startup_s.why})",
        f"  drain: {_seconds(f.drain_s.value)} per job ({f.drain_s.why})",
        f"  rest of the job (read prompts, stop servers, write): {_seconds(f.other_s.value)} "
        f"({f.other_s.why})",
        "  prompts per shard: a generated shard's rows; a built prompts shard's rows; else "
        "--prompts/--seed-rows; else planned offline (local seed files' rows x prompts per "
        "row); per source below",
        "  not counted: retried or killed attempts (each pays start-up again), time queued",
    ]
    if f.measured:
        lines.append(f"  measured so far under {f.root}:")
        lines += ["    " + accounting.totals_line("generated", t) for t in f.measured]
    else:
        lines.append(f"  measured: no shard generated yet under {f.root}")
    lines.append("Per source:")
    for s in f.sources:
        spent = ""
        if s.generated:
            spent = (
                "spent "
                + " + ".join(
                    f"{accounting.fmt_hours(t.hours)} {accounting.unit_label(t.unit, t.engines)}"
                    for t in s.spent
                )
                + "; "
            )
        if s.remaining == 0:
            rest = "nothing left to generate"
        elif s.hours is None:
            rest = f"forecast UNKNOWN {unit_label}"
        else:
            rest = f"forecast {accounting.fmt_hours(s.hours)} {unit_label}"
            if s.hours:
                rest += f", overhead {accounting.fmt_share(s.overhead_hours / s.hours)}"
            mean = sum(s.job_walls) / len(s.job_walls)
            rest += f", job wall {_duration(mean)} mean, {_duration(max(s.job_walls))} max"
        lines.append(
            f"  {s.source}: {_plural(s.shards, 'shard')} ({s.generated} generated), "
            f"{_count(s.prompts)} prompts; {spent}{rest}"
        )
        lines.append(f"      prompts: {s.how}")
    lines += _total_lines(f, unit_label)
    return lines


def _total_lines(f: Forecast, unit_label: str) -> list[str]:
    known = [s for s in f.sources if s.hours is not None or s.remaining == 0]
    unknown = [s.source for s in f.sources if s not in known]
    spent = sum(s.spent_hours for s in f.sources)
    forecast = sum(s.hours or 0.0 for s in known)
    overhead = sum(s.overhead_hours or 0.0 for s in known)
    walls = [w for s in known for w in s.job_walls]
    shards = sum(s.shards for s in f.sources)
    prompts = sum(s.prompts for s in f.sources if s.prompts is not None)
    counted = sum(s.prompts is not None for s in f.sources)
    share = (
        f", overhead {accounting.fmt_share(overhead / forecast)} of the forecast"
        if forecast
        else ""
    )
    generated = sum(s.generated for s in f.sources)
    hours = f"forecast {accounting.fmt_hours(forecast)}"
    if generated:
        both = accounting.fmt_hours(spent + forecast)
        hours = f"spent {accounting.fmt_hours(spent)} + {hours} = {both}"
    line = (
        f"total: {_plural(shards, 'shard')} ({generated} generated), "
        f"{_count(prompts)} prompts known in {counted} of {len(f.sources)} sources (~"
        f"{_count(sum(s.tokens for s in f.sources if s.tokens is not None))} tokens); "
        f"{hours} {unit_label}{share}"
    )
    other = [t for t in f.measured if t.unit != f.unit]
    if other:
        line += "; also spent, not in this total: " + ", ".join(
            f"{accounting.fmt_hours(t.hours)} {accounting.unit_label(t.unit, t.engines)}"
            for t in other
        )
    if unknown:
        line += f"; NOT counted (prompts or throughput unknown): {', '.join(unknown)}"
    lines = [line]
    if walls:
        serial = sum(walls)
        wall = (
            f"wall time of the jobs not generated: {_duration(serial)} one after another; "
            f"at least {_duration(max(walls))} (the longest job) with all at once"
        )
        if f.jobs:
            batches = max(serial / f.jobs, max(walls))
            wall += f"; about {_duration(batches)} with {f.jobs} jobs at once (--jobs)"
        lines.append(wall)
    return lines


def progress_lines(config: dict, root: str, configfile: str) -> list[str]:
    """For the end of a run: nothing if every planned shard is generated, else the shards
    generated so far and the forecast of the others from their measurements (the run's
    summary; `cosmopedia forecast` takes assumptions of one's own)."""
    shards = plan.plan_shards(config)
    done = sum(
        os.path.exists(layout.shard_path(root, "generation_provenance", s.source, s.name))
        for s in shards
    )
    if done == len(shards):
        return []
    head = (
        f"generation: {done} of {len(shards)} shards generated; the others, forecast from "
        f"what was measured (`cosmopedia forecast --configfile {configfile}` takes "
        "assumptions of your own):"
    )
    # Seed files are not read here: at the end of a large run that could take minutes.
    f = make_forecast(config, root, Given(count_seed_files=False))
    return [head, *("  " + line for line in forecast_lines(f))]


# --- command ---------------------------------------------------------------------------------


def _source_counts(values: list[str] | None, flag: str, sources) -> dict[str, int]:
    out = {}
    for value in values or []:
        name, sep, number = value.partition("=")
        try:
            count = int(number.replace(",", "").replace("_", ""))
        except ValueError:
            count = -1
        if not sep or count < 0:
            raise CliError(f"{flag} {value!r}: expected SOURCE=N (N a count of rows)")
        if name not in sources:
            raise CliError(f"{flag} {name}: not a source of the config ({', '.join(sources)})")
        out[name] = count
    return out


def add_arguments(name, parser):
    parser.add_argument("--configfile", required=True, help="the workflow config (YAML)")
    parser.add_argument(
        "--root", help="results root to read measurements from (default: results/<name>/<v>)"
    )
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument(
        "--tokens-per-s-per-gpu", type=float, help="assumed generation throughput per GPU"
    )
    rate.add_argument(
        "--tokens-per-s-per-job", type=float, help="the same per job, for engines without GPUs"
    )
    parser.add_argument("--tokens-per-prompt", type=float, help="mean generated tokens")
    parser.add_argument("--gpus-per-job", type=int, help="default: instances x gpus_per_instance")
    parser.add_argument("--startup-s", type=float, help="engine start-up per job (seconds)")
    parser.add_argument("--drain-s", type=float, help="tail of a shard's stream (seconds)")
    parser.add_argument(
        "--prompts", action="append", metavar="SOURCE=N", help="prompts of a source (all shards)"
    )
    parser.add_argument(
        "--seed-rows", action="append", metavar="SOURCE=N", help="seed rows of a source"
    )
    parser.add_argument("--jobs", type=int, help="generate jobs running at once (wall time)")


def main(args) -> int:
    from cosmopedia import yamlfile

    config = settings.validate_config(yamlfile.read(args.configfile) or {})
    for flag in ("tokens_per_s_per_gpu", "tokens_per_s_per_job", "jobs"):
        value = getattr(args, flag)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise CliError(f"--{flag.replace('_', '-')} {value}: must be a positive number")
    for flag in ("tokens_per_prompt", "startup_s", "drain_s", "gpus_per_job"):
        value = getattr(args, flag)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise CliError(f"--{flag.replace('_', '-')} {value}: must be a number >= 0")
    sources = sorted(config["sources"])
    given = Given(
        tokens_per_s_per_gpu=args.tokens_per_s_per_gpu,
        tokens_per_s_per_job=args.tokens_per_s_per_job,
        tokens_per_prompt=args.tokens_per_prompt,
        gpus_per_job=args.gpus_per_job,
        startup_s=args.startup_s,
        drain_s=args.drain_s,
        prompts=_source_counts(args.prompts, "--prompts", sources),
        seed_rows=_source_counts(args.seed_rows, "--seed-rows", sources),
        jobs=args.jobs,
    )
    f = make_forecast(config, args.root or plan.results_root(config), given)
    dataset = config["dataset"]
    print(f"{args.configfile} (dataset {dataset['name']} {dataset['version']})")
    print("\n".join(forecast_lines(f)))
    return 0
