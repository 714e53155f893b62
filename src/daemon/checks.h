// The checks a start makes before it serves, made without starting: `iarelayd --check` and
// `iarelay check --config FILE` run these same checks, so the two agree word for word and a
// configuration that passes them starts (short of a port in use or a journal lock held).
#pragma once

#include <string>
#include <vector>

#include "common/config.h"

namespace iarelay {

// Every problem of `config` that would stop a start, each one line naming the file and key or
// the path and what to do; empty when there is none. Checks every agent's secret (readable,
// usable as a signing key), the listener's and upstream's token files, the upstream's CA file,
// that the TLS certificate and key load and match, and that the journal can be opened or
// created (its directory exists or can be created, and is writable; an existing journal is a
// file that can be read and written, with the migrations this build knows). Reads the secrets;
// changes nothing.
std::vector<std::string> start_problems(const Config& config);

// The listener's tokens alone (one of start_problems' checks), which a start also makes before
// it begins: "" when `[listen] token_file` (or IARELAY_LISTEN_TOKEN) holds a token or is not
// set, else the problem in start_problems' words.
std::string listen_token_problem(const Config& config);

}  // namespace iarelay
