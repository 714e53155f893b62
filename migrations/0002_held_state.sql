-- 0002: the `held` state (an operator's `iarelay hold`: never claimed until `iarelay release`)
-- and audit_webhooks, which ties an operator's audit row to each webhook it changed (`show`
-- names who resent, held or released a webhook). SQLite cannot change a CHECK constraint in
-- place, so webhooks is rebuilt: renamed, created anew, copied (once: about the time of a
-- VACUUM on a large journal), and its AUTOINCREMENT record carried over, so no seq is reused.
ALTER TABLE webhooks RENAME TO webhooks_0001;
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
                  CHECK (state IN ('stored','queued','inflight','delivered','failed','discarded',
                                   'held')),
  assigned_agent  TEXT,                 -- agent that holds it now (NULL: waits for any agent)
  attempts        INTEGER NOT NULL DEFAULT 0, -- real attempts since stored or last resend
  next_attempt_at TEXT,                 -- not before this time (RFC 3339); NULL: now
  delivered_at    TEXT,                 -- when an agent answered 2xx
  last_status     INTEGER,              -- HTTP status of the last attempt, or NULL
  last_error      TEXT,                 -- why the last attempt failed / why discarded
  payload         TEXT NOT NULL         -- the raw JSON body, byte for byte
);
INSERT INTO webhooks (seq, id, source, source_id, idempotency_key, received_at, service, agent,
                      type, event_id, state, assigned_agent, attempts, next_attempt_at,
                      delivered_at, last_status, last_error, payload)
  SELECT seq, id, source, source_id, idempotency_key, received_at, service, agent, type,
         event_id, state, assigned_agent, attempts, next_attempt_at, delivered_at, last_status,
         last_error, payload
  FROM webhooks_0001 ORDER BY seq;
-- The next seq continues from the old table's record (an edge raised it past max(seq)).
INSERT INTO sqlite_sequence (name, seq)
  SELECT 'webhooks', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'webhooks');
UPDATE sqlite_sequence
  SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'webhooks_0001'), 0))
  WHERE name = 'webhooks';
DROP TABLE webhooks_0001;
CREATE UNIQUE INDEX webhooks_source ON webhooks (source, source_id) WHERE source_id IS NOT NULL;
CREATE UNIQUE INDEX webhooks_idempotency ON webhooks (service, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX webhooks_queue ON webhooks (assigned_agent, state, seq);
CREATE INDEX webhooks_state ON webhooks (state, received_at);
CREATE INDEX webhooks_event ON webhooks (event_id);

-- Columns in the key's order: SQLite 3.40's quick_check misreads a WITHOUT ROWID table whose
-- columns are declared in another order ("NULL value in ...").
CREATE TABLE audit_webhooks (
  webhook_id TEXT NOT NULL,             -- webhooks.id it changed
  audit_id   INTEGER NOT NULL,          -- audit.id of the command
  PRIMARY KEY (webhook_id, audit_id)
) WITHOUT ROWID;
