import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoSecond } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { repoRoot } from "../helpers/reference.js";
import { errorOf, metricValue, readEvents, servePictures, waitUntil } from "./server-helpers.js";

// `idefics2 serve` as a user runs it (the built CLI), one process for the whole file: the private-network guard on
// by default, 429 with Retry-After past --max-queue, and a SIGTERM that lets a short answer finish and cancels a
// long one within --shutdown-timeout-ms. The SIGTERM test is last: it ends the server.

const cli = join(repoRoot, "dist", "cli", "main.js");
const env = { ...process.env, IDEFICS2_PYTHON: testPython(), IDEFICS2_API_KEY: "" };
const SHUTDOWN_MS = 2000;

let child: ChildProcess;
let url: string;
let stderr = "";
let exited: Promise<{ code: number | null; at: number }>;
let pictures: Awaited<ReturnType<typeof servePictures>>;

beforeAll(async () => {
  pictures = await servePictures();
  child = spawn(process.execPath, [cli, "serve", "--port", "0", "--max-queue", "2", "--shutdown-timeout-ms", String(SHUTDOWN_MS)], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  exited = new Promise((resolve) => child.on("exit", (code) => resolve({ code, at: performance.now() })));
  url = await new Promise<string>((resolve, reject) => {
    let stdout = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString("utf8");
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stdout);
      if (match?.[1]) resolve(match[1]);
    });
    child.on("exit", (code) => reject(new Error(`idefics2 serve exited with ${code}: ${stderr}`)));
  });
});

afterAll(async () => {
  child?.kill("SIGKILL");
  await pictures?.close();
});

const ask = (body: Record<string, unknown>, init: RequestInit = {}) =>
  fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    ...init,
  });
const long = { messages: [{ role: "user", content: "Tell me a very long story." }], max_tokens: 4000, min_tokens: 4000, stream: true };

describe("idefics2 serve", () => {
  it("refuses to listen beyond loopback without an API key, before loading anything", async () => {
    const started = performance.now();
    const refused = await execa(process.execPath, [cli, "serve", "--host", "0.0.0.0"], { env, reject: false, timeout: 30_000 });
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/Refusing to listen on 0\.0\.0\.0 without an API key.*--api-key or IDEFICS2_API_KEY/);
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  it("is healthy, and refuses picture URLs into the local network by default", async () => {
    expect(await (await fetch(`${url}/health`)).json()).toEqual({ status: "ok" });
    const response = await ask({
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: pictures.url(demoSecond) } },
            { type: "text", text: "?" },
          ],
        },
      ],
    });
    expect(response.status).toBe(400);
    const error = await errorOf(response);
    expect(error).toMatchObject({ code: "IMAGE_URL_REFUSED", type: "invalid_request_error" });
    expect(error.message).toMatch(/127\.0\.0\.1/);
  });

  it("answers 429 with Retry-After when --max-queue requests are already queued or running", async () => {
    const controller = new AbortController();
    const first = await ask(long, { signal: controller.signal });
    expect(first.status).toBe(200);
    const second = ask(long, { signal: controller.signal });
    await waitUntil(async () => metricValue(await (await fetch(`${url}/metrics`)).text(), "idefics2_queue_depth") === 1);
    const third = await ask({ messages: [{ role: "user", content: "Hi" }], max_tokens: 2 });
    expect(third.status).toBe(429);
    expect(Number(third.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await errorOf(third)).toMatchObject({ type: "rate_limit_error", code: "QUEUE_FULL" });
    controller.abort();
    await second.catch(() => undefined);
    // Both leave: the queue empties and a request is served again.
    await waitUntil(async () => {
      const metrics = await (await fetch(`${url}/metrics`)).text();
      return metricValue(metrics, "idefics2_queue_depth") === 0 && metricValue(metrics, "idefics2_requests_running") === 0;
    });
    expect((await ask({ messages: [{ role: "user", content: "Hi" }], max_tokens: 2 })).status).toBe(200);
  });

  it("on SIGTERM lets a short answer finish, cancels a long one within --shutdown-timeout-ms, and exits 0", async () => {
    const short = ask({ messages: [{ role: "user", content: "What colour is the sky?" }], max_tokens: 30, min_tokens: 30, stream: true });
    const longer = ask(long);
    const shortEvents: unknown[] = [];
    const shortDone = short.then((response) => readEvents(response, (event) => shortEvents.push(event)));
    await waitUntil(() => shortEvents.length >= 2);
    const signalled = performance.now();
    child.kill("SIGTERM");
    const events = await shortDone;
    expect(events.at(-1)).toBe("[DONE]");
    expect((events.at(-2) as { choices: { finish_reason: string }[] }).choices[0]?.finish_reason).toBe("length");
    const longEvents = await readEvents(await longer);
    const last = longEvents.at(-1) as { error?: { code: string; type: string } };
    expect(last.error).toMatchObject({ code: "shutting_down", type: "server_error" });
    const { code, at } = await exited;
    const took = at - signalled;
    console.log(`SIGTERM to exit: ${Math.round(took)} ms (bound ${SHUTDOWN_MS} ms, then the cancel and the worker's close)`);
    expect(code).toBe(0);
    expect(took).toBeGreaterThanOrEqual(SHUTDOWN_MS - 100);
    expect(took).toBeLessThan(SHUTDOWN_MS + 5000);
    expect(stderr).toContain("SIGTERM: shutting down");
    await expect(fetch(`${url}/health`)).rejects.toThrow();
  });
});
