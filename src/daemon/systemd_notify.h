// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET. No-op when not under systemd.
#pragma once

#include <cstdint>
#include <string>

namespace iarelay {

// Sends e.g. "READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=...". Returns false if not sent.
bool sd_notify(const std::string& state);
// The watchdog interval systemd asked for ($WATCHDOG_USEC for this pid), 0 if none.
std::int64_t watchdog_interval_ms();

}  // namespace iarelay
