// eesched make-token: the shared secret workers prove they hold (net/auth.h).
#include <iostream>

#include "net/auth.h"
#include "tools/commands.h"

namespace eesched::tools {

void register_make_token(CLI::App& app) {
  auto out = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("make-token", "write a fresh 256-bit worker token (mode 0600) for coordinator and workers");
  cmd->add_option("--out", *out, "token file to create (never overwritten)")->required();
  cmd->callback([out] {
    net::Token::write_new(*out);
    std::cout << "wrote " << *out << "\n";
  });
}

}  // namespace eesched::tools
