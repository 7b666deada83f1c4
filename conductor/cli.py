"""The command line: a thin layer over the library.

Library errors become a one-line message and a non-zero exit here, and only here:
ConductorError -> exit 1 (``ConfigError`` and bad input -> exit 2).
"""

from __future__ import annotations

import datetime
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click
import msgspec
import numpy as np

from conductor.coefficients import ContextPriors, configured_priors
from conductor.config import default_settings, load_settings
from conductor.errors import ConductorError, ConfigError, InvalidRequestError, StorageError
from conductor.replay.demo import DemoWorkload
from conductor.router import Conductor
from conductor.storage.postgres import is_postgres_url
from conductor.storage.stores import database_of, open_database

MIN_TUNE_RECORDS = 200  # per task type, before tune's sweep on logs is more than a guide


def exit_code(exc: ConductorError) -> int:
    """The one place that maps errors to exit codes."""
    return 2 if isinstance(exc, ConfigError | InvalidRequestError) else 1


class ConductorGroup(click.Group):
    """Turns library errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConductorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exit_code(exc))
        except click.UsageError as exc:  # click's own: one line too, pointing at --help
            where = exc.ctx.command_path if exc.ctx else ctx.command_path
            click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(2)


@click.group(cls=ConductorGroup)
@click.version_option(package_name="conductor-router")
def main() -> None:
    """Conductor: route each LLM request to the cheapest strategy that meets its constraints.

    Example: conductor demo --requests 500
    """


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config (default: the built-in demo world).")
@click.option("--requests", "n", type=click.IntRange(1, 1_000_000), default=600, show_default=True,
              help="How many requests to route.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the workload and the policy.")
@click.option("--every", type=click.IntRange(1), default=100, show_default=True,
              help="Print a progress line every N requests.")
@click.option("--db", "db_path", metavar="PATH|URL",
              help="Log every decision, outcome and reward to this SQLite file or "
              "postgresql:// database.")
@click.option("--per-prompt/--per-task", default=False, show_default=True,
              help="Decide from each prompt's words (policy.context) or per task type only.")
def demo(config_path: Path | None, n: int, seed: int, every: int, db_path: str | None,
         per_prompt: bool) -> None:
    """Route a simulated workload and print the strategy mix and cost as the policy learns.

    The workload is the reference mix (40% classify, 30% summarize, 20% chat, 10% long
    generation) on the demo world, 30% of prompts hard for the cheap model (recognisable
    from their words); the baseline is every request on the default strategy.

    Example: conductor demo --requests 1000 --seed 3 --db demo.db
    """
    settings = load_settings(config_path) if config_path else default_settings()
    settings = msgspec.structs.replace(settings, policy=msgspec.structs.replace(
        settings.policy, context=per_prompt))
    workload = DemoWorkload(list(settings.task_types), seed)
    store = open_database(db_path, store_text=settings.storage.store_text) if db_path else None
    with Conductor(settings, seed=seed, log_store=store) as conductor:
        window: Counter[str] = Counter()
        cost = base_cost = 0.0
        quality: list[float] = []
        default = settings.policy.default_strategy
        d_model = settings.model_of(default)
        click.echo(f"routing {n} requests on {config_path or 'the demo world'}"
                   f"; baseline: everything on {default!r}")
        by_task: dict[str, list[float]] = {t: [0.0, 0.0, 0.0, 0.0] for t in workload.tasks}
        decided_per_prompt = 0
        for i in range(1, n + 1):
            task, prompt = workload.next()
            res = conductor.complete(prompt, task_type=task)
            if res.decision.probe is not None:
                # Learned before the next decision, so a seed gives the same run (a
                # service learns from its probes as they land).
                conductor.wait_for_judges()
            window[res.outcome.strategy] += 1
            decided_per_prompt += res.decision.per_prompt
            cost += res.outcome.cost_usd
            on_default = d_model.cost_usd(res.outcome.input_tokens, res.outcome.output_tokens)
            base_cost += on_default
            score = next((r.effective_score for r in reversed(res.rewards)
                          if r.effective_score is not None), None)
            if score is not None:
                quality.append(score)
            t = by_task[task]
            t[0] += 1
            t[1] += score or 0.0
            t[2] += res.outcome.cost_usd
            t[3] += on_default
            if i % every == 0 or i == n:
                mix = ", ".join(f"{s} {c / sum(window.values()):.0%}"
                                for s, c in window.most_common())
                q = float(np.mean(quality[-every:])) if quality else float("nan")
                spent = cost + conductor.stats().probes.get("cost_usd", 0.0)  # probes too
                click.echo(f"{i:>7}  cost ${spent:.4f} vs ${base_cost:.4f} on default "
                           f"({1 - spent / base_cost:+.0%} saved)  quality {q:.2f}  "
                           f"per prompt {decided_per_prompt / sum(window.values()):.0%}  "
                           f"mix: {mix}")
                window.clear()
                decided_per_prompt = 0
        click.echo(f"{'task type':<14} {'requests':>8} {'quality':>8} {'target':>8} "
                   f"{'met':>4} {'cost vs default':>16}")
        for task, (k, qsum, spent, base) in by_task.items():
            spec = conductor.target_of(task)
            target = f"{spec:.3f}" if spec is not None else "-"
            met = "-" if spec is None or not k else ("yes" if qsum / k >= spec else "no")
            click.echo(f"{task:<14} {k:>8.0f} {qsum / max(k, 1):>8.3f} {target:>8} {met:>4} "
                       f"{spent / base if base else float('nan'):>16.2f}")
        probes = conductor.stats().probes
        if probes.get("queued"):
            click.echo(f"probes: {probes['run']:.0f} cheap strategies' answers judged off the "
                       f"path, ${probes['cost_usd']:.4f} (in the total above, not per task)")


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config (default: the built-in demo world, in real time).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes on one database; each applies what the others learn "
              "(storage.follow_every_s); rate limits are counted in the database.")
@click.option("--db", "db_path", metavar="PATH|URL",
              help="SQLite file, or postgresql://user@host/dbname for replicas sharing one "
              "PostgreSQL (default: the config's storage.url or storage.path, conductor.db).")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every HTTP request (every decision is in the database anyway).")
@click.option("--skip-db-check", is_flag=True,
              help="Start even if the database fails its integrity check (quick_check).")
@click.option("--server", type=click.Choice(["granian", "uvicorn"]), default="granian",
              show_default=True, help="The HTTP server. Granian times out slow headers "
              "(a slowloris client is cut); uvicorn cannot.")
@click.option("--header-timeout-s", type=click.FloatRange(0.1, 60), default=10.0,
              show_default=True, help="Granian: close a connection whose request headers "
              "have not all arrived in this time.")
@click.option("--max-concurrency", type=click.IntRange(1), default=1024, show_default=True,
              help="Requests handled at once per worker; beyond it new ones wait (Granian) "
              "or get a 503 (uvicorn).")
def serve(config_path: Path | None, host: str, port: int, workers: int,
          db_path: str | None, access_log: bool, skip_db_check: bool, server: str,
          header_timeout_s: float, max_concurrency: int) -> None:
    """Serve the HTTP API: OpenAI-compatible /v1/chat/completions, /v1/feedback, /v1/policy...

    With no config it serves the built-in demo world (no API key, no network) and keeps
    its log in conductor.db in the working directory.

    Example: conductor serve --config conductor.toml --port 8000
    """
    from conductor.service.app import serve_default_settings

    settings = load_settings(config_path) if config_path else serve_default_settings()
    configured_priors(settings)  # a bad [policy] priors file: one line, here
    # Open the database once here, so a bad path is one line, not a failed startup.
    open_database(db_path or database_of(settings), store_text=settings.storage.store_text,
                  check=not skip_db_check, pool_size=2).close()
    where = config_path or "the built-in demo world"
    click.echo(f"serving {where} on http://{host}:{port} with {server} "
               f"(OpenAI base_url http://{host}:{port}/v1)", err=True)
    # Each worker builds the app from the environment (app_from_env).
    for var, value in (("CONDUCTOR_CONFIG", config_path), ("CONDUCTOR_DB", db_path),
                       ("CONDUCTOR_SKIP_DB_CHECK", "1" if skip_db_check else None)):
        if value is not None:
            os.environ[var] = str(value)
    target = "conductor.service.app:app_from_env"
    if server == "granian":
        from granian import Granian
        from granian.constants import HTTPModes, Interfaces
        from granian.http import HTTP1Settings

        Granian(target, factory=True, address=host, port=port, interface=Interfaces.ASGI,
                http=HTTPModes.http1,
                workers=workers, log_access=access_log, backpressure=max_concurrency,
                http1_settings=HTTP1Settings(header_read_timeout=int(header_timeout_s * 1000)),
                ).serve()
        return
    import uvicorn

    uvicorn.run(target, factory=True, host=host, port=port, workers=workers,
                log_level="info", access_log=access_log, timeout_graceful_shutdown=10,
                limit_concurrency=max_concurrency)


def _is_log(path: Path) -> bool:
    """A database or a JSONL log of Conductor's (not an outcome table)."""
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return True
    if path.suffix == ".csv" or not path.exists():
        return False
    with path.open("rb") as fh:
        first = fh.readline()
    return b'"decision"' in first or b'"type"' in first


def _check_writable(*paths: Path | None, dirs: tuple[Path | None, ...] = ()) -> None:
    """Fail before a long run, not after it, when an output cannot be written."""
    for path in paths:
        if path is None:
            continue
        reason = None
        if path.is_dir():
            reason = "it is a directory"
        elif path.exists():
            reason = None if os.access(path, os.W_OK) else "permission denied"
        elif not path.parent.is_dir():
            reason = f"{path.parent} is not a directory"
        elif not os.access(path.parent, os.W_OK):
            reason = "permission denied"
        if reason is not None:
            raise InvalidRequestError(f"{path}: cannot write the output there ({reason})",
                                      field="output")
    for d in dirs:
        if d is None:
            continue
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidRequestError(f"{d}: cannot create the output directory "
                                      f"({exc.strerror})", field="output") from None
        if not os.access(d, os.W_OK):
            raise InvalidRequestError(f"{d}: cannot write the output there (permission "
                                      "denied)", field="output")


def _progress(total: int, label: str) -> Any:
    """A progress bar on a terminal; elsewhere a line at every tenth of the way."""
    if sys.stderr.isatty():
        return click.progressbar(length=total, label=label, file=sys.stderr)

    class Lines:
        done = 0
        shown = 0

        def __enter__(self) -> Lines:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def update(self, k: int) -> None:
            self.done += k
            tenth = self.done * 10 // max(total, 1)
            if tenth > self.shown:
                self.shown = tenth
                click.echo(f"{label}: {self.done}/{total}", err=True)

    return Lines()


def _world_priors(path: Path, world: Any) -> tuple[dict[str, dict[str, Any]],
                                                   ContextPriors | None]:
    """A calibrate priors file for a replayed world, and the per-prompt models in it: every
    task type and model must be the world's (a misspelled name is an error naming it,
    never silently ignored)."""
    from conductor.coefficients import read_priors_file

    try:
        priors, context = read_priors_file(path)
    except ConfigError as exc:
        raise InvalidRequestError(str(exc), field="priors") from None
    for task, row in priors.items():
        if task not in world.tasks():
            raise InvalidRequestError(f"{path}: task type {task!r} is not in the world "
                                      f"({', '.join(world.tasks())})", field="priors")
        unknown = sorted(set(row) - set(world.models))
        if unknown:
            raise InvalidRequestError(f"{path}: {task}: model(s) {', '.join(unknown)} are "
                                      "not in the world", field="priors")
    return priors, context


def _replay_log(path: Path, json_out: Path | None, config_path: Path | None) -> None:
    """Logged traffic: estimates of each strategy alone and of Conductor at the replay's
    temperatures, from the logged propensities."""
    from conductor.replay.harness import ReplayConfig
    from conductor.replay.logs import read_logged
    from conductor.replay.offline import Candidate
    from conductor.replay.offline import compare as ope

    settings = load_settings(config_path) if config_path else default_settings()
    records = read_logged(path)
    known = {r.action for r in records}
    specs = [f"temperature={t:g}" for t in ReplayConfig().temperatures]
    specs += [f"strategy={s}" for s in settings.strategies if s in known]
    click.echo(f"{path} is logged traffic: estimating policies from its propensities "
               "(conductor compare --config FILE for a non-default config)", err=True)
    results = ope(records, settings, [Candidate.parse(p) for p in specs])
    _print_ope(results, len(records))
    if json_out:
        json_out.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=2))
        click.echo(f"wrote {json_out}")


@main.command()
@click.argument("worlds", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--quality-bar", type=click.FloatRange(0, 1), default=0.95, show_default=True,
              help="The quality target per task type = this x the strongest single model's "
              "quality there (the mean quality served; Conductor mixes to meet it).")
@click.option("--seeds", type=click.IntRange(1, 1000), default=3, show_default=True)
@click.option("--judge-noise", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Observed reward = quality + N(0, noise), clipped (a simulated judge).")
@click.option("--judge-flip", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Flip 0/1 quality with this probability (a judge's error rate).")
@click.option("--judge-false-positive", type=click.FloatRange(0, 1), default=0.0,
              show_default=True, help="P(the judge passes a wrong answer): a lenient judge.")
@click.option("--judge-false-negative", type=click.FloatRange(0, 1), default=0.0,
              show_default=True, help="P(the judge fails a right answer).")
@click.option("--judge-length-bias", type=float, default=0.0, show_default=True,
              help="Judged score += this x (answer length / the model's median - 1).")
@click.option("--judge-cost", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Charge per judged request, in units of the cheapest model's mean cost.")
@click.option("--judge-rate", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              show_default=True, help="Share of answers the judge scores, raised where "
              "Conductor's posterior is wide, as the router samples its judge "
              "([task_types.*] judge_sample_rate, 0.05 by default); the others teach "
              "nothing about quality. 1: every answer.")
@click.option("--user-feedback-rate", type=click.FloatRange(0, 1), default=0.0,
              show_default=True, help="Fraction of requests that get a true user label "
              "(Conductor calibrates its judge on them).")
@click.option("--user-feedback-delay", type=click.IntRange(0), default=50, show_default=True,
              help="Requests between an answer and its user label.")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True),
              help="A latency constraint for every request (SLA compliance is reported).")
@click.option("--constraints", "constraints_file",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help='JSON {"<task type>": {"quality_target": 0.8, "min_quality": 0.7}}: a '
                   "task type's target (overriding --quality-bar there) and a floor on each "
                   "of its requests' predicted quality (Conductor's policies).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the full report as JSON.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write frontier.png, regret.png and deficit.png (the quality deficit "
              "of Conductor's targets) here.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="For logged traffic: the config it was served with (default: built-in).")
@click.option("--priors", "priors_file",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Priors from `conductor calibrate` (fitted on other traffic, such as "
              "another split of the table): Conductor starts from them, not from flat ones.")
@click.option("--models", "models_csv",
              help="Only these models of the tables, comma-separated: replay the shortlist "
              "a deployment would configure (the bar is then the strongest of them).")
def replay(worlds: tuple[Path, ...], quality_bar: float, seeds: int, judge_noise: float,
           judge_flip: float, judge_false_positive: float, judge_false_negative: float,
           judge_length_bias: float, judge_cost: float, judge_rate: float,
           user_feedback_rate: float,
           user_feedback_delay: int, max_latency_ms: float | None,
           constraints_file: Path | None, json_out: Path | None, plots_dir: Path | None,
           config_path: Path | None, priors_file: Path | None,
           models_csv: str | None) -> None:
    """Replay outcome tables (JSONL or RouterBench CSV) through Conductor and baselines;
    without a world, the built-in demo world (3,000 prompts of the demo workload with every
    demo model's outcome, generated from the package's own data).

    Each policy sees only the outcome of what it chose. Compared: Conductor at several
    temperatures, every single model, random, epsilon-greedy, UCB1, the best fixed model
    per task in hindsight and the per-prompt oracle. Given Conductor's own logged traffic
    (a database or `conductor export` JSONL), it estimates the same kinds of policy off
    the log with the logged propensities instead (as `conductor compare` does).

    Example: conductor replay ../shared/data/routerbench/*.csv --seeds 5 --json out.json
    """
    import msgspec

    from conductor.providers.demo import load_world
    from conductor.replay.demo import demo_rows
    from conductor.replay.harness import ReplayConfig, default_policies, run_replay
    from conductor.replay.report import replay_plots, replay_table
    from conductor.replay.world import build_world, read_rows

    _check_writable(json_out, dirs=(plots_dir,))
    logs = [w for w in worlds if _is_log(w)]
    if logs and models_csv is not None:
        raise InvalidRequestError("--models applies to outcome tables; logged traffic has "
                                  "the strategies it was served with", field="models")
    if logs and priors_file is not None:
        raise InvalidRequestError("--priors applies to outcome tables; for logged traffic "
                                  "use conductor compare --policy priors=FILE",
                                  field="priors")
    if logs:
        if len(worlds) > 1:
            raise InvalidRequestError("replay reads one log (a database or an export) or "
                                      "outcome tables, not both", field="worlds")
        _replay_log(logs[0], json_out, config_path)
        return
    if worlds:
        world = build_world(read_rows(worlds))
    else:
        click.echo("no world given: replaying the built-in demo world (conductor/data/"
                   "demo_world.toml, 3,000 prompts)", err=True)
        world = build_world(demo_rows(load_world("builtin"), default_settings()))
    if models_csv is not None:
        world = world.restricted([m.strip() for m in models_csv.split(",") if m.strip()])
    targets: dict[str, float] = {}
    floors: dict[str, float] = {}
    if constraints_file is not None:
        try:
            raw = msgspec.json.decode(constraints_file.read_bytes(),
                                      type=dict[str, dict[str, float]])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise InvalidRequestError(f"{constraints_file}: {exc}",
                                      field="constraints") from exc
        for task, c in raw.items():
            if task not in world.tasks():
                raise InvalidRequestError(f"{constraints_file}: task type {task!r} is not in "
                                          f"the world ({', '.join(world.tasks())})",
                                          field="constraints")
            unknown = sorted(set(c) - {"quality_target", "min_quality"})
            if unknown:
                raise InvalidRequestError(
                    f"{constraints_file}: task type {task!r}: unknown key(s) "
                    f"{', '.join(map(repr, unknown))}; give quality_target and/or min_quality",
                    field="constraints")
            for key, value in c.items():
                if not 0.0 <= value <= 1.0:
                    raise InvalidRequestError(f"{constraints_file}: {task}.{key} = {value} is "
                                              "not a quality in [0, 1]", field="constraints")
            if "quality_target" in c:
                targets[task] = c["quality_target"]
            if "min_quality" in c:
                floors[task] = c["min_quality"]
    priors, context_priors = (_world_priors(priors_file, world) if priors_file is not None
                              else ({}, None))
    cfg = ReplayConfig(quality_bar=quality_bar, seeds=seeds, judge_noise=judge_noise,
                       judge_flip=judge_flip, judge_false_positive=judge_false_positive,
                       judge_false_negative=judge_false_negative,
                       judge_length_bias=judge_length_bias, judge_cost=judge_cost,
                       judge_rate=judge_rate, user_feedback_rate=user_feedback_rate,
                       user_feedback_delay=user_feedback_delay, max_latency_ms=max_latency_ms,
                       targets=targets, min_quality=floors, priors=priors,
                       context_priors=context_priors,
                       priors_from=str(priors_file) if priors_file is not None else None)
    total = seeds * len(default_policies(world, cfg)) + 4 * len(cfg.sweep)
    with _progress(total, "replaying") as bar:
        report = run_replay(world, cfg, progress=bar.update)
    click.echo(replay_table(report))
    if json_out:
        json_out.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2))
        click.echo(f"wrote {json_out}")
    if plots_dir:
        for f in replay_plots(report, plots_dir):
            click.echo(f"wrote {f}")


@main.command()
@click.option("--log-file", "sources", type=click.Path(dir_okay=False, path_type=Path),
              required=True, multiple=True,
              help="A database, a JSONL export or log, or an outcome table (repeat the "
              "option for several outcome tables).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the priors (JSON).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The config whose priors are the defaults (default: built-in).")
@click.option("--weight-cap", type=click.FloatRange(min=1), default=20.0, show_default=True,
              help="At most this many pseudo-observations per prior.")
def calibrate(sources: tuple[Path, ...], output: Path, config_path: Path | None,
              weight_cap: float) -> None:
    """Fit priors (quality, latency, output tokens per task type and strategy) from logs
    or outcome tables, with capped weight, and check them on held-out data (the last 20% of
    logged requests, a random 20% of a table's rows).

    Example: conductor calibrate --log-file traffic.jsonl --output priors.json
    """
    from conductor.replay.logs import read_logged
    from conductor.replay.offline import calibrate as fit
    from conductor.replay.offline import judge_error_rates, write_priors
    from conductor.replay.world import build_world, read_rows

    _check_writable(output)
    settings = load_settings(config_path) if config_path else default_settings()
    is_log = any(_is_log(s) for s in sources)
    if is_log and len(sources) > 1:
        raise InvalidRequestError("calibrate reads one log (a database or an export) or "
                                  "outcome tables, not several logs or both",
                                  field="log_file")
    data = read_logged(sources[0]) if is_log else build_world(read_rows(sources))
    result = fit(data, settings if is_log else None, cap=weight_cap)
    if is_log:
        result["judge_error_rates"] = judge_error_rates(data)  # type: ignore[arg-type]
    write_priors(result, output)
    r = result["report"]
    n_pairs = sum(len(v) for v in result["priors"].values())
    click.echo(f"wrote {n_pairs} priors to {output}")
    context = result.get("context")
    if context:
        active = sorted(t for t, m in context.tasks.items() if m.get("active"))
        click.echo(f"and per-prompt models for {len(context.tasks)} task type(s), "
                   f"predicting better than the task level on: {', '.join(active) or 'none'}"
                   " (served with [policy] context = true and priors = this file)")
    if r["holdout_observations"]:
        fitted = r['holdout_loglik_per_obs_fitted']
        default = r['holdout_loglik_per_obs_default']
        verdict = ("the fitted priors predict it better" if fitted > default else
                   "the defaults predict it as well or better: keep them, or log more")
        click.echo(f"held-out log-likelihood per observation ({r['holdout_observations']} "
                   f"observations, {r['holdout']}; higher is better): fitted {fitted:.4f}, "
                   f"defaults {default:.4f}: {verdict}")
    rates = result.get("judge_error_rates")
    if rates is not None and not rates:
        click.echo("judge error rates: no request has both a judge score and a user rating")
    for task, e in (rates or {}).items():
        (fp_lo, fp_hi), (fn_lo, fn_hi) = e["false_positive_90"], e["false_negative_90"]
        click.echo(f"judge on {task}: false positives {e['false_positive']:.3f} (90%: "
                   f"{fp_lo:.2f}-{fp_hi:.2f}, from {e['wrong_labels']:.4g} wrong answers), false "
                   f"negatives {e['false_negative']:.3f} (90%: {fn_lo:.2f}-{fn_hi:.2f}, from "
                   f"{e['right_labels']:.4g} right ones); from {e['pairs']} requests with a user "
                   "rating; graded scores count in proportion (0.7 is 0.7 of a pass)")


@main.command()
@click.option("--log-file", "source", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="A database, a JSONL export or a JSONL log.")
@click.option("--policy", "policies", multiple=True, required=True,
              help="A candidate: strategy=NAME, random, temperature=T, min_quality=Q, "
                   "quality_target=X (in place of the config's targets), priors=FILE, "
                   "context=true (per prompt, on the logged features) (comma-joined). "
                   "Repeat for several.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The config the traffic was served with (default: built-in).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
def compare(source: Path, policies: tuple[str, ...], config_path: Path | None,
            json_out: Path | None, seed: int) -> None:
    """Estimate other policies on logged traffic, using the logged propensities: IPS,
    self-normalised IPS and doubly robust means of quality and cost, with 95% bootstrap
    intervals and the effective sample size.

    Example: conductor compare --log-file conductor.db --policy temperature=0.5
    --policy strategy=turbo-cheap
    """
    import msgspec

    from conductor.replay.logs import read_logged
    from conductor.replay.offline import Candidate
    from conductor.replay.offline import compare as ope

    _check_writable(json_out)
    settings = load_settings(config_path) if config_path else default_settings()
    records = read_logged(source)
    results = ope(records, settings, [Candidate.parse(p) for p in policies], seed=seed)
    _print_ope(results, len(records))
    if json_out:
        json_out.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=2))
        click.echo(f"wrote {json_out}")


def _print_ope(results: dict[str, Any], n_records: int) -> None:
    width = max(24, *(len(spec) for spec in results))
    click.echo(f"{'policy':<{width}} {'estimator':<6} {'quality [95% CI]':>26} "
               f"{'cost USD [95% CI]':>36} {'ESS':>7}")
    above = False
    for spec, r in results.items():
        q, c = r["quality"], r["cost_usd"]
        for est in ("ips", "snips", "dr"):
            eq, ec = getattr(q, est), getattr(c, est)
            above |= eq.value > 1.0
            click.echo(f"{spec:<{width}} {est:<6} {eq.value:>8.4f} [{eq.low:.4f}, {eq.high:.4f}]"
                       f" {ec.value:>12.6f} [{ec.low:.6f}, {ec.high:.6f}] {q.ess:>7.0f}")
        for w in q.warnings:
            click.echo(f"  warning: {w}")
    click.echo(f"{results['logged']['used_records']} of {n_records} logged requests used "
               "(shadow decisions and requests without a reward are left out); 'logged' is "
               "what was served")
    if above:
        click.echo("note: quality is on [0, 1]; an IPS or DR estimate above 1 means few "
                   "logged requests carry that policy's choices (see ESS); SNIPS stays in "
                   "range")


@main.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--quality-bar", type=click.FloatRange(0, 1), default=0.95, show_default=True)
@click.option("--seeds", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="For logs: the config the traffic was served with.")
@click.option("--apply", "apply_url", help="Set the recommendation through this service's "
              "PUT /v1/policy (e.g. http://127.0.0.1:8000).")
@click.option("--admin-key", envvar="CONDUCTOR_ADMIN_KEY", help="Admin key for --apply "
              "(or CONDUCTOR_ADMIN_KEY).")
def tune(source: Path, quality_bar: float, seeds: int, config_path: Path | None,
         apply_url: str | None, admin_key: str | None) -> None:
    """Sweep the exploration temperature per task type by replay (an outcome table) or by
    off-policy estimates (logs); print the sweep and recommend the best utility.

    Example: conductor tune ../shared/data/routerbench/mbpp_test.csv --apply http://127.0.0.1:8000
    """
    import httpx

    from conductor.replay.harness import ReplayConfig
    from conductor.replay.logs import read_logged
    from conductor.replay.offline import tune_logs, tune_world
    from conductor.replay.world import build_world, read_rows

    if _is_log(source):
        settings = load_settings(config_path) if config_path else default_settings()
        result = tune_logs(read_logged(source), settings)
    else:
        result = tune_world(build_world(read_rows([source])),
                            ReplayConfig(quality_bar=quality_bar, seeds=seeds))
    click.echo(f"{'task type':<16} {'temperature':>11} {'quality':>8} {'cost $':>10} "
               f"{'utility':>9}")
    for task, sweep in result["sweep"].items():
        for t, v in sweep.items():
            mark = " <- recommended" if float(t) == result["recommended"][task] else ""
            click.echo(f"{task:<16} {float(t):>11g} {v['quality']:>8.3f} {v['cost_usd']:>10.4f} "
                       f"{v['utility']:>9.3f}{mark}")
    reference = ("the logged mean cost" if "sample" in result
                 else "the strongest model's mean cost")
    click.echo(f"utility per request = quality - cost / (10 x {reference} per request): "
               "quality from 0 to 1 is worth up to 10 times that cost")
    for task, size in result.get("sample", {}).items():
        if size["records"] < MIN_TUNE_RECORDS or size["min_ess"] < 0.1 * size["records"]:
            click.echo(f"warning: {task}: {size['records']} logged requests, effective sample "
                       f"size down to {size['min_ess']:.0f}; the sweep is a rough guide until "
                       f"there are a few hundred")
    if apply_url:
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        try:
            r = httpx.put(apply_url.rstrip("/") + "/v1/policy", headers=headers, timeout=10,
                          json={"exploration": result["recommended"]})
        except httpx.HTTPError as exc:
            raise InvalidRequestError(f"--apply {apply_url}: {exc}", field="apply") from exc
        if r.status_code != 200:
            raise InvalidRequestError(f"--apply {apply_url}: HTTP {r.status_code}: {r.text}",
                                      field="apply")
        click.echo(f"applied exploration {result['recommended']} at {apply_url}")


@main.command()
@click.option("--db", "db_path", metavar="PATH|URL", default="conductor.db", show_default=True,
              help="The database to read: a SQLite file or a postgresql:// URL.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The config the traffic was served with (for the default strategy's "
                   "prices; default: built-in).")
@click.option("--window-s", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="The sliding window, ending at the last logged request.")
@click.option("--json", "as_json", is_flag=True, help="Print the stats as JSON.")
def stats(db_path: str, config_path: Path | None, window_s: float, as_json: bool) -> None:
    """Counters, cost (and saved vs the default strategy), latency percentiles, quality,
    strategy shares, fallback rate and SLA compliance from a database.

    Example: conductor stats --db conductor.db --json
    """
    import msgspec

    from conductor.metrics import MetricsCollector

    _check_database(db_path)
    settings = load_settings(config_path) if config_path else default_settings()
    d_model = settings.model_of(settings.policy.default_strategy)

    def default_cost(o: Any) -> float:
        return d_model.cost_usd(o.input_tokens, o.output_tokens)

    from conductor.replay.logs import records_from_store
    from conductor.replay.offline import judge_scales, true_quality

    store = open_database(db_path, pool_size=2)
    try:
        # Requests are held in memory only where user labels can calibrate the judge.
        rows = list(store.iter_requests()) if store.judge_user_pairs() else None
        m = MetricsCollector.from_records(
            rows if rows is not None else store.iter_requests(), default_cost, window_s)
    finally:
        store.close()
    s = m.get_stats()
    # The means above are of the rewards as logged (a judge's as it scored); where the
    # log's user labels measure the judge's error rates, each task type's mean on the
    # users' scale too, read as the router reads it.
    records = records_from_store(rows) if rows is not None else []
    scales = judge_scales(records, settings)
    users_scale: dict[str, dict[str, float | int]] = {}
    for task, by_strategy in scales.items():  # of the traffic served, as above: no probes
        values = [true_quality(r, scales) for r in records
                  if r.task_type == task and r.routed_by != "probe"]
        known = [v for v in values if v is not None]
        if known and any(by_strategy.values()):
            users_scale[task] = {"mean": float(sum(known) / len(known)),
                                 "requests": len(known)}
    s["quality"]["users_scale"] = users_scale
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(s), indent=2).decode())
        return
    c, cost, lat = s["counters"], s["cost"], s["latency"]
    click.echo(f"requests {c['outcomes_total']}  errors {c['errors_total']}  fallbacks "
               f"{c['fallbacks_total']} ({s['fallback_rate']:.1%})  explored {c['explored_total']}"
               f"  SLA met {s['sla_compliance'] or 0:.1%}")
    click.echo(f"cost ${cost['total_usd']:.6f}  on the default strategy ${cost['default_usd']:.6f}"
               f"  saved ${cost['saved_vs_default_usd']:.6f}")
    if c["probes_total"]:
        click.echo(f"probes {c['probes_total']} (cheap strategies run off the path to learn,"
                   f" not served)  cost ${cost['probes_usd']:.6f}, not in the cost above")
    if lat["p50_ms"] is not None:
        click.echo(f"latency avg {lat['avg_ms']:.0f} ms  p50 {lat['p50_ms']:.0f}  p95 "
                   f"{lat['p95_ms']:.0f}  p99 {lat['p99_ms']:.0f}")
    click.echo(f"{'strategy':<24} {'share':>7} {'cost $':>12} {'p50 ms':>8}")
    for name, share in s["strategies"].items():
        p50 = lat["by_strategy"].get(name, {}).get("p50_ms")
        click.echo(f"{name:<24} {share:>7.1%} {cost['by_strategy'].get(name, 0.0):>12.6f} "
                   f"{p50 if p50 is not None else float('nan'):>8.0f}")
    for task, q in s["quality"]["by_task_type"].items():
        if q["mean"] is not None:
            line = f"quality {task}: {q['mean']:.3f} over {q['rewards']} requests, as scored"
            if task in users_scale:
                line += (f"; {users_scale[task]['mean']:.3f} on the users' scale (the "
                         "judge's error rates measured on the log's user labels)")
            click.echo(line)


def _check_database(where: str) -> None:
    """A database to read must exist (a URL is checked when it is opened)."""
    if not is_postgres_url(where) and not Path(where).exists():
        raise StorageError(f"{where}: no such database")


def parse_time(value: str | None) -> float | None:
    """Unix seconds or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(
            f"--since {value!r}: expected unix seconds or an ISO date such as 2026-11-01T00:00",
            field="since") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


@main.command()
@click.option("--db", "db_path", metavar="PATH|URL", default="conductor.db", show_default=True,
              help="The database to read: a SQLite file or a postgresql:// URL.")
@click.option("--since", help="Only requests at or after this time (unix seconds or ISO 8601).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The JSONL file to write.")
def export(db_path: str, since: str | None, out: Path) -> None:
    """Export logged traffic as JSONL: one line per request with its decision (propensity,
    constraints), outcome and rewards. `replay`, `calibrate` and `compare` read it.

    Example: conductor export --db conductor.db --since 2026-11-01 --out traffic.jsonl
    """
    t = parse_time(since)
    _check_writable(out)
    _check_database(db_path)
    store = open_database(db_path, pool_size=2)
    try:
        n = store.export_jsonl(out, since=t)
    finally:
        store.close()
    click.echo(f"wrote {n} requests to {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
