// Payload generation: a per-webhook random stream (splitmix64 of seed and index) picks the
// dialect, type, alert, people and texts; nlohmann::ordered_json keeps xMatters' key order.
#include "payloads.h"

#include <nlohmann/json.hpp>

namespace iarelay::loadgen {
namespace {

using nlohmann::ordered_json;

struct Random {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
  template <typename T, size_t N>
  const T& pick(const T (&items)[N]) {
    return items[below(N)];
  }
};

const char* const kUsers[] = {"mgarcia",  "jchen",   "akowalski",  "sdubois", "tnakamura",
                              "oadeyemi", "lmüller", "pjørgensen", "ia_user", "rsingh"};
const char* const kNames[][2] = {
    {"Maria", "Garcia"},     {"Jun", "Chen"},    {"Anna", "Kowalski"}, {"Sophie", "Dubois"},
    {"Takeshi", "Nakamura"}, {"Lena", "Müller"}, {"Zoë", "Ångström"},  {"Ravi", "Singh"}};
const char* const kDevices[] = {"Work Email", "Mobile Phone", "SMS", "Voice", "xMatters App"};
const char* const kStatuses[] = {"active", "active", "suspended", "terminated",
                                 "terminated_external"};
const char* const kDelivery[] = {"Delivered", "Delivered", "Delivered", "Failed", "delivered"};
const char* const kResponses[] = {"Acknowledge", "Escalate", "Resolve", "Ignore", "Accept"};
const char* const kComments[] = {
    "Router rebooted, watching traffic",
    "Câble remplacé dans la baie 4 — surveillance en cours",
    "Störung behoben, Überwachung läuft ✓",
    "回線を切り替えました。監視中です",
    "Escalating to the network team 🚨 \"core\" switch flapping",
    "Disk at 97% on db-03; rotating logs\nthen restarting the agent",
    "Tested failover: OK \\ latency back to 12 ms",
    "Нагрузка снизилась, продолжаем наблюдение",
};
const char* const kSeverities[] = {"1 - Critical", "2 - High", "3 - Moderate", "4 - Low"};
const char* const kGroups[] = {"Network Operations", "Database Team", "Service Desk",
                               "Équipe Réseau", "Plattform-Betrieb"};
const char* const kNodes[] = {"core-sw-01.example.net", "db-03.example.net", "10.2.0.121",
                              "edge-fw-2", "nnmi-poller-7"};
const char* const kFiller =
    "Incident details forwarded by the monitoring system: interface down, packet loss above "
    "threshold, média impactés, Überlast erkannt, 影響範囲を調査中. ";

std::string date_for(std::uint64_t event, std::uint64_t n) {
  // A plausible recent timestamp: 2026-11-20, spread over the day by event and index.
  std::uint64_t s = (event * 37 + n) % 86400;
  char buf[32];
  std::snprintf(buf, sizeof buf, "2026-11-20T%02u:%02u:%02uZ", static_cast<unsigned>(s / 3600),
                static_cast<unsigned>(s / 60 % 60), static_cast<unsigned>(s % 60));
  return buf;
}

}  // namespace

PayloadGenerator::PayloadGenerator(GeneratorOptions options) : options_(std::move(options)) {
  if (options_.types.empty()) options_.types = {"status"};
  if (options_.events == 0) options_.events = 1;
}

Generated PayloadGenerator::make(std::uint64_t n) const {
  Random r{options_.seed * 0x100000001B3ull ^ (n + 1) * 0x9E3779B97F4A7C15ull};
  Generated g;
  g.type = options_.types[r.below(options_.types.size())];
  bool ia = options_.dialect == Dialect::kIntegrationAgent ||
            (options_.dialect == Dialect::kMixed && r.below(2) == 1);
  g.dialect = ia ? "ia" : "ib";
  g.event = 4'400'000 + r.below(options_.events);
  std::string incident = "INC" + std::to_string(40'000 + g.event % 100'000);
  const char* user = r.pick(kUsers);
  const char* device = r.pick(kDevices);

  // Form properties: as an array of one-key objects (IB) or the object additionalTokens (IA).
  std::vector<std::pair<std::string, std::string>> properties = {{"Incident ID", incident}};
  if (r.below(2)) properties.emplace_back("Severity", r.pick(kSeverities));
  if (r.below(2)) properties.emplace_back("Assignment Group", r.pick(kGroups));
  if (r.below(3) == 0) properties.emplace_back("Node", r.pick(kNodes));

  auto build = [&](const std::string& padding) {
    ordered_json doc;
    auto props = properties;
    if (!padding.empty()) props.emplace_back("Description", padding);
    if (!ia) {
      doc["eventIdentifier"] = g.event;
      doc["date"] = date_for(g.event, n);
      if (g.type == "status") {
        doc["status"] = r.pick(kStatuses);
        doc["username"] = user;
      } else if (g.type == "deliveryStatus") {
        doc["recipient"] = user;
        doc["device"] = device;
        doc["deliveryStatus"] = r.pick(kDelivery);
      } else if (g.type == "response") {
        doc["recipient"] = user;
        doc["device"] = device;
        doc["response"] = r.pick(kResponses);
        if (r.below(2)) doc["annotation"] = r.pick(kComments);
      } else if (g.type == "annotation") {
        const auto& name = r.pick(kNames);
        doc["author"] = {{"firstName", name[0]}, {"lastName", name[1]}};
        doc["comment"] = r.pick(kComments);
      } else {
        doc["status"] = "active";
      }
      ordered_json arr = ordered_json::array();
      for (const auto& [k, v] : props) arr.push_back({{k, v}});
      doc["eventProperties"] = arr;
    } else {
      doc["xmatters_callback_type"] = g.type;
      doc["eventidentifier"] = std::to_string(g.event);
      if (g.type == "status") {
        doc["status"] = r.pick(kStatuses);
        doc["username"] = user;
      } else if (g.type == "deliveryStatus") {
        doc["recipient"] = user;
        doc["device"] = device;
        doc["deliverystatus"] = r.pick(kDelivery);
      } else if (g.type == "response") {
        doc["recipient"] = user;
        doc["device"] = device;
        doc["response"] = r.pick(kResponses);
        // The Integration Agent's quirk: no comment is the string "null".
        doc["annotation"] = r.below(2) ? std::string(r.pick(kComments)) : std::string("null");
      } else if (g.type == "annotation") {
        doc["author"] = r.pick(kUsers);
        doc["comment"] = r.pick(kComments);
      }
      ordered_json tokens = ordered_json::object();
      for (const auto& [k, v] : props) tokens[k] = v;
      doc["additionalTokens"] = tokens;
    }
    // Senders format differently: compact, or pretty-printed as the fixtures are.
    return doc.dump(n % 3 == 0 ? 2 : -1);
  };

  // A padded rebuild replays the same random stream, so only the padding differs.
  Random saved = r;
  g.body = build("");
  if (options_.payload_size > g.body.size() + 40) {
    size_t want = options_.payload_size - g.body.size() - 40;
    std::string padding;
    while (padding.size() < want) padding += kFiller;
    // Cut on a character boundary (never inside a multi-byte UTF-8 sequence).
    size_t cut = want;
    while (cut > 0 && (static_cast<unsigned char>(padding[cut]) & 0xC0) == 0x80) --cut;
    padding.resize(cut);
    r = saved;
    g.body = build(padding);
  }
  return g;
}

}  // namespace iarelay::loadgen
