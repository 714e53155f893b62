// The dispatcher over a journal in a temp dir, wired as the daemon wires it (src/daemon/relay.cpp):
// the base of each dispatch test file's Relay, which adds the helpers its tests need.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "dispatch/dispatcher.h"
#include "journal/journal.h"
#include "journal/routing.h"
#include "journal/store.h"
#include "journal/writer.h"
#include "support/temp_dir.h"

namespace iarelay::testing {

class DispatchRelay {
 public:
  explicit DispatchRelay(const TempDir& dir) : path_(dir.file("journal.db")) {
    auto w = Writer::open(path_, SyncLevel::kNormal);
    EXPECT_TRUE(w) << w.status().message();
    writer_ = std::move(*w);
    auto r = open_journal_for_read(path_);
    EXPECT_TRUE(r);
    reader_ = std::move(*r);
  }
  // As Relay::stop does: the writer goes before the dispatcher, directory and metrics that its
  // threads still use (the commit listener, the dispatcher's outcome callbacks), so none of
  // them runs into a destroyed one (ThreadSanitizer saw the listener read `dispatcher_` while
  // it was deleted; a SEGFAULT was seen once in some 300 runs).
  ~DispatchRelay() {
    if (dispatcher_) dispatcher_->stop(2'000);
    writer_.reset();
  }
  DispatchRelay(const DispatchRelay&) = delete;
  DispatchRelay& operator=(const DispatchRelay&) = delete;

  void start(std::vector<AgentConfig> agents, std::vector<ServiceConfig> services = {}) {
    directory_ = std::make_unique<AgentDirectory>(std::move(agents), std::move(services));
    // As the daemon does: availability from the agents table before the dispatcher starts.
    for (const auto& row : load_agents(*reader_)) {
      if (row.state == "paused") directory_->set_availability(row.id, Availability::kPaused);
      if (row.state == "down") directory_->set_availability(row.id, Availability::kDown);
    }
    DispatcherContext ctx;
    ctx.writer = writer_.get();
    ctx.directory = directory_.get();
    ctx.metrics = &metrics_;
    ctx.journal_path = path_;
    auto d = Dispatcher::start(ctx);
    ASSERT_TRUE(d) << d.status().message();
    dispatcher_ = std::move(*d);
    writer_->set_commit_listener([this](bool appends_only) {
      if (dispatcher_) dispatcher_->wake(appends_only);
    });
  }
  // As a SIGHUP does once the new configuration is accepted: the directory takes the new
  // agents, the dispatcher is told.
  void reload(std::vector<AgentConfig> agents) {
    directory_->reconfigure(std::move(agents), {});
    dispatcher_->reconfigured();
  }
  Status write(Writer::Op op) { return writer_->run(std::move(op)); }

 protected:
  std::string path_;
  std::unique_ptr<Writer> writer_;
  DatabasePtr reader_;
  std::unique_ptr<AgentDirectory> directory_;
  Metrics metrics_;
  std::unique_ptr<Dispatcher> dispatcher_;
};

}  // namespace iarelay::testing
