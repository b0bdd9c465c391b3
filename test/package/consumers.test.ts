import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, inject, it } from "vitest";
import { installPackedApp, type PackedApp } from "../helpers/packed-app.js";
import { testPython } from "../helpers/python.js";

const run = promisify(execFile);
// The oldest Node the package's engines field allows: require() of an ES module is flagged off before 20.19.
const OLDEST_NODE = "20.9.0";
const cache = join(process.cwd(), "node_modules", ".cache", `idefics2-node-${OLDEST_NODE}`);

// Both entries load, the worker's Python files are found, and `idefics2/notebook` shares idefics2's modules: an error
// thrown inside display() is an instance of the Idefics2Error the app imported (one module graph, not two copies).
const requireCheck = [
  'const sdk = require("idefics2");',
  'const notebook = require("idefics2/notebook");',
  "const shape = [typeof sdk.Idefics2.load, typeof sdk.user, typeof sdk.Idefics2Error, typeof notebook.display];",
  'const root = require("node:path").join(sdk.embeddedModelPath, "..", "..");',
  'const worker = require("node:fs").existsSync(root + "/python/idefics2_worker/__main__.py");',
  'notebook.display([sdk.user(sdk.image("missing.png"), "?")], { target: { markdown() {}, png() {} } }).catch((error) => {',
  "  console.log(JSON.stringify({ shape, worker, shared: error instanceof sdk.Idefics2Error }));",
  "});",
].join("\n");
const importCheck = [
  'import { Idefics2, Idefics2Error, embeddedModelPath, image, user } from "idefics2";',
  'import { display } from "idefics2/notebook";',
  'import { existsSync } from "node:fs";',
  'import { join } from "node:path";',
  "const shape = [typeof Idefics2.load, typeof user, typeof Idefics2Error, typeof display];",
  'const worker = existsSync(join(embeddedModelPath, "..", "..", "python", "idefics2_worker", "__main__.py"));',
  'const error = await display([user(image("missing.png"), "?")], { target: { markdown() {}, png() {} } }).catch((e) => e);',
  "console.log(JSON.stringify({ shape, worker, shared: error instanceof Idefics2Error }));",
].join("\n");
const expected = { shape: ["function", "function", "function", "function"], worker: true, shared: true };
// The worker started from the installed package, as a CommonJS app or a tslab cell starts it.
const generateCheck = [
  'const { Idefics2, user } = require("idefics2");',
  "(async () => {",
  "  const model = await Idefics2.load({ python: process.argv[2] });",
  '  const result = await model.generate([user("Hello")], { maxNewTokens: 3 });',
  "  await model.close();",
  "  console.log(JSON.stringify({ tokens: result.tokenIds.length, text: result.text.length > 0 }));",
  "})().catch((error) => {",
  "  console.error(error);",
  "  process.exit(1);",
  "});",
].join("\n");

// A consumer that uses the types: options checked by the compiler, results typed, both entries resolved.
const consumer = `import { Idefics2, user, image, type LoadOptions, type GenerationResult } from "idefics2";
import { display } from "idefics2/notebook";
const options: LoadOptions = { quantization: "4bit", deviceMap: "cuda:0" };
export async function answer(): Promise<string> {
  const model = await Idefics2.load(options);
  const result: GenerationResult = await model.generate([user(image("a.png"), "Which colour?")]);
  await display(result);
  await model.close();
  return result.text;
}
`;

async function nodeBinary(version: string): Promise<string> {
  const binary = join(cache, "node_modules", `node-${process.platform}-${process.arch}`, "bin", "node");
  if (!existsSync(binary)) {
    const spec = `node-${process.platform}-${process.arch}@${version}`;
    await run("npm", ["install", "--prefix", cache, "--no-save", "--no-audit", "--no-fund", "--prefer-offline", spec]);
  }
  return binary;
}

type Program = { diagnostics: string[]; version: string };

// Type-checks the consumer with a given TypeScript (skipLibCheck off), keeping the diagnostics in this package's files
// and the consumer's own: other libraries' declarations (zod's, sharp's) are theirs to keep compiling.
// consumer.ts is a CommonJS file in the app (no "type": "module"), consumer.mts an ES module one.
function typeCheck(typescriptPath: string, folder: string, options: Record<string, unknown>, name = "consumer.ts"): Program {
  const ts = createRequire(import.meta.url)(typescriptPath) as typeof import("typescript");
  const file = join(folder, name);
  const parsed = ts.convertCompilerOptionsFromJson(
    { strict: true, noEmit: true, skipLibCheck: false, types: ["node"], ...options },
    folder,
  );
  const program = ts.createProgram([file], { ...parsed.options, typeRoots: [join(process.cwd(), "node_modules", "@types")] });
  const ours = (name: string | undefined) => name === undefined || name === file || name.includes("/node_modules/idefics2/");
  const diagnostics = ts
    .getPreEmitDiagnostics(program)
    .filter((diagnostic) => ours(diagnostic.file?.fileName))
    .map((diagnostic) => `${diagnostic.file?.fileName ?? ""}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n")}`);
  return { diagnostics, version: ts.version };
}

describe("the packed package in a fresh app", () => {
  let app: PackedApp;
  beforeAll(async () => {
    app = await installPackedApp();
    await writeFile(join(app.folder, "check.cjs"), requireCheck);
    await writeFile(join(app.folder, "check.mjs"), importCheck);
    await writeFile(join(app.folder, "generate.cjs"), generateCheck);
    await writeFile(join(app.folder, "consumer.ts"), consumer);
    await writeFile(join(app.folder, "consumer.mts"), consumer);
  });

  it("installs without a single npm warning", () => {
    expect(app.installOutput).not.toMatch(/warn/i);
    expect(app.installOutput).toMatch(/added \d+ package/);
  });

  it("ships a LICENSE and no Python bytecode, source maps or tests", async () => {
    const { stdout } = await run("tar", ["tzf", inject("tarball")]);
    const files = stdout.split("\n");
    expect(files).toContain("package/LICENSE");
    expect(files.filter((name) => /__pycache__|\.pyc$|\.map$|\/tests?\//.test(name))).toEqual([]);
    expect(files).toContain("package/dist/cjs/index.js");
    expect(files).toContain("package/notebook/package.json");
  });

  it.each([
    ["CommonJS require", "check.cjs"],
    ["ES module import", "check.mjs"],
  ])("loads through %s on this Node", async (_, script) => {
    const { stdout } = await run(process.execPath, [script], { cwd: app.folder });
    expect(JSON.parse(stdout)).toEqual(expected);
  });

  it.each([
    ["CommonJS require", "check.cjs"],
    ["ES module import", "check.mjs"],
  ])(
    `loads through %s on Node ${OLDEST_NODE}, the oldest engines allows`,
    async (_, script) => {
      const node = await nodeBinary(OLDEST_NODE);
      expect((await run(node, ["--version"])).stdout.trim()).toBe(`v${OLDEST_NODE}`);
      const { stdout } = await run(node, [script], { cwd: app.folder });
      expect(JSON.parse(stdout)).toEqual(expected);
    },
    120_000,
  );

  it("type-checks for TypeScript 5.0 as tslab sets it up (CommonJS, node10 resolution)", () => {
    const typescript = createRequire(import.meta.url).resolve("@tslab/typescript-for-tslab");
    const result = typeCheck(typescript, app.folder, { module: "commonjs", moduleResolution: "node10", target: "es2020" });
    expect(result.version).toBe("5.0.4");
    expect(result.diagnostics).toEqual([]);
  });

  it.each([
    ["nodenext", { module: "nodenext", moduleResolution: "nodenext", target: "es2022" }],
    ["bundler", { module: "esnext", moduleResolution: "bundler", target: "es2022" }],
    ["node10", { module: "commonjs", moduleResolution: "node10", target: "es2022" }],
  ])("type-checks for the current TypeScript with %s resolution", (_, options) => {
    const result = typeCheck("typescript", app.folder, options);
    expect(result.version.startsWith("5.9")).toBe(true);
    expect(result.diagnostics).toEqual([]);
  });

  it.each([
    ["TypeScript 5.0", "@tslab/typescript-for-tslab", "5.0.4"],
    ["the current TypeScript", "typescript", "5.9"],
  ])("type-checks the ES module declarations for %s (nodenext, from an .mts file)", (_, name, version) => {
    const typescript = createRequire(import.meta.url).resolve(name);
    const result = typeCheck(
      typescript,
      app.folder,
      { module: "nodenext", moduleResolution: "nodenext", target: "es2022" },
      "consumer.mts",
    );
    expect(result.version.startsWith(version)).toBe(true);
    expect(result.diagnostics).toEqual([]);
  });

  it(`runs the worker from the installed package through require on Node ${OLDEST_NODE}, writing no bytecode into it`, async () => {
    const node = await nodeBinary(OLDEST_NODE);
    const python = join(app.folder, "node_modules", "idefics2", "python");
    const bytecode = async () => (await readdir(python, { recursive: true })).filter((name) => /__pycache__|\.pyc$/.test(name));
    // Without this machine's own PYTHONDONTWRITEBYTECODE (CI images often set it): only the package's launch may set it.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== "PYTHONDONTWRITEBYTECODE"));
    const { stdout } = await run(node, ["generate.cjs", testPython()], { cwd: app.folder, env });
    expect(JSON.parse(stdout)).toEqual({ tokens: 3, text: true });
    expect(await bytecode()).toEqual([]);
    // The same modules imported by Python without the flag leave bytecode there, so the check above can fail.
    try {
      await run(testPython(), ["-c", "import idefics2_worker.protocol"], { env: { PATH: process.env.PATH, PYTHONPATH: python } });
      expect(await bytecode()).not.toEqual([]);
    } finally {
      for (const folder of await bytecode()) await rm(join(python, folder), { recursive: true, force: true });
    }
  }, 120_000);

  it("refuses a wrong option type for the same consumers, so the checks above are real", async () => {
    await writeFile(join(app.folder, "consumer.ts"), consumer.replace('"cuda:0"', '"gpu"'));
    try {
      const typescript = createRequire(import.meta.url).resolve("@tslab/typescript-for-tslab");
      for (const [path, options] of [
        [typescript, { module: "commonjs", moduleResolution: "node10", target: "es2020" }],
        ["typescript", { module: "nodenext", moduleResolution: "nodenext", target: "es2022" }],
      ] as const) {
        expect(typeCheck(path, app.folder, options).diagnostics.join("\n")).toContain('"gpu"');
      }
    } finally {
      await writeFile(join(app.folder, "consumer.ts"), consumer);
    }
  });
});
