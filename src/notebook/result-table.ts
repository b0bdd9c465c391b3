import type { GenerateResult } from "../protocol/messages.js";

/** The answer, then its usage and timings as a small Markdown table. */
export function resultMarkdown(result: GenerateResult): string {
  const { usage, timings } = result;
  const rows: [string, string][] = [
    ["finish", result.finishReason],
    ["tokens", `${usage.promptTokens} prompt (${usage.imageTokens} image) + ${usage.completionTokens} generated`],
    [
      "time",
      `${ms(timings.totalMs)} total: ${ms(timings.preprocessMs)} preprocess, ${ms(timings.prefillMs)} prefill, ${ms(timings.decodeMs)} decode`,
    ],
    ["decode", `${timings.decodeTokensPerSecond.toFixed(1)} tokens/s`],
  ];
  const table = rows.map(([name, value]) => `| ${name} | ${escapeMarkdown(value)} |`).join("\n");
  return `**Assistant:** ${escapeMarkdown(result.text)}\n\n| | |\n|---|---|\n${table}`;
}

function ms(value: number): string {
  return `${Math.round(value)} ms`;
}

/** Model text is data, not Markdown: characters that would format, link, break a table or open HTML are escaped. */
export function escapeMarkdown(text: string): string {
  return text
    .replace(/[\\`*_[\]|<>&~]/g, (character) => `\\${character}`)
    .replace(/^([#+\-=>])/gm, "\\$1")
    .replace(/\n/g, "  \n");
}
