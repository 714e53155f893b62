// The intake request path as a whole, without a socket: the input is the bytes of one HTTP
// request, read by the listener's parser (its limits, max_body 1 MiB), turned into the
// handler's request, routed as HttpServer::route does, and a POST /v1/webhooks/{service} taken
// apart as handle_webhook does and admitted (admit_direct) against a configured directory.
// Invariants when admission accepts:
// - the payload to store is the request's body byte for byte (also the raw bytes after the
//   header when the body was not chunked), and inspect_payload accepts it with the same type;
// - service, agent, type and Idempotency-Key are valid UTF-8 without control characters and
//   within their bounds, and the service is non-empty and normalised;
// - the state is queued or discarded (this relay has agents), with a reason when discarded.
// When it refuses: the message for the client is valid UTF-8 without control characters.
// Before the route, every complete request meets the token check (intake/auth.h) with two
// tokens and a [listen] user, as HttpServer::route does. Invariants: a refusal is valid UTF-8
// without control characters, contains no token and is one of a few fixed texts (never what the
// request sent);
// an accepted request carries one of the tokens (in its Authorization header, base64 or not, or
// its token parameter); after strip_token_param no token parameter is left for the routes.
#include <set>
#include <string>

#include "common/crypto.h"
#include "common/payload.h"
#include "common/utf8.h"
#include "fuzz_check.h"
#include "http_request.h"
#include "intake/admission.h"
#include "intake/auth.h"
#include "journal/routing.h"

using namespace iarelay;
using iarelay::fuzz::show;

namespace {

constexpr std::size_t kMaxBody = 1 << 20;

const AgentDirectory& directory() {
  static const AgentDirectory* d = [] {
    AgentConfig a;
    a.handle = "nnmi1";
    a.id = "ws-198/10.2.0.121:8081";
    a.callback = "http://127.0.0.1:1/http/{domain}_{service}";
    a.services = {"hpnnmi", "remedy"};
    AgentConfig b = a;
    b.handle = b.id = "nnmi2";
    b.services = {"hpnnmi"};
    ServiceConfig held{"remedy", true};
    auto* dir = new AgentDirectory({a, b}, {held});
    dir->set_availability("nnmi2", Availability::kDown);
    return dir;
  }();
  return *d;
}

constexpr std::string_view kTokens[] = {"fuzz-token-1", "fuzz-token-2"};

const Authenticator& authenticator() {
  static const Authenticator* a =
      new Authenticator({{std::string(kTokens[0]), std::string(kTokens[1])}, "xmatters"});
  return *a;
}

bool has_token(std::string_view s) {
  for (auto t : kTokens)
    if (s.find(t) != std::string_view::npos) return true;
  return false;
}

// HttpServer::route's check, then its removal of the token parameter.
void check_authentication(HttpRequest& req) {
  auto header = req.header("Authorization");
  std::string sent = header ? std::string(*header) : "";
  auto refusal = authenticator().refusal(req);
  if (refusal) {
    FUZZ_CHECK(!refusal->empty() && text_field_problem(*refusal, 4096).empty(),
               "refusal message '%s'", show(*refusal).c_str());
    FUZZ_CHECK(!has_token(*refusal), "refusal names a token: '%s'", show(*refusal).c_str());
    // What the request sent is not echoed: the refusals are a few fixed texts, however many
    // different requests are refused (ten today).
    static std::set<std::string> seen;
    seen.insert(*refusal);
    FUZZ_CHECK(seen.size() <= 20, "refusal depends on the request: '%s'", show(*refusal).c_str());
  } else {
    bool carried = has_token(sent);
    size_t space = sent.find(' ');
    if (space != std::string::npos) {
      std::string credentials = sent.substr(space + 1);
      while (!credentials.empty() && (credentials.back() == ' ' || credentials.back() == '\t'))
        credentials.pop_back();
      while (!credentials.empty() && (credentials.front() == ' ' || credentials.front() == '\t'))
        credentials.erase(0, 1);
      auto decoded = base64_decode(credentials);
      carried = carried || (decoded && has_token(*decoded));
    }
    for (const auto& [name, value] : req.query)
      carried = carried || (name == "token" && has_token(value));
    FUZZ_CHECK(carried, "accepted without a token: Authorization '%s'", show(sent).c_str());
  }
  strip_token_param(req);
  FUZZ_CHECK(!req.param("token"), "a token parameter is left for the routes");
}

void check_field(const char* name, std::string_view value, std::size_t max) {
  std::string problem = text_field_problem(value, max);
  FUZZ_CHECK(problem.empty(), "admitted %s '%s' %s", name, show(value).c_str(), problem.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  std::string_view bytes = fuzz::as_view(data, size);
  fuzz::ParsedRequest parsed = fuzz::parse_like_listener(bytes, kMaxBody, bytes.size() + 1);
  if (!parsed.complete) return 0;
  bool chunked = parsed.chunked;
  HttpRequest req = fuzz::to_handler_request(std::move(parsed.message));
  check_authentication(req);
  // HttpServer::route: only a POST under /v1/webhooks/ reaches admission.
  if (req.path.rfind("/v1/webhooks/", 0) != 0 || req.method != "POST") return 0;

  // HttpServer::handle_webhook.
  IntakeRequest in;
  in.service = req.path.substr(std::string_view("/v1/webhooks/").size());
  in.agent = std::string(req.param("agent").value_or(""));
  in.type = std::string(req.param("type").value_or(""));
  in.idempotency_key = std::string(req.header("Idempotency-Key").value_or(""));
  in.body = req.body;
  IntakeRequest original = in;
  auto admitted = admit_direct(std::move(in), directory(), 1'800'000'000'000);

  if (!admitted) {
    const std::string& m = admitted.status().message();
    FUZZ_CHECK(!m.empty() && text_field_problem(m, 4096).empty(), "refusal message '%s'",
               show(m).c_str());
    return 0;
  }
  const NewWebhook& w = *admitted;
  FUZZ_CHECK(w.payload == req.body, "stored payload differs from the body: '%s' vs '%s'",
             show(w.payload).c_str(), show(req.body).c_str());
  if (!chunked) {
    std::string_view raw = bytes.substr(parsed.consumed - w.payload.size(), w.payload.size());
    FUZZ_CHECK(raw == w.payload, "stored payload differs from the bytes sent: '%s' vs '%s'",
               show(w.payload).c_str(), show(raw).c_str());
  }
  check_field("service", w.service, kMaxServiceName);
  check_field("type", w.type, kMaxTriggerType);
  FUZZ_CHECK(!w.service.empty() && normalize_service(w.service) == w.service, "service '%s'",
             show(w.service).c_str());
  FUZZ_CHECK(!w.type.empty(), "empty type");
  if (w.agent) {
    check_field("agent", *w.agent, kMaxAgentId);
    FUZZ_CHECK(!w.agent->empty() && normalize_agent(*w.agent) == *w.agent, "agent '%s'",
               show(*w.agent).c_str());
  }
  if (w.idempotency_key) check_field("Idempotency-Key", *w.idempotency_key, kMaxIdempotencyKey);
  if (w.event_id) FUZZ_CHECK(!w.event_id->empty(), "empty event id kept");
  auto info = inspect_payload(w.payload, original.type);
  FUZZ_CHECK(info && info->type == w.type, "inspect_payload disagrees with admission");
  FUZZ_CHECK(w.state == WebhookState::kQueued || w.state == WebhookState::kDiscarded, "state %d",
             static_cast<int>(w.state));
  FUZZ_CHECK(w.state != WebhookState::kDiscarded || (w.reason && !w.reason->empty()),
             "discarded without a reason");
  FUZZ_CHECK(!w.id.empty() && w.source == "direct", "id '%s' source '%s'", w.id.c_str(),
             w.source.c_str());
  return 0;
}
