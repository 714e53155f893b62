// Placeholder: the intake issue replaces this with the upstream poller.
#include "intake/poller.h"

namespace iarelay {
Result<std::unique_ptr<Poller>> Poller::start(PollerContext) {
  return Status::unavailable("poller not implemented yet");
}
}  // namespace iarelay
