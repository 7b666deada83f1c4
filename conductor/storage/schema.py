"""The SQLite schema, changed only through recorded migrations (sqlite-utils ``Migrations``).

A database that has applied a migration this build does not know was written by a newer
Conductor; opening it is an error rather than a guess.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATION_SET = "conductor"


def build_migrations() -> Migrations:
    """Every schema change, in order. Append new ones; never edit an applied one."""
    m = Migrations(MIGRATION_SET)

    @m(name="0001_initial")
    def initial(db: Database) -> None:
        db.execute("""
            CREATE TABLE requests (
                request_id TEXT PRIMARY KEY,
                created_at REAL NOT NULL,
                client_id TEXT NOT NULL,
                task_type TEXT NOT NULL,
                constraints TEXT NOT NULL,
                prompt_sha256 TEXT NOT NULL,
                prompt TEXT,
                metadata TEXT
            )""")
        db.execute("""
            CREATE TABLE decisions (
                request_id TEXT PRIMARY KEY,
                created_at REAL NOT NULL,
                task_type TEXT NOT NULL,
                client_id TEXT NOT NULL,
                strategy TEXT NOT NULL,
                model TEXT NOT NULL,
                mode TEXT NOT NULL,
                propensity REAL NOT NULL,
                explored INTEGER NOT NULL,
                constraint_relaxed INTEGER NOT NULL,
                policy_version TEXT NOT NULL,
                routed_by TEXT NOT NULL,
                policy_choice TEXT NOT NULL,
                predicted_quality REAL NOT NULL,
                predicted_latency_ms REAL NOT NULL,
                predicted_cost_usd REAL NOT NULL,
                input_tokens INTEGER NOT NULL,
                constraints TEXT NOT NULL,
                samples TEXT NOT NULL
            )""")
        db.execute("""
            CREATE TABLE outcomes (
                request_id TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                created_at REAL NOT NULL,
                task_type TEXT NOT NULL,
                strategy TEXT NOT NULL,
                model TEXT NOT NULL,
                latency_ms REAL NOT NULL,
                input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL,
                cost_usd REAL NOT NULL,
                cost_estimated INTEGER NOT NULL,
                error TEXT,
                fallback_used INTEGER NOT NULL,
                fallback_chain TEXT NOT NULL,
                sla_met INTEGER NOT NULL,
                escalated INTEGER NOT NULL,
                calls TEXT NOT NULL,
                finish_reason TEXT NOT NULL,
                response_sha256 TEXT NOT NULL,
                response TEXT,
                applied INTEGER NOT NULL DEFAULT 1
            )""")
        db.execute("""
            CREATE TABLE rewards (
                id INTEGER PRIMARY KEY,
                seq INTEGER NOT NULL,
                request_id TEXT NOT NULL,
                created_at REAL NOT NULL,
                task_type TEXT NOT NULL,
                strategy TEXT NOT NULL,
                source TEXT NOT NULL,
                score REAL NOT NULL,
                previous_score REAL,
                sampling_probability REAL NOT NULL,
                rater TEXT NOT NULL,
                applied INTEGER NOT NULL DEFAULT 1
            )""")
        db.execute("""
            CREATE TABLE judge_calls (
                id INTEGER PRIMARY KEY,
                request_id TEXT NOT NULL,
                created_at REAL NOT NULL,
                strategy TEXT NOT NULL,
                model TEXT NOT NULL,
                score REAL,
                raw_reply TEXT,
                cost_usd REAL NOT NULL,
                latency_ms REAL NOT NULL,
                error TEXT,
                self_graded INTEGER NOT NULL DEFAULT 0,
                answer_chars INTEGER NOT NULL DEFAULT 0
            )""")
        db.execute("""
            CREATE TABLE posterior_snapshots (
                id INTEGER PRIMARY KEY,
                created_at REAL NOT NULL,
                seq INTEGER NOT NULL,
                state TEXT NOT NULL
            )""")
        db.execute("""
            CREATE TABLE policy_history (
                id INTEGER PRIMARY KEY,
                created_at REAL NOT NULL,
                actor TEXT NOT NULL,
                settings TEXT NOT NULL
            )""")
        for sql in (
            "CREATE INDEX idx_requests_created ON requests(created_at)",
            "CREATE INDEX idx_decisions_task_created ON decisions(task_type, created_at)",
            "CREATE INDEX idx_decisions_strategy ON decisions(strategy)",
            "CREATE INDEX idx_outcomes_seq ON outcomes(seq)",
            "CREATE INDEX idx_outcomes_created ON outcomes(created_at)",
            "CREATE INDEX idx_rewards_seq ON rewards(seq)",
            "CREATE INDEX idx_rewards_request ON rewards(request_id, source, rater)",
            "CREATE INDEX idx_judge_calls_request ON judge_calls(request_id)",
        ):
            db.execute(sql)

    @m(name="0002_pending_feedback")
    def pending_feedback(db: Database) -> None:
        # Feedback that arrives before its request is stored (a race) waits here.
        db.execute("""
            CREATE TABLE pending_feedback (
                id INTEGER PRIMARY KEY,
                request_id TEXT NOT NULL,
                created_at REAL NOT NULL,
                score REAL NOT NULL,
                rater TEXT NOT NULL
            )""")
        db.execute("CREATE INDEX idx_pending_feedback_request ON pending_feedback(request_id)")

    @m(name="0003_effective_reward")
    def effective_reward(db: Database) -> None:
        # The request's fused reward after each reward row: rebuilds replay exactly the
        # corrections the posterior saw (user > simulated > judge > heuristic).
        db.execute("ALTER TABLE rewards ADD COLUMN effective_score REAL")

    @m(name="0004_policy_events")
    def policy_events(db: Database) -> None:
        # Policy changes join the event order (seq), and keep the config's own knobs at the
        # time, so a restart restores the policy in force (unless the config file changed).
        db.execute("ALTER TABLE policy_history ADD COLUMN seq INTEGER")
        db.execute("ALTER TABLE policy_history ADD COLUMN configured TEXT")
        db.execute("CREATE INDEX idx_policy_history_seq ON policy_history(seq)")

    @m(name="0005_quality_targets")
    def quality_targets(db: Database) -> None:
        # The target a decision's mix was solved for, what the shortlist set aside (and
        # why), and whether exploring was held back to keep the target.
        db.execute("ALTER TABLE decisions ADD COLUMN quality_target REAL")
        db.execute("ALTER TABLE decisions ADD COLUMN set_aside TEXT")
        db.execute("ALTER TABLE decisions ADD COLUMN held_back INTEGER NOT NULL DEFAULT 0")

    @m(name="0006_prompt_features")
    def prompt_features(db: Database) -> None:
        # The prompt's features (float64 bytes): what per-prompt learning used, so a
        # restart (or another replica) rebuilds the contextual posterior exactly.
        db.execute("ALTER TABLE decisions ADD COLUMN features BLOB")
        db.execute("ALTER TABLE decisions ADD COLUMN per_prompt INTEGER NOT NULL DEFAULT 0")

    @m(name="0007_shared_event_log")
    def shared_event_log(db: Database) -> None:
        # Several processes learn from one log: each event row names the process that
        # applied it (origin; its seq counts that process's order) and gets a log position
        # when committed (pos: one counter for every table and process, so commit order).
        # Each process applies the others' events by position. Older rows: origin '', no
        # position (they precede every positioned row).
        db.execute("CREATE TABLE log_position (n INTEGER NOT NULL)")
        db.execute("INSERT INTO log_position VALUES (0)")
        for table in ("outcomes", "rewards", "policy_history"):
            db.execute(f"ALTER TABLE {table} ADD COLUMN origin TEXT NOT NULL DEFAULT ''")
            db.execute(f"ALTER TABLE {table} ADD COLUMN pos INTEGER")
            db.execute(f"CREATE INDEX idx_{table}_pos ON {table}(pos)")

    @m(name="0008_shared_limits")
    def shared_limits(db: Database) -> None:
        # Admissions of clients with limits, shared by every process on this file: one
        # row per admitted request, its cost reservation replaced by the actual cost.
        db.execute("""
            CREATE TABLE limit_reservations (
                id INTEGER PRIMARY KEY,
                client_id TEXT NOT NULL,
                at REAL NOT NULL,
                usd REAL NOT NULL
            )""")
        db.execute("CREATE INDEX idx_limit_reservations ON limit_reservations(client_id, at)")

    @m(name="0009_limit_totals")
    def limit_totals(db: Database) -> None:
        # Each client's count and spend over its limit_reservations rows, kept in step,
        # so an admission reads two numbers instead of summing an hour of rows.
        db.execute("""
            CREATE TABLE limit_clients (
                client_id TEXT PRIMARY KEY,
                hour_count INTEGER NOT NULL,
                hour_usd REAL NOT NULL
            )""")
        db.execute("INSERT INTO limit_clients SELECT client_id, count(*), sum(usd)"
                   " FROM limit_reservations GROUP BY client_id")
        # A process's own events by seq (a restart's tail), beside others' by position.
        for table in ("outcomes", "rewards", "policy_history"):
            db.execute(f"CREATE INDEX idx_{table}_origin_seq ON {table}(origin, seq)")

    @m(name="0010_calibration_pairs")
    def calibration_pairs(db: Database) -> None:
        # The judge-to-user pair a reward completed (the request's first with both), so
        # other processes add it to their calibration when they follow the log.
        db.execute("ALTER TABLE rewards ADD COLUMN pair_judge REAL")
        db.execute("ALTER TABLE rewards ADD COLUMN pair_user REAL")

    @m(name="0011_judge_scale")
    def judge_scale(db: Database) -> None:
        # Which source the value a reward replaced came from: judged rewards are learned
        # apart (read through the judge's error rates), so a correction must know whether
        # it takes a reward out of the judged ones. Older rows: NULL (not the judge's).
        db.execute("ALTER TABLE rewards ADD COLUMN previous_source TEXT")
        # The scale a decision's predicted qualities were on (older rows: as scored).
        db.execute("ALTER TABLE decisions ADD COLUMN quality_scale TEXT")

    return m
