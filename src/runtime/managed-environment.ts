import { promises as fs } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { PythonEnvironmentError } from "../errors.js";
import { checkPythonVersions } from "./check-python-versions.js";
import { acquireEnvironmentLock } from "./environment-lock.js";
import { probePythonVersions, PythonVersions } from "./python-versions.js";
import { runSetupCommand } from "./run-setup-command.js";
import { emitProgress, type ProgressListener } from "./setup-progress.js";

/** The marker written last into a finished environment; only an environment with it is reused. */
export const ReadyMarker = z.object({
  hash: z.string(),
  dev: z.boolean(),
  requirements: z.string(),
  createdAt: z.string(),
  versions: PythonVersions,
});
export type ReadyMarker = z.infer<typeof ReadyMarker>;

export interface ManagedEnvironmentOptions {
  envDir: string;
  hash: string;
  dev: boolean;
  requirementsFile: string;
  basePython: string;
  /** False: never create, only reuse. */
  create?: boolean;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
}

/** The interpreter inside a venv folder. @internal */
export function venvPython(envDir: string, platform: NodeJS.Platform = process.platform): string {
  return platform === "win32" ? path.join(envDir, "Scripts", "python.exe") : path.join(envDir, "bin", "python");
}

/**
 * Reuses the environment at `envDir` when its ready marker is there and its interpreter answers; otherwise
 * takes `<envDir>.lock`, deletes whatever half-made environment is there, creates the venv, installs the
 * requirements, checks them, and writes the marker last. Returns the interpreter and its versions. @internal
 */
export async function managedEnvironment(options: ManagedEnvironmentOptions): Promise<{ python: string; versions: PythonVersions }> {
  const { envDir, signal, onProgress } = options;
  const reused = await reuse(options);
  if (reused) return reused;
  if (options.create === false) {
    throw new PythonEnvironmentError("ENV_SETUP_FAILED", `The managed environment ${envDir} has not been created yet`, {
      fix: `Run \`idefics2 setup${options.dev ? " --dev" : ""}\` (or call ensurePythonEnvironment()) to create it.`,
    });
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
    // Whoever held the lock before may have just finished this very environment.
    const finished = await reuse(options);
    if (finished) return finished;
    return await create(options);
  } finally {
    await lock.release();
  }
}

async function reuse(options: ManagedEnvironmentOptions): Promise<{ python: string; versions: PythonVersions } | undefined> {
  const marker = await readMarker(options.envDir);
  if (!marker || marker.hash !== options.hash) return undefined;
  const python = venvPython(options.envDir);
  try {
    const versions = await probePythonVersions(python, { source: "managed", signal: options.signal });
    if (checkPythonVersions(versions, { python, source: "managed" })) return undefined;
    emitProgress(options.onProgress, { type: "stage", stage: "reuse", message: `Using the managed environment ${options.envDir}` });
    return { python, versions };
  } catch (error) {
    if (options.signal?.aborted) throw error;
    // A marked environment whose interpreter no longer runs (its base Python was removed) is rebuilt.
    return undefined;
  }
}

async function readMarker(envDir: string): Promise<ReadyMarker | undefined> {
  try {
    const parsed = ReadyMarker.safeParse(JSON.parse(await fs.readFile(path.join(envDir, "ready.json"), "utf8")));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

async function create(options: ManagedEnvironmentOptions): Promise<{ python: string; versions: PythonVersions }> {
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
    emitProgress(onProgress, { type: "stage", stage: "pip", message: `Installing ${path.basename(options.requirementsFile)}` });
    await runSetupCommand(
      python,
      ["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-r", options.requirementsFile],
      {
        stage: "pip",
        what: `Installing ${options.requirementsFile}`,
        fix: "Check the network and pip's configuration (PIP_INDEX_URL, proxies), then run `idefics2 setup` again; the error's cause holds pip's output.",
        cwd: path.dirname(options.requirementsFile),
        signal,
        onProgress,
      },
    );
    emitProgress(onProgress, { type: "stage", stage: "verify", message: "Checking the installed versions" });
    const versions = await probePythonVersions(python, { source: "managed", signal });
    const problem = checkPythonVersions(versions, { python, source: "managed" });
    if (problem) {
      throw new PythonEnvironmentError("ENV_SETUP_FAILED", `The new managed environment is incomplete: ${problem.message}`, {
        fix: problem.fix,
        cause: problem,
      });
    }
    const marker: ReadyMarker = {
      hash: options.hash,
      dev: options.dev,
      requirements: options.requirementsFile,
      createdAt: new Date().toISOString(),
      versions,
    };
    await fs.writeFile(path.join(envDir, "ready.json.tmp"), JSON.stringify(marker, null, 2));
    await fs.rename(path.join(envDir, "ready.json.tmp"), path.join(envDir, "ready.json"));
    emitProgress(onProgress, { type: "stage", stage: "ready", message: `The managed environment is ready: ${envDir}` });
    return { python, versions };
  } catch (error) {
    // Never leave a half-made environment that looks usable; the missing marker already says so, this frees the disk.
    await fs.rm(envDir, { recursive: true, force: true }).catch(() => undefined);
    throw error;
  }
}
