import { afterEach, describe, expect, it, vi } from "vitest";
import { AbortError } from "../../src/errors.js";
import { FileReadError, readRegularFile } from "../../src/images/read-regular-file.js";

// A regular file whose read the kernel never answers (a stalled network or FUSE mount), made up by replacing
// fs/promises for one path: the call still settles within its bound, and the descriptor closes once the read ends.

const STALLED = "/stalled/mount/picture.png";
const state = { closed: 0, release: (): void => {} };

const regular = { isFile: () => true, size: 0 };
const handle = {
  stat: async () => regular,
  read: () =>
    new Promise<{ bytesRead: number }>((resolve) => {
      state.release = () => resolve({ bytesRead: 0 });
    }),
  close: async () => {
    state.closed += 1;
  },
};

vi.mock("node:fs/promises", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:fs/promises")>();
  const stat = (path: string, ...rest: never[]) => (path === STALLED ? Promise.resolve(regular) : real.stat(path, ...rest));
  const open = (path: string, ...rest: never[]) => (path === STALLED ? Promise.resolve(handle) : real.open(path, ...rest));
  return { ...real, default: { ...real, stat, open }, stat, open };
});

afterEach(() => {
  state.release();
  state.closed = 0;
});

describe("a read that never returns", () => {
  it("fails with kind timed-out after timeoutMs, and closes the descriptor only once the read ends", async () => {
    const started = performance.now();
    const error = await readRegularFile(STALLED, { maxBytes: 1024, timeoutMs: 300 }).catch((caught: unknown) => caught);
    const elapsed = performance.now() - started;
    expect(error).toBeInstanceOf(FileReadError);
    expect(error).toMatchObject({ kind: "timed-out", reason: "timed out after 300 ms" });
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(1500);
    expect(state.closed).toBe(0);
    state.release();
    await vi.waitFor(() => expect(state.closed).toBe(1));
  });

  it("rejects with AbortError as soon as the signal fires", async () => {
    const controller = new AbortController();
    const pending = readRegularFile(STALLED, { maxBytes: 1024, timeoutMs: 60_000, signal: controller.signal });
    setTimeout(() => controller.abort(new Error("user left")), 50);
    const started = performance.now();
    const error = await pending.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(AbortError);
    expect((error as AbortError).cause).toEqual(new Error("user left"));
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("gives loadImage's readTimeoutMs as the bound, with a typed error", async () => {
    const { loadImage } = await import("../../src/images/load-image.js");
    const error = await loadImage(STALLED, { readTimeoutMs: 200 }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({
      name: "ImageError",
      code: "IMAGE_UNREADABLE",
      message: `Cannot read image: timed out after 200 ms: ${STALLED}`,
      fix: expect.stringContaining("`readTimeoutMs`"),
    });
  });
});
