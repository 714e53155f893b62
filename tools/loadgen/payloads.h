// Realistic xMatters outbound-integration payloads for iarelay-loadgen, in both dialects
// (docs/architecture.md, "Payload dialects": Integration Builder JSON, Integration Agent
// message) and all four trigger types, with varied alerts, recipients, devices, unicode comments
// and form properties. Deterministic: webhook n of a given seed is always the same. Thread-safe
// (const).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace iarelay::loadgen {

enum class Dialect { kIntegrationBuilder, kIntegrationAgent, kMixed };

struct GeneratorOptions {
  std::uint64_t seed = 1;
  Dialect dialect = Dialect::kMixed;
  std::vector<std::string> types = {"status", "deliveryStatus", "response", "annotation"};
  std::uint64_t events = 100;  // distinct alerts the webhooks belong to
  size_t payload_size = 0;     // 0: natural size; else padded with a form property to about this
};

struct Generated {
  std::string type;
  std::string dialect;      // "ib" | "ia"
  std::uint64_t event = 0;  // the alert's event identifier
  std::string body;
};

class PayloadGenerator {
 public:
  explicit PayloadGenerator(GeneratorOptions options);
  Generated make(std::uint64_t n) const;

 private:
  GeneratorOptions options_;
};

}  // namespace iarelay::loadgen
