/** A command line that cannot be understood: exit code 2 and the usage hint. */
export class UsageError extends Error {
  override name = "UsageError";
  readonly hint: string | undefined;

  constructor(message: string, hint?: string) {
    super(message);
    this.hint = hint;
  }
}
