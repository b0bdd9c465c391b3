import type { ParityReport } from "./parity-report.js";

/** A conversation whose check could not run (the reference program failed, a bad input): one JUnit error. */
export interface ParityRunFailure {
  name: string;
  error: { name: string; message: string; code?: string; fix?: string | undefined };
  finishedAt?: string;
}

/**
 * JUnit XML for CI systems: one testsuite per conversation, one testcase per check, a `failure` element with the
 * check's message when it does not hold and an `error` element when the check could not run.
 */
export function parityJunitXml(results: readonly (ParityReport | ParityRunFailure)[]): string {
  const suites = results.map((result) => ("error" in result ? errorSuite(result) : reportSuite(result)));
  const count = (key: "tests" | "failures" | "errors") => suites.reduce((sum, suite) => sum + suite[key], 0);
  const time = suites.reduce((sum, suite) => sum + suite.time, 0);
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="idefics2 parity" tests="${count("tests")}" failures="${count("failures")}" errors="${count("errors")}" time="${seconds(time)}">`,
    ...suites.map((suite) => suite.xml),
    "</testsuites>",
    "",
  ].join("\n");
}

interface Suite {
  xml: string;
  tests: number;
  failures: number;
  errors: number;
  time: number;
}

function reportSuite(report: ParityReport): Suite {
  const failures = report.checks.filter((check) => !check.ok).length;
  const time = report.timings.totalMs;
  const properties = {
    model: report.model,
    quantization: report.quantization,
    referenceQuantization: report.referenceQuantization,
    decoder: report.decoder,
    device: report.device,
    method: report.method,
    maxNewTokens: String(report.maxNewTokens),
  };
  const cases = report.checks.map((check) => {
    const open = `    <testcase classname="idefics2.parity.${attribute(classPart(report.name))}" name="${attribute(check.name)}" time="${seconds(time / report.checks.length)}"`;
    if (check.ok) return `${open}/>`;
    const details = `${report.verdict}\nreference token ids: ${report.reference.tokenIds.join(" ")}\nSDK token ids:       ${report.sdk.tokenIds.join(" ")}`;
    return `${open}>\n      <failure message="${attribute(check.message)}" type="ParityMismatch">${text(details)}</failure>\n    </testcase>`;
  });
  const xml = [
    `  <testsuite name="${attribute(report.name)}" tests="${report.checks.length}" failures="${failures}" errors="0" time="${seconds(time)}" timestamp="${attribute(timestamp(report.finishedAt))}">`,
    "    <properties>",
    ...Object.entries(properties).map(([name, value]) => `      <property name="${attribute(name)}" value="${attribute(value)}"/>`),
    "    </properties>",
    ...cases,
    `    <system-out>${text(report.verdict)}</system-out>`,
    "  </testsuite>",
  ].join("\n");
  return { xml, tests: report.checks.length, failures, errors: 0, time };
}

function errorSuite(failure: ParityRunFailure): Suite {
  const { error } = failure;
  const message = error.fix ? `${error.message} — ${error.fix}` : error.message;
  const type = error.code ? `${error.name} ${error.code}` : error.name;
  const xml = [
    `  <testsuite name="${attribute(failure.name)}" tests="1" failures="0" errors="1" time="0" timestamp="${attribute(timestamp(failure.finishedAt))}">`,
    `    <testcase classname="idefics2.parity.${attribute(classPart(failure.name))}" name="the parity check runs" time="0">`,
    `      <error message="${attribute(message)}" type="${attribute(type)}">${text(message)}</error>`,
    "    </testcase>",
    "  </testsuite>",
  ].join("\n");
  return { xml, tests: 1, failures: 0, errors: 1, time: 0 };
}

// XML 1.0 allows tab, newline, carriage return and the characters from U+0020 on, without lone surrogates or U+FFFE/U+FFFF.
const NOT_XML =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding the control characters XML cannot hold is the point.
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** Escapes text content: &, < and > (and `]]>` cannot form), characters XML cannot hold become U+FFFD. @internal */
export function text(value: string): string {
  return value.replace(NOT_XML, "\uFFFD").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Escapes an attribute value in double quotes; line breaks and tabs stay what they were (not normalised to spaces). @internal */
export function attribute(value: string): string {
  return text(value).replace(/"/g, "&quot;").replace(/'/g, "&apos;").replace(/\n/g, "&#10;").replace(/\r/g, "&#13;").replace(/\t/g, "&#9;");
}

// A dotted class name reads as a package path in CI viewers: keep the name, without dots or spaces.
function classPart(name: string): string {
  return name.replace(/[^\w-]+/g, "_") || "conversation";
}

function seconds(ms: number): string {
  return (Math.max(0, ms) / 1000).toFixed(3);
}

// JUnit's timestamp is ISO 8601 without a zone.
function timestamp(iso: string | undefined): string {
  return (iso ?? new Date().toISOString()).replace(/(\.\d+)?Z$/, "");
}
