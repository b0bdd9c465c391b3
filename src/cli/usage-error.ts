/** A command line that cannot be understood: exit code 2 and a one-line pointer to the command's help. */
export class UsageError extends Error {
  override name = "UsageError";
  readonly hint: string;

  constructor(message: string, command?: string) {
    super(message);
    this.hint = `Run \`idefics2 ${command ? `${command} ` : ""}--help\` for usage.`;
  }
}
