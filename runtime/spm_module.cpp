// Built as the eesched_spm module (see spm_module.h): the only code that touches sentencepiece.
#include "runtime/spm_module.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <memory>

namespace {

class SpmModuleImpl final : public eesched::runtime::SpmModule {
 public:
  std::string load(const std::string& model_file) override { return message(sp_.Load(model_file)); }
  std::string encode(const std::string& text, std::vector<int>& ids) const override { return message(sp_.Encode(text, &ids)); }
  std::string decode(const std::vector<int>& ids, std::string& text) const override { return message(sp_.Decode(ids, &text)); }
  int piece_size() const override { return sp_.GetPieceSize(); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }
  bool is_control(int id) const override { return sp_.IsControl(id); }
  std::string train(const std::string& args) override { return message(sentencepiece::SentencePieceTrainer::Train(args)); }

 private:
  static std::string message(const sentencepiece::util::Status& s) { return s.ok() ? std::string() : s.ToString(); }
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

extern "C" __attribute__((visibility("default"))) eesched::runtime::SpmModule* eesched_spm_module_create() {
  return new SpmModuleImpl();
}
