#include "node/model_row.h"

namespace eesched::node {

data::ModelRow model_row(const std::string& name, const std::string& fingerprint, const runtime::LlamaConfig& c,
                         int64_t weight_bytes, const std::string& dtype, bool encrypted) {
  data::ModelRow row;
  row.name = name;
  row.fingerprint = fingerprint;
  row.architecture = c.model_type;
  row.layers = c.num_hidden_layers;
  row.hidden = c.hidden_size;
  row.intermediate = c.intermediate_size;
  row.heads = c.num_attention_heads;
  row.kv_heads = c.num_key_value_heads;
  row.vocab = c.vocab_size;
  row.head_dim = c.explicit_head_dim;
  row.parameters = c.parameter_count();
  row.weight_bytes = weight_bytes;
  row.dtype = dtype;
  row.encrypted = encrypted;
  return row;
}

}  // namespace eesched::node
