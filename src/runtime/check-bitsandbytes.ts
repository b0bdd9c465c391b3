import { PythonEnvironmentError } from "../errors.js";
import { quote } from "./check-python-versions.js";
import type { PythonVersions } from "./python-versions.js";
import { requirementPin } from "./requirement-pins.js";
import { versionAtLeast } from "./version-at-least.js";

export const MINIMUM_BITSANDBYTES = "0.47";

/**
 * Checks what an 8-bit or 4-bit load needs: bitsandbytes ≥ 0.47 (complete CPU int8/4-bit support).
 * Returns the error for the caller to throw (quantized load) or report (doctor); undefined when it is fine.
 */
export function checkBitsandbytes(versions: PythonVersions, python: string): PythonEnvironmentError | undefined {
  const found = versions.bitsandbytes;
  if (found !== null && versionAtLeast(found, MINIMUM_BITSANDBYTES)) return undefined;
  const what = found === null ? "is not installed" : `is ${found}, older than ${MINIMUM_BITSANDBYTES}`;
  return new PythonEnvironmentError(
    "MISSING_PYTHON_PACKAGE",
    `bitsandbytes ${what} in ${python}: 8-bit and 4-bit loads need bitsandbytes ${MINIMUM_BITSANDBYTES} or newer`,
    { fix: `Run: ${quote(python)} -m pip install ${quote(requirementPin("bitsandbytes"))}, or load without quantization.` },
  );
}
