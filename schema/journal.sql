-- The journal's current schema, documented: what migrations/0001_*.sql onward build (a test
-- applies them all to an empty file and compares the result with this file).
-- Times are RFC 3339 UTC text with millisecond precision ("2026-11-29T14:39:31.123Z"): fixed
-- width, so text comparison is time comparison and operators read them as they are.

-- Applied migrations; the runner refuses a journal whose recorded checksum differs from the
-- compiled-in migration, or that records a migration this build does not know.
CREATE TABLE schema_migrations (
  version    INTEGER PRIMARY KEY,         -- 1 for 0001_initial.sql, 2 for 0002_held_state.sql, ...
  name       TEXT NOT NULL,               -- file name without .sql
  checksum   TEXT NOT NULL,               -- SHA-256 of the migration's text
  applied_at TEXT NOT NULL
);

CREATE TABLE webhooks (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT, -- arrival order here (never reused)
  id              TEXT NOT NULL UNIQUE, -- webhook id (ULID); the webhook-id header
  source          TEXT NOT NULL,        -- 'direct' for intake, else the upstream's name
  source_id       TEXT,                 -- the webhook's id at its source (feed), else NULL
  idempotency_key TEXT,                 -- Idempotency-Key header on intake, else NULL
  received_at     TEXT NOT NULL,        -- RFC 3339 UTC, ms precision, when it was stored
  service         TEXT NOT NULL,        -- integration service, without 'applications|'
  agent           TEXT,                 -- agent identifier the webhook asked for, or NULL
  type            TEXT NOT NULL,        -- trigger type: status, deliveryStatus, response, ...
  event_id        TEXT,                 -- the alert's event identifier, or NULL
  state           TEXT NOT NULL         -- delivery state, see docs/journal.md
                  CHECK (state = 'stored' OR state = 'queued' OR state = 'inflight' OR
                         state = 'delivered' OR state = 'failed' OR state = 'discarded' OR
                         state = 'held'),
  assigned_agent  TEXT,                 -- agent that holds it now (NULL: waits for any agent)
  attempts        INTEGER NOT NULL DEFAULT 0, -- real attempts since stored or last resend
  next_attempt_at TEXT,                 -- not before this time (RFC 3339); NULL: now
  delivered_at    TEXT,                 -- when an agent answered 2xx
  last_status     INTEGER,              -- HTTP status of the last attempt, or NULL
  last_error      TEXT,                 -- why the last attempt failed / why discarded
  payload         TEXT NOT NULL         -- the raw JSON body, byte for byte
);
-- Deduplication of redelivered feed batches and repeated Idempotency-Keys.
CREATE UNIQUE INDEX webhooks_source ON webhooks (source, source_id) WHERE source_id IS NOT NULL;
CREATE UNIQUE INDEX webhooks_idempotency ON webhooks (service, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
-- The dispatcher's queue scan: one agent's queued rows in arrival order.
CREATE INDEX webhooks_queue ON webhooks (assigned_agent, state, seq);
-- Operator queries and retention by state and age.
CREATE INDEX webhooks_state ON webhooks (state, received_at);
CREATE INDEX webhooks_event ON webhooks (event_id);
-- Held webhooks by alert (0003): is an earlier webhook of this alert held? Empty unless an
-- operator holds something.
CREATE INDEX webhooks_held ON webhooks (event_id, service, seq) WHERE state = 'held';

CREATE TABLE attempts (
  id          INTEGER PRIMARY KEY,
  webhook_id  TEXT NOT NULL,            -- webhooks.id
  attempt     INTEGER NOT NULL,         -- 1-based within the webhook's current budget
  agent       TEXT NOT NULL,            -- agent identifier called
  started_at  TEXT NOT NULL,            -- RFC 3339 UTC
  duration_ms INTEGER,                  -- until the answer or the error
  http_status INTEGER,                  -- NULL on transport errors and timeouts
  error       TEXT,                     -- transport error or body excerpt, NULL on success
  outcome     TEXT NOT NULL CHECK (outcome = 'delivered' OR outcome = 'retry' OR
                                         outcome = 'failed')
);
CREATE INDEX attempts_webhook ON attempts (webhook_id);

CREATE TABLE agents (
  id           TEXT PRIMARY KEY,        -- agent identifier
  state        TEXT NOT NULL CHECK (state = 'up' OR state = 'down' OR state = 'paused'),
  state_since  TEXT NOT NULL,           -- RFC 3339 UTC
  reason       TEXT,                    -- why down or paused
  paused_until TEXT                     -- a pause ends by itself at this time, or NULL
);

CREATE TABLE cursors (
  name       TEXT PRIMARY KEY,          -- the upstream's name ([upstream] name)
  seq        INTEGER NOT NULL,          -- last upstream seq stored here
  updated_at TEXT NOT NULL
);

CREATE TABLE consumers (
  name       TEXT PRIMARY KEY,          -- a downstream relay polling this one's feed
  acked_seq  INTEGER NOT NULL,          -- it has durably stored everything up to this seq
  acked_at   TEXT NOT NULL
);

CREATE TABLE audit (
  id       INTEGER PRIMARY KEY,
  at       TEXT NOT NULL,               -- RFC 3339 UTC
  actor    TEXT NOT NULL,               -- user@host of the operator, or 'iarelayd'
  action   TEXT NOT NULL,               -- resend, move, retry, hold, release, delete, pause,
                                        -- resume, purge, retention
  filter   TEXT,                        -- the command's filter / arguments as given
  affected INTEGER NOT NULL,            -- rows changed
  detail   TEXT
);

-- The webhooks an operator's command changed (resend, retry, hold, release): `iarelay show`
-- says who resent or held a webhook, and when. Deleted with the webhook.
-- Columns in the key's order: SQLite 3.40's quick_check misreads a WITHOUT ROWID table whose
-- columns are declared in another order ("NULL value in ...").
CREATE TABLE audit_webhooks (
  webhook_id TEXT NOT NULL,             -- webhooks.id it changed
  audit_id   INTEGER NOT NULL,          -- audit.id of the command
  PRIMARY KEY (webhook_id, audit_id)
) WITHOUT ROWID;
