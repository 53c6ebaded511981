// The `mamba-edge` command line: one yargs program, a module per subcommand.
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { UserError } from "../../engines/errors.js";
import { numbersAsTyped, oneLine } from "./flags.js";
import { benchCommand } from "./commands/bench.js";
import { buildCommand } from "./commands/build.js";
import { inspectCommand } from "./commands/inspect.js";
import { evalCommand } from "./commands/eval.js";
import { generateCommand } from "./commands/generate.js";
import { logitsCommand } from "./commands/logits.js";
import { serveCommand } from "./commands/serve.js";
import { chatCommand } from "./commands/chat.js";
import { compileCommand } from "./commands/compile.js";
import { doctorCommand } from "./commands/doctor.js";

/** Runs the CLI; resolves to the exit code (library code never calls process.exit). */
export async function main(argv: string[] = hideBin(process.argv)): Promise<number> {
  let failure: string | null = null;
  let y = yargs(argv)
    .scriptName("mamba-edge")
    .usage("$0 <command> [options]\n\nRun Mamba-1 and Mamba-2 language models on small devices.")
    .strict()
    .demandCommand(1, "give a command")
    .help()
    .alias("h", "help")
    .version()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .middleware(numbersAsTyped(argv), true)
    .fail((msg, err) => {
      // Bad flags: one line instead of the whole usage text; stops before the command runs.
      throw err ?? new UserError(`${oneLine(msg)} (see --help)`);
    });
  for (const add of [
    generateCommand,
    logitsCommand,
    evalCommand,
    benchCommand,
    buildCommand,
    compileCommand,
    inspectCommand,
    serveCommand,
    chatCommand,
    doctorCommand,
  ])
    y = add(y) as typeof y;
  try {
    await y.parseAsync();
  } catch (e) {
    if (e instanceof UserError) failure = e.message;
    else throw e;
  }
  if (failure !== null) {
    process.stderr.write(`mamba-edge: ${failure}\n`);
    return 1;
  }
  return 0;
}
