#include "data/retention.h"

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include "data/error.h"
#include "data/store.h"
#include "data/time.h"

namespace eesched::data {

Retention parse_retention(const std::string& text) {
  if (text == "all") return Retention::all();
  if (text == "none") return Retention::none();
  const auto bad = [&] {
    return Error("'" + text + "' is not a retention: give none, all, or a whole number of days from 1 to 36500");
  };
  if (text.empty() || text.size() > 5 || text.find_first_not_of("0123456789") != std::string::npos) throw bad();
  const int64_t days = std::stoll(text);
  if (days < 1 || days > 36500) throw bad();
  return Retention::for_days(days);
}

std::string retention_name(const Retention& r) {
  switch (r.mode) {
    case Retention::Mode::All: return "all";
    case Retention::Mode::None: return "none";
    case Retention::Mode::Days: return std::to_string(r.days) + (r.days == 1 ? " day" : " days");
  }
  return "all";
}

std::optional<std::string> retention_cutoff(const Retention& r, std::chrono::system_clock::time_point now) {
  if (r.mode != Retention::Mode::Days) return std::nullopt;
  return iso_utc(now - std::chrono::hours(24) * r.days);
}

struct IdPurger::Impl {
  Store store;
  Retention retention;
  std::chrono::milliseconds every;
  Report report;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  int64_t purged = 0;
  std::thread thread;

  Impl(const std::filesystem::path& db, Retention r, std::chrono::milliseconds e, Report rep)
      : store(Store::open(db)), retention(r), every(e), report(std::move(rep)) {
    store.set_retention(retention);
  }

  void say(const std::string& message, bool error) const {
    if (report) report(message, error);
  }

  // One round: ended tasks' ids (all of them with `none`, the ones past the cutoff with N days),
  // then the write-ahead log truncated so the pages that held them are not left in it.
  void round() {
    try {
      const int64_t n = store.purge_ids(retention_cutoff(retention, std::chrono::system_clock::now()));
      const bool truncated = store.truncate_wal();
      std::lock_guard lock(mu);
      purged += n;
      if (n > 0)
        say("retention " + retention_name(retention) + ": wiped the encrypted ids of " + std::to_string(n) + " ended task(s) in " +
                store.path() + (truncated ? "" : " (its write-ahead log is still in use: truncated on a later round)"),
            false);
    } catch (const std::exception& e) {
      say("retention " + retention_name(retention) + ": purging ids in " + store.path() + " failed: " + e.what(), true);
    }
  }

  void loop() {
    std::unique_lock lock(mu);
    while (!stopping) {
      if (cv.wait_for(lock, every, [this] { return stopping; })) return;
      lock.unlock();
      round();
      lock.lock();
    }
  }
};

IdPurger::IdPurger(const std::filesystem::path& db, Retention retention, std::chrono::milliseconds every, Report report) {
  if (retention.keeps_forever()) throw Error("IdPurger: retention 'all' purges nothing");
  if (every.count() <= 0) throw Error("IdPurger: the purge period must be positive");
  impl_ = std::make_unique<Impl>(db, retention, every, std::move(report));
  impl_->round();  // before serving: a store written under another policy is brought in line
  impl_->thread = std::thread([this] { impl_->loop(); });
}

IdPurger::~IdPurger() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int64_t IdPurger::purged() const {
  std::lock_guard lock(impl_->mu);
  return impl_->purged;
}

}  // namespace eesched::data
