-- The journal in PostgreSQL (issue 15): the tables, columns and states of the SQLite journal
-- (schema/journal.sql, docs/journal.md), types mapped, so the SQL recipes and `iarelay sql`
-- read both. Differences, each for a reason:
-- - seq is a BIGINT identity (never reused, as SQLite's AUTOINCREMENT). Under concurrent
--   writers seqs are handed out at INSERT, not at COMMIT, so a reader may see seq 8 committed
--   before seq 7: whatever follows a cursor by seq (the feed) must allow for that.
-- - payload is BYTEA: the body byte for byte. A quarantined feed message can hold bytes that
--   are not UTF-8 (or a NUL), which a TEXT column refuses. Read it as text with
--   convert_from(payload, 'UTF8').
-- - Times stay RFC 3339 UTC text with millisecond precision, as in SQLite: the recipes compare
--   them as text.
-- - The dispatcher's indexes are partial (queued or held rows only): the hot part of the
--   table's indexes stays the size of the backlog, not of the history retention keeps.
CREATE TABLE webhooks (
  seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id              TEXT NOT NULL UNIQUE,
  source          TEXT NOT NULL,
  source_id       TEXT,
  idempotency_key TEXT,
  received_at     TEXT NOT NULL,
  service         TEXT NOT NULL,
  agent           TEXT,
  type            TEXT NOT NULL,
  event_id        TEXT,
  state           TEXT NOT NULL
                  CHECK (state IN ('stored', 'queued', 'inflight', 'delivered', 'failed',
                                   'discarded', 'held')),
  assigned_agent  TEXT,
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT,
  delivered_at    TEXT,
  last_status     INTEGER,
  last_error      TEXT,
  payload         BYTEA NOT NULL
);
CREATE UNIQUE INDEX webhooks_source ON webhooks (source, source_id) WHERE source_id IS NOT NULL;
CREATE UNIQUE INDEX webhooks_idempotency ON webhooks (service, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX webhooks_queue ON webhooks (assigned_agent, seq) WHERE state = 'queued';
CREATE INDEX webhooks_inflight ON webhooks (assigned_agent) WHERE state = 'inflight';
CREATE INDEX webhooks_state ON webhooks (state, received_at);
CREATE INDEX webhooks_event ON webhooks (event_id, seq);
CREATE INDEX webhooks_held ON webhooks (event_id, service, seq) WHERE state = 'held';

CREATE TABLE attempts (
  id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  webhook_id  TEXT NOT NULL,
  attempt     INTEGER NOT NULL,
  agent       TEXT NOT NULL,
  started_at  TEXT NOT NULL,
  duration_ms INTEGER,
  http_status INTEGER,
  error       TEXT,
  outcome     TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed'))
);
CREATE INDEX attempts_webhook ON attempts (webhook_id);

CREATE TABLE agents (
  id           TEXT PRIMARY KEY,
  state        TEXT NOT NULL CHECK (state IN ('up', 'down', 'paused')),
  state_since  TEXT NOT NULL,
  reason       TEXT,
  paused_until TEXT
);

CREATE TABLE cursors (
  name       TEXT PRIMARY KEY,
  seq        BIGINT NOT NULL,
  updated_at TEXT NOT NULL
);

CREATE TABLE consumers (
  name       TEXT PRIMARY KEY,
  acked_seq  BIGINT NOT NULL,
  acked_at   TEXT NOT NULL
);

CREATE TABLE audit (
  id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at       TEXT NOT NULL,
  actor    TEXT NOT NULL,
  action   TEXT NOT NULL,
  filter   TEXT,
  affected INTEGER NOT NULL,
  detail   TEXT
);

CREATE TABLE audit_webhooks (
  webhook_id TEXT NOT NULL,
  audit_id   BIGINT NOT NULL,
  PRIMARY KEY (webhook_id, audit_id)
);
