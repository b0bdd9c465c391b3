import { printable } from "../printable.js";
import { runDoctor, type DoctorReport } from "../runtime/doctor.js";
import { parseCommandLine } from "./command-line.js";

const DOCTOR_USAGE = "Usage: idefics2 doctor [--json] [--python PATH] [--home DIR]";

// Reports the environment; exit code 1 when a problem would stop the package from working.
export async function runDoctorCommand(args: string[]): Promise<number> {
  const { values } = parseCommandLine(
    args,
    { json: { type: "boolean" }, python: { type: "string" }, home: { type: "string" }, help: { type: "boolean", short: "h" } },
    "doctor",
  );
  if (values.help) {
    process.stdout.write(`${DOCTOR_USAGE}\n`);
    return 0;
  }
  const report = await runDoctor({
    ...(values.python === undefined ? {} : { python: values.python }),
    ...(values.home === undefined ? {} : { home: values.home }),
  });
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
  return report.ok ? 0 : 1;
}

function formatReport(report: DoctorReport): string {
  const gib = (bytes: number | null) => (bytes === null ? "?" : `${(bytes / 2 ** 30).toFixed(1)} GiB`);
  const lines = [
    `interpreter   ${report.python ?? "none"}${report.source ? ` (${report.source})` : ""}`,
    `platform      ${report.platform.os}/${report.platform.arch}, Node ${report.platform.node}, Python ${report.platform.python ?? "?"}`,
    ...Object.entries(report.versions ?? {})
      .filter((entry): entry is [string, string | null] => typeof entry[1] === "string" || entry[1] === null)
      .map(([name, version]) => `${name.padEnd(14)}${version ?? "missing"}`),
    `CUDA          ${report.cuda.available ? `yes (torch built for CUDA ${report.cuda.torchCuda})` : "no"}`,
    ...report.cuda.devices.map(
      (device) =>
        `  cuda:${device.index}      ${device.name}, compute ${device.capability}, ${gib(device.freeMemory)} free of ${gib(device.totalMemory)}`,
    ),
    `bitsandbytes  ${report.bitsandbytes.version ?? "missing"}${report.bitsandbytes.backend ? `, backend ${report.bitsandbytes.backend}` : ""}${
      report.bitsandbytes.library ? `, library ${report.bitsandbytes.library}` : ""
    }`,
    "",
    ...(report.problems.length === 0
      ? ["No problems found."]
      : report.problems.flatMap((problem) => [
          `${problem.severity === "error" ? "✗" : "!"} [${problem.code}] ${problem.message}`,
          `    fix: ${problem.fix}`,
        ])),
  ];
  // Each line quotes what the interpreter, its packages and the user's paths say: escaped, so none can add a line.
  return `${lines.map(printable).join("\n")}\n`;
}
