#!/usr/bin/env node
// ia-standin: an Integration Agent's service gateway for trials and tests. Serves
// POST /http/<domain>_<service> (default /http/applications_hpnnmi) by running the real shim,
// contrib/integration-agent/iarelay-shim.js, in a script scope of its own, as an integration
// script that load()ed it; its apia_callback(msg) prints each message as one JSON line on
// stdout and appends it to --record. Loopback use only; it is not an Integration Agent.
//
// Usage: node tools/ia-standin.js --listen HOST:PORT [--path /http/applications_hpnnmi]
//          [--secret-file FILE] [--record FILE] [--throw-first N]
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const vm = require('node:vm');

const usage = 'usage: node tools/ia-standin.js --listen HOST:PORT [--path /http/applications_hpnnmi] ' +
  '[--secret-file FILE] [--record FILE] [--throw-first N]';
const options = { listen: null, path: '/http/applications_hpnnmi', secretFile: null, record: null, throwFirst: 0 };
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const name = args[i];
  const value = args[i + 1];
  if (name === '--help') { console.log(usage); process.exit(0); }
  if (value === undefined) { console.error(`ia-standin: ${name} needs a value\n${usage}`); process.exit(2); }
  i++;
  if (name === '--listen') options.listen = value;
  else if (name === '--path') options.path = value;
  else if (name === '--secret-file') options.secretFile = value;
  else if (name === '--record') options.record = value;
  else if (name === '--throw-first') options.throwFirst = Number(value);
  else { console.error(`ia-standin: unknown option ${name}\n${usage}`); process.exit(2); }
}
const colon = options.listen ? options.listen.lastIndexOf(':') : -1;
if (colon < 0) { console.error(`ia-standin: --listen HOST:PORT is required\n${usage}`); process.exit(2); }

let calls = 0;
function apiaCallback(msg) {
  calls++;
  if (calls <= options.throwFirst) throw new Error(`ia-standin: call ${calls} of the first ${options.throwFirst} fails (--throw-first)`);
  const line = JSON.stringify({ received_at: new Date().toISOString(), webhook_id: current.id, msg }) + '\n';
  process.stdout.write(line);
  if (options.record) fs.appendFileSync(options.record, line);
}

const log = {};
for (const level of ['debug', 'info', 'warn', 'error']) log[level] = (text) => { if (level !== 'debug') console.error(`${level}: ${text}`); };

// The script scope: what an IA script has (importClass'd HttpVersion and Header, IALOG, its own
// apia_callback), then the shim as load() would run it.
const shimPath = path.join(__dirname, '..', 'contrib', 'integration-agent', 'iarelay-shim.js');
const scope = vm.createContext({
  HttpVersion: { HTTP_1_1: 'HTTP/1.1' },
  Header: function Header(name, value) { this.name = name; this.value = value; },
  IALOG: log,
  apia_callback: apiaCallback,
});
vm.runInContext(fs.readFileSync(shimPath, 'utf8'), scope, { filename: shimPath });
const shim = scope.IARELAY_SHIM;
shim.hooks.hmacSha256 = (key, data) =>
  Array.from(crypto.createHmac('sha256', Buffer.from(key)).update(Buffer.from(data)).digest());
shim.hooks.readFile = (file) => fs.readFileSync(file, 'utf8');
shim.configure(options.secretFile ? { secretFile: options.secretFile } : {});

const current = { id: null };
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method !== 'POST' || req.url.split('?')[0].replace(/\/+$/, '') !== options.path.replace(/\/+$/, '')) {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: `no service at ${req.url}: POST to ${options.path}` }));
      return;
    }
    // httpRequestProperties: the body and each header under its name as sent.
    const props = new Map([['REQUEST_BODY', Buffer.concat(chunks).toString('utf8')], ['http.request', req.url]]);
    for (let i = 0; i < req.rawHeaders.length; i += 2) props.set(req.rawHeaders[i], req.rawHeaders[i + 1]);
    const request = {
      getProperty: (name) => (props.has(name) ? props.get(name) : null),
      propertyNames: () => {
        const names = [...props.keys()];
        let i = 0;
        return { hasMoreElements: () => i < names.length, nextElement: () => names[i++] };
      },
    };
    const response = {
      status: 200, headers: {}, body: '',
      setStatusLine(version, status) { this.status = status; },
      setHeader(header) { this.headers[header.name] = header.value; },
      setBodyString(text) { this.body = text; },
    };
    current.id = request.getProperty('webhook-id');
    try {
      scope.iarelay_http(request, response);
    } catch (e) {
      response.status = 500; // the shim answers everything itself; this would be its own bug
      response.body = JSON.stringify({ error: `the shim threw: ${e}` });
    }
    res.writeHead(response.status, response.headers);
    res.end(response.body);
  });
});
server.listen(Number(options.listen.slice(colon + 1)), options.listen.slice(0, colon), () => {
  const address = server.address();
  console.error(`ia-standin: listening on http://${address.address}:${address.port}${options.path}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => { server.close(); process.exit(0); });
