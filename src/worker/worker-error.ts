import { errorForCode, type Idefics2Error } from "../errors.js";
import { knownErrorCode, type WorkerErrorPayload } from "../protocol/messages.js";

/** The typed error for an `error` frame's payload, with the Python side's type and traceback kept on it. */
export function workerError(payload: WorkerErrorPayload): Idefics2Error {
  return errorForCode(knownErrorCode(payload.code), payload.message, {
    fix: payload.fix ?? undefined,
    pythonType: payload.pythonType ?? undefined,
    pythonTraceback: payload.traceback ?? undefined,
  });
}
