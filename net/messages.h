#pragma once
// The messages, typed. Each type's fields are spelled once, in one writer (to_message / to_json)
// and one reader (read_message / from_json) that is also its validation: the reader throws
// ProtocolError(bad_message) naming the field. parse_message decodes each frame once into its
// typed payload, so a malformed message is refused before any handler sees it, and a handler
// never reads JSON.
//
// Token ids in Submit, Assign, Tokens and Result are ENCRYPTED ids: the client encrypts before
// Submit and decrypts Tokens and Result; nothing else ever holds the key.
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/generation.h"
#include "data/hardware.h"
#include "data/rows.h"
#include "data/task.h"
#include "net/protocol.h"

namespace eesched::net {

// Hello (coordinator -> every peer, on connect).
struct Hello {
  std::string nonce;  // hex; a worker's Register proves the token over it
  std::string server;

  bool operator==(const Hello&) const = default;
};

// A model a worker holds (encrypted), as it registers it.
struct ModelInfo {
  data::ModelRow row;           // shape and fingerprint (of the encrypted weights); id unset
  std::string key_fingerprint;  // from the model's ee.json: which key it was encrypted under
  bool draft = false;           // offered as the draft for speculative arms

  bool operator==(const ModelInfo&) const = default;
};

// Register (worker -> coordinator).
struct Register {
  std::string name;                 // the worker's name (data::worker_name by default)
  data::HardwareProfile hardware;
  std::vector<ModelInfo> models;
  bool dry_run = false;             // answers immediately without running a model (bench-dispatch)
  int64_t slots = 1;                // tasks it decodes at once (its continuous batch, `worker --max-batch`)
  std::string nonce;                // the worker's challenge to the coordinator (mutual authentication)
  std::string proof;                // HMAC(token, Hello.nonce, name)

  bool operator==(const Register&) const = default;
};

// Registered (coordinator -> worker).
struct Registered {
  int64_t worker_id = 0;
  std::string proof;                // HMAC(token, Register.nonce, name) under the coordinator label
  int64_t heartbeat_ms = 1000;      // how often the worker should send Heartbeat

  bool operator==(const Registered&) const = default;
};

// Heartbeat (worker -> coordinator, and the coordinator's answer).
struct Heartbeat {
  int64_t queued = 0;  // tasks waiting or running on the worker (answer: tasks the coordinator awaits from it)
  // From a worker: it is draining (takes no new task, leaves once what it holds is done). In the
  // coordinator's answer: it will assign nothing more, so queued 0 means the worker may leave.
  bool draining = false;

  bool operator==(const Heartbeat&) const = default;
};

// What a client asks for (inside Submit; persisted in the task's request).
struct TaskRequest {
  std::string request_id;            // the client's idempotency key: resubmitting it reattaches
  std::string model;                 // model name, as workers register it
  std::string key_fingerprint;       // the client's key; only models encrypted under it qualify
  std::vector<std::vector<int64_t>> prompt_ids;  // encrypted, one list per batch row
  data::GenerationParams generation;  // sampling and limits; its stop ids are encrypted
  data::Quality quality = data::Quality::Exact;
  double max_ppl_ratio = data::kDefaultMaxPplRatio;  // tolerant: the bound on a lossy arm's measured ratio
  std::string arm;                   // optional: pin an arm instead of asking the selector

  bool operator==(const TaskRequest&) const = default;
};

struct Submit {
  TaskRequest task;

  bool operator==(const Submit&) const = default;
};

// Accepted (coordinator -> client): the task is persisted and will be dispatched.
struct Accepted {
  int64_t task_id = 0;
  std::string request_id;

  bool operator==(const Accepted&) const = default;
};

// Assign (coordinator -> worker).
struct Assign {
  int64_t task_id = 0;
  int64_t attempt = 1;
  std::string arm;
  std::string model;
  std::string draft;                 // the worker's draft model for speculative arms, or empty
  // The client's prompt; for a resumed task (resume_from > 0), followed in each row by the first
  // resume_from ids that earlier attempts already streamed to the client.
  std::vector<std::vector<int64_t>> prompt_ids;
  // The client's, unchanged, except that a resumed task's max_new_tokens is what is left of it
  // (the client's minus resume_from).
  data::GenerationParams generation;
  double time_limit_ms = 0;          // 0: none
  // New ids of each row that earlier attempts of the task already produced (and streamed), now at
  // the end of its prompt: this attempt continues the answer after them. A seeded sampler skips
  // as many draws of each row's random stream, so the answer continues as one uninterrupted run's.
  int64_t resume_from = 0;

  bool operator==(const Assign&) const = default;
};

// Tokens (worker -> coordinator while a task runs; relayed by the coordinator to the clients
// waiting for it, with request_id set): a chunk of the new ids of one attempt, per batch row.
// Row r's chunk continues that row's answer at position offsets[r] (how many of its new ids came
// in earlier Tokens of the same attempt); it may be empty. All Tokens of an attempt come before
// its Result, which still carries the whole answer. From a worker, offsets count within its
// attempt; relayed to a client, they are positions in the whole answer (the coordinator adds the
// attempt's Assign.resume_from), so a resumed attempt continues where the stream stopped.
struct Tokens {
  int64_t task_id = 0;
  int64_t attempt = 1;
  std::string request_id;                    // set by the coordinator when relaying to the client
  std::vector<int64_t> offsets;              // per batch row: how many of the row's new tokens came before this chunk
  std::vector<std::vector<int64_t>> tokens;  // per batch row: encrypted new ids of this chunk (may be empty)

  bool operator==(const Tokens&) const = default;
};

// What a run measured (Result, worker -> coordinator, and forwarded to the client).
struct RunReport : data::RunMeasurement {
  std::vector<std::vector<int64_t>> tokens;  // encrypted new ids per batch row

  bool operator==(const RunReport&) const = default;
};

// Result. From a worker: task_id, attempt, report. To a client: also request_id, status,
// the worker and arm that ran it, whether the arm was explored, attempts and the prediction.
struct Result {
  int64_t task_id = 0;
  int64_t attempt = 1;
  RunReport report;
  std::string request_id;
  std::string status;        // "done", "failed", "cancelled" (to clients)
  std::string worker;
  std::string arm;
  bool explored = false;
  int64_t attempts = 0;
  double predicted_ms = 0;
  std::optional<double> ppl_ratio;  // lossy arms: the arm's measured perplexity ratio on the model

  bool operator==(const Result&) const = default;
};

// Cancel (client -> coordinator by task_id or request_id; coordinator -> worker by task_id).
struct Cancel {
  int64_t task_id = 0;
  std::string request_id;

  bool operator==(const Cancel&) const = default;
};

// Error.
struct ErrorMsg {
  std::string code, message;
  std::optional<int64_t> task_id;

  bool operator==(const ErrorMsg&) const = default;
};

// Status (client -> coordinator): which models live workers hold now; answered with a
// StatusReply on the same connection (the gateway's /health asks it).
struct Status {
  bool operator==(const Status&) const = default;
};

// A model as the live workers hold it, under one key.
struct ServedModel {
  std::string name;
  std::string key_fingerprint;  // the key its copies are encrypted under ("" when unknown)
  int64_t workers = 0;          // live workers holding it
  int64_t slots = 0;            // their slots together (tasks decoded at once)

  bool operator==(const ServedModel&) const = default;
};

// StatusReply (coordinator -> client).
struct StatusReply {
  int64_t workers = 0;              // live workers
  int64_t queued = 0;               // tasks waiting for a worker
  std::vector<ServedModel> models;  // targets only, by name then key

  bool operator==(const StatusReply&) const = default;
};

void to_json(nlohmann::json& j, const ModelInfo& m);
void from_json(const nlohmann::json& j, ModelInfo& m);
void to_json(nlohmann::json& j, const TaskRequest& r);
void from_json(const nlohmann::json& j, TaskRequest& r);
void to_json(nlohmann::json& j, const RunReport& r);
void from_json(const nlohmann::json& j, RunReport& r);

// Each message <-> its frame JSON ("type" and "v" included).
nlohmann::json to_message(const Hello& m);
nlohmann::json to_message(const Register& m);
nlohmann::json to_message(const Registered& m);
nlohmann::json to_message(const Heartbeat& m);
nlohmann::json to_message(const Submit& m);
nlohmann::json to_message(const Accepted& m);
nlohmann::json to_message(const Assign& m);
nlohmann::json to_message(const Tokens& m);
nlohmann::json to_message(const Result& m);
nlohmann::json to_message(const Cancel& m);
nlohmann::json to_message(const ErrorMsg& m);
nlohmann::json to_message(const Status& m);
nlohmann::json to_message(const StatusReply& m);

// Typed reads; throw ProtocolError(bad_message) naming the first bad field.
template <class T>
T read_message(const nlohmann::json& j);
template <> Hello read_message<Hello>(const nlohmann::json& j);
template <> Register read_message<Register>(const nlohmann::json& j);
template <> Registered read_message<Registered>(const nlohmann::json& j);
template <> Heartbeat read_message<Heartbeat>(const nlohmann::json& j);
template <> Submit read_message<Submit>(const nlohmann::json& j);
template <> Accepted read_message<Accepted>(const nlohmann::json& j);
template <> Assign read_message<Assign>(const nlohmann::json& j);
template <> Tokens read_message<Tokens>(const nlohmann::json& j);
template <> Result read_message<Result>(const nlohmann::json& j);
template <> Cancel read_message<Cancel>(const nlohmann::json& j);
template <> ErrorMsg read_message<ErrorMsg>(const nlohmann::json& j);
template <> Status read_message<Status>(const nlohmann::json& j);
template <> StatusReply read_message<StatusReply>(const nlohmann::json& j);

// One frame, decoded: its type and its typed fields.
// Alternatives in MessageType's order: a payload's index() is its type.
using Payload = std::variant<Hello, Register, Registered, Heartbeat, Submit, Accepted, Assign, Tokens, Result, Cancel, ErrorMsg, Status,
                             StatusReply>;
struct Message {
  MessageType type = MessageType::Hello;
  Payload payload;

  // The payload as the type the handler switched on; ProtocolError(unexpected) if it is another.
  template <class T>
  const T& as() const {
    if (const T* p = std::get_if<T>(&payload)) return *p;
    throw ProtocolError(codes::kUnexpected, std::string("a ") + message_type_name(type) + " is not the message expected here");
  }
  template <class T>
  T& as() {
    return const_cast<T&>(static_cast<const Message&>(*this).as<T>());
  }
};

// Parses one frame body: its envelope (net/protocol.h), then its fields, decoded once by the
// type's reader. Throws ProtocolError with the matching code.
Message parse_message(std::string_view body);

// The frame JSON of a decoded payload (to_message of the type it holds).
nlohmann::json to_message(const Payload& payload);

}  // namespace eesched::net
