#pragma once
// Key rotation without the plaintext (`eesched rotate-key`): an encrypted model and the key it
// was encrypted with in, the same model encrypted under a new key out.
//
// How: the vocabulary permutation depends on the key alone (ee/key.h), so the old key undoes it
// exactly; the hidden maps (residual, FFN, heads, head dims, q/k pair turns) depend on the key and
// the model's plaintext fingerprint, which an encrypted directory does not carry, so they stay —
// the model they leave computes the plaintext function in plaintext vocabulary ids, only with
// hidden units shuffled. The new key's whole transform (ee/transform.h) then goes on top, its
// model label that intermediate model's fingerprint. Permutations compose to permutations and
// quarter turns (sign flips) to quarter turns (sign flips), so the result is an EE encryption in
// every sense the runtime and the arms rely on, exact in the model's dtype: a client holding only
// the new key encrypts prompts with the new vocabulary permutation and decrypts answers with it.
// Its hidden maps are the old ones composed with fresh ones from the new key: uniformly random
// to whoever knows only one of the keys.
#include <cstdint>
#include <filesystem>
#include <string>

#include "runtime/model.h"

namespace eesched::ee {

class Key;

// The model encrypted under `old_key` (its config's bos/eos encrypted too), under `new_key` instead.
runtime::LlamaModel rotate_model(const runtime::LlamaModel& encrypted, const Key& old_key, const Key& new_key);

struct RotateDirResult {
  double load_seconds = 0, transform_seconds = 0, save_seconds = 0;
  std::string old_fingerprint, new_fingerprint;
  int64_t parameters = 0;
  int64_t bytes = 0;  // the new directory's files: what ships to the workers
};

// An encrypted model directory (ee.json under `old_key`) rewritten under `new_key` into `out`:
// config.json, the weights, prune_stats.safetensors when present, ee.json (the new key's
// fingerprint; the owner's quality figures carried over: the function is unchanged). Refuses a
// plaintext input, a key that is not the one in ee.json, a new key for another vocabulary, the
// same key twice, `out` equal to `in`, and (without `force`) an existing model in `out`.
RotateDirResult rotate_model_dir(const std::filesystem::path& in, const Key& old_key, const Key& new_key,
                                 const std::filesystem::path& out, bool force);

// Total size of the regular files in a directory (recursively).
int64_t directory_bytes(const std::filesystem::path& dir);

}  // namespace eesched::ee
