/** A promise with its settle functions beside it; a rejection nobody awaits is not reported as unhandled. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: Error) => void;
}

// Node 20 has no Promise.withResolvers.
export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {
    // Observed by whoever awaits it; a late rejection after it settled must not become an unhandled rejection.
  });
  return { promise, resolve, reject };
}
