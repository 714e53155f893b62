-- 0003: an index of held webhooks by alert. Before each claim of a webhook of an alert, the
-- dispatcher asks whether an earlier webhook of that alert is held (held blocks its alert on
-- every agent); with only the event index, that read every row the alert ever had, and with
-- one webhook held anywhere, long alerts stalled the dispatcher for all agents. Only held rows
-- are in this index: it is empty unless an operator holds something.
CREATE INDEX webhooks_held ON webhooks (event_id, service, seq) WHERE state = 'held';
