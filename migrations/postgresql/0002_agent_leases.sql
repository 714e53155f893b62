-- Delivery to each agent is owned by one relay at a time (issue 15, docs/high-availability.md):
-- a lease per agent, taken when free or expired, renewed while its owner lives. Each taking
-- increments the epoch; an owner writes outcomes only while the row still holds its epoch
-- (fencing), locking the row FOR SHARE in that transaction, so a takeover waits for the
-- outcome's commit and an owner paused past its lease can never write over the new owner's
-- work. Expiry is measured on the database's clock, never a relay's.
CREATE TABLE agent_leases (
  agent      TEXT PRIMARY KEY,           -- agent identifier
  owner      TEXT NOT NULL,              -- the relay holding it (its relay id)
  epoch      BIGINT NOT NULL,            -- incremented at every taking
  expires_at TIMESTAMPTZ NOT NULL        -- the owner must renew before this
);
