import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { installPackedApp, type PackedApp } from "../helpers/packed-app.js";
import { testPython } from "../helpers/python.js";

const run = promisify(execFile);
const NOTEBOOK = "blog-conversation.ipynb";

interface Output {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, string | string[]>;
  ename?: string;
  evalue?: string;
}
interface Cell {
  cell_type: string;
  id: string;
  outputs?: Output[];
}

const joined = (text: string | string[] | undefined) => (Array.isArray(text) ? text.join("") : (text ?? ""));

// Real Jupyter (nbconvert from the dev environment) and the real tslab kernel (a dev dependency), on the example
// notebook, in a fresh app where the packed package is installed as a user installs it.
describe("the example notebook, run headless by Jupyter with the tslab kernel", () => {
  let app: PackedApp;
  let jupyter: NodeJS.ProcessEnv;
  beforeAll(async () => {
    app = await installPackedApp();
    await copyFile(join("examples", NOTEBOOK), join(app.folder, NOTEBOOK));
    const home = await mkdtemp(join(tmpdir(), "idefics2-jupyter-"));
    await mkdir(join(home, "kernels", "tslab"), { recursive: true });
    const kernel = { argv: [join(process.cwd(), "node_modules", ".bin", "tslab"), "kernel", "--config-path", "{connection_file}"] };
    await writeFile(
      join(home, "kernels", "tslab", "kernel.json"),
      JSON.stringify({ ...kernel, display_name: "TypeScript", language: "typescript" }),
    );
    // Jupyter reads and writes only this folder, never the user's; the kernel's worker uses the suite's interpreter.
    jupyter = {
      ...process.env,
      JUPYTER_PATH: home,
      JUPYTER_DATA_DIR: join(home, "data"),
      JUPYTER_CONFIG_DIR: join(home, "config"),
      JUPYTER_RUNTIME_DIR: join(home, "runtime"),
      IDEFICS2_PYTHON: testPython(),
    };
  });

  it("runs every cell: pictures shown as images, the streamed answer names the colour, a typed error, and the model closed", async () => {
    const args = ["-m", "nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.kernel_name=tslab"];
    args.push("--ExecutePreprocessor.timeout=300", "--output", "executed.ipynb", NOTEBOOK);
    await run(testPython(), args, { cwd: app.folder, env: jupyter, timeout: 400_000 });
    const cells = (JSON.parse(await readFile(join(app.folder, "executed.ipynb"), "utf8")) as { cells: Cell[] }).cells;
    const code = cells.filter((cell) => cell.cell_type === "code");
    const outputs = code.flatMap((cell) => cell.outputs ?? []);
    expect(outputs.filter((output) => output.output_type === "error")).toEqual([]);

    const cell = (id: string) => code.find((each) => each.id === id)?.outputs ?? [];
    const streamed = (id: string) =>
      joined(
        cell(id)
          .filter((output) => output.output_type === "stream")
          .flatMap((output) => joined(output.text)),
      );
    expect(streamed("code-2")).toMatch(/loaded: decoder reference, quantization none, worker pid \d+/);
    const pictures = cell("code-3").filter((output) => output.data?.["image/png"] !== undefined);
    expect(pictures).toHaveLength(2);
    for (const picture of pictures)
      expect(Buffer.from(joined(picture.data?.["image/png"]), "base64").subarray(1, 4).toString()).toBe("PNG");
    expect(streamed("code-4").toLowerCase()).toContain("blue");
    const table = cell("code-4")
      .map((output) => joined(output.data?.["text/markdown"]))
      .join("\n");
    expect(table).toContain("**Assistant:**");
    expect(table).toMatch(/\| tokens \| \d+ prompt \(\d+ image\) \+ \d+ generated \|/);
    expect(streamed("code-5")).toMatch(/ImageError IMAGE_UNREADABLE: Cannot read image: no such file/);
    expect(streamed("code-5")).toMatch(/The shape is red/i);

    // The worker ran from the installed package and wrote no bytecode there.
    const python = join(app.folder, "node_modules", "idefics2", "python");
    const folders = await readdir(python, { recursive: true });
    expect(folders.filter((name) => name.includes("__pycache__"))).toEqual([]);
  }, 420_000);

  it("keeps the model loaded across cells, and a kernel restart leaves no worker behind", async () => {
    const { stdout } = await run(testPython(), [join(process.cwd(), "test", "notebook", "restart_kernel.py")], {
      cwd: app.folder,
      env: jupyter,
      timeout: 400_000,
    });
    const report = JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}") as Record<string, unknown>;
    expect(report).toMatchObject({ runningBefore: true, runningAfterRestart: false });
    expect(report.pid).toEqual(expect.any(Number));
  }, 420_000);
});
