/**
 * Wraps a caller's listener so that an exception it throws is dropped: listeners run inside stream events and
 * timers, where a throw would end the whole program, and a listener's failure is not the operation's.
 */
export function contained<Args extends unknown[]>(listener: ((...args: Args) => void) | undefined): ((...args: Args) => void) | undefined {
  if (!listener) return undefined;
  return (...args) => {
    try {
      listener(...args);
    } catch {
      // Dropped: see above.
    }
  };
}
