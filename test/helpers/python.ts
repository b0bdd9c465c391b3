import { inject } from "vitest";

/** The Python interpreter the suite runs against (see test/global-setup.ts). */
export function testPython(): string {
  return inject("python");
}
