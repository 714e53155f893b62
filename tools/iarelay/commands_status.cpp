// `iarelay status`: the status document (journal/status_report.h; on PostgreSQL with the
// agents' leases, journal/pg/pg_admin.h) as JSON or as tables.
#include <iostream>
#include <map>

#include "args.h"
#include "commands.h"

namespace iarelay::cli {
namespace {

constexpr CommandHelp kHelp = {
    "status [--format table|json]",
    "Per agent: state, since when, until when (a pause), queued, inflight, oldest queued age,\n"
    "deliveries and failures in the last hour, and the reason it is down or paused; totals\n"
    "by state; unassigned webhooks (queued for any agent of their service) and webhooks held\n"
    "by an operator (iarelay hold); upstream cursors and feed consumers' lag;\n"
    "whether an iarelayd holds the journal. JSON is the document served by the daemon at\n"
    "GET /v1/status. On a PostgreSQL journal, instead of the daemon: which relay owns\n"
    "(delivers to) which agent, with the lease's epoch and expiry (\"leases\" in JSON)."};

// "expires in 7s", "expired 3s ago", "released" (at its relay's clean stop).
std::string lease_expiry(const Json& lease) {
  const Json& ms = lease["expires_in_ms"];
  if (ms.is_null()) return "released";
  const std::int64_t n = ms.get<std::int64_t>();
  if (lease["live"].get<bool>()) return "expires in " + age_text(Json(n));
  return "expired " + age_text(Json(-n)) + " ago";
}

// On a PostgreSQL journal: the relays that hold live leases, and every lease.
void print_relays(const Json& leases) {
  std::map<std::string, int> live;  // owner -> agents
  for (const auto& l : leases)
    if (l["live"].get<bool>()) ++live[l["owner"].get<std::string>()];
  std::cout << "relays    ";
  if (live.empty()) std::cout << "none holds a live lease (no relay delivers now)";
  bool first = true;
  for (const auto& [owner, n] : live) {
    std::cout << (first ? "" : ", ") << terminal_text(owner, true) << " (" << n
              << (n == 1 ? " agent)" : " agents)");
    first = false;
  }
  std::cout << "\n";
}

void print_leases(const Json& leases) {
  std::cout << "\n";
  if (leases.empty()) {
    std::cout << "(no agent's lease taken yet: no relay has delivered on this journal)\n";
    return;
  }
  RowWriter out(std::cout, Format::kTable, {"agent", "owner", "epoch", "lease"});
  for (const auto& l : leases) out.row({l["agent"], l["owner"], l["epoch"], lease_expiry(l)});
  out.finish();
}

void print_tables(const Json& doc) {
  const Json& daemon = doc["daemon"];
  const bool postgresql = doc.contains("leases");
  std::cout << "journal   " << terminal_text(doc["journal"].get<std::string>(), true) << "\n";
  if (postgresql)
    print_relays(doc["leases"]);
  else
    std::cout << "daemon    "
              << (daemon["running"].get<bool>()
                      ? "running (pid " + cell_text(daemon["pid"], "?") + ")"
                      : std::string("not running"))
              << "\n";
  if (doc["role"].is_string()) {
    const bool edge = doc["role"] == "edge";
    bool any_configured = false;
    for (const auto& a : doc["agents"]) any_configured |= a["configured"].get<bool>();
    std::cout << "role      " << doc["role"].get<std::string>()
              << (edge             ? " (stores every webhook for the feed; calls no agent)"
                  : any_configured ? ""
                                   : " (no agents configured: every webhook is held until one is)")
              << "\n";
  }
  std::cout << "totals   ";
  for (const auto& [state, n] : doc["totals"].items()) std::cout << " " << state << " " << n;
  std::cout << "\n";
  // Two different things: queued with no agent (unrouted = hold, a resent discarded one),
  // and the state `held` (an operator's iarelay hold).
  const Json& unassigned = doc["unassigned"];
  std::cout << "unassigned " << unassigned["queued"] << " queued for any agent of their service";
  if (unassigned["queued"].get<std::int64_t>() > 0)
    std::cout << " (oldest " << age_text(unassigned["oldest_queued_age_ms"]) << ")";
  std::cout << "\n";
  const Json& held = doc["held_by_operator"];
  std::cout << "held       " << held["webhooks"] << " held by an operator";
  if (held["webhooks"].get<std::int64_t>() > 0)
    std::cout << " (oldest received " << age_text(held["oldest_received_age_ms"])
              << " ago; iarelay list --state held, iarelay release ID)";
  std::cout << "\n";
  const Json& unconfigured = doc["unconfigured"];
  if (unconfigured.is_object() && unconfigured["queued"].get<std::int64_t>() > 0) {
    std::string ids;
    for (const auto& id : unconfigured["agents"])
      ids += (ids.empty() ? "" : ", ") + cell_text(id, "");
    std::cout << "NOT CONFIGURED " << unconfigured["queued"]
              << " queued for agents the configuration does not have (" << ids
              << "): they wait for them; iarelay move --from ID --to ID moves them\n";
  }
  std::cout << "\n";

  RowWriter agents(std::cout, Format::kTable,
                   {"agent", "handle", "configured", "state", "since", "until", "queued",
                    "inflight", "oldest", "delivered_1h", "failed_1h", "retried_1h", "reason"});
  for (const auto& a : doc["agents"])
    agents.row({a["id"], a["handle"],
                a["configured"].get<bool>() ? "yes"
                : unconfigured.is_null()    ? "?"
                                            : "NO",
                a["state"], a["state_since"], a["paused_until"], a["queued"], a["inflight"],
                age_text(a["oldest_queued_age_ms"]), a["delivered_last_hour"],
                a["failed_last_hour"], a["retried_last_hour"],
                // Why it is down or paused (the last failure, the operator's --reason); an up
                // agent's old reason ("pause ended") is history, not a state.
                a["state"] == "up" ? Json(nullptr) : a["reason"]});
  if (agents.rows() == 0)
    std::cout << "(no agents configured or known to the journal)\n";
  else
    agents.finish();
  if (postgresql) print_leases(doc["leases"]);

  if (!doc["upstream"].empty()) {
    std::cout << "\n";
    RowWriter up(std::cout, Format::kTable, {"upstream", "seq", "updated_at"});
    for (const auto& u : doc["upstream"]) up.row({u["name"], u["seq"], u["updated_at"]});
    up.finish();
  }
  const Json& feed = doc["feed"];
  if (!feed["consumers"].empty()) {
    std::cout << "\nfeed max seq " << feed["max_seq"] << "\n";
    RowWriter consumers(std::cout, Format::kTable, {"consumer", "acked_seq", "lag", "acked_at"});
    for (const auto& c : feed["consumers"])
      consumers.row({c["name"], c["acked_seq"], c["lag"], c["acked_at"]});
    consumers.finish();
  }
}

}  // namespace

int cmd_status(Context& ctx) {
  po::options_description options;
  add_format_option(options, "table", "table|json");
  po::variables_map vm;
  if (auto code = parse_args(ctx, kHelp, options, {}, vm)) return *code;
  auto format = format_from(vm, "table|json");
  if (!format) return usage_error(ctx, format.status().message());
  auto text = status_document(ctx);
  if (!text) return fail(ctx, text.status().message());
  Json doc = Json::parse(*text);
  if (*format == Format::kJson)
    std::cout << doc.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  else
    print_tables(doc);
  return kExitOk;
}

}  // namespace iarelay::cli
