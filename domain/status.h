#pragma once
// Errors are values at layer boundaries: every fallible public function returns a Status or
// a Result<T>. No exceptions on the request path.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace keyledger {

// One broken field of a request (`details` of a 422 answer).
struct FieldError {
  std::string field;
  std::string message;
};

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk,
    kInvalidArgument,  // field rules broken; details() lists every broken field
    kNotFound,         // the agent, key or token does not exist
    kConflict,         // the state forbids the command (reason() says which)
    kVersionConflict,  // optimistic concurrency: the stream moved on
    kIoError,          // storage failed
    kCorruption,       // stored data cannot be read back
    kUnavailable,      // a dependency is not there (lock held, broker down)
  };

  Status() = default;
  static Status Ok() { return {}; }
  static Status InvalidArgument(std::string msg, std::vector<FieldError> details = {}) {
    return {Code::kInvalidArgument, "validation_failed", std::move(msg), std::move(details)};
  }
  // `reason` is the contract's error code, e.g. "key_not_found".
  static Status NotFound(std::string reason, std::string msg) {
    return {Code::kNotFound, std::move(reason), std::move(msg), {}};
  }
  static Status Conflict(std::string reason, std::string msg) {
    return {Code::kConflict, std::move(reason), std::move(msg), {}};
  }
  static Status VersionConflict(std::string msg) {
    return {Code::kVersionConflict, "version_conflict", std::move(msg), {}};
  }
  static Status IoError(std::string msg) { return {Code::kIoError, "io_error", std::move(msg), {}}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, "corruption", std::move(msg), {}}; }
  static Status Unavailable(std::string msg) {
    return {Code::kUnavailable, "unavailable", std::move(msg), {}};
  }
  // `reason` is the contract's error code, e.g. "webhooks_external".
  static Status Unavailable(std::string reason, std::string msg) {
    return {Code::kUnavailable, std::move(reason), std::move(msg), {}};
  }

  bool ok() const { return code_ == Code::kOk; }
  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsConflict() const { return code_ == Code::kConflict; }
  bool IsVersionConflict() const { return code_ == Code::kVersionConflict; }
  bool IsIoError() const { return code_ == Code::kIoError; }
  bool IsUnavailable() const { return code_ == Code::kUnavailable; }

  Code code() const { return code_; }
  const std::string& reason() const { return reason_; }
  const std::string& message() const { return message_; }
  const std::vector<FieldError>& details() const { return details_; }
  std::string ToString() const { return ok() ? "OK" : reason_ + ": " + message_; }
  // The same status with "context: " before its message (Ok stays Ok).
  Status Annotate(std::string_view context) const {
    return ok() ? *this : Status(code_, reason_, std::string(context) + ": " + message_, details_);
  }

 private:
  Status(Code code, std::string reason, std::string msg, std::vector<FieldError> details)
      : code_(code), reason_(std::move(reason)), message_(std::move(msg)), details_(std::move(details)) {}

  Code code_ = Code::kOk;
  std::string reason_;
  std::string message_;
  std::vector<FieldError> details_;
};

// A value or the Status explaining why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT: implicit by design

  bool ok() const { return value_.has_value(); }
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

}  // namespace keyledger
