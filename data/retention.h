#pragma once
// How long a store keeps the encrypted token ids of tasks (prompt, stop and answer ids): the
// operator's `--retain-ids none|N|all` on the coordinator and the worker (docs/ee.md, "Keys and
// retention"). The ids are encrypted, but a store that keeps them forever keeps every prompt and
// answer a key leak would open; lengths, timings and features stay whatever the policy.
//
//   all   keep them forever (the default; what earlier versions did);
//   none  keep them only while a task is unfinished (a coordinator re-dispatches accepted tasks
//         after a restart from them); a finished, failed or cancelled task's are wiped as it ends;
//   N     keep them N days (1..36500) after the task ended: a purge at startup and every hour.
//
// Wiped ids read back as empty lists. A store whose retention is not `all` also runs with SQLite's
// secure_delete, so a wiped row's bytes are zeroed in the file rather than left in free space,
// and its write-ahead log is truncated after each purge (IdPurger).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace eesched::data {

struct Retention {
  enum class Mode { All, None, Days };
  Mode mode = Mode::All;
  int64_t days = 0;  // Days only

  static Retention all() { return {}; }
  static Retention none() { return {Mode::None, 0}; }
  static Retention for_days(int64_t d) { return {Mode::Days, d}; }
  bool keeps_forever() const { return mode == Mode::All; }
  bool operator==(const Retention&) const = default;
};

// "all", "none" or a whole number of days 1..36500; throws data::Error with a one-line reason.
Retention parse_retention(const std::string& text);
std::string retention_name(const Retention& r);  // "all", "none", "7 days"

// The cutoff of a Days policy at `now`: ids of tasks that ended before it go (ISO-8601 UTC, as
// the store's timestamps); nullopt for None (every ended task) and All (never called).
std::optional<std::string> retention_cutoff(const Retention& r, std::chrono::system_clock::time_point now);

// Applies a retention policy to a store file on a thread of its own, over a connection of its
// own (the owner's connection and its lock stay free): purges the ids of ended tasks once at
// construction (a store written under another policy is brought in line before serving), then
// every `every` (kPurgeEvery for N days; kNoneRoundEvery for `none`, whose ended tasks are wiped
// as they end, so its rounds mostly truncate the write-ahead log: pages that held ids do not
// linger in the -wal file). `report` (any thread) hears each round that wiped something and each
// failure; it may be empty.
inline constexpr std::chrono::milliseconds kPurgeEvery = std::chrono::hours(1);
inline constexpr std::chrono::milliseconds kNoneRoundEvery = std::chrono::minutes(1);
// The period a daemon gives its purger for this policy.
inline std::chrono::milliseconds purge_period(const Retention& r) {
  return r.mode == Retention::Mode::None ? kNoneRoundEvery : kPurgeEvery;
}

class IdPurger {
 public:
  using Report = std::function<void(const std::string& message, bool error)>;
  IdPurger(const std::filesystem::path& db, Retention retention, std::chrono::milliseconds every = std::chrono::hours(1),
           Report report = nullptr);
  ~IdPurger();  // stops the thread (waits for a purge in progress)
  IdPurger(const IdPurger&) = delete;
  IdPurger& operator=(const IdPurger&) = delete;

  int64_t purged() const;  // rows wiped so far, the startup purge included

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eesched::data
