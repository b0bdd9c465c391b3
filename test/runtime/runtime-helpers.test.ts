import path from "node:path";
import { expect, test } from "vitest";
import { checkBitsandbytes } from "../../src/runtime/check-bitsandbytes.js";
import { environmentHash } from "../../src/runtime/environment-hash.js";
import { idefics2Home } from "../../src/runtime/idefics2-home.js";
import { versionAtLeast } from "../../src/runtime/version-at-least.js";
import { goodVersions } from "./fake-python.js";

test.each([
  [undefined, {}, "linux", "/home/u/.cache/idefics2"],
  [undefined, { XDG_CACHE_HOME: "/xdg" }, "linux", "/xdg/idefics2"],
  [undefined, { XDG_CACHE_HOME: "relative" }, "linux", "/home/u/.cache/idefics2"],
  [undefined, { IDEFICS2_HOME: "/from/env" }, "linux", "/from/env"],
  ["/from/option", { IDEFICS2_HOME: "/from/env" }, "linux", "/from/option"],
  [undefined, {}, "darwin", "/home/u/Library/Caches/idefics2"],
  [undefined, { LOCALAPPDATA: "C:\\Users\\u\\AppData\\Local" }, "win32", "C:\\Users\\u\\AppData\\Local\\idefics2"],
] as const)("home option %s with env %o on %s is %s", (option, env, platform, expected) => {
  expect(idefics2Home(option, env, platform, "/home/u")).toBe(expected);
});

test.each([
  ["3.10.0", "3.10", true],
  ["3.9.18", "3.10", false],
  ["3.11.7", "3.10", true],
  ["2.13.0+cpu", "2.13", true],
  ["5.0.0rc1", "5.0", true],
  ["4.57.1", "5.0", false],
  ["0.46.1", "0.47", false],
  ["0.50.2", "0.47", true],
] as const)("%s is at least %s: %s", (version, minimum, expected) => {
  expect(versionAtLeast(version, minimum)).toBe(expected);
});

test("the environment hash changes with the requirements and the base Python, and keeps the name runtime environments had", () => {
  const base = { requirements: ["torch==2.13.0\n"], basePythonVersion: "3.11.7", platform: "linux-x64" };
  const hash = environmentHash(base);
  // The name this input had when dev made a separate environment (dev=false): runtime environments made then are reused.
  expect(hash).toBe("75fefab369d7d639");
  expect(environmentHash({ ...base })).toBe(hash);
  expect(
    new Set([
      hash,
      environmentHash({ ...base, requirements: ["torch==2.13.1\n"] }),
      environmentHash({ ...base, basePythonVersion: "3.12.1" }),
      environmentHash({ ...base, platform: "darwin-arm64" }),
    ]).size,
  ).toBe(4);
});

test("bitsandbytes is checked on demand: missing or older than 0.47 is MISSING_PYTHON_PACKAGE with a pip command", () => {
  expect(checkBitsandbytes(goodVersions, "/py")).toBeUndefined();
  const missing = checkBitsandbytes({ ...goodVersions, bitsandbytes: null }, "/py");
  expect(missing).toMatchObject({
    code: "MISSING_PYTHON_PACKAGE",
    message: "bitsandbytes is not installed in /py: 8-bit and 4-bit loads need bitsandbytes 0.47 or newer",
    fix: "Run: /py -m pip install bitsandbytes==0.50.2, or load without quantization.",
  });
  expect(checkBitsandbytes({ ...goodVersions, bitsandbytes: "0.46.1" }, path.join("/a b", "py"))?.message).toBe(
    "bitsandbytes is 0.46.1, older than 0.47 in /a b/py: 8-bit and 4-bit loads need bitsandbytes 0.47 or newer",
  );
});
