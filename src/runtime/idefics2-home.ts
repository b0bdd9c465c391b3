import os from "node:os";
import path from "node:path";

/**
 * The folder holding managed environments: the `home` option, else IDEFICS2_HOME, else the per-user cache
 * ($XDG_CACHE_HOME/idefics2 or ~/.cache/idefics2; ~/Library/Caches/idefics2 on macOS; %LOCALAPPDATA%\idefics2 on Windows).
 */
export function idefics2Home(
  option?: string,
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
  homedir: string = os.homedir(),
): string {
  if (option) return path.resolve(option);
  if (env.IDEFICS2_HOME) return path.resolve(env.IDEFICS2_HOME);
  if (platform === "win32") {
    const local = env.LOCALAPPDATA || path.win32.join(homedir, "AppData", "Local");
    return path.win32.join(local, "idefics2");
  }
  if (platform === "darwin") return path.join(homedir, "Library", "Caches", "idefics2");
  const cache = env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : path.join(homedir, ".cache");
  return path.join(cache, "idefics2");
}
