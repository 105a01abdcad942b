#pragma once
// A thin RAII wrapper over SQLite's C API. Every failure becomes a data::Error whose message
// names the database file and SQLite's own reason. sqlite3.h stays out of this header.
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace eesched::data {

namespace sql {

enum class OpenMode { ReadOnly, ReadWrite, Create };  // Create: read-write, creating the file

class Statement;

class Database {
 public:
  explicit Database(const std::string& path, OpenMode mode = OpenMode::Create);
  ~Database();
  Database(Database&& other) noexcept;
  Database& operator=(Database&& other) noexcept;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // How long a statement waits for another connection's lock before failing with "busy".
  void set_busy_timeout(std::chrono::milliseconds timeout);
  // Switches the file to write-ahead logging (persistent): readers never block the writer.
  // Retries for up to the busy timeout while another connection holds the file.
  void enable_wal();
  // Runs one or more statements that return no rows.
  void exec(std::string_view sql);
  // One statement. Prepared statements are cached by their SQL text: a Statement hands its
  // compiled form back (reset, bindings cleared) when it goes away, so a hot query is parsed once.
  Statement prepare(std::string_view sql);

  int64_t last_insert_rowid() const;
  int changes() const;  // rows changed by the last INSERT/UPDATE/DELETE
  const std::string& path() const { return path_; }
  sqlite3* handle() const { return db_; }

  // Throws data::Error "PATH: WHAT: sqlite3_errmsg".
  [[noreturn]] void fail(std::string_view what) const;

 private:
  friend class Statement;
  void finalize_cache();
  sqlite3* db_ = nullptr;
  std::string path_;
  std::chrono::milliseconds busy_timeout_{0};
  mutable std::unordered_multimap<std::string, sqlite3_stmt*> cache_;  // idle compiled statements by SQL
};

// A prepared statement. Bind indexes are 1-based, column indexes 0-based (as in SQLite).
class Statement {
 public:
  Statement(const Database& db, std::string_view sql);
  ~Statement();
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind_int64(int index, int64_t value);
  Statement& bind_double(int index, double value);
  Statement& bind_text(int index, std::string_view value);
  Statement& bind_blob(int index, std::span<const uint8_t> value);
  Statement& bind_null(int index);

  bool step();  // true: a row is ready to read; false: done
  void run();   // steps a statement that returns no rows to completion

  bool column_is_null(int col) const;
  int64_t column_int64(int col) const;
  double column_double(int col) const;
  std::string column_text(int col) const;
  std::vector<uint8_t> column_blob(int col) const;

  // Ready to run again with new bindings (clears the old ones).
  void reset();

 private:
  static void release(const Database* db, sqlite3_stmt* stmt, std::string& sql);
  const Database* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  std::string sql_;  // the cache key
};

// BEGIN IMMEDIATE: takes the write lock up front (waiting up to the busy timeout), so two
// writers never deadlock upgrading read locks. Rolls back in the destructor unless committed.
class Transaction {
 public:
  explicit Transaction(Database& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  void commit();

 private:
  Database& db_;
  bool done_ = false;
};

}  // namespace sql
}  // namespace eesched::data
