-- 0004: the CHECK constraints on states written as comparisons instead of IN lists. SQLite
-- evaluates `x IN (more than two values)` through a temporary b-tree built at every execution
-- of a statement: every change of a webhook's state, every attempt and agent row written paid
-- for one (a page cache allocated and freed, a fifth of the CPU of an alert's chain step). The
-- rule is the same and accepts the same rows, and the tables' on-disk format does not change,
-- so the definitions are rewritten in place: SQLite's procedure for such changes
-- (lang_altertable.html, "Making Other Kinds Of Table Schema Changes"); migrate() increments
-- the schema version in the same transaction, as that procedure asks.
PRAGMA writable_schema=ON;
UPDATE sqlite_schema SET sql = replace(sql,
'CHECK (state IN (''stored'',''queued'',''inflight'',''delivered'',''failed'',''discarded'',
                                   ''held''))',
'CHECK (state = ''stored'' OR state = ''queued'' OR state = ''inflight'' OR
                         state = ''delivered'' OR state = ''failed'' OR state = ''discarded'' OR
                         state = ''held'')')
WHERE type = 'table' AND name = 'webhooks';
UPDATE sqlite_schema SET sql = replace(sql,
'CHECK (outcome IN (''delivered'',''retry'',''failed''))',
'CHECK (outcome = ''delivered'' OR outcome = ''retry'' OR
                                         outcome = ''failed'')')
WHERE type = 'table' AND name = 'attempts';
UPDATE sqlite_schema SET sql = replace(sql,
'CHECK (state IN (''up'',''down'',''paused''))',
'CHECK (state = ''up'' OR state = ''down'' OR state = ''paused'')')
WHERE type = 'table' AND name = 'agents';
PRAGMA writable_schema=OFF;
