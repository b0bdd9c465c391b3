import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortError, ImageError } from "../../src/errors.js";
import { loadImage } from "../../src/images/load-image.js";
import { FileReadError, readRegularFile } from "../../src/images/read-regular-file.js";

// Paths that are not regular files must fail at once, never block a thread, and never be read past their bound.

const LIMITS = { maxBytes: 1024 * 1024, timeoutMs: 5000 };
// Far below any timeout: a refusal that comes from `stat`, with no read ever started.
const AT_ONCE_MS = 500;
const linux = process.platform === "linux";

let folder: string;
let socketServer: Server;
const path = (name: string) => join(folder, name);

beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), "idefics2-special-files-"));
  for (let index = 0; index < 8; index += 1) await execa("mkfifo", [path(`pipe-${index}.png`)]);
  await symlink(path("pipe-0.png"), path("link-to-pipe.png"));
  await writeFile(path("small.txt"), "twelve bytes");
  await symlink(path("small.txt"), path("link-to-small.txt"));
  await writeFile(path("big.bin"), Buffer.alloc(LIMITS.maxBytes + 1));
  await mkdir(path("folder.png"));
  socketServer = createServer();
  await new Promise<void>((resolve) => socketServer.listen(path("socket.png"), resolve));
});

afterAll(async () => {
  await new Promise((resolve) => socketServer.close(resolve));
  await rm(folder, { recursive: true, force: true });
});

async function failure(promise: Promise<unknown>): Promise<{ error: FileReadError; ms: number }> {
  const started = performance.now();
  const error = await promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(FileReadError);
  return { error: error as FileReadError, ms: performance.now() - started };
}

describe("readRegularFile refuses what is not a regular file, before opening it", () => {
  const cases: [name: string, file: () => string, reason: string][] = [
    ["a FIFO with no writer", () => path("pipe-1.png"), "a FIFO (named pipe)"],
    ["a symbolic link to a FIFO", () => path("link-to-pipe.png"), "a FIFO (named pipe)"],
    ["a folder", () => path("folder.png"), "a directory"],
    ["a Unix socket", () => path("socket.png"), "a socket"],
    ["/dev/zero", () => "/dev/zero", "a character device"],
    ["/dev/urandom", () => "/dev/urandom", "a character device"],
    ["/dev/null", () => "/dev/null", "a character device"],
  ];
  it.each(cases)("%s", async (_name, file, reason) => {
    const { error, ms } = await failure(readRegularFile(file(), LIMITS));
    expect({ kind: error.kind, reason: error.reason }).toEqual({ kind: "not-regular", reason });
    expect(ms).toBeLessThan(AT_ONCE_MS);
  });

  it.runIf(linux)("/dev/stdin and /proc/self/fd/0, whatever this process's stdin is", async () => {
    for (const file of ["/dev/stdin", "/proc/self/fd/0"]) {
      if (!existsSync(file)) continue;
      const { error, ms } = await failure(readRegularFile(file, LIMITS));
      expect(error.kind, file).toBe("not-regular");
      expect(ms).toBeLessThan(AT_ONCE_MS);
    }
  });

  it("eight FIFOs at once leave the thread pool free: a plain file read meanwhile answers at once", async () => {
    const started = performance.now();
    const pipes = Array.from({ length: 8 }, (_, index) => failure(readRegularFile(path(`pipe-${index}.png`), LIMITS)));
    expect((await readRegularFile(path("small.txt"), LIMITS)).toString()).toBe("twelve bytes");
    for (const { error } of await Promise.all(pipes)) expect(error.kind).toBe("not-regular");
    expect(performance.now() - started).toBeLessThan(AT_ONCE_MS * 2);
  });
});

describe("readRegularFile bounds what it reads", () => {
  it("reads a regular file, also through a symbolic link", async () => {
    expect((await readRegularFile(path("link-to-small.txt"), LIMITS)).toString()).toBe("twelve bytes");
  });

  it("refuses a file over maxBytes from its size, without reading it", async () => {
    const { error } = await failure(readRegularFile(path("big.bin"), LIMITS));
    expect(error).toMatchObject({ kind: "too-large", details: { size: LIMITS.maxBytes + 1 } });
  });

  it.runIf(linux)("reads a /proc file that reports size 0, and stops one that goes on past maxBytes", async () => {
    expect((await readRegularFile("/proc/self/status", LIMITS)).toString()).toMatch(/^Name:/);
    const { error } = await failure(readRegularFile("/proc/self/maps", { ...LIMITS, maxBytes: 64 }));
    expect(error).toMatchObject({ kind: "too-large", reason: "more than 64 bytes", details: {} });
  });

  it("names a missing file and a file under a file, with their errno", async () => {
    expect((await failure(readRegularFile(path("missing.png"), LIMITS))).error).toMatchObject({
      kind: "system",
      reason: "no such file",
      details: { errno: "ENOENT" },
    });
    expect((await failure(readRegularFile(path("small.txt/inside.png"), LIMITS))).error).toMatchObject({ details: { errno: "ENOTDIR" } });
  });

  it("rejects with AbortError for a signal that already fired", async () => {
    const error = await readRegularFile(path("small.txt"), { ...LIMITS, signal: AbortSignal.abort("gone") }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(AbortError);
  });
});

describe("loadImage on special files", () => {
  it.each([
    ["a FIFO", () => path("pipe-2.png"), "a FIFO (named pipe)"],
    ["/dev/zero", () => "/dev/zero", "a character device"],
    ["a socket", () => path("socket.png"), "a socket"],
  ])("refuses %s with IMAGE_UNREADABLE, naming the kind and what to do", async (_name, file, kind) => {
    const started = performance.now();
    const error = await loadImage(file()).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ImageError);
    expect(error).toMatchObject({
      code: "IMAGE_UNREADABLE",
      message: `Cannot read image: ${kind}, not a file: ${file()}`,
      fix: expect.stringMatching(/^Pass a regular file/),
    });
    expect(performance.now() - started).toBeLessThan(AT_ONCE_MS);
  });

  it.runIf(linux)("refuses a /proc file that goes on past maxBytes", async () => {
    const error = await loadImage("/proc/self/maps", { maxBytes: 64 }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: "IMAGE_TOO_LARGE", message: "/proc/self/maps goes on past the `maxBytes` limit of 64" });
  });
});
