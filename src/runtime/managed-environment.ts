import { promises as fs } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { PythonEnvironmentError } from "../errors.js";
import { checkPythonVersions } from "./check-python-versions.js";
import { acquireEnvironmentLock } from "./environment-lock.js";
import { probePythonVersions, PythonVersions } from "./python-versions.js";
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
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
}

interface Found {
  python: string;
  versions: PythonVersions;
  /** Whether the requested dev extras are installed (true when none were requested). */
  devReady: boolean;
}

const readyFile = "ready.json";
const devReadyFile = "dev-ready.json";

/** The interpreter inside a venv folder. @internal */
export function venvPython(envDir: string, platform: NodeJS.Platform = process.platform): string {
  return platform === "win32" ? path.join(envDir, "Scripts", "python.exe") : path.join(envDir, "bin", "python");
}

/**
 * Reuses the environment at `envDir` when its ready marker is there, its interpreter answers and (for `dev`)
 * its dev marker matches; otherwise takes `<envDir>.lock` and, under it, creates what is missing: an
 * unfinished environment is deleted, the venv created, the runtime requirements installed and checked, the
 * ready marker written; then, for `dev`, requirements-dev.txt is installed into that same environment and
 * the dev marker written last. Returns the interpreter and its versions. @internal
 */
export async function managedEnvironment(options: ManagedEnvironmentOptions): Promise<{ python: string; versions: PythonVersions }> {
  const { envDir, signal, onProgress } = options;
  const found = await inspect(options);
  if (found?.devReady) return reused(options, found);
  if (options.create === false) {
    throw new PythonEnvironmentError(
      "ENV_SETUP_FAILED",
      found
        ? `The managed environment ${envDir} lacks the development tools (requirements-dev.txt)`
        : `The managed environment ${envDir} has not been created yet`,
      {
        fix: `Run \`idefics2 setup${options.dev ? " --dev" : ""}\` (or call ensurePythonEnvironment()) to ${found ? "install them" : "create it"}.`,
      },
    );
  }

  await fs.mkdir(path.dirname(envDir), { recursive: true });
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
    // Whoever held the lock before may have just finished this very environment, or its dev extras.
    let current = await inspect(options);
    if (current?.devReady) return reused(options, current);
    if (current) reused(options, current);
    else current = await create(options);
    const result = options.dev && !current.devReady ? await installDevExtras(options, options.dev, current.python) : current;
    emitProgress(onProgress, { type: "stage", stage: "ready", message: `The managed environment is ready: ${envDir}` });
    return { python: result.python, versions: result.versions };
  } finally {
    await lock.release();
  }
}

function reused(options: ManagedEnvironmentOptions, found: Found): { python: string; versions: PythonVersions } {
  emitProgress(options.onProgress, { type: "stage", stage: "reuse", message: `Using the managed environment ${options.envDir}` });
  return { python: found.python, versions: found.versions };
}

// The environment as it is: undefined unless finished (ready marker for this hash, interpreter answers, packages right).
async function inspect(options: ManagedEnvironmentOptions): Promise<Found | undefined> {
  const marker = await readMarker(path.join(options.envDir, readyFile), ReadyMarker);
  if (!marker || marker.hash !== options.hash) return undefined;
  const python = venvPython(options.envDir);
  let versions: PythonVersions;
  try {
    versions = await probePythonVersions(python, { source: "managed", signal: options.signal });
  } catch (error) {
    if (options.signal?.aborted) throw error;
    // A marked environment whose interpreter no longer runs (its base Python was removed) is rebuilt.
    return undefined;
  }
  if (checkPythonVersions(versions, { python, source: "managed" })) return undefined;
  return { python, versions, devReady: await devReady(options) };
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

function pipInstall(python: string, file: string, stage: SetupStage, fix: string, options: ManagedEnvironmentOptions): Promise<void> {
  emitProgress(options.onProgress, { type: "stage", stage, message: `Installing ${path.basename(file)}` });
  return runSetupCommand(
    python,
    ["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-r", file],
    {
      stage,
      what: `Installing ${file}`,
      fix,
      cwd: path.dirname(file),
      signal: options.signal,
      onProgress: options.onProgress,
    },
  );
}

async function verify(python: string, what: string, options: ManagedEnvironmentOptions): Promise<PythonVersions> {
  emitProgress(options.onProgress, { type: "stage", stage: "verify", message: "Checking the installed versions" });
  const versions = await probePythonVersions(python, { source: "managed", signal: options.signal });
  const problem = checkPythonVersions(versions, { python, source: "managed" });
  if (problem) {
    throw new PythonEnvironmentError("ENV_SETUP_FAILED", `${what}: ${problem.message}`, { fix: problem.fix, cause: problem });
  }
  return versions;
}

async function create(options: ManagedEnvironmentOptions): Promise<Found> {
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
    await runSetupCommand(options.basePython, ["-m", "venv", envDir], {
      stage: "venv",
      what: `Creating the virtual environment with ${options.basePython}`,
      fix: "Install Python's venv module (Debian/Ubuntu: `apt install python3-venv`), or pass `basePython`.",
      signal,
      onProgress,
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
async function installDevExtras(options: ManagedEnvironmentOptions, dev: DevExtras, python: string): Promise<Found> {
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
