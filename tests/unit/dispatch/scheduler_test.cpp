// Ordering keys and the key scheduler: what an agent may be sent next from its queue.
#include "dispatch/scheduler.h"

#include <gtest/gtest.h>

#include <vector>

namespace iarelay {
namespace {

constexpr Millis kNow = 1'000'000;

QueuedWebhook row(std::int64_t seq, std::string event, std::optional<Millis> next = std::nullopt) {
  QueuedWebhook w;
  w.seq = seq;
  w.id = "W" + std::to_string(seq);
  w.event_id = std::move(event);
  w.next_attempt_at = next;
  return w;
}

std::vector<std::int64_t> pick(Ordering o, const std::vector<QueuedWebhook>& rows,
                               const std::unordered_set<std::string>& busy = {},
                               std::size_t max = 100) {
  KeyScheduler ks(o, kNow, busy, max);
  std::vector<std::int64_t> out;
  for (const auto& r : rows)
    if (ks.offer(r)) out.push_back(r.seq);
  return out;
}

TEST(OrderingKey, EventKeyIsTheEventIdOrTheWebhookId) {
  EXPECT_EQ(ordering_key(Ordering::kEvent, row(1, "4412901")), "ev:4412901");
  EXPECT_EQ(ordering_key(Ordering::kEvent, row(2, "")), "id:W2");
  EXPECT_EQ(ordering_key(Ordering::kFifo, row(3, "x")), "");
  EXPECT_EQ(ordering_key(Ordering::kNone, row(4, "x")), "W4");
}

TEST(KeyScheduler, EventOrderingSendsOneWebhookPerAlertAtATime) {
  std::vector<QueuedWebhook> rows = {row(1, "a"), row(2, "b"), row(3, "a"),
                                     row(4, "c"), row(5, "b"), row(6, "")};
  EXPECT_EQ(pick(Ordering::kEvent, rows), (std::vector<std::int64_t>{1, 2, 4, 6}));
}

TEST(KeyScheduler, BusyKeyBlocksLaterWebhooksOfThatAlert) {
  std::vector<QueuedWebhook> rows = {row(5, "a"), row(6, "b"), row(7, "a")};
  EXPECT_EQ(pick(Ordering::kEvent, rows, {"ev:a"}), (std::vector<std::int64_t>{6}));
}

TEST(KeyScheduler, NotYetDueWebhookBlocksItsAlertButNotOthers) {
  std::vector<QueuedWebhook> rows = {row(1, "a", kNow + 5'000), row(2, "a"), row(3, "b"),
                                     row(4, "c", kNow - 1)};
  std::unordered_set<std::string> busy;  // outlives the scheduler, which keeps a reference
  KeyScheduler ks(Ordering::kEvent, kNow, busy, 100);
  std::vector<std::int64_t> out;
  for (const auto& r : rows)
    if (ks.offer(r)) out.push_back(r.seq);
  EXPECT_EQ(out, (std::vector<std::int64_t>{3, 4}));
  EXPECT_EQ(ks.earliest_not_due(), kNow + 5'000);
}

TEST(KeyScheduler, IgnoreDueLetsAProbeTakeTheHead) {
  std::unordered_set<std::string> busy;
  KeyScheduler ks(Ordering::kEvent, kNow, busy, 1);
  EXPECT_TRUE(ks.offer(row(1, "a", kNow + 60'000), false, /*ignore_due=*/true));
  EXPECT_TRUE(ks.saturated());
  EXPECT_FALSE(ks.offer(row(2, "b")));
}

TEST(KeyScheduler, FifoIsOneSequence) {
  std::vector<QueuedWebhook> rows = {row(1, "a"), row(2, "b"), row(3, "c")};
  EXPECT_EQ(pick(Ordering::kFifo, rows), (std::vector<std::int64_t>{1}));
  EXPECT_TRUE(pick(Ordering::kFifo, rows, {""}).empty());
  // A head not yet due holds everything behind it.
  std::vector<QueuedWebhook> later = {row(1, "a", kNow + 1), row(2, "b")};
  EXPECT_TRUE(pick(Ordering::kFifo, later).empty());
}

TEST(KeyScheduler, NoneOrderingTakesEveryDueWebhookUpToTheLimit) {
  std::vector<QueuedWebhook> rows = {row(1, "a"), row(2, "a", kNow + 9), row(3, "a"), row(4, "a")};
  EXPECT_EQ(pick(Ordering::kNone, rows), (std::vector<std::int64_t>{1, 3, 4}));
  EXPECT_EQ(pick(Ordering::kNone, rows, {}, 2), (std::vector<std::int64_t>{1, 3}));
}

TEST(KeyScheduler, RowAlreadyInHandBlocksItsKey) {
  std::unordered_set<std::string> busy;
  KeyScheduler ks(Ordering::kNone, kNow, busy, 10);
  EXPECT_FALSE(ks.offer(row(1, "a"), /*in_hand=*/true));
  EXPECT_TRUE(ks.offer(row(2, "a")));
  KeyScheduler ev(Ordering::kEvent, kNow, busy, 10);
  EXPECT_FALSE(ev.offer(row(1, "a"), /*in_hand=*/true));
  EXPECT_FALSE(ev.offer(row(2, "a")));
  EXPECT_TRUE(ev.offer(row(3, "b")));
}

// A walk that skipped part of the queue asks, before picking, whether an earlier webhook of the
// row's key is still queued; if so the row and its key wait.
TEST(KeyScheduler, CheckEarlierPassesOverARowWithAnEarlierQueuedWebhook) {
  std::unordered_set<std::string> busy;
  KeyScheduler ks(Ordering::kEvent, kNow, busy, 10);
  std::vector<std::int64_t> asked;
  ks.check_earlier([&](const QueuedWebhook& w) {
    asked.push_back(w.seq);
    return w.event_id == "held-back";
  });
  EXPECT_FALSE(ks.offer(row(5000, "held-back")));
  EXPECT_FALSE(ks.offer(row(5001, "held-back")));  // its key is blocked now: not asked again
  EXPECT_TRUE(ks.offer(row(5002, "free")));
  EXPECT_FALSE(ks.offer(row(5003, "later", kNow + 1)));  // not due: not asked
  EXPECT_EQ(asked, (std::vector<std::int64_t>{5000, 5002}));
}

}  // namespace
}  // namespace iarelay
