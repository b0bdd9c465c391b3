import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { embeddedModelPath } from "../embedded-model.js";
import { InvalidInputError } from "../errors.js";
import { decodeDataUrl, isDataUrl } from "../images/data-url.js";
import type { ImagePart, Messages } from "../messages.js";
import { Idefics2, type GenerationResult, type ModelInfo } from "../model.js";
import { parseOrThrow } from "../parse-or-throw.js";
import { prepareGeneration } from "../prepare-generation.js";
import { checkBitsandbytes } from "../runtime/check-bitsandbytes.js";
import type { PythonEnvironment } from "../runtime/python-environment.js";
import { compareTokenIds } from "./compare-token-ids.js";
import { judgeTeacherForcing, type LogitsComparison } from "./judge-teacher-forcing.js";
import { ParityOptionsSchema, type ParityCallOptions, type ParityOptions, type ResolvedParityOptions } from "./parity-options.js";
import { ReferenceOutput, referenceProgram, TeacherForcedOutput, teacherForcingProgram, type ProgramInputs } from "./parity-programs.js";
import type { ParityCheckMethod, ParityReport } from "./parity-report.js";
import { logitsChecks, tokenCheck, verdictLine } from "./parity-verdict.js";
import { runPythonProgram } from "./run-python-program.js";

/**
 * Runs the blog's program (scripts/reference/reference.py, shipped with the package) and the SDK on the same
 * conversation, pictures and quantization, and compares them: equal greedy token ids for the reference decoder,
 * teacher-forced logits within kernel noise for the fast decoder on a GPU. Resolves with the report whether parity
 * holds or not (`report.ok`); rejects with a typed error when a side cannot run (InvalidInputError, ModelLoadError,
 * PythonEnvironmentError, ReferenceRunError, AbortError).
 */
export async function checkParity(options: ParityOptions, call: ParityCallOptions = {}): Promise<ParityReport> {
  const resolved = parseOrThrow(ParityOptionsSchema, options, "INVALID_OPTIONS", "parity option");
  const { signal, onProgress } = call;
  const started = performance.now();
  const model = resolved.model ?? embeddedModelPath;
  const images = resolved.images?.map(absolute);
  const referenceImages = images ?? imagesOnParts(resolved.messages);
  // Everything that can be checked without Python is checked first: messages, pictures, their count.
  await prepareGeneration(resolved.messages, { images, maxNewTokens: resolved.maxNewTokens, signal }, {}, { stream: false });

  onProgress?.({
    stage: "load",
    message: `Loading ${model} in the SDK (quantization ${resolved.quantization}, decoder ${resolved.decoder})`,
  });
  const sdkStarted = performance.now();
  const { info, result, environment } = await runSdk(model, resolved, images, call);
  const sdkMs = performance.now() - sdkStarted;
  const referenceQuantization = resolved.referenceQuantization ?? resolved.quantization;
  if (referenceQuantization !== "none") {
    const missing = checkBitsandbytes(environment.versions, environment.python);
    if (missing) throw missing;
  }

  const folder = await mkdtemp(path.join(tmpdir(), "idefics2-parity-"));
  try {
    const inputs: ProgramInputs = {
      model,
      messagesFile: path.join(folder, "messages.json"),
      images: await Promise.all(referenceImages.map((source, index) => asReferenceInput(source, index, folder))),
      quantization: referenceQuantization,
      imageSplitting: resolved.imageSplitting,
    };
    await writeFile(inputs.messagesFile, JSON.stringify(wireMessages(resolved.messages)));
    onProgress?.({ stage: "reference", message: "Running the reference program (scripts/reference/reference.py)" });
    const referenceStarted = performance.now();
    const reference = await runPythonProgram(referenceProgram(environment, inputs, resolved.maxNewTokens), ReferenceOutput, signal);
    const referenceMs = performance.now() - referenceStarted;

    const method = chooseMethod(resolved, info);
    let logits: LogitsComparison | null = null;
    let teacherForcingMs: number | null = null;
    if (method === "teacher-forced") {
      onProgress?.({
        stage: "teacher-forcing",
        message: `Teacher-forcing ${reference.tokenIds.length} reference tokens through the fast decoder`,
      });
      const forcingStarted = performance.now();
      const forced =
        reference.tokenIds.length === 0
          ? { steps: [] }
          : await runPythonProgram(teacherForcingProgram(environment, inputs, reference.tokenIds), TeacherForcedOutput, signal);
      teacherForcingMs = performance.now() - forcingStarted;
      logits = judgeTeacherForcing(forced.steps);
    }

    const tokens = compareTokenIds(reference.tokenIds, result.tokenIds, info.eosTokenIds ?? []);
    const checks = logits ? logitsChecks(logits) : [tokenCheck(tokens)];
    const decoder = info.decoder ?? "reference";
    const verdict = verdictLine(checks, {
      model: model === embeddedModelPath ? "embedded tiny-idefics2" : model,
      quantization: resolved.quantization,
      referenceQuantization,
      decoder,
      device: info.device,
    });
    return {
      ok: checks.every((check) => check.ok),
      verdict,
      name: resolved.name,
      model,
      quantization: resolved.quantization,
      referenceQuantization,
      decoder,
      device: info.device,
      method,
      maxNewTokens: resolved.maxNewTokens,
      reference: { tokenIds: reference.tokenIds, text: reference.text },
      sdk: { tokenIds: result.tokenIds, text: result.text, finishReason: result.finishReason },
      tokens,
      logits,
      checks,
      timings: { sdkMs, referenceMs, teacherForcingMs, totalMs: performance.now() - started },
      finishedAt: new Date().toISOString(),
    };
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

// The SDK's side; its model is closed before the Python programs load theirs, so a GPU holds one copy at a time.
async function runSdk(
  model: string,
  options: ResolvedParityOptions,
  images: string[] | undefined,
  call: ParityCallOptions,
): Promise<{ info: ModelInfo; result: GenerationResult; environment: PythonEnvironment }> {
  const sdk = await Idefics2.load({
    model,
    quantization: options.quantization,
    decoder: options.decoder,
    ...(options.imageSplitting === false ? { imageSplitting: false } : {}),
    ...(options.python === undefined ? {} : { python: options.python }),
    ...(options.home === undefined ? {} : { home: options.home }),
    ...(call.signal ? { signal: call.signal } : {}),
  });
  try {
    call.onProgress?.({
      stage: "sdk",
      message: `Generating up to ${options.maxNewTokens} tokens with the SDK (decoder ${sdk.info.decoder ?? "reference"})`,
    });
    const result = await sdk.generate(options.messages, {
      ...(images ? { images } : {}),
      maxNewTokens: options.maxNewTokens,
      ...(call.signal ? { signal: call.signal } : {}),
    });
    return { info: sdk.info, result, environment: sdk.environment };
  } finally {
    await sdk.close();
  }
}

/** `auto`: teacher-forced logits for the fast decoder on a CUDA device (where kernels differ), token ids elsewhere. @internal */
export function chooseMethod(
  options: Pick<ResolvedParityOptions, "method">,
  info: Pick<ModelInfo, "decoder" | "device">,
): ParityCheckMethod {
  if (options.method !== "auto") return options.method;
  return info.decoder === "fast" && info.device.startsWith("cuda") ? "teacher-forced" : "token-ids";
}

// The reference program reads pictures itself: an image part's own source must be a path or an http(s) URL.
function imagesOnParts(messages: Messages): string[] {
  const parts = messages.flatMap((message) => message.content.filter((part): part is ImagePart => part.type === "image"));
  return parts.flatMap((part, index) => {
    const source = part.source;
    if (source === undefined) return [];
    if (typeof source === "string") return [absolute(source)];
    if (source instanceof URL) return [source.protocol === "file:" ? fileURLToPath(source) : source.href];
    throw new InvalidInputError(
      "INVALID_MESSAGES",
      `Image part ${index + 1} holds bytes or a sharp instance, which the reference program cannot read`,
      {
        fix: "Save the picture to a file and give its path (or an http(s) URL) in the image part or in `images`.",
      },
    );
  });
}

// The reference may run in another folder than the caller's relative paths mean.
function absolute(source: string): string {
  return /^https?:\/\//i.test(source) || isDataUrl(source) ? source : path.resolve(source);
}

// A data URL reaches the reference program as a file of its bytes (a command line cannot hold a large one); the
// SDK has already read it, within its limits, when the messages were checked.
async function asReferenceInput(source: string, index: number, folder: string): Promise<string> {
  if (!isDataUrl(source)) return source;
  const file = path.join(folder, `image-${index + 1}`);
  await writeFile(file, decodeDataUrl(source, Number.MAX_SAFE_INTEGER));
  return file;
}

// The blog's message shape: image parts carry no source.
function wireMessages(messages: Messages) {
  return messages.map((message) => ({
    role: message.role,
    content: message.content.map((part) => (part.type === "image" ? { type: "image" } : { type: "text", text: part.text })),
  }));
}
