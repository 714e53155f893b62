// The shim is plain ES5 for the IA's Rhino: `node --check`, a parse with acorn limited to
// ECMAScript 5 and 3 (Debian node-acorn; skipped with a note when absent), and a scan of the code
// (comments and strings removed) for ES2015+ syntax and Node APIs.
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const { test } = require('node:test');
const s = require('./support');

const source = fs.readFileSync(s.shimPath, 'utf8');

function loadAcorn() {
  for (const name of ['acorn', '/usr/share/nodejs/acorn']) {
    try {
      return require(name);
    } catch (_) { /* try the next place */ }
  }
  return null;
}

// The code without comments and string literals (regular expressions stay: the shim's are
// simple), so words in prose and text do not count.
function codeOnly(text) {
  let out = '';
  for (let i = 0; i < text.length;) {
    const two = text.slice(i, i + 2);
    if (two === '//') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (two === '/*') {
      const end = text.indexOf('*/', i + 2);
      i = end < 0 ? text.length : end + 2;
      out += ' ';
    } else if (text[i] === '"' || text[i] === "'") {
      const quote = text[i++];
      while (i < text.length && text[i] !== quote) i += text[i] === '\\' ? 2 : 1;
      i++;
      out += '""';
    } else {
      out += text[i++];
    }
  }
  return out;
}

test('node --check accepts the shim', () => {
  execFileSync(process.execPath, ['--check', s.shimPath]);
});

const acorn = loadAcorn();
test('acorn parses the shim as ECMAScript 5, and as 3 (a script, not a module)', { skip: !acorn && 'acorn not installed (Debian package node-acorn)' }, () => {
  acorn.parse(source, { ecmaVersion: 5, sourceType: 'script' });
  acorn.parse(source, { ecmaVersion: 3, sourceType: 'script' }); // no trailing commas either
  assert.throws(() => acorn.parse('var f = (x) => x;', { ecmaVersion: 5 }), 'the check bites');
});

test('no ES2015+ syntax and no Node or browser API in the code', () => {
  const code = codeOnly(source);
  const forbidden = [
    [/=>/, 'arrow function'], [/\blet\s/, 'let'], [/\bconst\s/, 'const'], [/`/, 'template literal'],
    [/\bclass\s/, 'class'], [/\.\.\./, 'spread'], [/\brequire\s*\(/, 'require'],
    [/\bmodule\.exports\b/, 'module.exports'], [/\bprocess\./, 'process'], [/\bBuffer\b/, 'Buffer'],
    [/\bwindow\./, 'window'], [/\bconsole\./, 'console'], [/\bPromise\b/, 'Promise'],
    [/\basync\s|\bawait\s/, 'async/await'], [/\bfor\s*\([^)]*\bof\b/, 'for...of'],
  ];
  for (const [pattern, what] of forbidden) assert.doesNotMatch(code, pattern, `${what} in iarelay-shim.js`);
  assert.match(codeOnly('var a = "=> let const `"; // let x => y'), /^var a = ""; $/, 'the scan ignores text');
  // The only globals it defines: what an integration script can call.
  assert.deepEqual(code.match(/^(?:var|function) \w+/gm), ['var IARELAY_SHIM', 'function iarelay_http']);
});
