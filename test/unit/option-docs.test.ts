import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { GenerationOptions, ImageLimits, LoadOptions, QuantizationOptions } from "../../src/index.js";

// What an editor shows on hover, read through TypeScript's language service from a file that uses the public types
// as a user would: once against the sources, once against the declarations the build emits (what an installed
// package shows; declaration emit can drop doc comments the sources still show). The keys come from the zod
// schemas' shapes, plus the call options' own properties, so an option added without a doc comment fails here.

const root = fileURLToPath(new URL("../../", import.meta.url));

const probed = {
  "LoadOptions & LoadCallOptions": Object.keys(LoadOptions.shape),
  GenerateCallOptions: Object.keys(GenerationOptions.shape),
  QuantizationOptions: Object.keys(QuantizationOptions.shape),
  ImageLimits: Object.keys(ImageLimits.shape),
};
const names = Object.keys(probed) as (keyof typeof probed)[];

function probeSource(from: string): string {
  return [
    `import type { GenerateCallOptions, ImageLimits, LoadCallOptions, LoadOptions, QuantizationOptions } from "${from}";`,
    ...names.map((type, index) => `declare const value${index}: ${type};`),
  ].join("\n");
}

function parsedConfig(name: string): ts.ParsedCommandLine {
  const config = ts.getParsedCommandLineOfConfigFile(`${root}${name}`, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} });
  if (!config) throw new Error(`${name} did not parse`);
  return config;
}

// The .d.ts files `npm run build` would write to dist/, kept in memory under dist-probe/.
function emittedDeclarations(): Map<string, string> {
  const config = parsedConfig("tsconfig.build.json");
  const outDir = `${root}dist-probe`;
  const options = { ...config.options, outDir, declaration: true, emitDeclarationOnly: true, declarationMap: false, sourceMap: false };
  const files = new Map<string, string>();
  const result = ts.createProgram(config.fileNames, options).emit(undefined, (name, text) => files.set(name, text));
  if (result.emitSkipped) throw new Error("declaration emit failed");
  return files;
}

// A language service over real files plus the virtual ones given (the probe, emitted declarations).
function languageService(virtual: Map<string, string>, probe: string): ts.LanguageService {
  const options = parsedConfig("tsconfig.json").options;
  const read = (name: string) => virtual.get(name) ?? ts.sys.readFile(name);
  return ts.createLanguageService({
    getScriptFileNames: () => [probe],
    getScriptVersion: () => "1",
    getScriptSnapshot: (name) => {
      const text = read(name);
      return text === undefined ? undefined : ts.ScriptSnapshot.fromString(text);
    },
    getCurrentDirectory: () => root,
    getCompilationSettings: () => options,
    getDefaultLibFileName: (compilerOptions) => ts.getDefaultLibFilePath(compilerOptions),
    fileExists: (name) => virtual.has(name) || ts.sys.fileExists(name),
    readFile: read,
    readDirectory: ts.sys.readDirectory,
    directoryExists: (name) => [...virtual.keys()].some((file) => file.startsWith(`${name}/`)) || ts.sys.directoryExists(name),
    getDirectories: ts.sys.getDirectories,
  });
}

// The documentation shown on hover at `valueN.key`: the schema's keys of each probed type, then its other properties.
function hovers(files: Map<string, string>, probe: string, from: string): Record<string, Record<string, string>> {
  const declared = new Map([...files, [probe, probeSource(from)]]);
  const program = languageService(declared, probe).getProgram();
  const checker = program?.getTypeChecker();
  const statements = program?.getSourceFile(probe)?.statements.filter(ts.isVariableStatement) ?? [];
  const accesses = names.flatMap((type, index) => {
    const declaration = statements[index]?.declarationList.declarations[0];
    const own =
      declaration && checker
        ? checker
            .getTypeAtLocation(declaration.name)
            .getProperties()
            .map((symbol) => symbol.name)
        : [];
    return [...new Set([...probed[type], ...own])].map((key) => ({ type, key, text: `value${index}.${key};` }));
  });
  const text = [probeSource(from), ...accesses.map((access) => access.text)].join("\n");
  const service = languageService(new Map([...files, [probe, text]]), probe);
  const shown: Record<string, Record<string, string>> = Object.fromEntries(names.map((type) => [type, {}]));
  let offset = probeSource(from).length + 1;
  for (const access of accesses) {
    const info = service.getQuickInfoAtPosition(probe, offset + access.text.indexOf(".") + 1);
    (shown[access.type] ?? {})[access.key] = ts.displayPartsToString(info?.documentation).trim();
    offset += access.text.length + 1;
  }
  return shown;
}

describe.each([
  ["the sources", () => hovers(new Map(), `${root}test/unit/hover-probe.ts`, "../../src/index.js")],
  ["the emitted declarations", () => hovers(emittedDeclarations(), `${root}dist-probe/hover-probe.ts`, "./index.js")],
])("hovering an option in %s", (_where, shownOptions) => {
  it("shows what every load, generation, quantization and image-limit option does", { timeout: 60_000 }, () => {
    const shown = shownOptions();
    for (const type of names) {
      const docs = shown[type] ?? {};
      for (const key of probed[type]) expect(Object.keys(docs), `${type} lacks ${key}`).toContain(key);
      const undocumented = Object.entries(docs)
        .filter(([, doc]) => doc === "")
        .map(([key]) => key);
      expect(undocumented, `${type}: options without a doc comment`).toEqual([]);
    }
    expect(shown["LoadOptions & LoadCallOptions"]?.quantization).toMatch(/"8bit".*"4bit"/s);
    expect(shown["LoadOptions & LoadCallOptions"]?.onProgress).toMatch(/stage/);
    expect(shown.GenerateCallOptions?.maxNewTokens).toMatch(/Default 500/);
    expect(shown.GenerateCallOptions?.timeoutMs).toMatch(/TimeoutError/);
  });
});
