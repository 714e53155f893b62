// The Integration Agent shim (contrib/integration-agent/iarelay-shim.js) under Node, against
// mocks of the IA's apia_http objects and the relay's real callback requests recorded by
// iarelay-sink (tests/fixtures/ia-callbacks/, made by tools/record-ia-callbacks.sh).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');
const s = require('./support');

// What an Integration Agent's apia_callback(msg) receives for each recorded input: written
// out by hand from the IA's message shape (lower-case keys, string values, the trigger in
// xmatters_callback_type, form properties in additionalTokens with their own case).
const tokens = { 'Incident ID': 'INC0107356' };
const expected = {
  ia_delivery: JSON.parse(fs.readFileSync(path.join(s.root, 'tests/fixtures/xmatters/ia_delivery.json'), 'utf8')),
  ia_response: JSON.parse(fs.readFileSync(path.join(s.root, 'tests/fixtures/xmatters/ia_response.json'), 'utf8')),
  ia_status: JSON.parse(fs.readFileSync(path.join(s.root, 'tests/fixtures/xmatters/ia_status.json'), 'utf8')),
  ib_annotation: {
    xmatters_callback_type: 'annotation', eventidentifier: '6120448', date: '2026-10-07T22:41:09Z',
    author: 'Tomas Nakamura', comment: 'Failover link up, watching BGP sessions', additionalTokens: tokens,
  },
  ib_delivery: {
    xmatters_callback_type: 'deliveryStatus', eventidentifier: '6120448', date: '2026-10-07T22:39:52Z',
    recipient: 'tnakamura', device: 'Work Email', deliverystatus: 'Delivered', additionalTokens: tokens,
  },
  ib_response: {
    xmatters_callback_type: 'response', eventidentifier: '6120448', date: '2026-10-07T22:40:27Z',
    recipient: 'tnakamura', device: 'Mobile Phone', response: 'Acknowledge', annotation: 'null',
    additionalTokens: { 'Incident ID': 'INC0107356', 'Assignment Group': 'Core Network' },
  },
  ib_status: {
    xmatters_callback_type: 'status', eventidentifier: '6120448', date: '2026-10-07T22:43:18Z',
    status: 'terminated_external', username: 'tnakamura',
    additionalTokens: { 'Incident ID': 'INC0107356', Severity: '1 - Critical' },
  },
  ib_annotation_utf8: {
    xmatters_callback_type: 'annotation', eventidentifier: '6120449', date: '2026-10-08T06:12:44Z',
    author: 'Zoë Ångström', comment: 'Übergabe an Netz-Team (Zürich) ✓ — ETA 15′ 🚧',
    additionalTokens: { 'Incident ID': 'INC0107411', Standort: 'Zürich Oerlikon' },
  },
  ib_status_values: {
    xmatters_callback_type: 'status', eventidentifier: '6120450', date: '2026-10-08T06:15:02Z',
    status: 'active', username: 'integration_user', priority: '2', escalated: 'false',
    resolvedby: 'null', targets: '["nocteam","tnakamura"]',
    additionalTokens: { 'Incident ID': 'INC0107412', 'Impacted CIs': '3', 'Customer Facing': 'true' },
  },
};

const recordings = s.recordings();
const plain = (v) => JSON.parse(JSON.stringify(v)); // out of the shim's realm, for deepEqual
const at = (r) => Number(r.recorded.timestamp);

function assertIaMessage(msg, type) {
  assert.equal(msg.xmatters_callback_type, type);
  for (const [key, value] of Object.entries(msg)) {
    if (key === 'additionalTokens') {
      assert.equal(typeof value, 'object');
      for (const v of Object.values(value)) assert.equal(typeof v, 'string', `additionalTokens value ${v}`);
      continue;
    }
    assert.equal(key, key.toLowerCase(), `key ${key} is lower case`);
    assert.equal(typeof value, 'string', `value of ${key} is a string`);
  }
}

test('every input fixture was recorded, and every recording has its expected message', () => {
  const inputs = [
    ...fs.readdirSync(path.join(s.root, 'tests/fixtures/xmatters')),
    ...fs.readdirSync(path.join(s.recordingsDir, 'extra')),
  ].filter((f) => f.endsWith('.json')).map((f) => f.replace(/\.json$/, '')).sort();
  assert.deepEqual(recordings.map((r) => r.name), inputs,
    'tests/fixtures/ia-callbacks/ is out of date: run tools/record-ia-callbacks.sh');
  for (const r of recordings) {
    assert.ok(expected[r.name], `no expected message for ${r.name}`);
    assert.equal(r.recorded.signature, 'valid', `${r.name}: the sink verified the relay's signature`);
  }
});

for (const r of recordings) {
  test(`${r.name}: a signed ${r.recorded.type} callback reaches apia_callback as the IA's message, 200`, () => {
    const { context, messages, logs } = s.shimWithRecorder({ now: at(r) });
    const answer = s.call(context, s.mockRequest(r.recorded.body, s.relayHeaders(r.recorded)));
    assert.equal(answer.status, 200);
    assert.equal(answer.response.statusVersion, s.HttpVersion.HTTP_1_1);
    assert.deepEqual(answer.response.headers.map((h) => [h.name, h.value]), [['Content-Type', 'application/json']]);
    assert.deepEqual(answer.json, { delivered: r.recorded.webhook_id });
    assert.equal(answer.returned, answer.response, 'apia_http returns the httpResponse');
    assert.equal(messages.length, 1);
    assertIaMessage(messages[0], r.recorded.type);
    assert.deepEqual(plain(messages[0]), expected[r.name]);
    assert.ok(logs.every((l) => l.level === 'debug'), JSON.stringify(logs));
  });

  test(`${r.name}: unsigned callback, shim without a secret: delivered`, () => {
    const { context, messages } = s.shimWithRecorder({ configure: {} });
    const answer = s.call(context, s.mockRequest(r.recorded.body, s.relayHeaders(r.recorded, null)));
    assert.equal(answer.status, 200);
    assert.deepEqual(plain(messages), [expected[r.name]]);
  });
}

const sample = recordings.find((r) => r.name === 'ib_response');

test('apia_callback throws: 503 naming the error (the relay retries), logged as an error', () => {
  for (const thrown of [new Error('NNMi REST call failed: connection refused'), 'plain string thrown']) {
    const { context, logs } = s.shimWithRecorder({
      now: at(sample), apiaCallback: () => { throw thrown; },
    });
    const answer = s.call(context, s.mockRequest(sample.recorded.body, s.relayHeaders(sample.recorded)));
    assert.equal(answer.status, 503);
    assert.match(answer.json.error, /^apia_callback threw: /);
    assert.ok(answer.json.error.includes(thrown instanceof Error ? thrown.message : thrown));
    assert.ok(logs.some((l) => l.level === 'error' && l.text.includes(sample.recorded.webhook_id)));
  }
});

test('a script without apia_callback: 503', () => {
  const context = s.loadShim();
  context.IARELAY_SHIM.configure({});
  const answer = s.call(context, s.mockRequest(sample.recorded.body, s.relayHeaders(sample.recorded, null)));
  assert.equal(answer.status, 503);
  assert.match(answer.json.error, /no apia_callback/);
});

test('a body that is not a format = ia message: 400, apia_callback not called', () => {
  const bodies = [
    null, '', 'not json', sample.recorded.body.slice(0, 40), '[1,2]', 'null', '"text"', '42',
    '{"eventIdentifier": 6120448, "status": "active"}', // format = raw by mistake
  ];
  for (const body of bodies) {
    const { context, messages } = s.shimWithRecorder({ configure: {} });
    const answer = s.call(context, s.mockRequest(body, { 'webhook-id': 'w1', 'webhook-timestamp': '1' }));
    assert.equal(answer.status, 400, `body ${body}`);
    assert.equal(typeof answer.json.error, 'string');
    assert.equal(messages.length, 0);
  }
  const { context } = s.shimWithRecorder({ configure: {} });
  const raw = s.call(context, s.mockRequest('{"eventIdentifier": 1, "status": "active"}', {}));
  assert.match(raw.json.error, /set format = ia/);
});

test('garbage that is correctly signed is still refused with 400', () => {
  const { context, messages } = s.shimWithRecorder({ now: 1000 });
  const headers = { 'webhook-id': 'w1', 'webhook-timestamp': '1000', 'webhook-signature': s.sign(s.secret, 'w1', '1000', '{"a":') };
  assert.equal(s.call(context, s.mockRequest('{"a":', headers)).status, 400);
  assert.equal(messages.length, 0);
});

test('a wrong, missing or stale signature is refused with 401 and apia_callback is not called', () => {
  const r = sample.recorded;
  const good = s.relayHeaders(r);
  const cases = {
    'body altered': [r.body.replace('Acknowledge', 'Escalate'), good],
    'other secret': [r.body, s.relayHeaders(r, 'whsec_' + Buffer.from('another key').toString('base64'))],
    'secret as plain text instead of whsec_': [r.body, s.relayHeaders(r, s.secret.slice(6))],
    'no webhook-signature': [r.body, { ...good, 'webhook-signature': undefined }],
    'id altered': [r.body, { ...good, 'webhook-id': r.webhook_id + 'X' }],
    'timestamp altered': [r.body, { ...good, 'webhook-timestamp': String(at(sample) + 1) }],
    'no webhook-timestamp': [r.body, { ...good, 'webhook-timestamp': undefined }],
    'v2 scheme': [r.body, { ...good, 'webhook-signature': good['webhook-signature'].replace('v1,', 'v2,') }],
    'empty signature': [r.body, { ...good, 'webhook-signature': '' }],
  };
  for (const [what, [body, headers]] of Object.entries(cases)) {
    for (const k of Object.keys(headers)) if (headers[k] === undefined) delete headers[k];
    const { context, messages, logs } = s.shimWithRecorder({ now: at(sample) });
    const answer = s.call(context, s.mockRequest(body, headers));
    assert.equal(answer.status, 401, what);
    assert.equal(messages.length, 0, what);
    assert.ok(logs.some((l) => l.level === 'warn'), what);
    assert.ok(!JSON.stringify(logs).includes(s.secret.slice(6)), 'the secret is never logged');
  }
  const { context } = s.shimWithRecorder({ now: at(sample) + 301 });
  const stale = s.call(context, s.mockRequest(r.body, good));
  assert.equal(stale.status, 401);
  assert.match(stale.json.error, /301 s from this host's clock \(tolerance 300 s\)/);
  const early = s.shimWithRecorder({ now: at(sample) - 300 });
  assert.equal(s.call(early.context, s.mockRequest(r.body, good)).status, 200, 'within tolerance');
  const unchecked = s.shimWithRecorder({ now: at(sample) + 86400, configure: { secret: s.secret, toleranceSeconds: 0 } });
  assert.equal(s.call(unchecked.context, s.mockRequest(r.body, good)).status, 200, 'toleranceSeconds 0');
});

test('several signatures in the header and several secrets (rotation): any match is accepted', () => {
  const r = sample.recorded;
  const good = s.relayHeaders(r);
  const other = 'v1,' + Buffer.alloc(32, 7).toString('base64');
  const headers = { ...good, 'webhook-signature': `${other} ${good['webhook-signature']}` };
  const one = s.shimWithRecorder({ now: at(sample) });
  assert.equal(s.call(one.context, s.mockRequest(r.body, headers)).status, 200);
  const rotating = s.shimWithRecorder({ now: at(sample), configure: { secrets: ['whsec_' + Buffer.from('the new key').toString('base64'), s.secret] } });
  assert.equal(s.call(rotating.context, s.mockRequest(r.body, good)).status, 200);
  assert.equal(rotating.messages.length, 1);
});

test('a plain-text secret (not whsec_) is used as its UTF-8 bytes, as the relay does', () => {
  const r = sample.recorded;
  const text = 'Geheimnis-ä-1';
  const { context, messages } = s.shimWithRecorder({ now: at(sample), configure: { secret: text } });
  assert.equal(s.call(context, s.mockRequest(r.body, s.relayHeaders(r, text))).status, 200);
  assert.equal(messages.length, 1);
});

test('non-ASCII body: verified whether the IA decoded it as UTF-8 or as ISO-8859-1', () => {
  const r = recordings.find((x) => x.name === 'ib_annotation_utf8');
  const headers = s.relayHeaders(r.recorded);
  const latin1 = Buffer.from(r.recorded.body, 'utf8').toString('latin1');
  const { context, messages } = s.shimWithRecorder({ now: at(r) });
  assert.equal(s.call(context, s.mockRequest(r.recorded.body, headers)).status, 200);
  assert.equal(s.call(context, s.mockRequest(latin1, headers)).status, 200);
  assert.equal(messages.length, 2);
});

test('headers are found whatever their case when the request object can list its names', () => {
  const r = sample.recorded;
  const upper = Object.fromEntries(Object.entries(s.relayHeaders(r)).map(([k, v]) => [k.toUpperCase(), v]));
  const listed = s.shimWithRecorder({ now: at(sample) });
  assert.equal(s.call(listed.context, s.mockRequest(r.body, upper, { enumerable: true })).status, 200);
  const unlisted = s.shimWithRecorder({ now: at(sample) });
  assert.equal(s.call(unlisted.context, s.mockRequest(r.body, upper)).status, 401,
    'without propertyNames() only the exact name is found');
});

test('isRelayRequest: true for the relay (webhook-id), false for the source system', () => {
  const { shim } = s.shimWithRecorder({ configure: {} });
  assert.equal(shim.isRelayRequest(s.mockRequest(sample.recorded.body, s.relayHeaders(sample.recorded))), true);
  assert.equal(shim.isRelayRequest(s.mockRequest('<nnmi/>', { 'Content-Type': 'text/xml' })), false);
});

test('configure refuses a secret it cannot use, at load rather than at the first webhook', () => {
  const { shim } = s.shimWithRecorder({ configure: {} });
  assert.throws(() => shim.configure({ secret: 'whsec_%%%' }), /not valid base64/);
  assert.throws(() => shim.configure({ secret: 'whsec_' }), /whsec_ secret is empty/);
  assert.throws(() => shim.configure({ secret: '' }), /secret is empty/);
  assert.throws(() => shim.configure({ toleranceSeconds: 'five minutes' }), /toleranceSeconds/);
  assert.throws(() => shim.configure({ toleranceSeconds: -1 }), /toleranceSeconds/);
  shim.hooks.readFile = (p) => fs.readFileSync(p, 'utf8');
  shim.configure({ secretFile: s.secretPath }); // a file's trailing newline is not the secret's
  assert.deepEqual(plain(shim.internals.signingKey(s.secret)), [...s.signingKey(s.secret)]);
});

test('signature arithmetic: the Standard Webhooks reference vector, UTF-8 and base64', () => {
  const { shim } = s.shimWithRecorder({ configure: {} });
  const i = shim.internals;
  const key = i.signingKey('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
  const mac = s.nodeHmacSha256(key, i.utf8Bytes('msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}'));
  assert.equal('v1,' + i.base64Encode(mac), 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  for (const text of ['', 'a', 'Zürich ✓ 🚧', '\ud800 lone surrogate', 'x'.repeat(1000)])
    assert.deepEqual(plain(i.utf8Bytes(text)), [...Buffer.from(text, 'utf8')], text.slice(0, 20));
  for (const n of [0, 1, 2, 3, 4, 5, 31, 32, 33]) {
    const bytes = [...Buffer.from(Array.from({ length: n }, (_, k) => (k * 89 + 7) & 0xff))];
    assert.equal(i.base64Encode(bytes), Buffer.from(bytes).toString('base64'));
    assert.deepEqual(plain(i.base64Decode(Buffer.from(bytes).toString('base64'))), bytes);
  }
  assert.equal(i.base64Decode('ab$d'), null);
});

test('tools/ia-standin.js serves the real shim at /http/applications_hpnnmi on loopback', async () => {
  const { spawn } = require('node:child_process');
  const child = spawn(process.execPath, [path.join(s.root, 'tools', 'ia-standin.js'), '--listen', '127.0.0.1:0',
    '--secret-file', s.secretPath, '--throw-first', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let stdout = '';
    child.stdout.on('data', (d) => { stdout += d; });
    const url = await new Promise((resolve, reject) => {
      let stderr = '';
      child.stderr.on('data', (d) => {
        stderr += d;
        const m = stderr.match(/listening on (http:\S+)/);
        if (m) resolve(m[1]);
      });
      child.on('exit', (code) => reject(new Error(`ia-standin exited ${code}: ${stderr}`)));
    });
    // The relay's request for a recording, at a time the shim's clock accepts.
    const r = recordings.find((x) => x.name === 'ib_annotation_utf8').recorded;
    const now = String(Math.floor(Date.now() / 1000));
    const post = (body, headers) => fetch(url, { method: 'POST', body, headers });
    const signed = { ...r, timestamp: now };
    const headers = s.relayHeaders(signed);
    assert.equal((await post(r.body, headers)).status, 503, 'the first apia_callback throws (--throw-first 1)');
    const ok = await post(r.body, headers);
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { delivered: r.webhook_id });
    const stale = { ...r, timestamp: String(Number(now) - 3600) };
    assert.equal((await post(r.body, s.relayHeaders(stale))).status, 401, 'an hour-old timestamp is stale');
    assert.equal((await post('garbage', { 'webhook-id': 'g' })).status, 401, 'unsigned, and the stand-in has a secret');
    assert.equal((await fetch(url.replace('applications_hpnnmi', 'applications_other'), { method: 'POST', body: '{}' })).status, 404);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 1);
    assert.equal(lines[0].webhook_id, r.webhook_id);
    assert.deepEqual(lines[0].msg, expected.ib_annotation_utf8);
  } finally {
    child.kill();
  }
});
