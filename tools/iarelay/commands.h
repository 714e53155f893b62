// The commands of `iarelay`, one function each; main() picks one by name. Each takes
// the context (ctx.args are the arguments after the command name) and returns the exit code.
#pragma once

#include "cli.h"

namespace iarelay::cli {

int cmd_status(Context& ctx);
int cmd_list(Context& ctx);
int cmd_show(Context& ctx);
int cmd_resend(Context& ctx);
int cmd_move(Context& ctx);
int cmd_purge(Context& ctx);
int cmd_retry(Context& ctx);
int cmd_hold(Context& ctx);
int cmd_release(Context& ctx);
int cmd_delete(Context& ctx);
int cmd_sql(Context& ctx);
int cmd_agent(Context& ctx);
int cmd_migrate(Context& ctx);
int cmd_check(Context& ctx);

}  // namespace iarelay::cli
