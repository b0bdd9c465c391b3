// The variables a Python child may see: named ones and prefixes, never the whole parent environment.
const sharedNames = [
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "LANG",
  "TZ",
  "TMPDIR",
  "TEMP",
  "TMP",
  "LD_LIBRARY_PATH",
  "DYLD_LIBRARY_PATH",
  "SYSTEMROOT",
  "WINDIR",
  "COMSPEC",
  "PATHEXT",
  "USERPROFILE",
  "APPDATA",
  "LOCALAPPDATA",
  "PROGRAMDATA",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "REQUESTS_CA_BUNDLE",
  "CURL_CA_BUNDLE",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "ALL_PROXY",
  "NO_PROXY",
  "http_proxy",
  "https_proxy",
  "all_proxy",
  "no_proxy",
  "OMP_NUM_THREADS",
  "MKL_NUM_THREADS",
  "TOKENIZERS_PARALLELISM",
];
const sharedPrefixes = ["LC_", "XDG_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "CUDA_", "BNB_", "TORCH_", "PYTORCH_", "NCCL_"];
// pip reads its configuration (index, find-links, certificates) from PIP_*; pyenv shims need PYENV_*.
const setupPrefixes = ["PIP_", "PYENV_"];

export type ChildEnvironmentKind = "worker" | "setup";

/** The explicit environment for a Python child: the worker (and probes), or venv/pip during setup. @internal */
export function childEnvironment(
  kind: ChildEnvironmentKind,
  parent: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
): Record<string, string> {
  // Windows variable names are case-insensitive (Path, PATH): compare them upper-cased there.
  const normalize = (name: string) => (platform === "win32" ? name.toUpperCase() : name);
  const prefixes = kind === "setup" ? [...sharedPrefixes, ...setupPrefixes] : sharedPrefixes;
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(parent)) {
    if (value === undefined) continue;
    const key = normalize(name);
    if (sharedNames.includes(key) || prefixes.some((prefix) => key.startsWith(prefix))) env[name] = value;
  }
  env.PYTHONUNBUFFERED = "1";
  env.PYTHONIOENCODING = "utf-8";
  if (kind === "setup") {
    // Setup must not see the user's site-packages, and pip must never stop to ask a question.
    env.PYTHONNOUSERSITE = "1";
    env.PIP_DISABLE_PIP_VERSION_CHECK = "1";
    env.PIP_NO_INPUT = "1";
  }
  return env;
}
