/*
 * iarelay-shim.js: receives iarelay's relayed webhooks in an xMatters Integration Agent
 * integration script and hands each one to the script's own apia_callback(msg).
 *
 * The relay's agent section says `format = ia` and its callback is the IA's service gateway,
 * http://<ia-host>:8081/http/<domain>_<service>, which calls the script's apia_http(). The body
 * is already the message an IA builds for apia_callback (lower-case keys, string values,
 * xmatters_callback_type, additionalTokens); this fragment checks its Standard Webhooks
 * signature (when a secret is configured), parses it and calls apia_callback(msg).
 *
 * Answers, and what the relay does with them:
 *   200  apia_callback returned                                    -> delivered
 *   503  apia_callback threw, or the script has no apia_callback   -> retried with backoff
 *   400  the body is not a JSON object with xmatters_callback_type -> failed at once
 *   401  a secret is configured and the signature is missing, does
 *        not match, or its timestamp is too far from this clock    -> failed at once
 * A failed webhook keeps the answer in its last_error and can be resent (`iarelay resend`).
 *
 * Use (Rhino, ES5; no Node or browser APIs): load it from the integration script, or paste it
 * in, then call iarelay_http() from the script's apia_http:
 *
 *   load("integrationservices/applications/hpnnmi/iarelay-shim.js");
 *   IARELAY_SHIM.configure({ secretFile: "integrationservices/applications/hpnnmi/iarelay.secret" });
 *
 *   function apia_http(httpRequestProperties, httpResponse) {
 *     if (IARELAY_SHIM.isRelayRequest(httpRequestProperties))
 *       return iarelay_http(httpRequestProperties, httpResponse);
 *     // ... the script's own handling (NNMi, Remedy, ...) ...
 *   }
 *
 * This file defines only IARELAY_SHIM and iarelay_http, never apia_http or apia_callback, so
 * loading it cannot replace the script's own functions. See docs/integration-agent.md.
 */
var IARELAY_SHIM = (function () {
  var VERSION = "1";

  // The request headers the relay sets (SPEC section 5).
  var HEADER_ID = "webhook-id";
  var HEADER_TIMESTAMP = "webhook-timestamp";
  var HEADER_SIGNATURE = "webhook-signature";
  var HEADER_TYPE = "X-Iarelay-Type";

  var BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

  var settings = {
    keys: [],              // HMAC keys, each an array of byte values (0..255)
    toleranceSeconds: 300, // how far webhook-timestamp may be from this clock; 0: not checked
    callback: null,        // the function messages go to; null: the global apia_callback
    log: null              // an IALOG-like logger; null: IALOG when the script has it
  };

  // ---- The outside world, in small functions a test can replace (IARELAY_SHIM.hooks). ----

  // HMAC-SHA256 of `data` under `key` (both arrays of byte values); returns the 32 bytes of
  // the MAC as an array of numbers (Java's signed bytes are accepted: callers mask with 0xff).
  function javaHmacSha256(key, data) {
    var mac = Packages.javax.crypto.Mac.getInstance("HmacSHA256");
    mac.init(new Packages.javax.crypto.spec.SecretKeySpec(toJavaBytes(key), "HmacSHA256"));
    var out = mac.doFinal(toJavaBytes(data));
    var result = [];
    for (var i = 0; i < out.length; i++) result.push(out[i] & 0xff);
    return result;
  }

  function toJavaBytes(bytes) {
    var array = Packages.java.lang.reflect.Array.newInstance(Packages.java.lang.Byte.TYPE,
                                                             bytes.length);
    for (var i = 0; i < bytes.length; i++) array[i] = bytes[i] > 127 ? bytes[i] - 256 : bytes[i];
    return array;
  }

  // The text of a file (UTF-8), for configure({ secretFile: ... }).
  function javaReadFile(path) {
    var bytes = Packages.java.nio.file.Files.readAllBytes(
        Packages.java.nio.file.Paths.get(String(path)));
    return String(new Packages.java.lang.String(bytes, "UTF-8"));
  }

  function nowSeconds() {
    return Math.floor(new Date().getTime() / 1000);
  }

  // The status line's version: the script's imported HttpVersion (importClass of
  // org.apache.commons.httpclient.HttpVersion, as the IA's own scripts do), else the class.
  function httpVersion() {
    if (typeof HttpVersion !== "undefined") return HttpVersion.HTTP_1_1;
    return Packages.org.apache.commons.httpclient.HttpVersion.HTTP_1_1;
  }

  function makeHeader(name, value) {
    if (typeof Header !== "undefined") return new Header(name, value);
    return new Packages.org.apache.commons.httpclient.Header(name, value);
  }

  var hooks = {
    hmacSha256: javaHmacSha256,
    readFile: javaReadFile,
    nowSeconds: nowSeconds,
    httpVersion: httpVersion,
    makeHeader: makeHeader
  };

  // ---- Bytes and text. ----

  // The UTF-8 bytes of a string (UTF-16 code units; a lone surrogate becomes U+FFFD, as the
  // relay sends only valid UTF-8).
  function utf8Bytes(text) {
    var out = [];
    for (var i = 0; i < text.length; i++) {
      var c = text.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
        var low = text.charCodeAt(i + 1);
        if (low >= 0xdc00 && low <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
          i++;
        }
      }
      if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
      if (c < 0x80) {
        out.push(c);
      } else if (c < 0x800) {
        out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
      } else if (c < 0x10000) {
        out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
      } else {
        out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f),
                 0x80 | (c & 0x3f));
      }
    }
    return out;
  }

  // The bytes of a string whose every character is below 256 (ISO-8859-1), else null.
  function latin1Bytes(text) {
    var out = [];
    for (var i = 0; i < text.length; i++) {
      var c = text.charCodeAt(i);
      if (c > 0xff) return null;
      out.push(c);
    }
    return out;
  }

  function base64Encode(bytes) {
    var out = "";
    for (var i = 0; i < bytes.length; i += 3) {
      var b0 = bytes[i] & 0xff;
      var b1 = i + 1 < bytes.length ? bytes[i + 1] & 0xff : 0;
      var b2 = i + 2 < bytes.length ? bytes[i + 2] & 0xff : 0;
      out += BASE64.charAt(b0 >> 2) + BASE64.charAt(((b0 & 3) << 4) | (b1 >> 4)) +
             (i + 1 < bytes.length ? BASE64.charAt(((b1 & 15) << 2) | (b2 >> 6)) : "=") +
             (i + 2 < bytes.length ? BASE64.charAt(b2 & 63) : "=");
    }
    return out;
  }

  // Standard base64 (padding optional); null when `text` is not base64.
  function base64Decode(text) {
    var s = text.replace(/=+$/, "");
    if (s.length % 4 === 1) return null;
    var out = [];
    var buffer = 0;
    var bits = 0;
    for (var i = 0; i < s.length; i++) {
      var v = BASE64.indexOf(s.charAt(i));
      if (v < 0) return null;
      buffer = ((buffer << 6) | v) & 0xffffff;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out.push((buffer >> bits) & 0xff);
      }
    }
    return out;
  }

  // Compares every character whatever the first difference, so the time taken does not tell
  // how much of a forged signature was right.
  function constantTimeEqual(a, b) {
    var diff = a.length ^ b.length;
    for (var i = 0; i < a.length; i++) {
      diff |= a.charCodeAt(i) ^ (i < b.length ? b.charCodeAt(i) : 0);
    }
    return diff === 0;
  }

  // The HMAC key of a secret as the relay derives it: "whsec_<base64>" is decoded, any other
  // text is used as its UTF-8 bytes.
  function signingKey(secret) {
    var text = String(secret).replace(/[\r\n]+$/, "");
    if (text === "") throw new Error("iarelay shim: the secret is empty");
    if (text.indexOf("whsec_") !== 0) return utf8Bytes(text);
    var key = base64Decode(text.substring(6));
    if (key === null) throw new Error("iarelay shim: the whsec_ secret is not valid base64");
    if (key.length === 0) throw new Error("iarelay shim: the whsec_ secret is empty");
    return key;
  }

  // ---- Configuration. ----

  // options: secret (text), secrets (array of texts: each is accepted, for a rotation),
  // secretFile (a file holding the secret, as the relay's secret_file), toleranceSeconds,
  // callback (default: the script's apia_callback), log (default: IALOG). Throws on a secret
  // that cannot be used, so a mistake shows when the script loads, not at the first webhook.
  function configure(options) {
    var o = options || {};
    var keys = [];
    var i;
    if (o.secret !== undefined && o.secret !== null) keys.push(signingKey(o.secret));
    if (o.secrets) for (i = 0; i < o.secrets.length; i++) keys.push(signingKey(o.secrets[i]));
    if (o.secretFile) keys.push(signingKey(hooks.readFile(o.secretFile)));
    var tolerance = o.toleranceSeconds === undefined ? 300 : Number(o.toleranceSeconds);
    if (!(tolerance >= 0))
      throw new Error("iarelay shim: toleranceSeconds must be a number of seconds, 0 or more");
    settings.keys = keys;
    settings.toleranceSeconds = tolerance;
    settings.callback = o.callback || null;
    settings.log = o.log || null;
  }

  // ---- The request. ----

  // A request header, as the IA hands it to apia_http: a property of httpRequestProperties
  // under the header's name (the IA's own scripts read "Content-Type" so). Looked up by the
  // name as the relay sends it, then without regard to case. null when absent.
  function requestHeader(properties, name) {
    var value = properties.getProperty(name);
    if (value === null || value === undefined) {
      var wanted = name.toLowerCase();
      if (typeof properties.propertyNames === "function") {
        var names = properties.propertyNames();
        while (names.hasMoreElements()) {
          var candidate = String(names.nextElement());
          if (candidate.toLowerCase() === wanted) {
            value = properties.getProperty(candidate);
            break;
          }
        }
      }
    }
    return value === null || value === undefined ? null : String(value);
  }

  // Whether a request came from the relay: it carries webhook-id. For an apia_http that serves
  // both the relay and the script's own source system (NNMi, Remedy, ...).
  function isRelayRequest(properties) {
    return requestHeader(properties, HEADER_ID) !== null;
  }

  // Why the signature is refused, or null when it is good (Standard Webhooks: the signed content
  // is "<webhook-id>.<webhook-timestamp>.<body>"; the header holds space-separated "v1,<base64>").
  function signatureProblem(properties, body) {
    var id = requestHeader(properties, HEADER_ID);
    var timestamp = requestHeader(properties, HEADER_TIMESTAMP);
    var signature = requestHeader(properties, HEADER_SIGNATURE);
    if (signature === null)
      return "no webhook-signature header, but the shim has a secret: give the relay's agent " +
             "section the same secret (secret_file), or configure the shim without one";
    if (id === null || timestamp === null)
      return "webhook-id or webhook-timestamp header missing";
    if (!/^[0-9]{1,15}$/.test(timestamp)) return "webhook-timestamp is not unix seconds";
    if (settings.toleranceSeconds > 0) {
      var skew = Math.abs(hooks.nowSeconds() - Number(timestamp));
      if (skew > settings.toleranceSeconds)
        return "webhook-timestamp is " + skew + " s from this host's clock (tolerance " +
               settings.toleranceSeconds + " s): check the clocks of the relay and the IA";
    }
    var prefix = id + "." + timestamp + ".";
    // The body as the IA decoded it: UTF-8 gives back the bytes the relay signed; an IA that
    // decoded them as ISO-8859-1 gives them back through that charset.
    var contents = [utf8Bytes(prefix + body)];
    var latin1 = latin1Bytes(body);
    if (latin1 !== null && /[\u0080-\u00ff]/.test(body))
      contents.push(utf8Bytes(prefix).concat(latin1));
    var offered = signature.split(" ");
    var ok = false;
    for (var k = 0; k < settings.keys.length; k++) {
      for (var c = 0; c < contents.length; c++) {
        var expected = "v1," + base64Encode(hooks.hmacSha256(settings.keys[k], contents[c]));
        // Every entry is compared, so the time does not reveal which one matched.
        for (var s = 0; s < offered.length; s++)
          if (offered[s] !== "" && constantTimeEqual(offered[s], expected)) ok = true;
      }
    }
    return ok ? null : "webhook-signature does not match: the relay and the shim have " +
                       "different secrets, or the request was altered";
  }

  // The message, or a string saying why the body is not one.
  function parseMessage(body) {
    var msg;
    try {
      msg = JSON.parse(body);
    } catch (e) {
      return "the body is not JSON (" + e.message + ")";
    }
    if (msg === null || typeof msg !== "object" || msg instanceof Array)
      return "the body is not a JSON object";
    if (typeof msg.xmatters_callback_type !== "string" || msg.xmatters_callback_type === "")
      return "the body has no xmatters_callback_type: set format = ia in the relay's agent section";
    return msg;
  }

  function logger() {
    if (settings.log) return settings.log;
    if (typeof IALOG !== "undefined") return IALOG;
    return null;
  }

  function log(level, text) {
    var l = logger();
    if (l && typeof l[level] === "function") l[level]("[iarelay-shim] " + text);
  }

  function answer(httpResponse, status, document) {
    httpResponse.setStatusLine(hooks.httpVersion(), status);
    httpResponse.setHeader(hooks.makeHeader("Content-Type", "application/json"));
    httpResponse.setBodyString(JSON.stringify(document));
    return httpResponse;
  }

  function describe(e) {
    if (e && e.message !== undefined) return String(e.message);
    return String(e);
  }

  // Handles one relayed webhook: see the answers at the top of this file.
  function handle(httpRequestProperties, httpResponse) {
    var id = requestHeader(httpRequestProperties, HEADER_ID);
    var what = "webhook " + (id === null ? "(no webhook-id)" : id) + " (" +
               (requestHeader(httpRequestProperties, HEADER_TYPE) || "type not given") + ")";
    var raw = httpRequestProperties.getProperty("REQUEST_BODY");
    var body = raw === null || raw === undefined ? "" : String(raw);

    if (settings.keys.length > 0) {
      var refused = signatureProblem(httpRequestProperties, body);
      if (refused !== null) {
        log("warn", what + " refused (401): " + refused);
        return answer(httpResponse, 401, { error: refused });
      }
    }

    var msg = parseMessage(body);
    if (typeof msg === "string") {
      log("warn", what + " refused (400): " + msg);
      return answer(httpResponse, 400, { error: msg });
    }

    var callback = settings.callback;
    if (!callback && typeof apia_callback === "function") callback = apia_callback;
    if (!callback) {
      log("error", what + " not delivered (503): the script has no apia_callback function");
      return answer(httpResponse, 503, { error: "the integration script has no apia_callback" });
    }
    try {
      callback(msg);
    } catch (e) {
      var why = "apia_callback threw: " + describe(e);
      log("error", what + " not delivered (503, the relay retries): " + why);
      return answer(httpResponse, 503, { error: why });
    }
    log("debug", what + " delivered to apia_callback");
    return answer(httpResponse, 200, { delivered: id === null ? "" : id });
  }

  return {
    VERSION: VERSION,
    configure: configure,
    handle: handle,
    isRelayRequest: isRelayRequest,
    hooks: hooks,
    // For tests and for checking a secret by hand.
    internals: {
      utf8Bytes: utf8Bytes,
      base64Encode: base64Encode,
      base64Decode: base64Decode,
      signingKey: signingKey,
      requestHeader: requestHeader
    }
  };
})();

// What the script's apia_http calls for a relayed webhook (or returns as its whole body).
function iarelay_http(httpRequestProperties, httpResponse) {
  return IARELAY_SHIM.handle(httpRequestProperties, httpResponse);
}
