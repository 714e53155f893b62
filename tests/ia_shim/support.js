// What the shim's tests share: the shim loaded into a fresh global scope as an Integration Agent
// script would have it, mocks of the IA's request and response objects, the relay's recorded
// callbacks (tests/fixtures/ia-callbacks/) and their Standard Webhooks signatures.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');

const root = path.resolve(__dirname, '..', '..');
const shimPath = path.join(root, 'contrib', 'integration-agent', 'iarelay-shim.js');
const recordingsDir = path.join(root, 'tests', 'fixtures', 'ia-callbacks');
const secretPath = path.join(recordingsDir, 'secret');
const secret = fs.readFileSync(secretPath, 'utf8').replace(/[\r\n]+$/, '');

// The HMAC key of a secret as the relay derives it (src/dispatch/signature.cpp).
function signingKey(text) {
  return text.startsWith('whsec_') ? Buffer.from(text.slice(6), 'base64') : Buffer.from(text);
}

// The webhook-signature header the relay sends for these values (body: the bytes as sent).
function sign(secretText, id, timestamp, body) {
  const content = Buffer.concat([Buffer.from(`${id}.${timestamp}.`), Buffer.from(body)]);
  return 'v1,' + crypto.createHmac('sha256', signingKey(secretText)).update(content).digest('base64');
}

// The shim's HMAC hook done by Node instead of javax.crypto (arrays of byte values).
function nodeHmacSha256(key, data) {
  return Array.from(crypto.createHmac('sha256', Buffer.from(key)).update(Buffer.from(data)).digest());
}

// Every recording: { name, input, recorded: { webhook_id, timestamp, type, body, ... } }.
function recordings() {
  return fs.readdirSync(recordingsDir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ name: f.replace(/\.json$/, ''), ...JSON.parse(fs.readFileSync(path.join(recordingsDir, f), 'utf8')) }));
}

// The headers the relay sent with a recording (the signature recomputed: the sink found the
// relay's own header valid for this secret, and the signature is a function of these values).
function relayHeaders(recorded, secretText = secret) {
  const headers = {
    'Content-Type': 'application/json',
    'webhook-id': recorded.webhook_id,
    'webhook-timestamp': recorded.timestamp,
    'X-Iarelay-Attempt': recorded.attempt,
    'X-Iarelay-Service': recorded.service,
    'X-Iarelay-Type': recorded.type,
  };
  if (secretText !== null)
    headers['webhook-signature'] = sign(secretText, recorded.webhook_id, recorded.timestamp, recorded.body);
  return headers;
}

// The IA's httpRequestProperties: getProperty(name) for REQUEST_BODY, http.request and each
// header by its name as sent. With `enumerable`, also Java Properties' propertyNames().
function mockRequest(body, headers = {}, { enumerable = false, path: requestPath = '/http/applications_hpnnmi' } = {}) {
  const props = new Map(Object.entries(headers));
  props.set('http.request', requestPath);
  if (body !== null) props.set('REQUEST_BODY', body);
  const request = {
    getProperty(name) { return props.has(name) ? props.get(name) : null; },
  };
  if (enumerable) {
    request.propertyNames = () => {
      const names = [...props.keys()];
      let i = 0;
      return { hasMoreElements: () => i < names.length, nextElement: () => names[i++] };
    };
  }
  return request;
}

// The IA's httpResponse; records what the shim sets.
function mockResponse() {
  return {
    statusVersion: null, status: null, headers: [], body: null,
    setStatusLine(version, status) { this.statusVersion = version; this.status = status; },
    setHeader(header) { this.headers.push(header); },
    setBodyString(text) { this.body = text; },
  };
}

// org.apache.commons.httpclient's HttpVersion and Header, as an IA script imports them.
const HttpVersion = { HTTP_1_1: { toString: () => 'HTTP/1.1' } };
function Header(name, value) { this.name = name; this.value = value; }

// A fresh global scope holding the shim, as an integration script that load()ed it: `globals`
// are the script's own (apia_callback, IALOG, ...). Returns the vm context.
function loadShim(globals = {}) {
  const context = vm.createContext({ HttpVersion, Header, ...globals });
  vm.runInContext(fs.readFileSync(shimPath, 'utf8'), context, { filename: shimPath });
  return context;
}

// A context whose apia_callback records each message; hooks use Node's crypto and `now`.
function shimWithRecorder({ now, configure = { secret }, apiaCallback } = {}) {
  const messages = [];
  const logs = [];
  const IALOG = {};
  for (const level of ['debug', 'info', 'warn', 'error']) IALOG[level] = (text) => logs.push({ level, text });
  const context = loadShim({
    IALOG,
    apia_callback: apiaCallback || ((msg) => { messages.push(msg); }),
  });
  const shim = context.IARELAY_SHIM;
  shim.hooks.hmacSha256 = nodeHmacSha256;
  if (now !== undefined) shim.hooks.nowSeconds = () => now;
  shim.configure(configure);
  return { context, shim, messages, logs };
}

// Calls the shim as apia_http would: the answer's status, parsed body and headers.
function call(context, request) {
  const response = mockResponse();
  const returned = context.iarelay_http(request, response);
  return { returned, response, status: response.status, json: JSON.parse(response.body) };
}

module.exports = {
  root, shimPath, recordingsDir, secretPath, secret, sign, signingKey, nodeHmacSha256,
  recordings, relayHeaders, mockRequest, mockResponse, HttpVersion, Header, loadShim,
  shimWithRecorder, call,
};
