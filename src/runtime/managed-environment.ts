import { promises as fs, readFileSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { AbortError, Idefics2Error, PythonEnvironmentError } from "../errors.js";
import { checkPythonVersions } from "./check-python-versions.js";
import { acquireEnvironmentLock } from "./environment-lock.js";
import { probePythonVersions, PythonVersions } from "./python-versions.js";
import { pipProgressReader } from "./pip-progress.js";
import { pipRequirementsFile, requirementPin } from "./requirement-pins.js";
import { runSetupCommand } from "./run-setup-command.js";
import { emitProgress, type ProgressListener, type SetupStage } from "./setup-progress.js";

/** The marker written last into a finished environment (runtime requirements); only an environment with it is reused. */
export const ReadyMarker = z.object({
  hash: z.string(),
  requirements: z.string(),
  createdAt: z.string(),
  versions: PythonVersions,
});
export type ReadyMarker = z.infer<typeof ReadyMarker>;

/**
 * The marker written last once requirements-dev.txt is installed into a finished environment
 * (`dev-ready.json`); without it, or for another requirements-dev.txt, the dev install runs again.
 */
export const DevReadyMarker = z.object({
  hash: z.string(),
  /** sha256 of requirements-dev.txt's text. */
  devRequirements: z.string(),
  requirements: z.string(),
  installedAt: z.string(),
  versions: PythonVersions,
});
export type DevReadyMarker = z.infer<typeof DevReadyMarker>;

/** The dev extras to add into the environment: requirements-dev.txt and the digest of its text. */
export interface DevExtras {
  requirementsFile: string;
  digest: string;
}

export interface ManagedEnvironmentOptions {
  envDir: string;
  hash: string;
  /** python/requirements.txt: what the environment is created with. */
  requirementsFile: string;
  /** Also install requirements-dev.txt into the environment (once; recorded in dev-ready.json). */
  dev?: DevExtras | undefined;
  basePython: string;
  /** False: never create nor install, only reuse. */
  create?: boolean;
  /** Check every file of the packages too (setup, doctor), not only that each is installed and its module found. */
  checkFiles?: boolean | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
  /**
   * Where venv's and pip's whole output goes (`<home>/logs/setup-<hash>.log`): started anew by each set-up that
   * creates or repairs, and named in the fix of a step that fails.
   */
  logFile?: string | undefined;
}

/** One creation or repair under the lock: its options, its log, and whether pip was upgraded (once, first). */
interface SetupRun extends ManagedEnvironmentOptions {
  pip: { raw?: Promise<boolean> };
}

interface Found {
  python: string;
  versions: PythonVersions;
  /** Whether the requested dev extras are installed (true when none were requested). */
  devReady: boolean;
}

/** The environment as it is: not made (or its interpreter gone), finished but with packages missing or damaged, or ready. */
type Inspection =
  | { state: "absent" }
  | { state: "damaged"; python: string; versions: PythonVersions; problem: PythonEnvironmentError }
  | ({ state: "ready" } & Found);

const readyFile = "ready.json";
const devReadyFile = "dev-ready.json";

/** The interpreter inside a venv folder. @internal */
export function venvPython(envDir: string, platform: NodeJS.Platform = process.platform): string {
  return platform === "win32" ? path.join(envDir, "Scripts", "python.exe") : path.join(envDir, "bin", "python");
}

/**
 * Reuses the environment at `envDir` when its ready marker is there, its interpreter answers, its packages are
 * installed and usable (and, with `checkFiles`, every file of them is there) and (for `dev`) its dev marker matches;
 * otherwise takes `<envDir>.lock` and, under it, creates or repairs what is missing: an unfinished environment is
 * deleted, the venv created, the runtime requirements installed and checked, the ready marker written; a finished one
 * whose packages were damaged since gets those reinstalled; then, for `dev`, requirements-dev.txt is installed into
 * that same environment and the dev marker written last. Returns the interpreter and its versions. A folder that
 * cannot be written is a PythonEnvironmentError naming it. @internal
 */
export async function managedEnvironment(options: ManagedEnvironmentOptions): Promise<{ python: string; versions: PythonVersions }> {
  const found = await inspect(options);
  if (found.state === "ready" && found.devReady) return reused(options, found);
  if (options.create === false) throw notUsable(options, found);
  try {
    return await createOrRepair(options);
  } catch (error) {
    throw unwritable(error, options.envDir);
  }
}

async function createOrRepair(options: ManagedEnvironmentOptions): Promise<{ python: string; versions: PythonVersions }> {
  const { envDir, signal, onProgress } = options;
  await makeFolders(path.dirname(envDir));
  const lock = await acquireEnvironmentLock(`${envDir}.lock`, {
    signal,
    onWait: (owner) =>
      emitProgress(onProgress, {
        type: "stage",
        stage: "wait-lock",
        message: `Waiting for ${owner ? `process ${owner.pid}` : "another process"} to finish setting up ${envDir}`,
      }),
  });
  try {
    // Whoever held the lock before may have just finished (or repaired) this very environment, or its dev extras.
    const current = await inspect(options);
    if (current.state === "ready" && current.devReady) return reused(options, current);
    const run: SetupRun = { ...options, logFile: await startLog(options), pip: {} };
    let ready: Found;
    if (current.state === "ready") {
      reused(options, current);
      ready = current;
    } else {
      ready = current.state === "damaged" ? await repair(run, current) : await create(run);
    }
    const result = options.dev && !ready.devReady ? await installDevExtras(run, options.dev, ready.python) : ready;
    emitProgress(onProgress, { type: "stage", stage: "ready", message: `The managed environment is ready: ${envDir}` });
    return { python: result.python, versions: result.versions };
  } finally {
    await lock.release();
  }
}

// The log of this set-up, begun anew; without a log (a folder that cannot be written) set-up goes on.
async function startLog(options: ManagedEnvironmentOptions): Promise<string | undefined> {
  const file = options.logFile;
  if (!file) return undefined;
  try {
    await makeFolders(path.dirname(file));
    await fs.writeFile(file, `# Setting up ${options.envDir}, ${new Date().toISOString()}\n\n`);
    return file;
  } catch {
    return undefined;
  }
}

// fs.mkdir's recursive mode never settles for some folders (under /proc it retries forever): each missing level is
// made on its own, so a folder that cannot be made fails at once with its error.
async function makeFolders(folder: string): Promise<void> {
  const missing: string[] = [];
  for (let current = path.resolve(folder); ; current = path.dirname(current)) {
    const found = await fs.stat(current).then(
      () => true,
      (error: NodeJS.ErrnoException) => {
        if (error.code === "ENOENT") return false;
        throw error;
      },
    );
    if (found || path.dirname(current) === current) break;
    missing.unshift(current);
  }
  for (const level of missing) {
    await fs.mkdir(level).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "EEXIST") throw error;
    });
  }
}

// Why an environment that may not be created or repaired here (`create: false`, as the doctor asks) cannot be used.
function notUsable(options: ManagedEnvironmentOptions, found: Inspection): PythonEnvironmentError {
  const setup = `\`idefics2 setup${options.dev ? " --dev" : ""}\` (or call ensurePythonEnvironment())`;
  if (found.state === "damaged") {
    return new PythonEnvironmentError(
      "MISSING_PYTHON_PACKAGE",
      `The managed environment ${options.envDir} is damaged: ${found.problem.message}`,
      {
        fix: `Run ${setup}: it reinstalls what is missing or damaged.`,
        cause: found.problem,
      },
    );
  }
  return new PythonEnvironmentError(
    "ENV_SETUP_FAILED",
    found.state === "ready"
      ? `The managed environment ${options.envDir} lacks the development tools (requirements-dev.txt)`
      : `The managed environment ${options.envDir} has not been created yet`,
    { fix: `Run ${setup} to ${found.state === "ready" ? "install them" : "create it"}.` },
  );
}

// A file system failure while making the environment (a read-only or missing home, a file where a folder should be)
// becomes a PythonEnvironmentError naming the folder and what to do; anything else passes as it is.
function unwritable(error: unknown, envDir: string): unknown {
  if (error instanceof Idefics2Error || !(error instanceof Error) || typeof (error as NodeJS.ErrnoException).code !== "string")
    return error;
  const { code, path: where } = error as NodeJS.ErrnoException;
  const home = path.dirname(path.dirname(envDir));
  return new PythonEnvironmentError(
    "ENV_SETUP_FAILED",
    `Cannot write the managed environment under ${home}: ${code} at ${where ?? envDir}`,
    {
      fix: "Make that folder writable, or point IDEFICS2_HOME (or the `home` option) at a writable folder, or bring an interpreter with the `python` option or IDEFICS2_PYTHON.",
      cause: error,
    },
  );
}

function reused(options: ManagedEnvironmentOptions, found: Found): { python: string; versions: PythonVersions } {
  emitProgress(options.onProgress, { type: "stage", stage: "reuse", message: `Using the managed environment ${options.envDir}` });
  return { python: found.python, versions: found.versions };
}

// The environment as it is: absent unless finished (ready marker for this hash, interpreter answers); damaged when a
// package it was made with is missing or unusable now (deleted, uninstalled, a file gone); else ready.
async function inspect(options: ManagedEnvironmentOptions): Promise<Inspection> {
  const marker = await readMarker(path.join(options.envDir, readyFile), ReadyMarker);
  if (!marker || marker.hash !== options.hash) return { state: "absent" };
  const python = venvPython(options.envDir);
  let versions: PythonVersions;
  try {
    versions = await probePythonVersions(python, { source: "managed", signal: options.signal, checkFiles: options.checkFiles });
  } catch (error) {
    if (options.signal?.aborted) throw error;
    // A marked environment whose interpreter no longer runs (its base Python was removed) is rebuilt.
    return { state: "absent" };
  }
  const problem = checkPythonVersions(versions, { python, source: "managed" });
  if (problem?.code === "PYTHON_TOO_OLD") return { state: "absent" };
  if (problem) return { state: "damaged", python, versions, problem };
  return { state: "ready", python, versions, devReady: await devReady(options) };
}

async function devReady(options: ManagedEnvironmentOptions): Promise<boolean> {
  if (!options.dev) return true;
  const marker = await readMarker(path.join(options.envDir, devReadyFile), DevReadyMarker);
  return marker?.hash === options.hash && marker.devRequirements === options.dev.digest;
}

async function readMarker<T>(file: string, schema: z.ZodType<T>): Promise<T | undefined> {
  try {
    const parsed = schema.safeParse(JSON.parse(await fs.readFile(file, "utf8")));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

async function writeMarker(file: string, marker: unknown): Promise<void> {
  await fs.writeFile(`${file}.tmp`, JSON.stringify(marker, null, 2));
  await fs.rename(`${file}.tmp`, file);
}

const PIP_INSTALL = ["install", "--disable-pip-version-check", "--no-input"];

async function pipInstall(python: string, file: string, stage: SetupStage, fix: string, run: SetupRun): Promise<void> {
  emitProgress(run.onProgress, { type: "stage", stage, message: `Installing ${path.basename(file)}` });
  await runPip(python, ["-r", file], stage, `Installing ${file}`, fix, run);
}

/** What pip install needs of a set-up: where its events and its log go, and whether pip was upgraded yet. @internal */
export type PipRun = Pick<SetupRun, "signal" | "onProgress" | "logFile" | "pip">;

/**
 * `pip install ...args` into `python`'s environment, reporting download bytes (`--progress-bar raw`, once pip is
 * upgraded: the first call of a run upgrades it) and package counts as `progress` events. @internal
 */
export async function runPip(python: string, args: string[], stage: SetupStage, what: string, fix: string, run: PipRun): Promise<void> {
  const raw = await readyPip(python, stage, run);
  await runSetupCommand(python, "pip", [...PIP_INSTALL, "--progress-bar", raw ? "raw" : "off", ...args], {
    stage,
    what,
    fix,
    signal: run.signal,
    onProgress: run.onProgress,
    logFile: run.logFile,
    readLine: pipProgressReader(stage, (event) => emitProgress(run.onProgress, event)),
  });
}

// Before its first install, a set-up puts the pinned pip (python/requirements-pip.txt) into the environment: a new
// venv's pip predates `--progress-bar raw`. When that fails (an index without it), the environment's own pip
// installs, without download bytes; the failure is a `log` event and in the log file.
function readyPip(python: string, stage: SetupStage, run: PipRun): Promise<boolean> {
  run.pip.raw ??= upgradePip(python, stage, run);
  return run.pip.raw;
}

async function upgradePip(python: string, stage: SetupStage, run: PipRun): Promise<boolean> {
  const file = pipRequirementsFile();
  const message = `Upgrading pip to ${pipPin(file)}`;
  emitProgress(run.onProgress, { type: "progress", stage, message, done: 0, total: 1, unit: "items" });
  try {
    await runSetupCommand(python, "pip", [...PIP_INSTALL, "--progress-bar", "off", "-r", file], {
      stage,
      what: "Upgrading pip",
      fix: "",
      signal: run.signal,
      onProgress: run.onProgress,
      logFile: run.logFile,
    });
  } catch (error) {
    if (error instanceof AbortError || run.signal?.aborted) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    emitProgress(run.onProgress, {
      type: "log",
      stage,
      message: `${reason}; installing with the environment's pip, without download progress`,
    });
    return false;
  }
  emitProgress(run.onProgress, { type: "progress", stage, message, done: 1, total: 1, unit: "items" });
  return true;
}

function pipPin(file: string): string {
  try {
    const line = readFileSync(file, "utf8")
      .split("\n")
      .find((text) => /^pip\s*==/.test(text.trim()));
    return line ? line.trim().replace(/^pip\s*==\s*/, "") : "the pinned version";
  } catch {
    return "the pinned version";
  }
}

// After an install, every file is checked: a package pip reported installed must also be usable.
async function verify(python: string, what: string, options: ManagedEnvironmentOptions): Promise<PythonVersions> {
  emitProgress(options.onProgress, { type: "stage", stage: "verify", message: "Checking the installed packages" });
  const versions = await probePythonVersions(python, { source: "managed", signal: options.signal, checkFiles: true });
  const problem = checkPythonVersions(versions, { python, source: "managed" });
  if (problem) {
    throw new PythonEnvironmentError("ENV_SETUP_FAILED", `${what}: ${problem.message}`, {
      fix: `Delete ${options.envDir} and run \`idefics2 setup\` again; the error's cause names what is missing.`,
      cause: problem,
    });
  }
  return versions;
}

// A finished environment whose packages were damaged since (a folder deleted, a package uninstalled, a file gone):
// what the probe names is reinstalled as it was (pinned packages at their pin), then requirements.txt installed
// again, which brings back anything missing altogether; the rest stays. The ready marker is rewritten last.
async function repair(options: SetupRun, found: Extract<Inspection, { state: "damaged" }>): Promise<Found> {
  const { python } = found;
  const fix =
    "Check the network and pip's configuration (PIP_INDEX_URL, proxies) and run `idefics2 setup` again, or delete the environment's folder so that setup makes it anew.";
  const damaged = (found.versions.damaged ?? []).filter((entry) => entry.version !== null);
  const reinstall = damaged.map((entry) =>
    requirementPin(entry.name).includes("==") ? requirementPin(entry.name) : `${entry.name}==${entry.version}`,
  );
  emitProgress(options.onProgress, {
    type: "stage",
    stage: "pip",
    message: `Repairing ${options.envDir}: ${found.problem.message}`,
  });
  if (reinstall.length > 0) {
    await runPip(python, ["--force-reinstall", "--no-deps", ...reinstall], "pip", `Reinstalling ${reinstall.join(", ")}`, fix, options);
  }
  await pipInstall(python, options.requirementsFile, "pip", fix, options);
  const versions = await verify(python, "The repaired managed environment is still incomplete", options);
  const marker: ReadyMarker = {
    hash: options.hash,
    requirements: options.requirementsFile,
    createdAt: new Date().toISOString(),
    versions,
  };
  await writeMarker(path.join(options.envDir, readyFile), marker);
  return { python, versions, devReady: await devReady(options) };
}

async function create(options: SetupRun): Promise<Found> {
  const { envDir, signal, onProgress } = options;
  const python = venvPython(envDir);
  try {
    await fs.access(envDir).then(
      async () => {
        emitProgress(onProgress, { type: "stage", stage: "cleanup", message: `Removing the unfinished environment ${envDir}` });
        await fs.rm(envDir, { recursive: true, force: true });
      },
      () => undefined,
    );
    emitProgress(onProgress, { type: "stage", stage: "venv", message: `Creating a virtual environment in ${envDir}` });
    await runSetupCommand(options.basePython, "venv", [envDir], {
      stage: "venv",
      what: `Creating the virtual environment with ${options.basePython}`,
      fix: "Install Python's venv module (Debian/Ubuntu: `apt install python3-venv`), or pass `basePython`.",
      signal,
      onProgress,
      logFile: options.logFile,
    });
    await pipInstall(
      python,
      options.requirementsFile,
      "pip",
      "Check the network and pip's configuration (PIP_INDEX_URL, proxies), then run `idefics2 setup` again; the error's cause holds pip's output.",
      options,
    );
    const versions = await verify(python, "The new managed environment is incomplete", options);
    const marker: ReadyMarker = {
      hash: options.hash,
      requirements: options.requirementsFile,
      createdAt: new Date().toISOString(),
      versions,
    };
    await writeMarker(path.join(envDir, readyFile), marker);
    return { python, versions, devReady: !options.dev };
  } catch (error) {
    // Never leave a half-made environment that looks usable; the missing marker already says so, this frees the disk.
    await fs.rm(envDir, { recursive: true, force: true }).catch(() => undefined);
    throw error;
  }
}

// Adds requirements-dev.txt into the finished environment. It starts with `-r requirements.txt`, so pip finds
// the runtime set satisfied and adds only the test tools. A failure or abort leaves the runtime environment
// as it was (usable); without the dev marker, the next dev call installs again.
async function installDevExtras(options: SetupRun, dev: DevExtras, python: string): Promise<Found> {
  const markerFile = path.join(options.envDir, devReadyFile);
  await fs.rm(markerFile, { force: true });
  await pipInstall(
    python,
    dev.requirementsFile,
    "dev-extras",
    "Check the network and pip's configuration (PIP_INDEX_URL, proxies), then run `idefics2 setup --dev` again; the error's cause holds pip's output. The runtime environment is unchanged.",
    options,
  );
  const versions = await verify(
    python,
    `The managed environment is incomplete after installing ${path.basename(dev.requirementsFile)}`,
    options,
  );
  const marker: DevReadyMarker = {
    hash: options.hash,
    devRequirements: dev.digest,
    requirements: dev.requirementsFile,
    installedAt: new Date().toISOString(),
    versions,
  };
  await writeMarker(markerFile, marker);
  return { python, versions, devReady: true };
}
