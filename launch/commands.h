// The `tessera` subcommands. Each parses its own options and returns the process exit code;
// errors propagate as tessera::Error and main() prints them as one line.
#pragma once

namespace tessera::launch {

int cmd_train(int argc, char** argv);       // tessera train --config F [--set k=v ...]
int cmd_prepare(int argc, char** argv);     // tessera prepare --config F
int cmd_generate(int argc, char** argv);    // tessera generate --checkpoint DIR --prompt TEXT
int cmd_bench(int argc, char** argv);       // tessera bench train --config F
int cmd_checkpoint(int argc, char** argv);  // tessera checkpoint convert --from D --to D [--tp N]

}  // namespace tessera::launch
