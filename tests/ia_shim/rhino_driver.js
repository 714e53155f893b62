// Runs in Mozilla Rhino (the IA's engine), started by rhino_test.js:
//   rhino -version 170 rhino_driver.js SHIM CASES_JSON SECRET_FILE
// Loads the shim with load() as an integration script would, configures it with secretFile,
// and calls iarelay_http() for each case with a real java.util.Properties as
// httpRequestProperties (REQUEST_BODY a Java String) and the real javax.crypto HMAC. Prints one
// JSON line per case: {"name", "status", "body", "messages"}.
var shimPath = arguments[0];
var cases = JSON.parse(readFile(arguments[1], "UTF-8"));
var secretFile = arguments[2];

// What an IA script has from importClass(org.apache.commons.httpclient.HttpVersion / Header).
var HttpVersion = { HTTP_1_1: "HTTP/1.1" };
function Header(name, value) { this.name = name; this.value = value; }

var received = [];
function apia_callback(msg) {
  if (msg.response === "Throw") throw new Packages.java.lang.IllegalStateException("script failed");
  received.push(msg);
}

load(shimPath);

for (var i = 0; i < cases.length; i++) {
  var c = cases[i];
  IARELAY_SHIM.configure(c.signed ? { secretFile: secretFile } : {});
  IARELAY_SHIM.hooks.nowSeconds = (function (now) { return function () { return now; }; })(c.now);
  var props = new Packages.java.util.Properties();
  props.setProperty("REQUEST_BODY", new Packages.java.lang.String(c.body));
  for (var name in c.headers) props.setProperty(name, c.headers[name]);
  var response = {
    status: null, body: null, headers: [],
    setStatusLine: function (version, status) { this.version = version; this.status = status; },
    setHeader: function (header) { this.headers.push(header.name + ": " + header.value); },
    setBodyString: function (text) { this.body = text; }
  };
  received = [];
  var returned = iarelay_http(props, response);
  print(JSON.stringify({
    name: c.name, status: response.status, version: response.version, headers: response.headers,
    body: response.body, returned: returned === response, messages: received
  }));
}
