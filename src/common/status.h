// The one error currency across module boundaries: Status and Result<T>.
// A Status is ok or carries a kind (what the caller should do next) and a one-line message.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace iarelay {

enum class StatusKind {
  kOk,
  kInvalidArgument,  // the caller's input is wrong; retrying the same input fails again
  kNotFound,         // the named thing does not exist
  kUnavailable,      // a transient condition (journal busy, peer down); retry later
  kCorruption,       // stored data is not what it should be (checksum, integrity)
  kIoError,          // the operating system refused (open, write, fsync)
  kConflict,         // a guarded change lost a race or the precondition no longer holds
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status invalid_argument(std::string m) {
    return {StatusKind::kInvalidArgument, std::move(m)};
  }
  static Status not_found(std::string m) { return {StatusKind::kNotFound, std::move(m)}; }
  static Status unavailable(std::string m) { return {StatusKind::kUnavailable, std::move(m)}; }
  static Status corruption(std::string m) { return {StatusKind::kCorruption, std::move(m)}; }
  static Status io_error(std::string m) { return {StatusKind::kIoError, std::move(m)}; }
  static Status conflict(std::string m) { return {StatusKind::kConflict, std::move(m)}; }

  bool is_ok() const { return kind_ == StatusKind::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusKind kind() const { return kind_; }
  const std::string& message() const { return message_; }

 private:
  Status(StatusKind k, std::string m) : kind_(k), message_(std::move(m)) {}
  StatusKind kind_ = StatusKind::kOk;
  std::string message_;
};

// Result<T> holds a T or a failed Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT: implicit by design

  bool is_ok() const { return value_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace iarelay
