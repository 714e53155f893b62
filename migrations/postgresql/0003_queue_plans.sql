-- The dispatcher's queue reads go through the partial indexes whatever the table's statistics
-- say (docs/benchmarks.md, "Draining on PostgreSQL"). Statistics taken while a backlog is all
-- queued say that every row is queued; the planner then walks the primary key from the head
-- of the table, filtering out every row delivered since, instead of the queue index, until
-- autovacuum analyzes the table again (a drain fell from 650/s to 100/s that way). Without
-- statistics on `state` the planner takes any one state to be a small part of the table: the
-- partial queue, inflight and held indexes, and webhooks_state for the recipes' state filters.
ALTER TABLE webhooks ALTER COLUMN state SET STATISTICS 0;
-- ANALYZE leaves the column alone from now on, but statistics it took before stay in use: a
-- journal analyzed while its backlog was all queued would keep them for good. Changing the
-- column's type to itself drops them (no rewrite of the table; webhooks_state is rebuilt).
ALTER TABLE webhooks ALTER COLUMN state TYPE TEXT;
