import { createRequire } from "node:module";
import { join, sep } from "node:path";

/** The part of tslab's `display` this package uses: one rich output per call. */
export interface NotebookDisplay {
  markdown(text: string): void;
  html(text: string): void;
  png(bytes: Uint8Array): void;
  text(text: string): void;
}

const KERNEL_MODULE = `${sep}tslab${sep}dist${sep}jupyter.js`;

/**
 * tslab's display when this process is a tslab kernel, else undefined. Found in Node's module cache (the kernel has
 * loaded tslab's Jupyter handler), so the package never requires tslab and costs nothing outside a notebook.
 */
export function tslabDisplay(): NotebookDisplay | undefined {
  // Any path works for createRequire here: only its cache, which Node shares across the process, is read.
  const cache = createRequire(join(process.cwd(), "noop.js")).cache;
  const kernel = Object.keys(cache).find((file) => file.endsWith(KERNEL_MODULE));
  if (kernel === undefined) return undefined;
  const publicApi: unknown = createRequire(kernel)("./public.js");
  return isDisplayModule(publicApi) ? publicApi.display : undefined;
}

function isDisplayModule(value: unknown): value is { display: NotebookDisplay } {
  const display = (value as { display?: Partial<NotebookDisplay> } | null)?.display;
  return typeof display?.markdown === "function" && typeof display.png === "function" && typeof display.html === "function";
}
