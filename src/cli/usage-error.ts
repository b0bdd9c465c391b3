import { printableExcerpt } from "../printable.js";

/** A command line that cannot be understood: exit code 2 and a one-line pointer to the command's help. */
export class UsageError extends Error {
  override name = "UsageError";
  readonly hint: string;

  constructor(message: string, command?: string) {
    // The message quotes the command line (an unknown flag or command): escaped, so it stays one line.
    super(printableExcerpt(message, 500));
    this.hint = `Run \`idefics2 ${command ? `${command} ` : ""}--help\` for usage.`;
  }
}
