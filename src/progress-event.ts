import { z } from "zod";

/** What a `progress` event counts: bytes moved, items done, or a percentage (`done` from 0 to 100, no `total`). */
export const ProgressUnit = z.enum(["bytes", "items", "percent"]);
export type ProgressUnit = z.infer<typeof ProgressUnit>;

const ElapsedMs = z.number().nonnegative();

/**
 * The three kinds of progress event over a set of stages, told apart by `type`: a step starting, one line of a
 * step's output, a count of work done. Every kind has `stage`, a printable `message` and `elapsedMs`. @internal
 */
export function progressEvent<Stage extends z.ZodType<string, string>>(stage: Stage) {
  return z.discriminatedUnion("type", [
    z.object({
      /** A step started. */
      type: z.literal("stage"),
      /** The step. */
      stage,
      /** What the step does, in a sentence. */
      message: z.string(),
      /** Milliseconds since the call that reports began. */
      elapsedMs: ElapsedMs,
    }),
    z.object({
      /** One line of a step's output (venv, pip). */
      type: z.literal("log"),
      /** The step that printed the line. */
      stage,
      /** The line, without its line break. */
      message: z.string(),
      /** Milliseconds since the call that reports began. */
      elapsedMs: ElapsedMs,
    }),
    z.object({
      /** A count of a step's work: `done` of `total` `unit`s. */
      type: z.literal("progress"),
      /** The step. */
      stage,
      /** What is being counted, in a sentence. */
      message: z.string(),
      /** Work done so far, in `unit`s. */
      done: z.number().nonnegative(),
      /** All the work, in `unit`s, when it is known (never for `percent`). */
      total: z.number().nonnegative().optional(),
      /** `bytes`, `items` or `percent`. */
      unit: ProgressUnit,
      /** Milliseconds since the call that reports began. */
      elapsedMs: ElapsedMs,
    }),
  ]);
}

/** An event as its emitter builds it, before stampedListener adds `elapsedMs`. */
export type Unstamped<Event> = Event extends unknown ? Omit<Event, "elapsedMs"> : never;

/** Wraps a listener so each event it gets carries the milliseconds since the wrapping. @internal */
export function stampedListener<Event extends { elapsedMs: number }>(
  listener: ((event: Event) => void) | undefined,
): ((event: Unstamped<Event>) => void) | undefined {
  if (!listener) return undefined;
  const started = performance.now();
  return (event) => listener({ ...event, elapsedMs: Math.round(performance.now() - started) } as unknown as Event);
}
