// Placeholder: the dispatch issue replaces this with the libcurl multi dispatcher.
#include "dispatch/dispatcher.h"

namespace iarelay {
Result<std::unique_ptr<Dispatcher>> Dispatcher::start(DispatcherContext) {
  return Status::unavailable("dispatcher not implemented yet");
}
}  // namespace iarelay
