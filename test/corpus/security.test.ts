import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { embeddedModelPath } from "../../src/embedded-model.js";
import { ImageError, ModelLoadError, PythonEnvironmentError } from "../../src/errors.js";
import { image, user } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { safeModuleArgs } from "../../src/runtime/safe-module-args.js";
import { workerCommand } from "../../src/runtime/worker-command.js";
import { testPython } from "../helpers/python.js";
import { demoSecond } from "../helpers/pictures.js";
import { colourQuestion, expectRefusal, expectServes, localServer } from "./corpus-helpers.js";

// What the README's "Security" section promises, each proven on the real worker and the embedded model.

const SECRETS = { AWS_SECRET_ACCESS_KEY: "corpus-aws-secret", GITHUB_TOKEN: "corpus-github-token", NPM_TOKEN: "corpus-npm-token" };
// Startup imports torch and transformers: several seconds on two cores.
const LOAD_MS = 60_000;

let folder: string;
const marker = (name: string) => join(folder, "markers", name);
const markers = async () => readdir(join(folder, "markers"));

// A folder name full of shell syntax: if it ever reached a shell, a marker file would appear or `victim` would go.
const hostileName = (tag: string) =>
  `it's a "model" $(touch ${marker(`${tag}-dollar`)}) ; rm -rf ${join(folder, "victim")} ; \`touch ${marker(`${tag}-backtick`)}\` | & > <`;

// The tiny model's state dict as a pickle (`pytorch_model.bin`) that also holds an object whose unpickling
// creates a file: what a hostile .bin does. Loading it with torch.load(weights_only=False) would create `trap`.
const MAKE_BIN = `
import sys, torch
from safetensors.torch import load_file
folder, weights, trap = sys.argv[1:4]
class Trap:
    def __reduce__(self):
        return (open, (trap, "w"))
state = load_file(weights)
state["trap"] = Trap()
torch.save(state, folder + "/pytorch_model.bin")
`;

// A model folder whose config maps the Auto classes to code shipped beside it; importing that code creates a file.
async function withRemoteCode(destination: string, importMarker: string): Promise<void> {
  await cp(embeddedModelPath, destination, { recursive: true });
  const configPath = join(destination, "config.json");
  const config = JSON.parse(await readFile(configPath, "utf8")) as Record<string, unknown>;
  config.auto_map = { AutoConfig: "custom_idefics2.CustomConfig", AutoModelForImageTextToText: "custom_idefics2.CustomModel" };
  await writeFile(configPath, JSON.stringify(config, null, 2));
  await writeFile(
    join(destination, "custom_idefics2.py"),
    [
      "import pathlib",
      `pathlib.Path(${JSON.stringify(importMarker)}).write_text("remote code ran")`,
      "from transformers import Idefics2Config, Idefics2ForConditionalGeneration",
      "class CustomConfig(Idefics2Config):",
      "    pass",
      "class CustomModel(Idefics2ForConditionalGeneration):",
      "    config_class = CustomConfig",
      "",
    ].join("\n"),
  );
}

let binFolder: string;
let remoteFolder: string;
let trustedFolder: string;
const savedEnv: Record<string, string | undefined> = {};

beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), "idefics2-corpus-security-"));
  await mkdir(join(folder, "markers"));
  await mkdir(join(folder, "victim"));
  await writeFile(join(folder, "victim", "keep.txt"), "still here");

  binFolder = join(folder, "bin-only");
  await cp(embeddedModelPath, binFolder, { recursive: true });
  await rm(join(binFolder, "model.safetensors"));
  await execa(testPython(), ["-c", MAKE_BIN, binFolder, join(embeddedModelPath, "model.safetensors"), marker("pickle")]);

  remoteFolder = join(folder, hostileName("remote"));
  await withRemoteCode(remoteFolder, marker("remote-untrusted"));
  trustedFolder = join(folder, "trusted");
  await withRemoteCode(trustedFolder, marker("remote-trusted"));

  // Secrets in the parent's environment, and a modules cache for trusted remote code inside the temp folder.
  for (const name of [...Object.keys(SECRETS), "HF_MODULES_CACHE"]) savedEnv[name] = process.env[name];
  Object.assign(process.env, SECRETS, { HF_MODULES_CACHE: join(folder, "hf-modules") });
}, LOAD_MS);

afterAll(async () => {
  for (const [name, value] of Object.entries(savedEnv)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  await rm(folder, { recursive: true, force: true });
});

describe("weights load from safetensors only", () => {
  it(
    "refuses a model whose weights are only a pytorch_model.bin, without unpickling it",
    async () => {
      expect(existsSync(join(binFolder, "pytorch_model.bin"))).toBe(true);
      const error = await expectRefusal(
        () => Idefics2.load({ model: binFolder, python: testPython(), localFilesOnly: true }),
        ModelLoadError,
        "MODEL_NOT_FOUND",
        /no file named model\.safetensors/,
        LOAD_MS,
      );
      expect(error.fix).toMatch(/safetensors only/);
      expect(await markers()).toEqual([]);
    },
    LOAD_MS,
  );
});

describe("code shipped with a model runs only with trustRemoteCode", () => {
  it(
    "loads a model whose config maps to custom code without importing that code, from a folder named with shell syntax",
    async () => {
      await using model = await Idefics2.load({ model: remoteFolder, python: testPython(), localFilesOnly: true });
      expect(await markers()).toEqual([]);
      await expectServes(model);

      // While it runs: the worker is a direct child (no shell between), started as `python -m idefics2_worker` is
      // but never from the current folder (safeModuleArgs), and its environment holds none of the parent's secrets.
      if (process.platform === "linux") {
        const worker = await findWorker();
        expect(worker.argv.slice(1)).toEqual(safeModuleArgs("idefics2_worker"));
        for (const [name, value] of Object.entries(SECRETS)) {
          expect(process.env[name]).toBe(value);
          expect(worker.env[name], name).toBeUndefined();
        }
        expect(worker.env.PYTHONUNBUFFERED).toBe("1");
      }
      expect(await readdir(join(folder, "victim"))).toEqual(["keep.txt"]);
    },
    LOAD_MS,
  );

  // The control: the same kind of folder does run its code when the caller opts in.
  it(
    "imports the custom code with trustRemoteCode: true",
    async () => {
      await using model = await Idefics2.load({ model: trustedFolder, python: testPython(), localFilesOnly: true, trustRemoteCode: true });
      expect(await markers()).toEqual(["remote-trusted"]);
      expect(model.info.model).toBe(trustedFolder);
      await rm(marker("remote-trusted"));
    },
    LOAD_MS,
  );
});

describe("nothing reaches a shell", () => {
  it(
    "a model path made of shell syntax is only a missing folder",
    async () => {
      await expectRefusal(
        () => Idefics2.load({ model: join(folder, hostileName("missing")), python: testPython() }),
        ModelLoadError,
        "MODEL_NOT_FOUND",
        /^No model folder at .*it's a "model" \$\(touch/,
        LOAD_MS,
      );
      expect(await markers()).toEqual([]);
      expect(await readdir(join(folder, "victim"))).toEqual(["keep.txt"]);
    },
    LOAD_MS,
  );

  it("an interpreter path made of shell syntax is only a missing interpreter", async () => {
    await expectRefusal(
      () => Idefics2.load({ python: join(folder, hostileName("python"), "python") }),
      PythonEnvironmentError,
      "PYTHON_NOT_FOUND",
      /^No Python interpreter at /,
    );
    expect(await markers()).toEqual([]);
  });

  it("the worker's launch spec passes only the variables it needs", async () => {
    const command = workerCommand({ python: testPython() });
    const { stdout } = await execa(command.file, ["-c", "import json, os; print(json.dumps(dict(os.environ)))"], {
      env: command.env,
      extendEnv: false,
    });
    const seen = JSON.parse(stdout) as Record<string, string>;
    for (const name of Object.keys(SECRETS)) expect(seen[name], name).toBeUndefined();
    expect(seen.HF_MODULES_CACHE).toBe(join(folder, "hf-modules"));
  });
});

describe("image URLs through model.generate", () => {
  it(
    "refuses a redirect to file: and an endless body, and still answers",
    async () => {
      const server = await localServer({
        "/to-passwd": (_request, response) => response.writeHead(302, { location: "file:///etc/passwd" }).end(),
        "/endless": (_request, response) => {
          response.writeHead(200, { "content-type": "image/png" });
          const chunk = Buffer.alloc(64 * 1024);
          const pump = (): void => {
            while (!response.destroyed && response.write(chunk));
            if (!response.destroyed) response.once("drain", pump);
          };
          pump();
        },
      });
      try {
        await using model = await Idefics2.load({ python: testPython(), images: { maxBytes: 1024 * 1024, fetchTimeoutMs: 2000 } });
        const ask = (url: string) => () => model.generate([user(image(url), colourQuestion)]);
        await expectRefusal(
          ask(server.url("/to-passwd")),
          ImageError,
          "IMAGE_FETCH_FAILED",
          /^Could not fetch file:\/\/\/etc\/passwd .*only http: and https:/,
        );
        await expectRefusal(ask(server.url("/endless")), ImageError, "IMAGE_TOO_LARGE", /sent more than 1048576 bytes/);
        const answer = await model.generate([user(image(demoSecond), colourQuestion)], { maxNewTokens: 12 });
        expect(answer.text.toLowerCase()).toContain("blue");
      } finally {
        await server.close();
      }
    },
    LOAD_MS,
  );
});

interface ChildProcessView {
  argv: string[];
  env: Record<string, string>;
}

// The worker, found among this process's direct children by its command line (Linux /proc).
async function findWorker(): Promise<ChildProcessView> {
  const found: ChildProcessView[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (parent !== process.pid) continue;
      const argv = (await readFile(`/proc/${entry}/cmdline`, "utf8")).split("\0").filter(Boolean);
      if (!argv.includes("idefics2_worker")) continue;
      const env = Object.fromEntries(
        (await readFile(`/proc/${entry}/environ`, "utf8"))
          .split("\0")
          .filter(Boolean)
          .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
      );
      found.push({ argv, env });
    } catch {
      // A process that ended while we looked.
    }
  }
  expect(found, "exactly one worker is a direct child of this process").toHaveLength(1);
  return found[0]!;
}
