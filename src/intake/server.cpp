// Placeholder: the intake issue replaces this with the cpp-httplib server.
#include "intake/server.h"

namespace iarelay {
Result<std::unique_ptr<Server>> Server::start(ServerContext) {
  return Status::unavailable("HTTP server not implemented yet");
}
}  // namespace iarelay
