#include "data/sqlite.h"

#include <sqlite3.h>

#include <cstdio>
#include <ctime>
#include <thread>
#include <utility>

#include "data/error.h"

namespace eesched::data {

namespace sql {
namespace {

// SQL text shortened to one line for error messages.
std::string snippet(std::string_view sql) {
  std::string out;
  for (char c : sql) {
    if (out.size() >= 60) {
      out += "...";
      break;
    }
    const bool space = c == '\n' || c == '\t' || c == '\r' || c == ' ';
    if (space && (out.empty() || out.back() == ' ')) continue;
    out += space ? ' ' : c;
  }
  return out;
}

}  // namespace

Database::Database(const std::string& path, OpenMode mode) : path_(path) {
  int flags = SQLITE_OPEN_NOMUTEX;  // one connection per thread; no need for SQLite's mutex
  switch (mode) {
    case OpenMode::ReadOnly: flags |= SQLITE_OPEN_READONLY; break;
    case OpenMode::ReadWrite: flags |= SQLITE_OPEN_READWRITE; break;
    case OpenMode::Create: flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE; break;
  }
  const int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    // db_ may be null (out of memory) or hold the reason; either way it must be closed.
    const std::string reason = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(path + ": cannot open database: " + reason);
  }
  sqlite3_extended_result_codes(db_, 1);
}

Database::~Database() {
  // Live statements are finalized by their owners; close_v2 defers if one is still alive.
  finalize_cache();
  if (db_) sqlite3_close_v2(db_);
}

void Database::finalize_cache() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  cache_.clear();
}

Database::Database(Database&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), path_(std::move(other.path_)), cache_(std::move(other.cache_)) {
  other.cache_.clear();
}

Database& Database::operator=(Database&& other) noexcept {
  if (this != &other) {
    finalize_cache();
    if (db_) sqlite3_close_v2(db_);
    db_ = std::exchange(other.db_, nullptr);
    path_ = std::move(other.path_);
    cache_ = std::move(other.cache_);
    other.cache_.clear();
  }
  return *this;
}

void Database::set_busy_timeout(std::chrono::milliseconds timeout) {
  if (sqlite3_busy_timeout(db_, static_cast<int>(timeout.count())) != SQLITE_OK) fail("busy_timeout");
  busy_timeout_ = timeout;
}

void Database::enable_wal() {
  // Switching to WAL needs the file to itself, and SQLite does not call the busy handler for
  // that lock (two processes creating one store at once): retry here, within the busy timeout.
  const auto deadline = std::chrono::steady_clock::now() + busy_timeout_;
  for (;;) {
    try {
      Statement st(*this, "PRAGMA journal_mode=WAL");
      if (!st.step() || st.column_text(0) != "wal")
        throw Error(path_ + ": cannot switch to WAL journaling (is the file on a network file system?)");
      return;
    } catch (const Error&) {
      const int code = sqlite3_errcode(db_) & 0xff;
      if ((code != SQLITE_BUSY && code != SQLITE_LOCKED) || std::chrono::steady_clock::now() >= deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
}

void Database::exec(std::string_view sql) {
  const std::string text(sql);
  char* message = nullptr;
  if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string reason = message ? message : sqlite3_errmsg(db_);
    sqlite3_free(message);
    throw Error(path_ + ": " + snippet(sql) + ": " + reason);
  }
}

Statement Database::prepare(std::string_view sql) { return Statement(*this, sql); }

int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

int Database::changes() const { return sqlite3_changes(db_); }

void Database::fail(std::string_view what) const { throw Error(path_ + ": " + std::string(what) + ": " + sqlite3_errmsg(db_)); }

Statement::Statement(const Database& db, std::string_view sql) : db_(&db), sql_(sql) {
  const auto cached = db.cache_.find(sql_);
  if (cached != db.cache_.end()) {
    stmt_ = cached->second;
    db.cache_.erase(cached);
    return;
  }
  const char* tail = nullptr;
  if (sqlite3_prepare_v2(db.handle(), sql.data(), static_cast<int>(sql.size()), &stmt_, &tail) != SQLITE_OK)
    db.fail(snippet(sql));
  if (!stmt_) throw Error(db.path() + ": empty SQL statement");
}

// Back to the cache, ready for the next user: a statement left mid-step would hold a read
// snapshot open and keep WAL checkpoints from completing.
void Statement::release(const Database* db, sqlite3_stmt* stmt, std::string& sql) {
  if (!stmt) return;
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  if (db && db->handle()) {
    db->cache_.emplace(std::move(sql), stmt);
  } else {
    sqlite3_finalize(stmt);
  }
}

Statement::~Statement() { release(db_, stmt_, sql_); }

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), sql_(std::move(other.sql_)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    release(db_, stmt_, sql_);
    db_ = other.db_;
    stmt_ = std::exchange(other.stmt_, nullptr);
    sql_ = std::move(other.sql_);
  }
  return *this;
}

Statement& Statement::bind_int64(int index, int64_t value) {
  if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK) db_->fail("bind " + snippet(sqlite3_sql(stmt_)));
  return *this;
}

Statement& Statement::bind_double(int index, double value) {
  if (sqlite3_bind_double(stmt_, index, value) != SQLITE_OK) db_->fail("bind " + snippet(sqlite3_sql(stmt_)));
  return *this;
}

Statement& Statement::bind_text(int index, std::string_view value) {
  if (sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8) != SQLITE_OK)
    db_->fail("bind " + snippet(sqlite3_sql(stmt_)));
  return *this;
}

Statement& Statement::bind_blob(int index, std::span<const uint8_t> value) {
  // A null data pointer would bind NULL; an empty blob must stay a (zero-length) blob.
  static const uint8_t empty = 0;
  const void* data = value.empty() ? &empty : value.data();
  if (sqlite3_bind_blob64(stmt_, index, data, value.size(), SQLITE_TRANSIENT) != SQLITE_OK)
    db_->fail("bind " + snippet(sqlite3_sql(stmt_)));
  return *this;
}

Statement& Statement::bind_null(int index) {
  if (sqlite3_bind_null(stmt_, index) != SQLITE_OK) db_->fail("bind " + snippet(sqlite3_sql(stmt_)));
  return *this;
}

bool Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  // Reset so the statement releases its locks before the exception unwinds.
  const std::string reason = sqlite3_errmsg(db_->handle());
  const std::string sql = snippet(sqlite3_sql(stmt_));
  sqlite3_reset(stmt_);
  throw Error(db_->path() + ": " + sql + ": " + reason);
}

void Statement::run() {
  while (step()) {
  }
}

bool Statement::column_is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

int64_t Statement::column_int64(int col) const { return sqlite3_column_int64(stmt_, col); }

double Statement::column_double(int col) const { return sqlite3_column_double(stmt_, col); }

std::string Statement::column_text(int col) const {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  const int n = sqlite3_column_bytes(stmt_, col);  // after column_text, so it counts the UTF-8 bytes
  return text ? std::string(text, static_cast<size_t>(n)) : std::string();
}

std::vector<uint8_t> Statement::column_blob(int col) const {
  const auto* data = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_, col));
  const int n = sqlite3_column_bytes(stmt_, col);
  return data ? std::vector<uint8_t>(data, data + n) : std::vector<uint8_t>();
}

void Statement::reset() {
  sqlite3_reset(stmt_);  // its return code repeats the last step's error, already reported
  sqlite3_clear_bindings(stmt_);
}

Transaction::Transaction(Database& db) : db_(db) { db_.prepare("BEGIN IMMEDIATE").run(); }

Transaction::~Transaction() {
  if (done_) return;
  // Never throws from a destructor: a failed rollback leaves SQLite to roll back on close.
  sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
  db_.prepare("COMMIT").run();
  done_ = true;
}

}  // namespace sql
}  // namespace eesched::data
