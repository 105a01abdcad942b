#pragma once
// The models a worker serves: encrypted model directories loaded and described as they are
// registered (a worker never holds a key, and refuses plaintext directories), and the set a
// worker looks an Assign's model names up in.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "net/messages.h"

namespace eesched::runtime {
class LlamaModel;
}

namespace eesched::node {

struct LoadedModel {
  std::shared_ptr<const runtime::LlamaModel> model;  // null for a dry-run model
  net::ModelInfo info;                               // as registered
};

// Loads an encrypted model directory. Throws a one-line std::runtime_error for a missing,
// corrupt or plaintext (no ee.json) directory.
LoadedModel load_encrypted(const std::string& name, const std::filesystem::path& dir, bool draft);

// A worker's models: targets, then the draft. Read-only, so any thread may look things up.
class ModelSet {
 public:
  // Throws std::runtime_error when two targets (or two drafts) share a name.
  explicit ModelSet(std::vector<LoadedModel> models);

  const LoadedModel* find(const std::string& name, bool draft) const;  // null when not held
  // The draft a task names: a model registered as a draft, else a target of that name.
  const LoadedModel* find_draft(const std::string& name) const;
  std::vector<net::ModelInfo> infos() const;
  const std::vector<LoadedModel>& all() const { return models_; }

 private:
  std::vector<LoadedModel> models_;
};

}  // namespace eesched::node
