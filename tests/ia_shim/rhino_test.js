// The shim in Mozilla Rhino, the Integration Agent's JavaScript engine: load()ed by a script,
// its secret read from a file and its signatures checked with the real javax.crypto.Mac, every
// recorded relay callback answered as under Node. JavaScript 1.7 language level (`-version 170`),
// as older Rhino builds run scripts. Exit 77 (ctest: skipped) without rhino.
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');
const s = require('./support');

function findRhino() {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const candidate = path.join(dir, 'rhino');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch (_) { /* not here */ }
  }
  return null;
}

const rhino = findRhino();
if (!rhino) {
  console.log('ia_shim rhino test skipped: no `rhino` on PATH (Debian package rhino; tools/setup.sh installs it)');
  process.exit(77);
}

test('every recorded callback through the shim in Rhino with javax.crypto', () => {
  const cases = [];
  for (const r of s.recordings()) {
    const now = Number(r.recorded.timestamp);
    cases.push({ name: r.name, signed: true, now, body: r.recorded.body, headers: s.relayHeaders(r.recorded), expect: 200, type: r.recorded.type });
    cases.push({ name: `${r.name} unsigned`, signed: false, now, body: r.recorded.body, headers: s.relayHeaders(r.recorded, null), expect: 200, type: r.recorded.type });
    cases.push({ name: `${r.name} altered`, signed: true, now, body: r.recorded.body.replace('"eventidentifier":"', '"eventidentifier":"9'), headers: s.relayHeaders(r.recorded), expect: 401 });
  }
  const sample = s.recordings().find((r) => r.name === 'ib_response').recorded;
  const throwing = { ...sample, body: sample.body.replace('"Acknowledge"', '"Throw"') };
  cases.push({ name: 'apia_callback throws', signed: true, now: Number(sample.timestamp), body: throwing.body, headers: s.relayHeaders(throwing), expect: 503 });
  const upper = Object.fromEntries(Object.entries(s.relayHeaders(sample)).map(([k, v]) => [k.toUpperCase(), v]));
  cases.push({ name: 'header names in upper case (found through propertyNames())', signed: true, now: Number(sample.timestamp), body: sample.body, headers: upper, expect: 200, type: sample.type });
  cases.push({ name: 'garbage', signed: false, now: 0, body: '{"xmatters_callback_type": ', headers: { 'webhook-id': 'g1' }, expect: 400 });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ia-shim-rhino-'));
  try {
    const casesFile = path.join(dir, 'cases.json');
    fs.writeFileSync(casesFile, JSON.stringify(cases));
    const output = execFileSync(rhino, ['-version', '170', path.join(__dirname, 'rhino_driver.js'), s.shimPath, casesFile, s.secretPath],
      { encoding: 'utf8', timeout: 120000 });
    const results = output.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    assert.equal(results.length, cases.length, output);
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i];
      const got = results[i];
      assert.equal(got.name, c.name);
      assert.equal(got.status, c.expect, `${c.name}: ${got.body}`);
      assert.equal(got.returned, true, `${c.name}: iarelay_http returns the httpResponse`);
      assert.deepEqual(got.headers, ['Content-Type: application/json']);
      assert.equal(got.version, 'HTTP/1.1');
      if (c.expect === 200) {
        assert.equal(got.messages.length, 1, c.name);
        assert.deepEqual(got.messages[0], JSON.parse(c.body), c.name);
        assert.equal(got.messages[0].xmatters_callback_type, c.type);
      } else {
        assert.equal(got.messages.length, 0, c.name);
      }
    }
    const thrown = results.find((r) => r.name === 'apia_callback throws');
    assert.match(JSON.parse(thrown.body).error, /apia_callback threw: .*script failed/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
