"""Parse-time planning: which shards exist and which settings each step sees.

Called from workflow/rules/common.smk while Snakemake builds the DAG, so it must stay
cheap: it lists local seed files once and reads the small templates file, nothing else
(a source split into row ranges also needs its files' row counts: Parquet footers, JSONL
lines counted once and cached by size and mtime; see cosmopedia.rowranges).
Each step gets only the slice of the config that feeds it (its "settings"), passed to the
CLI as JSON in a rule param, so a config change reruns exactly the steps it feeds.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cosmopedia import hub, redact, rowranges, settings
from cosmopedia.errors import CliError, PlanError
from cosmopedia.hashing import sha256_text
from cosmopedia.seeding import SCHEME as SEED_SCHEME

SEED_SUFFIXES = (".jsonl", ".jsonl.zst", ".parquet")


@dataclass(frozen=True)
class Shard:
    source: str
    name: str
    path: str  # seed file, as given (relative to the working directory), or a Hub reference
    # A row range of the file (sources.<name>.rows_per_shard): rows [start, stop) of it.
    rows: tuple[int, int] | None = None
    # The file's own shard name (its stem), which row ids carry, when this is a row range.
    stem: str | None = None
    # Rows of the whole file when planning knows them (row ranges; Hub row_counts).
    file_rows: int | None = None
    # Digest of a local file's range (cosmopedia.rowranges): the ingest job's trigger.
    rows_sha256: str | None = None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.name}"

    @property
    def file_shard(self) -> str:
        """The shard name of the whole file: the part of row ids naming the file."""
        return self.stem or self.name

    @property
    def row_count(self) -> int | None:
        """Rows this shard reads from its file, when planning knows them."""
        return self.rows[1] - self.rows[0] if self.rows else self.file_rows

    @property
    def is_hub(self) -> bool:
        """A data file of a Hub dataset (hf://datasets/...): read by its ingest job only."""
        return hub.is_ref(self.path)


def shard_name(path: str) -> str:
    name = Path(path).name
    for suffix in SEED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise PlanError(f"seed file {path!r} is not one of {', '.join(SEED_SUFFIXES)}")


PLACEHOLDER = "PLACEHOLDER"


def placeholders(value, where: str = "") -> list[str]:
    """Every config value (string) that still holds PLACEHOLDER, by its key path."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in placeholders(v, f"{where}.{k}".strip("."))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in placeholders(v, f"{where}[{i}]")]
    if isinstance(value, str) and PLACEHOLDER in value:
        return [f"{where} = {value!r}"]
    return []


def check_placeholders(config: dict) -> None:
    """Refuse, naming them, config values left as placeholders (before any job runs)."""
    if found := placeholders(config):
        shown = "; ".join(found[:10]) + (f"; and {len(found) - 10} more" if len(found) > 10 else "")
        raise PlanError(
            f"the config still holds {len(found)} placeholder value(s): {shown}. Fill them "
            "(cosmopedia lock --configfile FILE pins Hub revisions and file lists)"
        )


def prompts_per_row(config: dict, source: str) -> int | None:
    """Prompts the prompts step builds from one seed row of a source: 1 (fan_out one, or
    the `prompts` family), or the number of its styles/audiences (fan_out all); None for
    openstax, whose rows are books: their prompts (units x styles) are known only when the
    prompts step walks them."""
    from cosmopedia import prompts as builders

    spec = config["sources"][source]
    family = spec["family"]
    key = builders.CHOICE_KEY[family]
    if key is None:
        return 1
    try:
        block = builders.source_block(config, source)
    except CliError as exc:
        raise PlanError(f"sources.{source}: {exc}") from None
    if block.options.get("builder") == "openstax_book":
        return None
    if spec.get("fan_out", "one") == "one":
        return 1
    names = builders.choice_settings(family, spec, block)[key]
    return len([n for n in builders.choice_names(block) if n in names])


def rows_per_shard(config: dict, source: str) -> int | None:
    """Rows per shard of a source split into row ranges (None: one shard per file):
    `rows_per_shard`, or `prompts_per_shard` / prompts per seed row (at least 1)."""
    spec = config["sources"][source]
    rows, prompts = spec.get("rows_per_shard"), spec.get("prompts_per_shard")
    if rows is not None and prompts is not None:
        raise PlanError(f"sources.{source}: give rows_per_shard or prompts_per_shard, not both")
    if prompts is None:
        return rows
    per_row = prompts_per_row(config, source)
    if per_row is None:
        raise PlanError(
            f"sources.{source}.prompts_per_shard: a row of family {spec['family']} is a "
            "book, whose prompts (its units x styles) are known only when the prompts step "
            "walks it; give rows_per_shard (books per shard) instead"
        )
    return max(1, prompts // per_row)


def _missing_counts(source: str, missing: list[str]) -> PlanError:
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return PlanError(
        f"sources.{source}: splitting files into row ranges (rows_per_shard or "
        f"prompts_per_shard) needs each data file's row count, and "
        f"sources.{source}.hub.row_counts has none for {shown}; record them with "
        "`cosmopedia lock --configfile FILE` (it asks the Hub)"
    )


def _range_shards(source: str, name: str, path: str, per_shard: int, spec: dict, cache):
    """The row-range shards of one seed file (a Hub file's count from the config, a local
    file's from its footer or lines, with each range's digest)."""
    if hub.is_ref(path):
        rows = (spec["hub"].get("row_counts") or {})[hub.parse_ref(path)[2]]
        digests = [None] * len(rowranges.split(rows, per_shard))
    else:
        rows, digests = cache.ranges(path, per_shard)
    if rows == 0:
        raise PlanError(
            f"sources.{source}: seed file {path!r} has no rows (fix it or leave it out)"
        )
    return [
        Shard(source, rowranges.range_name(name, start, stop), path, (start, stop), name, rows, d)
        for (start, stop), d in zip(rowranges.split(rows, per_shard), digests, strict=True)
    ]


def plan_shards(config: dict, cache_path: str | None = None) -> list[Shard]:
    """One shard per seed file of every source, or per row range of it for a source with
    `rows_per_shard` or `prompts_per_shard`; sorted by (source, shard).

    Local sources glob their files; Hub sources list theirs in the config (no network).
    Each source's styles or audiences are checked against the templates here, so a bad
    name or template stops the run before any job. Row counts and range digests of local
    files are cached in `cache_path` (default: the seed fingerprint cache).
    """
    from cosmopedia import fingerprint, layout
    from cosmopedia.prompts import check_source

    check_placeholders(config)
    cache = None
    shards = []
    for source, spec in sorted(config["sources"].items()):
        if ("files" in spec) == ("hub" in spec):
            which = "both" if "files" in spec else "neither"
            raise PlanError(
                f"sources.{source}: give either files (local seed files) or hub (a Hugging "
                f"Face dataset at a pinned revision), not {which}"
            )
        try:
            check_source(source, spec, config)
        except CliError as exc:
            raise PlanError(str(exc)) from None
        per_shard = rows_per_shard(config, source)
        if "hub" in spec:
            paths = hub.shard_refs(spec["hub"])
            counts = spec["hub"].get("row_counts") or {}
            if per_shard is not None and (
                missing := [f for f in spec["hub"]["data_files"] if f not in counts]
            ):
                raise _missing_counts(source, missing)
        else:
            patterns = [spec["files"]] if isinstance(spec["files"], str) else spec["files"]
            paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
            if not paths:
                raise PlanError(f"sources.{source}.files: no file matches {patterns}")
        seen: dict[str, str] = {}
        for path in paths:
            name = shard_name(path)
            if "hub" in spec:  # Hub files can't be renamed: map other characters to _
                name = re.sub(r"[^A-Za-z0-9_-]", "_", name)
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise PlanError(
                    f"sources.{source}: seed file {path!r} gives the shard name {name!r}; shard "
                    "names (file names without suffix) may hold only letters, digits, _ and -"
                )
            if name in seen:
                raise PlanError(
                    f"sources.{source}: files {seen[name]!r} and {path!r} give the same shard "
                    f"name {name!r}; shard names (file names without suffix) must be unique"
                )
            seen[name] = path
            if per_shard is None:
                rows = counts.get(hub.parse_ref(path)[2]) if "hub" in spec else None
                shards.append(Shard(source, name, path, file_rows=rows))
                continue
            if cache is None and "hub" not in spec:
                cache = fingerprint.FingerprintCache(
                    cache_path or layout.cache_path("seed_fingerprints")
                )
            shards += _range_shards(source, name, path, per_shard, spec, cache)
    if cache is not None:
        cache.save()
    return shards


def planned_prompts(config: dict, cache_path: str | None = None) -> dict[str, int | None]:
    """Prompts each planned shard will build, by shard key (`<source>/<shard>`), offline.

    For the GPU-hours forecast (and anyone sizing jobs): rows of the shard x prompts per
    seed row (`prompts_per_row`: 1, or the source's styles/audiences with fan_out all).
    The rows of a shard are: its row range's size (rows_per_shard, prompts_per_shard); a
    local file's rows (Parquet footer; JSONL non-blank lines, read once and cached by size
    and mtime in `cache_path`, the seed fingerprint cache by default); a Hub file's count
    recorded by `cosmopedia lock` (sources.<name>.hub.row_counts).

    None where offline planning cannot know: a Hub file without a recorded count, and
    openstax shards (a book gives as many prompts as it has units, known only when the
    prompts step walks it). Counts are those of the seed files: rows that ingest sets aside
    (on_bad_rows: quarantine) give no prompt, so a shard may build fewer.

    `config` is a validated config (settings.validate_config); the planning checks of
    `plan_shards` apply (a PlanError names what is wrong). Never touches the network.
    """
    from cosmopedia import fingerprint, layout

    shards = plan_shards(config, cache_path)
    per_row = {source: prompts_per_row(config, source) for source in config["sources"]}
    cache = fingerprint.FingerprintCache(cache_path or layout.cache_path("seed_fingerprints"))
    planned: dict[str, int | None] = {}
    for shard in shards:
        rows = shard.row_count
        if rows is None and not shard.is_hub:
            rows = cache.rows(shard.path)
        factor = per_row[shard.source]
        planned[shard.key] = None if rows is None or factor is None else rows * factor
    cache.save()
    return planned


def results_root(config: dict) -> str:
    return f"results/{config['dataset']['name']}/{config['dataset']['version']}"


def dataset_version(config: dict) -> str:
    return f"{config['dataset']['name']}/{config['dataset']['version']}"


# --- what each step's jobs receive (cosmopedia.settings), from the validated config --------


def ingest_job(config: dict, source: str) -> settings.Ingest:
    """A source's ingest settings; `shard_ingest_job` adds each shard's seed file."""
    from cosmopedia.prompts import source_block

    spec = config["sources"][source]
    hub_spec = spec.get("hub")
    block = source_block(config, source)
    return settings.Ingest(
        source=source,
        family=spec["family"],
        columns=spec["columns"],
        id_column=spec["id_column"],
        on_bad_rows=spec["on_bad_rows"],
        max_chars=spec["max_chars"],
        # The file list stays out: adding a file must not rerun the other shards.
        hub=None if hub_spec is None else section(settings.HubDataset, hub_spec, "hub"),
        # A set whose builders strip as the original did gets the seed text as given.
        verbatim=True if block is not None and block.seed_fields == "verbatim" else None,
    )


def shard_ingest_job(
    source_job: settings.Ingest, shard: Shard, seed_sha256: str | None
) -> settings.Ingest:
    """One ingest job's settings: its source's, its seed file (path or hf:// reference) and,
    for a local file, the sha256 planning saw: the job reruns exactly when the bytes
    change, and refuses a file that changed since.

    A row range (shard.rows) gets its rows, the file's shard name (for row ids) and, for a
    local file, its range's digest instead of the file's sha256: an edit of one row
    re-ingests only the range that holds it. The last range of a file also gets the
    file's row count, and checks that no row follows."""
    if shard.rows is None:
        return dataclasses.replace(source_job, seed=shard.path, seed_sha256=seed_sha256)
    start, stop = shard.rows
    return dataclasses.replace(
        source_job,
        seed=shard.path,
        row_start=start,
        row_stop=stop,
        file_shard=shard.file_shard,
        rows_sha256=shard.rows_sha256,
        file_rows=shard.file_rows if stop == shard.file_rows else None,
    )


def section(cls, config: dict, where: str | None = None):
    """The section dataclass `cls` (e.g. settings.Clean) of the validated config; with
    `where`, `config` is that section's own part of the config (e.g. a source's hub)."""
    part = config
    if where is None:
        for key in cls.SCHEMA_PATH:
            part = part[key]
        where = ".".join(cls.SCHEMA_PATH)
    keys = settings.job_keys(settings.subschema(cls.SCHEMA_PATH))
    return settings.from_dict(cls, {k: v for k, v in part.items() if k in keys}, where)


def job_settings(cls, config: dict) -> dict:
    """A section's settings as its jobs receive them (--settings): without the
    x-operational keys, which say how the work is split or run, not what it gives. A
    change of those keys reruns no job through this param (the CLI fills their defaults)."""
    values = settings.to_dict(section(cls, config))
    return settings.result_affecting(values, settings.subschema(cls.SCHEMA_PATH))


def prompts_job(config: dict, source: str) -> settings.Prompts:
    from cosmopedia import prompts as builders

    spec = config["sources"][source]
    prompts = config["prompts"]
    block = builders.source_block(config, source)
    # styles/audiences as given; the family's list defaults to all its templates.
    choices = builders.choice_settings(spec["family"], spec, block)
    set_name = path = None
    if block is not None:
        set_name, path = builders.template_set_path(config, spec)
    return settings.Prompts(
        source=source,
        family=spec["family"],
        seed=config["seed"],
        styles=None if choices["styles"] is None else tuple(choices["styles"]),
        audiences=None if choices["audiences"] is None else tuple(choices["audiences"]),
        fan_out=spec["fan_out"],
        seed_data=spec["seed_data"] or source,
        extract_max_chars=prompts["extract_max_chars"],
        topic_probability=prompts["topic_probability"],
        template_set=set_name,
        templates=path,
        variant=None if block is None else block.variant,
        # Only this source's block: editing another family's templates reruns nothing here.
        templates_sha256=sha256_text(
            settings.canonical_json({} if block is None else block.identity())
        ),
    )


def clean_job(config: dict) -> settings.CleanJob:
    """The clean settings, with the tokenizer.json found now (cosmopedia.tokens) when
    text_token_length is to be counted with the model's tokenizer."""
    from cosmopedia import fingerprint, layout, tokens

    clean = section(settings.Clean, config)
    if clean.token_count == "engine":
        return settings.CleanJob(clean, None)
    model, revision = config["generation"]["model"], config["generation"]["revision"]
    path = tokens.find(config["clean"]["tokenizer"], model, revision)
    if path is None:
        if clean.token_count == "tokenizer":
            raise PlanError(
                f"clean.token_count is tokenizer, but no {tokens.TOKENIZER_FILE} of {model} at "
                f"revision {revision} is in the local Hub cache ({tokens.hub_cache_dir()}): "
                "download it (hf download MODEL tokenizer.json --revision REV) or set "
                "clean.tokenizer to the file"
            )
        return settings.CleanJob(clean, None)
    # Hashed once per size and mtime (the seed files' cache): cheap at every planning.
    sha256 = fingerprint.fingerprints([path], layout.cache_path("seed_fingerprints"))[path]
    ref = settings.TokenizerFile(config["clean"]["tokenizer"], model, revision, sha256)
    return settings.CleanJob(clean, ref)


def move_endpoint_credentials(config: dict, environ) -> bool:
    """Credentials in `generation.endpoint_url` (`https://user:pw@host`, `?api_key=...`)
    leave the config, in place, for `environ` (the Snakemake process's environment, which
    its jobs inherit; a Slurm job parses the workflow again and sets it again). The config,
    and so every setting, param, command line, log and manifest built from it, holds the
    URL without them. True if there were any."""
    generation = config.get("generation") or {}
    url = generation.get("endpoint_url")
    if not isinstance(url, str):
        return False
    credentials = redact.split_url(url)
    if not credentials:
        return False
    generation["endpoint_url"] = credentials.url
    environ[redact.ENDPOINT_CREDENTIALS_VAR] = credentials.to_json()
    return True


def generate_job(config: dict) -> settings.Generate:
    """The generate jobs' settings, checked by their engine (settings that do not go
    together fail `snakemake -n`, not a job queued for GPUs)."""
    from cosmopedia.generation import engines

    job = settings.Generate(dataset_version(config), section(settings.Generation, config))
    engines.check(job)
    return job


def generate_request(config: dict) -> dict:
    """The generation settings that change results (model, revision, sampling, ...): the
    generate rule's compared param. Its keys are the schema's minus the x-operational ones
    (concurrency, timeouts, retries, instances...), which must not regenerate a shard."""
    generation = settings.result_affecting(
        config["generation"], settings.subschema(("generation",))
    )
    from cosmopedia.generation.chat_template import MODEL, SERVER

    request = {"dataset_version": dataset_version(config), **generation}
    template = generation["chat_template"]
    if template not in (None, SERVER, MODEL):
        # The client renders the file: its content, not only its name, feeds the shards.
        # (The model's own template, "model", is pinned by generation.revision.)
        request["chat_template_sha256"] = sha256_text(Path(template).read_text(encoding="utf-8"))
    return request


def generate_retry_params(root: str, retry_failed: bool) -> dict[str, str]:
    """{source}/{shard} -> the generate rule's `retry` param, for the shards that have a
    retry state file (failed rows, or retried once; written by the generate job, see
    `runner.write_retry_state`); every other shard's is "".

    Snakemake reruns a job whose params changed. The param is the one the shard's last
    job ran with (so nothing reruns), except with `retry_failed` for a shard with failed
    rows: a new value derived from that one, so exactly those shards rerun (once per
    Snakemake run) and their jobs send the failed rows again. One glob: the few shards
    with a file are read.
    """
    from cosmopedia import layout

    pattern = layout.shard_pattern(root, "generation_retry")
    shard_re = re.compile(
        re.escape(pattern)
        .replace(re.escape("{source}"), "(?P<source>[^/]+)")
        .replace(re.escape("{shard}"), "(?P<shard>[^/]+)")
    )
    params = {}
    for path in glob.glob(layout.shard_glob(root, "generation_retry")):
        match = shard_re.fullmatch(path)
        if match is None:
            continue
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
            ran_with = str(state["retry_param"])
            failed = int(state["failed_rows"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a broken file: that shard is not retried
        if retry_failed and failed > 0:
            digest = sha256_text(f"{ran_with}\0{failed}")[:12]
            params[f"{match['source']}/{match['shard']}"] = f"retry {failed} failed rows {digest}"
        else:
            params[f"{match['source']}/{match['shard']}"] = ran_with
    return params


def bucket_groups(config: dict) -> list[list[int]]:
    """The MinHash buckets of each buckets job: `minhash.bucket_jobs` contiguous groups of
    as equal sizes as can be (the first ones one bucket larger), in bucket order."""
    n, jobs = config["minhash"]["num_buckets"], config["minhash"]["bucket_jobs"]
    if jobs > n:
        raise PlanError(
            f"minhash.bucket_jobs: {jobs} jobs for {n} buckets (minhash.num_buckets); "
            f"give at most {n}"
        )
    size, extra = divmod(n, jobs)
    groups, first = [], 0
    for g in range(jobs):
        last = first + size + (g < extra)
        groups.append(list(range(first, last)))
        first = last
    return groups


def minhash_previous_indexes(config: dict) -> list[list[str]]:
    """Per bucket, the index files of the versions in `minhash.index_from` (parse time).

    An entry is a previous version's results root (its minhash/index/ is used), one of
    our index folders ({bucket}.minhash.index files) or a datatrove index folder
    (bucket_{bucket:03d}/*.minhash.index).
    """
    from cosmopedia.layout import GLOBAL_FILES

    value = config["minhash"].get("index_from")
    entries = [] if value is None else [value] if isinstance(value, str) else list(value)
    n = config["minhash"]["num_buckets"]
    own = Path(results_root(config), GLOBAL_FILES["minhash_index"]).parent.resolve()
    per_bucket: list[list[str]] = [[] for _ in range(n)]
    for entry in entries:
        folder = Path(entry, GLOBAL_FILES["minhash_index"]).parent
        folder = folder if folder.is_dir() else Path(entry)
        if folder.resolve() == own:
            raise PlanError(f"minhash.index_from: {entry!r} is this version's own index")
        name = Path(GLOBAL_FILES["minhash_index"]).name
        ours = [folder / name.format(bucket=b) for b in range(n)]
        if ours[0].is_file():
            missing = [str(p) for p in ours if not p.is_file()]
            if missing or (folder / f"{n}.minhash.index").exists():
                raise PlanError(
                    f"minhash.index_from: {folder} does not hold exactly {n} buckets "
                    f"(minhash.num_buckets); missing: {missing[:3]}"
                )
            for b in range(n):
                per_bucket[b].append(str(ours[b]))
        elif (folder / "bucket_000").is_dir():  # datatrove's layout
            for b in range(n):
                per_bucket[b] += sorted(glob.glob(f"{folder}/bucket_{b:03d}/*.minhash.index"))
        else:
            raise PlanError(
                f"minhash.index_from: {entry!r} holds no MinHash index (looked for "
                f"{ours[0]}); finish that version's minhash_buckets jobs first"
            )
    return per_bucket


def project_revision(repo_dir: str) -> dict:
    """The project's git commit and whether its tree has uncommitted changes (None outside git)."""
    import subprocess

    def git(*args):
        return subprocess.run(
            ["git", "-C", repo_dir, *args], capture_output=True, text=True, timeout=30
        )

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def dataset_job(config: dict, revision: dict) -> settings.Dataset:
    resolved = redact.config(config)
    return settings.Dataset(
        name=config["dataset"]["name"],
        version=config["dataset"]["version"],
        license=config["dataset"]["license"],
        configs={s: spec["dataset_config"] or s for s, spec in sorted(config["sources"].items())},
        seed_scheme=SEED_SCHEME,
        project=revision,
        # The whole resolved config (defaults filled in): enough to rebuild the version.
        config=resolved,
        config_sha256=sha256_text(settings.canonical_json(resolved)),
    )


# --- the shard plan file (<root>/plan/shards.json), read by the aggregate steps --------


def add_plan_arguments(parser, listed: str, metavar: str, what: str) -> None:
    """Per-shard inputs of an aggregate step: listed (`--<listed>`) or every planned shard's,
    found through the shard plan (`--plan`). The workflow passes the plan: at 3,000 shards
    a list runs to hundreds of KB of command line."""
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument(f"--{listed}", nargs="+", metavar=metavar, help=what)
    given.add_argument("--plan", help="shard plan (<root>/plan/shards.json): every shard's")
    parser.add_argument("--root", help="results root with --plan (default: the plan's)")


def read_plan(plan_file: str, root: str | None) -> tuple[str, list[dict]]:
    """The results root (`root`, or the one holding the plan) and the shard plan's entries."""
    from cosmopedia import layout
    from cosmopedia.io import read_json

    try:
        root = root or layout.plan_root(plan_file)
    except ValueError as exc:
        raise CliError(f"--plan {exc}; give --root") from None
    return root, read_json(plan_file)["shards"]


def plan_paths(plan_file: str, root: str | None, stage: str) -> dict[str, str]:
    """{source}/{shard} -> the file of `stage` of every shard in the plan file."""
    from cosmopedia import layout

    root, entries = read_plan(plan_file, root)
    return layout.plan_stage_paths(entries, root, stage)


# --- `cosmopedia check-config`: every check planning makes, without Snakemake -----------


def add_arguments(name, parser):
    parser.add_argument("configfile", help="a workflow config (YAML or JSON)")


def check_config_main(args) -> int:
    """Snakemake reports a malformed config file without its line; this names it, and runs
    the schema and planning checks the workflow runs before any job."""
    from cosmopedia import yamlfile

    config = settings.validate_config(yamlfile.read(args.configfile) or {})
    move_endpoint_credentials(config, {})
    shards = plan_shards(config)
    generate_job(config)
    minhash_previous_indexes(config)
    print(f"{args.configfile}: OK ({len(shards)} shards in {len(config['sources'])} sources)")
    return 0
