import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { assistant, image, user } from "../../src/messages.js";
import { display, inNotebook, type NotebookDisplay } from "../../src/notebook/index.js";
import { tslabDisplay } from "../../src/notebook/tslab-display.js";
import type { GenerateResult } from "../../src/protocol/messages.js";
import { demoFirst, demoSecond } from "../helpers/pictures.js";

function recorder(): { target: NotebookDisplay; outputs: [string, string | Buffer][] } {
  const outputs: [string, string | Buffer][] = [];
  const target: NotebookDisplay = {
    markdown: (text) => outputs.push(["markdown", text]),
    html: (text) => outputs.push(["html", text]),
    png: (bytes) => outputs.push(["png", Buffer.from(bytes)]),
    text: (text) => outputs.push(["text", text]),
  };
  return { target, outputs };
}

const result: GenerateResult = {
  text: "That is a *blue* square.",
  tokenIds: [5, 6, 7],
  finishReason: "stop",
  usage: { promptTokens: 40, imageTokens: 20, completionTokens: 3, totalTokens: 43 },
  timings: { preprocessMs: 12.4, prefillMs: 30.2, decodeMs: 8.9, totalMs: 51.5, decodeTokensPerSecond: 224.7 },
};

describe("notebook display", () => {
  it("shows a result as its answer and a table of usage and timings, with the answer's Markdown escaped", async () => {
    const { target, outputs } = recorder();
    await display(result, { target });
    expect(outputs).toHaveLength(1);
    const [kind, markdown] = outputs[0] ?? [];
    expect(kind).toBe("markdown");
    expect(markdown).toContain("**Assistant:** That is a \\*blue\\* square.");
    expect(markdown).toContain("| tokens | 40 prompt (20 image) + 3 generated |");
    expect(markdown).toContain("| decode | 224.7 tokens/s |");
  });

  it("shows a conversation turn by turn, each picture as a PNG beside its turn, sources given or passed in order", async () => {
    const { target, outputs } = recorder();
    const conversation = [user(image(demoFirst), "What is this?"), assistant("A red circle."), user(image(), "And this one?")];
    await display(conversation, { target, images: [demoSecond] });
    expect(outputs.map(([kind]) => kind)).toEqual(["markdown", "png", "markdown", "markdown", "png"]);
    expect(outputs[0]?.[1]).toBe("**User:** What is this?");
    for (const [kind, bytes] of outputs.filter(([kind]) => kind === "png")) {
      const metadata = await sharp(bytes as Buffer).metadata();
      expect([kind, metadata.format]).toEqual(["png", "png"]);
      expect(Math.max(metadata.width ?? 0, metadata.height ?? 0)).toBeLessThanOrEqual(384);
    }
  });

  it("does nothing and says so outside a notebook", async () => {
    expect(inNotebook()).toBe(false);
    await expect(display(result)).resolves.toBeUndefined();
  });

  it("refuses a value that is neither a result nor a conversation", async () => {
    const { target } = recorder();
    await expect(display({ text: "x" } as unknown as GenerateResult, { target })).rejects.toThrow(TypeError);
  });

  it("finds tslab's display once a tslab kernel has loaded its Jupyter handler, without requiring tslab", async () => {
    const dist = join(await mkdtemp(join(tmpdir(), "idefics2-tslab-")), "node_modules", "tslab", "dist");
    await mkdir(dist, { recursive: true });
    await writeFile(join(dist, "jupyter.js"), "exports.lastWriteDisplayData = null;\n");
    await writeFile(
      join(dist, "public.js"),
      "const shown = [];\nexports.shown = shown;\nexports.display = { markdown: (t) => shown.push(t), html() {}, png() {}, text() {} };\n",
    );
    const load = createRequire(join(dist, "loader.js"));
    load("./jupyter.js");
    try {
      expect(inNotebook()).toBe(true);
      await display(result);
      expect((load("./public.js") as { shown: string[] }).shown[0]).toContain("That is a");
    } finally {
      delete load.cache[join(dist, "jupyter.js")];
    }
    expect(tslabDisplay()).toBeUndefined();
  });
});
