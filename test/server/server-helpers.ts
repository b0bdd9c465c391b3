import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { basename } from "node:path";
import { assistant, image, user } from "../../src/messages.js";
import { demoFirst, demoSecond } from "../helpers/pictures.js";

export const q1 = "What do we see in this image?";
export const a1 = "In this image, we can see a red circle.";
export const q2 = "And how about this image? Which colour is that?";

/** A data: URL of a file's own bytes. */
export function dataUrl(path: string): string {
  const type = path.endsWith(".png") ? "image/png" : "image/jpeg";
  return `data:${type};base64,${readFileSync(path).toString("base64")}`;
}

/** The blog's conversation as OpenAI messages: the first picture as a data: URL, the second as `secondUrl`. */
export function openAiBlog(secondUrl: string) {
  return [
    {
      role: "user" as const,
      content: [
        { type: "image_url" as const, image_url: { url: dataUrl(demoFirst) } },
        { type: "text" as const, text: q1 },
      ],
    },
    { role: "assistant" as const, content: a1 },
    {
      role: "user" as const,
      content: [
        { type: "image_url" as const, image_url: { url: secondUrl } },
        { type: "text" as const, text: q2 },
      ],
    },
  ];
}

/** The same conversation for the SDK. */
export const sdkBlog = [user(image(demoFirst), q1), assistant(a1), user(image(demoSecond), q2)];

/** Serves the demo pictures on 127.0.0.1 (a random port), by file name. */
export async function servePictures(): Promise<{ url: (path: string) => string; close: () => Promise<void>; server: Server }> {
  const files = new Map([demoFirst, demoSecond].map((path) => [`/${basename(path)}`, readFileSync(path)]));
  const server = createServer((request, response) => {
    const body = files.get(request.url ?? "");
    if (!body) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": request.url?.endsWith(".png") ? "image/png" : "image/jpeg" }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: (path) => `http://127.0.0.1:${port}/${basename(path)}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** The `data:` payloads of a server-sent event response, parsed (`[DONE]` kept as the string). */
export async function readEvents(response: Response, onEvent?: (event: unknown) => void): Promise<unknown[]> {
  const events: unknown[] = [];
  const decoder = new TextDecoder();
  let buffer = "";
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end = buffer.indexOf("\n\n");
    while (end !== -1) {
      const data = buffer.slice(0, end).replace(/^data: /, "");
      buffer = buffer.slice(end + 2);
      const event = data === "[DONE]" ? data : JSON.parse(data);
      events.push(event);
      onEvent?.(event);
      end = buffer.indexOf("\n\n");
    }
  }
  return events;
}

/** Waits until `check` holds, polling every 25 ms, for up to `timeoutMs`. */
export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`not true after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A metric's value in Prometheus text (the first line that starts with `name`). */
export function metricValue(text: string, name: string): number | undefined {
  const line = text.split("\n").find((entry) => entry.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

/** The OpenAI-shaped error body of an error answer. */
export async function errorOf(response: Response): Promise<{ message: string; type: string; param: string | null; code: string | null }> {
  return ((await response.json()) as { error: { message: string; type: string; param: string | null; code: string | null } }).error;
}
