// PgNotifier: LISTEN on a connection of its own, poll() on its socket and an eventfd.
#include "journal/pg/pg_notifier.h"

#include <libpq-fe.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/time.h"
#include "journal/pg/pg_journal.h"

namespace iarelay {
namespace {
constexpr int kReconnectAfterMs = 1000;
}  // namespace

Result<std::unique_ptr<PgNotifier>> PgNotifier::start(std::string conninfo,
                                                      std::function<void()> heard) {
  std::unique_ptr<PgNotifier> n(new PgNotifier(std::move(conninfo), std::move(heard)));
  if (n->wake_fd_ < 0) return Status::io_error("notifications: eventfd failed");
  if (Status s = n->connect(); !s)
    spdlog::warn("notifications: {} (trying again every second; relays still poll)", s.message());
  n->thread_ = std::thread([p = n.get()] { p->run(); });
  return n;
}

PgNotifier::PgNotifier(std::string conninfo, std::function<void()> heard)
    : conninfo_(std::move(conninfo)),
      heard_(std::move(heard)),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

PgNotifier::~PgNotifier() {
  stopping_ = true;
  const std::uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void PgNotifier::announce() {
  if (announce_.exchange(true)) return;  // one is due already: it covers this one
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

Status PgNotifier::connect() {
  ++connects_;
  auto db = PgConnection::connect(conninfo_);
  if (!db) return db.status();
  if (Status s = (*db)->exec(std::string("LISTEN ") + kChannel); !s) return s;
  db_ = std::move(*db);
  return Status::ok();
}

bool PgNotifier::take_notifications() {
  PGconn* conn = db_->handle();
  if (PQconsumeInput(conn) != 1) return false;
  const int self = PQbackendPID(conn);
  bool others = false;
  while (PGnotify* n = PQnotifies(conn)) {
    others = others || n->be_pid != self;  // a session's own NOTIFY comes back to it
    PQfreemem(n);
  }
  if (others) {
    ++heard_count_;
    if (heard_) heard_();
  }
  return true;
}

void PgNotifier::run() {
  while (!stopping_) {
    if (!db_) {
      // A second between attempts, whatever is announced meanwhile (the announcement waits:
      // it is sent once connected).
      const Millis until = steady_millis() + kReconnectAfterMs;
      for (Millis left = kReconnectAfterMs; left > 0 && !stopping_;
           left = until - steady_millis()) {
        pollfd wake{wake_fd_, POLLIN, 0};
        if (::poll(&wake, 1, static_cast<int>(left)) > 0) {
          std::uint64_t count;
          (void)!::read(wake_fd_, &count, sizeof count);
        }
      }
      if (stopping_) return;
      if (Status s = connect(); !s) {
        spdlog::debug("notifications: {} (relays still poll)", s.message());
        continue;
      }
      spdlog::info("notifications: listening again");
      if (announce_) {  // announced while it could not: sent now
        const std::uint64_t one = 1;
        (void)!::write(wake_fd_, &one, sizeof one);
      }
    }
    pollfd fds[2] = {{PQsocket(db_->handle()), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;  // EINTR
    if (fds[1].revents & POLLIN) {
      std::uint64_t count;
      (void)!::read(wake_fd_, &count, sizeof count);
      if (stopping_) return;
      if (announce_.exchange(false)) {
        if (Status s = db_->exec(std::string("NOTIFY ") + kChannel); !s) {
          spdlog::warn("notifications: {} (relays still poll)", s.message());
          db_.reset();
          continue;
        }
        ++sent_;
      }
    }
    // Readable, or after a NOTIFY (whose round trip may have read others' notifications).
    if (!take_notifications()) {
      spdlog::warn("notifications: connection lost (relays still poll)");
      db_.reset();
    }
  }
}

}  // namespace iarelay
